"""Every notebook shows the architecture: a course_lib.diagrams figure stored as an image, on a
slide of its deck, and every notebook 01-11 opens with the "you are here" map near its top."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from course_lib import diagrams

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
DIAGRAM_FUNCTIONS = [
    name for name in diagrams.__all__ if name.endswith(("diagram", "_here", "map"))
]
CALL = re.compile(r"\b(" + "|".join(DIAGRAM_FUNCTIONS) + r")\(")
OPENING_CELLS = 8  # the map comes right after the title, goals and prerequisites


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def _diagram_cells(path: Path) -> list[tuple[int, dict]]:
    """(index, cell) of code cells that draw a course_lib diagram."""
    return [
        (i, c)
        for i, c in enumerate(_cells(path))
        if c["cell_type"] == "code" and CALL.search("".join(c["source"]))
    ]


def _has_image(cell: dict) -> bool:
    return any("image/png" in out.get("data", {}) for out in cell.get("outputs", []))


def test_the_diagram_functions_are_found():
    assert {"you_are_here", "qkv_diagram", "block_diagram"} <= set(DIAGRAM_FUNCTIONS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_each_notebook_stores_a_diagram_shown_in_its_deck(path):
    cells = _diagram_cells(path)
    assert cells, f"{path.name} draws no course_lib.diagrams figure"
    shown = [
        (i, c)
        for i, c in cells
        if _has_image(c)
        and c.get("metadata", {}).get("slideshow", {}).get("slide_type") not in ("skip", "notes")
    ]
    assert shown, (
        f"{path.name}: its diagram cells {[i for i, _ in cells]} have no stored image, or are "
        "left out of the slides (slide_type skip/notes)"
    )


@pytest.mark.parametrize("path", NOTEBOOKS[1:], ids=[p.stem for p in NOTEBOOKS[1:]])
def test_notebooks_01_to_11_open_with_you_are_here(path):
    first = [
        i
        for i, c in _diagram_cells(path)
        if "you_are_here(" in "".join(c["source"]) or "course_map(" in "".join(c["source"])
    ]
    assert first and first[0] < OPENING_CELLS, (
        f"{path.name}: the 'you are here' map should be among the first {OPENING_CELLS} cells, "
        f"found at {first}"
    )
