"""Lecture defaults for RISE (live slides in JupyterLab), written to this Python's JupyterLab
settings overrides: <sys.prefix>/share/jupyter/lab/settings/overrides.json (merged, other
settings kept). `make rise` runs it after installing jupyterlab-rise.

- theme "white": RISE's default theme ("simple") fetches Google Fonts, which a lecture hall
  without internet cannot reach; "white" ships its fonts.
- scroll: a long code cell scrolls instead of running off the slide.
- slideNumber "c/t": "slide 12 of 31", to find your place after a question.

Usage: python tools/rise_settings.py [--print]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

PLUGIN = "jupyterlab-rise:plugin"
LECTURE_DEFAULTS = {"theme": "white", "scroll": True, "slideNumber": "c/t"}


def overrides_path() -> Path:
    """JupyterLab's application settings overrides for this environment."""
    from jupyterlab.commands import get_app_dir

    return Path(get_app_dir()) / "settings" / "overrides.json"


def main(argv: list[str]) -> int:
    """Merge the lecture defaults into overrides.json (or only print the path and content)."""
    path = overrides_path()
    settings = json.loads(path.read_text()) if path.exists() else {}
    if "--print" not in argv:
        settings.setdefault(PLUGIN, {}).update(LECTURE_DEFAULTS)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings, indent=2) + "\n")
    print(f"{path}: {json.dumps(settings.get(PLUGIN, {}))}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
