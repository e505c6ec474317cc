"""The judge: a graded cell's points decided in the grader's process, not in the student's kernel.

Every check cell of the course calls a check, `check_<name>(learner_function)`. In the sandbox
the check runs as usual and, because the runner sets COURSE_CHECK_RECORD, records the values
the learner's function returned on the check's inputs (course_lib/checks/_replay.py). Here,
in the grader's own process, which imports the course's pristine checks and never runs learner
code, the judge replays the same check on those recorded values: the check builds its inputs
and expected values itself and compares them with this process's torch. The records are read
with `torch.load(weights_only=True)` (plain data only: no code can ride along).

What decides the points of a check cell, then, is only whether the values the learner's function
returned are right on the check's own inputs. Rebinding `check_*` or `torch.allclose` in the
kernel, feeding the function other inputs, or printing a fake success changes nothing: the
judge gets no record (0 points), or a record whose values it checks itself.

The hidden tests are removed from the check cells before the notebook runs (`StripHiddenTests`):
they read story variables a student can edit and ran in the student's kernel, so they cannot be
trusted to decide anything, and the feedback should show the check's message, not their source.
A graded cell that calls no course check (none in this course; e.g. a plain `assert`) is graded
by its outputs as nbgrader does, and reported as "not judged".
"""

from __future__ import annotations

import ast
import contextlib
import io
import re

import torch
from nbformat.v4 import new_output
from nbgrader.preprocessors import NbGraderPreprocessor
from nbgrader.utils import compute_checksum, is_grade

from grading import report

HIDDEN = re.compile(
    r"^[ \t]*### BEGIN HIDDEN TESTS.*?^[ \t]*### END HIDDEN TESTS[^\n]*\n?", re.M | re.S
)
MAX_RECORD = 50 * 1024 * 1024  # bytes per record file


def strip_hidden_tests(source: str) -> str:
    """The cell's source without its ### BEGIN/END HIDDEN TESTS regions."""
    return HIDDEN.sub("", source).rstrip() + ("\n" if source.endswith("\n") else "")


class StripHiddenTests(NbGraderPreprocessor):
    """Remove the hidden-test regions from graded cells (they neither run nor reach feedback)."""

    def preprocess_cell(self, cell, resources, index):
        if is_grade(cell) and cell.cell_type == "code" and "HIDDEN TESTS" in cell.source:
            cell.source = strip_hidden_tests(cell.source)
            if "checksum" in cell.metadata.nbgrader:  # the graded notebook stays consistent
                cell.metadata.nbgrader["checksum"] = compute_checksum(cell)
        return cell, resources


def checks_called(source: str) -> list[str]:
    """Names of the course checks a cell calls, in order: `check_x(fn)` -> ['check_x']."""
    from course_lib import checks

    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    names = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id.startswith("check_")
            and callable(getattr(checks, node.func.id, None))
            and node.func.id not in names
        ):
            names.append(node.func.id)
    return names


def load_record(blob: bytes) -> dict | None:
    """One recorded check run, read as plain data; None if it is not one."""
    if len(blob) > MAX_RECORD:
        return None
    try:
        record = torch.load(io.BytesIO(blob), weights_only=True, map_location="cpu")
    except Exception:
        return None
    return record if isinstance(record, dict) and isinstance(record.get("check"), str) else None


def verdict(check_name: str, blobs: list[bytes]) -> tuple[bool, str]:
    """(passed, message) of one check from the records made while its cell ran.

    The last complete top-level run of that check counts (a learner may run a cell twice).
    """
    from course_lib import checks
    from course_lib.checks import _replay

    check = getattr(checks, check_name)
    runs = [r for r in map(load_record, blobs) if r is not None]
    runs = [r for r in runs if r["check"] == check_name and r.get("depth", 0) == 0]
    if not runs:
        return False, (
            f"{check_name} did not run in this cell, so nothing could be judged (was the cell "
            "changed, or the check replaced in the notebook?)"
        )
    record = runs[-1]
    with _replay.replaying(record) as replay, contextlib.redirect_stdout(io.StringIO()):
        try:
            check(replay.fn)
        except AssertionError as exc:
            return False, str(exc) or f"{check_name} failed"
        except Exception as exc:  # a record the check cannot use fails only this cell
            return False, f"{check_name} could not be judged: {type(exc).__name__}: {exc}"
    if replay.position != len(replay.calls):
        return False, f"{check_name}: the notebook recorded more calls than the check makes"
    return True, ""


def _judged_outputs(cell, passed: bool, message: str) -> list:
    """The cell's outputs with the judge's verdict as the only thing that can cost points.

    Errors of the kernel go, except one that says what the judge says (it keeps the learner's
    traceback and any hint about an earlier exercise); results become displays (nbgrader reads
    a number result as partial credit); stderr becomes stdout (a warning costs nothing).
    """
    kept, agreeing = [], None
    for out in cell.outputs:
        kind = out.get("output_type")
        if kind == "error":
            if not passed and agreeing is None and str(out.get("evalue", "")).startswith(message):
                agreeing = out
            continue
        if kind == "execute_result":
            out = new_output(
                "display_data", data=out.get("data", {}), metadata=out.get("metadata", {})
            )
        elif kind == "stream" and out.get("name") == "stderr":
            out["name"] = "stdout"
        kept.append(out)
    if not passed:
        kept.append(
            agreeing
            or new_output(
                "error",
                ename="AssertionError",
                evalue=message,
                traceback=[f"AssertionError: {message}"],
            )
        )
    return kept


class Judge(NbGraderPreprocessor):
    """Decide each check cell from the sandbox's records (after SandboxedExecute)."""

    def preprocess(self, nb, resources):
        outcome = resources.get("sandbox")
        records = getattr(outcome, "records", {}) or {}
        verdicts: dict[str, dict] = {}
        for cell in nb.cells:
            if not (is_grade(cell) and cell.cell_type == "code"):
                continue
            gid = cell.metadata.nbgrader.get("grade_id", "")
            names = checks_called(cell.source)
            if not names:
                verdicts[gid] = {"judged": False, "passed": None, "message": ""}
                continue
            passed, message = True, ""
            for name in names:
                ok, why = verdict(name, records.get(gid, []))
                if not ok:
                    passed, message = False, why
                    break
            cell.outputs = _judged_outputs(cell, passed, message)
            verdicts[gid] = {"judged": True, "passed": passed, "message": message}
        resources["verdicts"] = verdicts
        entry = report.entry(resources)
        entry["verdicts"] = verdicts
        entry["limits"], entry["refused"] = _limits_and_refusals(nb)
        return nb, resources


def _limits_and_refusals(nb) -> tuple[list[str], list[str]]:
    """Cells that hit a grader's limit, and errors that say the sandbox refused something."""
    limits, refused = [], []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if out.get("output_type") != "error":
                continue
            where = cell.metadata.get("nbgrader", {}).get("grade_id") or f"cell {i}"
            if out.get("ename") in ("CellTimeoutError", "KernelDied", "KernelUnresponsive"):
                limits.append(f"{where}: {out.get('ename')}")
            text = f"{out.get('ename')}: {out.get('evalue', '')}"
            if any(r in text for r in report.REFUSALS):
                refused.append(f"{where}: {text[:160]}")
        text = "".join(
            o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream"
        )
        if "output truncated by the grader" in text:
            limits.append(f"cell {i}: output truncated")
    return limits, refused
