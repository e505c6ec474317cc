"""Strip per-cell timing metadata and saved widget state from notebooks, keeping outputs.

Usage: python tools/clean_notebooks.py notebooks/*.ipynb   (or --check to only report)
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


def clean(nb: nbformat.NotebookNode) -> bool:
    """Remove volatile metadata in place; return True if anything changed."""
    changed = False
    for key in ("widgets",):
        if key in nb.metadata:
            del nb.metadata[key]
            changed = True
    if nb.metadata.get("kernelspec") != KERNELSPEC:
        nb.metadata["kernelspec"] = KERNELSPEC
        changed = True
    for cell in nb.cells:
        for key in ("execution", "collapsed", "scrolled"):
            if key in cell.metadata:
                del cell.metadata[key]
                changed = True
    return changed


def main(argv: list[str]) -> int:
    """Clean each notebook named on the command line."""
    check = "--check" in argv
    paths = [Path(a) for a in argv if not a.startswith("--")]
    dirty = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        if clean(nb):
            dirty.append(path)
            if not check:
                nbformat.write(nb, path)
    for path in dirty:
        print(f"{'needs cleaning' if check else 'cleaned'}: {path}")
    return 1 if (check and dirty) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
