"""What happened while one notebook was graded, for the lecturer's summary and log.

The grading steps (grading/repair.py, sandbox.py, judge.py) run inside nbgrader's converters in
the grader's process; each adds what it saw to the notebook's entry in REPORTS, keyed by
(student, assignment). grading/grade.py prints them after each autograde and keeps them in
build/grading/logs/<student>/<notebook>.log.
"""

from __future__ import annotations

from typing import Any

REPORTS: dict[tuple[str, str], dict[str, Any]] = {}

# errors a cell gets when the sandbox refuses what it tried (reading, writing, connecting)
REFUSALS = ("Read-only file system", "Permission denied", "Network is unreachable",
            "No such file or directory: '/work", "Operation not permitted")  # fmt: skip


def entry(resources: dict) -> dict[str, Any]:
    """The report of the notebook these nbgrader resources belong to (created if new)."""
    info = resources.get("nbgrader", {})
    key = (str(info.get("student", "?")), str(info.get("assignment", "?")))
    return REPORTS.setdefault(key, {})


def take(student: str, assignment: str) -> dict[str, Any]:
    """The report of one notebook, removed from REPORTS."""
    return REPORTS.pop((student, assignment), {})
