"""Every course notebook can be presented: each cell says what it is in a slideshow
(RISE and `make slides` read `metadata.slideshow.slide_type`), and the deck opens on a slide."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
SLIDE_TYPES = {"slide", "subslide", "fragment", "skip", "notes", "-"}


def _slide_types(path: Path) -> list[str | None]:
    """The slide type of each cell (None where the cell has none)."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return [c.get("metadata", {}).get("slideshow", {}).get("slide_type") for c in cells]


def test_there_are_notebooks_to_check():
    assert NOTEBOOKS, "no notebooks found under notebooks/"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_cell_has_a_known_slide_type_and_the_first_is_a_slide(path):
    types = _slide_types(path)
    bad = [(i, t) for i, t in enumerate(types) if t not in SLIDE_TYPES]
    assert not bad, (
        f"{path.name}: cells without a valid slideshow.slide_type (index, value): {bad[:10]}; "
        f"use one of {sorted(SLIDE_TYPES)} (JupyterLab: Property Inspector -> Slide Type)"
    )
    assert types and types[0] == "slide", f"{path.name} must open on a 'slide' cell"
