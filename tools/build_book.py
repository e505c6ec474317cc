"""Build the course website: `make book` -> build/book/ (open build/book/index.html).

Sphinx + MyST-NB (configuration: book/conf.py) render every notebook, in order, from its stored
outputs (no kernel runs). The sources are staged in build/book-src/ (book/*.md and the
notebooks, copied only when changed, so Sphinx rebuilds only what changed). MathJax 2 comes
from the slide decks' npm install (slides/package.json, see tools/build_slides.py) and is
copied into build/book-assets/mathjax/, which Sphinx puts under _static/: the site loads
nothing from the network, opened from disk or served (`python -m http.server -d build/book`).

Usage: python tools/build_book.py [--out build/book] [--force]
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"  # conf.py and the pages that are not notebooks
STAGE = ROOT / "build" / "book-src"
ASSETS = ROOT / "build" / "book-assets"  # html_static_path in book/conf.py
OUT = ROOT / "build" / "book"


def _build_slides():
    """tools/build_slides.py as a module: its npm install and its list of MathJax files."""
    spec = importlib.util.spec_from_file_location("build_slides", ROOT / "tools/build_slides.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sync(sources: list[Path], dest: Path) -> int:
    """Copy sources into dest when size or mtime differ; delete other files there. Returns copies."""
    dest.mkdir(parents=True, exist_ok=True)
    copied = 0
    names = {p.name for p in sources}
    for src in sources:
        dst = dest / src.name
        if not dst.exists() or (dst.stat().st_mtime, dst.stat().st_size) != (
            src.stat().st_mtime,
            src.stat().st_size,
        ):
            shutil.copy2(src, dst)
            copied += 1
    for stale in dest.iterdir():
        if stale.is_file() and stale.name not in names:
            stale.unlink()
    return copied


def stage_sources() -> int:
    """build/book-src/: book/*.md and notebooks/*.ipynb side by side (links between them work)."""
    pages = sorted(BOOK.glob("*.md")) + sorted((ROOT / "notebooks").glob("*.ipynb"))
    return sync(pages, STAGE)


def stage_mathjax() -> None:
    """build/book-assets/mathjax/: the MathJax 2 files the decks use (about 6 MB)."""
    slides = _build_slides()
    slides.install_assets()  # npm ci into slides/node_modules, once
    for src_rel, _ in slides.ASSETS:
        if not src_rel.startswith("mathjax/"):
            continue
        src, dst = slides.NODE_MODULES / src_rel, ASSETS / src_rel
        if not src.exists():
            sys.exit(f"{src} is missing: delete slides/node_modules and run make book again")
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True, ignore=slides.IGNORE)
        elif not dst.exists() or dst.stat().st_mtime < src.stat().st_mtime:
            shutil.copy2(src, dst)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--force", action="store_true", help="rebuild every page (sphinx -E)")
    args = ap.parse_args(argv)

    start = time.perf_counter()
    copied = stage_sources()
    stage_mathjax()
    out = args.out.resolve()
    cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-c", str(BOOK), "-q"]
    cmd += ["-d", str(out.parent / "book-doctrees"), str(STAGE), str(out)]
    if args.force:
        cmd.insert(3, "-E")
    rc = subprocess.run(cmd, cwd=ROOT).returncode
    if rc != 0:
        return rc
    print(
        f"course website built in {time.perf_counter() - start:.1f} s ({copied} page(s) changed); "
        f"open {out / 'index.html'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
