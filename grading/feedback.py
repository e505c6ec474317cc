"""Feedback that teaches: in the feedback HTML, a failed check shows the learner's call and the
check's message (the likely mistake and a hint), not the frames of the checking machinery.

Only the feedback is shortened; the autograded notebooks keep the full tracebacks.
"""

from __future__ import annotations

import os

from nbconvert.filters import strip_ansi
from nbgrader.preprocessors import NbGraderPreprocessor

MACHINERY = f"{os.sep}course_lib{os.sep}"


def shorten(traceback: list[str]) -> list[str]:
    """Drop the traceback entries (one per frame) that are inside course_lib."""
    kept = [e for e in traceback if not _in_course_lib(e)]
    hidden = len(traceback) - len(kept)
    if hidden and len(kept) >= 2:
        note = f"    ({hidden} frames inside course_lib's checks not shown)"
        kept.insert(len(kept) - 1, note)
    return kept


def _in_course_lib(entry: str) -> bool:
    """True for a frame entry such as 'File .../course_lib/checks.py:94, in check_x(fn)'."""
    first = strip_ansi(entry).lstrip().split("\n", 1)[0]
    return first.startswith("File ") and MACHINERY in first


class ShortenCheckTracebacks(NbGraderPreprocessor):
    """Shorten every error traceback of the notebook with `shorten`."""

    def preprocess_cell(self, cell, resources, index):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                output.traceback = shorten(list(output.traceback))
        return cell, resources
