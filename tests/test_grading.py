"""Graded exercises end to end: nbgrader builds the student notebooks, autogrades, gives feedback.

The notebooks are discovered at run time: every notebooks/*.ipynb with nbgrader cells is tested,
so a new exercise is covered with no change here. The expensive parts run once per session:

- the student build (`grading.grade.build_student`, what `make student` runs);
- one `grading.grade.grade` call (what `make grade` runs) on three submissions of each exercise
  notebook: the instructor's solutions, the blank student version and, where the catalogue
  below has one, a version with known mistakes. Each submission gets a progress() cell appended;
- one more on a tiny synthetic notebook whose submissions raise, loop, flood output and kill
  the kernel, graded with a 3 s limit per exercise cell.

The blank submission's autograde is the "blank student notebook runs top to bottom" run: the
grader executes the generated student notebook with nbclient (GuardedExecute, in a bubblewrap
sandbox where bubblewrap is available, else unsandboxed) with errors allowed, and the judge
decides each check cell from the values the learner's functions returned. `nbgrader validate [--invert]` would execute each notebook
once more, so the tests apply nbgrader's own Validator to the notebooks already executed (the same
verdict), and run the real `nbgrader validate` command on the tiny notebook.

Time: about three runs of each exercise notebook. Notebooks in SLOW_NOTEBOOKS (minutes of
training) are only checked statically unless GRADING_NOTEBOOKS=all; GRADING_NOTEBOOKS=03_x,06_y
runs just those.
"""

from __future__ import annotations

import ast
import csv
import html
import json
import os
import re
import subprocess
import symtable
import sys
import textwrap
import time
from pathlib import Path
from queue import Empty

import nbformat
import pytest
from IPython.core.inputtransformer2 import TransformerManager
from nbclient.util import ensure_async
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook
from nbgrader.preprocessors import CheckCellMetadata
from nbgrader.utils import is_grade, is_solution
from nbgrader.validator import Validator

from course_lib import checks
from course_lib.checks._hints import HINTS, SOFTMAX_AXIS
from course_lib.checks.masking import CAUSAL_HINTS, PAD_HINTS
from grading import grade, sandbox
from grading.execute import GuardedExecute

ROOT = Path(__file__).resolve().parent.parent
EXERCISE_NOTEBOOKS = grade.course_notebooks(grade.NOTEBOOKS)[0]
# Executed by default: two notebooks of about 15 s whose checks have catalogued mistakes.
DEFAULT_EXECUTED = ("03_self_attention", "06_masking")
_ONLY = {s.strip() for s in os.environ.get("GRADING_NOTEBOOKS", "").split(",") if s.strip()}
EXECUTED_NOTEBOOKS = [
    p for p in EXERCISE_NOTEBOOKS if "all" in _ONLY or p.stem in (_ONLY or DEFAULT_EXECUTED)
] or EXERCISE_NOTEBOOKS[:1]
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# the behaviour tested here does not depend on the sandbox: without bubblewrap the notebooks run
# unsandboxed (tests/test_grading_sandbox.py and tests/test_grading_class.py test the sandbox)
SANDBOX = "bwrap" if sandbox.bwrap_path() else "none"
PROGRESS_CELL = (
    "import json as _json\n"
    "from course_lib.checks import progress as _progress\n"
    "print('PROGRESS ' + _json.dumps({k: v[0] for k, v in _progress().items()}))"
)

pytestmark = pytest.mark.skipif(not EXERCISE_NOTEBOOKS, reason="no notebook has exercises yet")


def _ids(paths: list[Path]) -> list[str]:
    return [p.stem for p in paths]


def _executed() -> list:
    """Every exercise notebook; those not executed this run are skipped, saying how to run them."""
    why = "not executed by default (a full run of each notebook): GRADING_NOTEBOOKS=all runs it"
    return [
        pytest.param(p, id=p.stem, marks=() if p in EXECUTED_NOTEBOOKS else pytest.mark.skip(why))
        for p in EXERCISE_NOTEBOOKS
    ]


# ----------------------------------------------------------------------------- notebook anatomy


def _region(source: str, marker: str) -> list[str]:
    """Lines strictly between `### BEGIN <marker>` and `### END <marker>`."""
    lines, inside = [], False
    for line in source.splitlines():
        if f"BEGIN {marker}" in line:
            inside = True
        elif f"END {marker}" in line:
            inside = False
        elif inside:
            lines.append(line)
    return lines


def _outside(source: str) -> list[str]:
    """Lines outside every solution and hidden-test region (what learners see anyway)."""
    lines, inside = [], False
    for line in source.splitlines():
        if "### BEGIN SOLUTION" in line or "### BEGIN HIDDEN TESTS" in line:
            inside = True
        elif "### END SOLUTION" in line or "### END HIDDEN TESTS" in line:
            inside = False
        elif not inside:
            lines.append(line)
    return lines


def _check_call(cell) -> tuple[str, str]:
    """(check function, learner function) of a grade cell: `check_x(fn)` -> ('check_x', 'fn')."""
    visible = cell.source.split("### BEGIN HIDDEN TESTS")[0]
    for node in ast.walk(ast.parse(visible)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id.startswith("check_")
        ):
            arg = node.args[0].id if node.args and isinstance(node.args[0], ast.Name) else ""
            return node.func.id, arg
    return "", ""


def _exercise_of(check_name: str) -> str | None:
    """The key of checks.CHECKS (what progress() reports) whose check is `check_name`."""
    for exercise, (check, _) in checks.CHECKS.items():
        if check.__name__ == check_name:
            return exercise
    return None


def _grade_cells(nb) -> list:
    return [c for c in nb.cells if is_grade(c)]


def _read(path: Path):
    return nbformat.read(path, as_version=4)


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def student_build(tmp_path_factory):
    """`make student` into a temporary course directory; (course dir, student dir, seconds)."""
    base = tmp_path_factory.mktemp("student_build")
    start = time.perf_counter()
    grade.build_student(grade.NOTEBOOKS, base / "course", base / "student")
    return base / "course", base / "student", time.perf_counter() - start


@pytest.fixture(scope="session")
def graded(tmp_path_factory, student_build):
    """`make grade` on solutions, blank and mistakes submissions of every executed notebook."""
    _, student, _ = student_build
    base = tmp_path_factory.mktemp("graded")
    subs = base / "submissions"
    mistakes_made: dict[str, dict[str, str]] = {}
    for path in EXECUTED_NOTEBOOKS:
        solutions = _read(path)
        solutions.cells.append(new_code_cell(PROGRESS_CELL))
        (subs / "solutions").mkdir(parents=True, exist_ok=True)
        nbformat.write(solutions, subs / "solutions" / path.name)
        blank = _read(student / path.name)
        blank.cells.append(new_code_cell(PROGRESS_CELL))
        (subs / "blank").mkdir(parents=True, exist_ok=True)
        nbformat.write(blank, subs / "blank" / path.name)
        wrong, made = _with_mistakes(_read(path))
        if made:
            wrong.cells.append(new_code_cell(PROGRESS_CELL))
            (subs / "mistakes").mkdir(parents=True, exist_ok=True)
            nbformat.write(wrong, subs / "mistakes" / path.name)
            mistakes_made[path.stem] = made
    course = base / "course"
    start = time.perf_counter()
    with pytest.MonkeyPatch.context() as mp:
        for key, value in ONE_THREAD.items():
            mp.setenv(key, value)
        csv_path = grade.grade(
            subs,
            grade.NOTEBOOKS,
            course,
            base / "student",
            timeout=900,
            story_timeout=1800,
            sandbox=SANDBOX,
        )
    seconds = time.perf_counter() - start
    with csv_path.open() as f:
        scores = {(r["student"], r["notebook"], r["grade_id"]): r for r in csv.DictReader(f)}
    autograded = {
        (student, path.stem): course / "autograded" / student / path.stem / path.name
        for student in ("solutions", "blank", "mistakes")
        for path in EXECUTED_NOTEBOOKS
    }
    return {
        "course": course,
        "scores": scores,
        "mistakes": mistakes_made,
        "seconds": seconds,
        "autograded": autograded,
    }


# ----------------------------------------------------------------------------- known mistakes

# check -> (helper with the learner function's positional arguments, hint the check must give),
# in order of preference when a notebook has several of these checks
MISTAKES = {
    "check_scaled_dot_product_attention": (
        """
        def {name}(q, k, v, mask=None):
            import math, torch
            scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            weights = torch.softmax(scores, dim=-2)  # the mistake: over the queries
            return weights @ v, weights
        """,
        SOFTMAX_AXIS.format(dim=-2),
    ),
    "check_causal_mask": (
        """
        def {name}(L, *rest, **kw):
            import torch
            return torch.ones(L, L, dtype=torch.bool).tril(1)  # the mistake: sees one step ahead
        """,
        CAUSAL_HINTS["future"],
    ),
    "check_self_attention": (
        """
        def {name}(x, w_q, w_k, w_v):
            import torch
            q, k, v = x @ w_q, x @ w_k, x @ w_v
            weights = torch.softmax(q @ k.transpose(-2, -1), dim=-1)  # the mistake: no 1/sqrt(d_k)
            return weights @ v, weights
        """,
        HINTS["no_scale"],
    ),
    "check_padding_mask": (
        """
        def {name}(tokens, pad_id, *rest, **kw):
            return (tokens == pad_id)[:, None, None, :]  # the mistake: True at PAD
        """,
        PAD_HINTS["reversed"],
    ),
    "check_split_heads": (
        """
        def {name}(x, num_heads, *rest, **kw):
            B, L, D = x.shape
            return x.reshape(B, num_heads, L, D // num_heads)  # the mistake: no transpose
        """,
        HINTS["split_no_transpose"],
    ),
}


def _with_mistakes(nb) -> tuple[object, dict[str, str]]:
    """The instructor notebook with one exercise replaced by a known mistake, the others right.

    The exercise is the one whose check comes first in MISTAKES; a notebook with a single graded
    cell is left alone (no partial credit to show). Returns the notebook and
    {grade_id of the check cell: the hint its feedback must show}.
    """
    cells = _grade_cells(nb)
    candidates = [(c, *_check_call(c)) for c in cells if _check_call(c)[0] in MISTAKES]
    candidates.sort(key=lambda item: list(MISTAKES).index(item[1]))
    for check_cell, check_name, fn in candidates if len(cells) > 1 else []:
        i = nb.cells.index(check_cell)
        solution = next(
            (c for c in reversed(nb.cells[:i]) if is_solution(c) and f"def {fn}(" in c.source),
            None,
        )
        defs = [n for n in ast.parse(solution.source).body if isinstance(n, ast.FunctionDef)]
        target = next((d for d in defs if d.name == fn), None) if solution else None
        if target is None:
            continue
        helper, hint = MISTAKES[check_name]
        params = [a.arg for a in target.args.posonlyargs + target.args.args]
        wrong = f"_mistake_{fn}"
        solution.source = (
            textwrap.dedent(helper).format(name=wrong).strip()
            + f"\n\n\ndef {fn}({ast.unparse(target.args)}):\n"
            + f"    return {wrong}({', '.join(params)})\n"
        )
        return nb, {check_cell.metadata.nbgrader["grade_id"]: hint}
    return nb, {}


def _text_of(html_text: str) -> str:
    """What a reader sees in an HTML page: tags dropped, entities decoded, spaces collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", html_text)).split())


def _progress(path: Path) -> dict[str, str]:
    """The statuses printed by the appended progress() cell."""
    for out in _read(path).cells[-1].get("outputs", []):
        for line in out.get("text", "").splitlines():
            if line.startswith("PROGRESS "):
                return json.loads(line[len("PROGRESS ") :])
    raise AssertionError(f"progress() printed nothing in {path.name}")


def _expected_progress(nb) -> dict[str, str]:
    """exercise (progress() key) -> grade_id, for the checks this notebook calls."""
    found = {}
    for cell in _grade_cells(nb):
        exercise = _exercise_of(_check_call(cell)[0])
        if exercise:
            found[exercise] = cell.metadata.nbgrader["grade_id"]
    return found


def _validate(path: Path, invert: bool) -> dict:
    """nbgrader's Validator verdict on an already executed notebook (no second execution)."""
    validator = Validator(invert=invert)
    validator.preprocessors = [CheckCellMetadata]
    return validator.validate(str(path))


# ----------------------------------------------------------------------------- exercise markup


@pytest.mark.parametrize("path", EXERCISE_NOTEBOOKS, ids=_ids(EXERCISE_NOTEBOOKS))
def test_every_check_cell_calls_a_registered_check_and_has_hidden_tests(path):
    nb = _read(path)
    ids = [c.metadata.nbgrader["grade_id"] for c in nb.cells if "nbgrader" in c.metadata]
    assert len(ids) == len(set(ids)), f"duplicate grade_id in {path.name}"
    for cell in _grade_cells(nb):
        gid = cell.metadata.nbgrader["grade_id"]
        assert cell.metadata.nbgrader.get("points", 0) > 0, f"{gid}: a check cell needs points"
        assert cell.metadata.nbgrader.get("locked"), f"{gid}: a check cell must be locked"
        name, fn = _check_call(cell)
        assert name and fn, f"{gid}: the check cell should call check_<name>(your_function)"
        assert hasattr(checks, name), f"{gid}: course_lib.checks has no {name}"
        assert _exercise_of(name), f"{gid}: add {name} to course_lib.checks.CHECKS for progress()"
        assert _region(cell.source, "HIDDEN TESTS"), f"{gid}: no ### BEGIN/END HIDDEN TESTS"
    for cell in nb.cells:
        if is_solution(cell):
            gid = cell.metadata.nbgrader["grade_id"]
            assert _region(cell.source, "SOLUTION"), f"{gid}: no ### BEGIN/END SOLUTION"


def _names(source: str) -> tuple[set[str], set[str]]:
    """(global names a cell binds, global names it reads), with IPython magics translated."""
    table = symtable.symtable(TransformerManager().transform_cell(source), "<cell>", "exec")
    binds = {s.get_name() for s in table.get_symbols() if s.is_assigned() or s.is_imported()}
    reads: set[str] = set()

    def walk(t: symtable.SymbolTable) -> None:
        for sym in t.get_symbols():
            if sym.is_referenced() and (t.get_type() == "module" or sym.is_global()):
                reads.add(sym.get_name())
        for child in t.get_children():
            walk(child)

    walk(table)
    return binds, reads


@pytest.mark.parametrize("path", EXERCISE_NOTEBOOKS, ids=_ids(EXERCISE_NOTEBOOKS))
def test_story_cells_do_not_use_what_the_learner_writes(path):
    """Static twin of the blank run, for every notebook: after an exercise, a story cell must not
    read a name bound by a solution or check cell (the learner's function), unless a story cell
    rebound it in between."""
    learner: dict[str, str] = {}  # name -> grade_id of the cell that bound it
    uses = []
    for i, cell in enumerate(_read(path).cells):
        if cell.cell_type != "code":
            continue
        binds, reads = _names(cell.source)
        if is_solution(cell) or is_grade(cell):
            learner.update(dict.fromkeys(binds, cell.metadata.nbgrader["grade_id"]))
            continue
        if "raises-exception" not in cell.metadata.get("tags", []):
            uses += [f"cell {i} reads {n} from {learner[n]}" for n in reads - binds if n in learner]
        for name in binds:
            learner.pop(name, None)
    assert not uses, f"{path.name}: use course_lib's reference in the story instead: {uses}"


# ----------------------------------------------------------------------------- student build


def test_student_build_has_every_notebook_without_outputs(student_build):
    _, student, seconds = student_build
    names = sorted(p.name for p in grade.NOTEBOOKS.glob("*.ipynb"))
    assert sorted(p.name for p in student.glob("*.ipynb")) == names
    for path in student.glob("*.ipynb"):
        for cell in _read(path).cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{path.name} has outputs"
    print(f"student build: {seconds:.1f} s")


@pytest.mark.parametrize("path", EXERCISE_NOTEBOOKS, ids=_ids(EXERCISE_NOTEBOOKS))
def test_student_exercises_are_stubs_and_hidden_tests_are_gone(student_build, path):
    _, student, _ = student_build
    nb = _read(student / path.name)
    assert len(_grade_cells(nb)) == len(_grade_cells(_read(path)))
    for cell in nb.cells:
        assert "BEGIN SOLUTION" not in cell.source and "HIDDEN TESTS" not in cell.source
        if is_solution(cell) and cell.cell_type == "code":
            assert "raise NotImplementedError()" in cell.source


@pytest.mark.parametrize("path", EXERCISE_NOTEBOOKS, ids=_ids(EXERCISE_NOTEBOOKS))
def test_no_solution_or_hidden_test_text_reaches_the_student(student_build, path):
    _, student, _ = student_build
    instructor = _read(path)
    secret = [
        line
        for cell in instructor.cells
        for line in _region(cell.source, "SOLUTION") + _region(cell.source, "HIDDEN TESTS")
    ]
    public_text = "\n".join(line for cell in instructor.cells for line in _outside(cell.source))
    nb = _read(student / path.name)
    student_text = "\n".join(
        [c.source for c in nb.cells] + [json.dumps(c.get("outputs", [])) for c in nb.cells]
    )
    leaked = []
    for line in secret:
        code = line.split("  #")[0].strip()
        if len(code) < 8 or code.startswith("#") or code in public_text:
            continue  # trivial, a comment, or shown to learners anyway
        if code in student_text or line.strip() in student_text:
            leaked.append(line.strip())
    assert not leaked, f"{path.name}: solution/hidden-test lines in the student version: {leaked}"


# ----------------------------------------------------------------------------- blank student run


@pytest.mark.parametrize("path", _executed())
def test_blank_student_notebook_fails_only_in_its_exercise_cells(graded, path):
    nb = _read(graded["autograded"]["blank", path.stem])
    unexpected = []
    for i, cell in enumerate(nb.cells):
        errors = [o for o in cell.get("outputs", []) if o.output_type == "error"]
        allowed = is_solution(cell) or is_grade(cell)
        allowed = allowed or "raises-exception" in cell.metadata.get("tags", [])
        if errors and not allowed:
            unexpected.append(f"cell {i}: {errors[0].ename}: {errors[0].evalue[:200]}")
    assert not unexpected, f"story cells fail without the exercises: {unexpected}"


@pytest.mark.parametrize("path", _executed())
def test_validate_invert_every_blank_exercise_fails(graded, path):
    executed = graded["autograded"]["blank", path.stem]
    assert _validate(executed, invert=True) == {}  # no grade cell passes
    nb = _read(executed)
    for cell in _grade_cells(nb):
        assert any(o.output_type == "error" for o in cell.outputs), cell.metadata.nbgrader


@pytest.mark.parametrize("path", _executed())
def test_progress_reports_blank_exercises_as_not_attempted(graded, path):
    status = _progress(graded["autograded"]["blank", path.stem])
    for exercise in _expected_progress(_read(path)):
        assert status[exercise] == "not attempted", (exercise, status[exercise])


# ----------------------------------------------------------------------------- autograding


@pytest.mark.parametrize("path", _executed())
def test_instructor_solutions_get_full_marks(graded, path):
    rows = [r for (s, nb, _), r in graded["scores"].items() if s == "solutions" and nb == path.stem]
    assert rows and all(r["status"] == "graded" for r in rows), rows
    for r in rows:
        assert float(r["points"]) == float(r["max_points"]), r
    autograded = graded["autograded"]["solutions", path.stem]
    assert _validate(autograded, invert=False) == {}  # `nbgrader validate` finds no failure
    for exercise in _expected_progress(_read(path)):
        assert _progress(autograded)[exercise] == "pass", exercise


@pytest.mark.parametrize("path", _executed())
def test_blank_submission_gets_zero(graded, path):
    rows = [r for (s, nb, _), r in graded["scores"].items() if s == "blank" and nb == path.stem]
    assert rows and all(r["status"] == "graded" and float(r["points"]) == 0 for r in rows), rows
    feedback = graded["course"] / "feedback" / "blank" / path.stem / f"{path.stem}.html"
    text = _text_of(feedback.read_text())
    assert "Exercise not attempted yet" in text
    assert "_checking.py" not in text, "the feedback shows the checks' machinery"


@pytest.mark.parametrize("path", _executed())
def test_known_mistakes_get_partial_credit_and_their_hint_in_the_feedback(graded, path):
    made = graded["mistakes"].get(path.stem)
    if not made:
        pytest.skip(f"no catalogued mistake applies to {path.stem}")
    rows = {
        g: r for (s, nb, g), r in graded["scores"].items() if s == "mistakes" and nb == path.stem
    }
    total = sum(float(r["points"]) for r in rows.values())
    assert 0 < total < sum(float(r["max_points"]) for r in rows.values()), "partial credit"
    for gid, r in rows.items():
        expected = 0.0 if gid in made else float(r["max_points"])
        assert float(r["points"]) == expected, (gid, r)
    feedback = graded["course"] / "feedback" / "mistakes" / path.stem / f"{path.stem}.html"
    text = _text_of(feedback.read_text())
    for gid, hint in made.items():
        assert " ".join(hint.split()) in text, f"{gid}: the feedback lacks the hint {hint!r}"


def test_mistakes_cover_at_least_two_checks(graded):
    made = [gid for per_nb in graded["mistakes"].values() for gid in per_nb]
    if len(made) < 2 and _ONLY:
        pytest.skip("GRADING_NOTEBOOKS selects notebooks with fewer catalogued mistakes")
    assert len(made) >= 2, made
    print(
        f"autograded {len(EXECUTED_NOTEBOOKS)} notebooks x 3 submissions: {graded['seconds']:.0f} s"
    )


# ----------------------------------------------------------------------------- robustness

TINY_GOOD = "    return x + 1"
TINY_SUBMISSIONS = {  # student -> {exercise: solution cell}; exercises not named are right
    "raises": {
        "a": "def a(x):\n    return x + 1\nraise ValueError('a crash at the top level')",
        "b": "def b(x):\n    raise RuntimeError('inside the function')",
    },
    "loops": {"b": "def b(x):\n    while True:\n        pass"},
    "floods": {
        "b": "def b(x):\n    while True:\n        print('spam ' * 100)",
        "c": "def c(x):\n    print('y' * 20_000_000)\n    return x + 1",
    },
    "dies": {
        "b": "def b(x):\n    import os\n    os._exit(1)",
        "c": "def c(x):\n    exit()",
    },
    # honest: a correct function that warns (stderr in the check cell), and a notebook with
    # copied cells (JupyterLab copy/paste: two cells with one grade_id)
    "warns": {
        "a": "def a(x):\n    import warnings\n    warnings.warn('slow path')\n    return x + 1"
    },
    "copies": {},
}
TINY_LOST = {"raises": {"b"}, "loops": {"b"}, "floods": {"b"}, "dies": {"b", "c"}}
# student -> grade_ids whose cell is copied; the copy of a solution cell that comes first keeps
# the stub (the learner pasted, then finished the later copy)
TINY_COPIED = {"copies": ("ex_b", "ex_c_check")}


def _tiny_notebook(bodies: dict[str, str]):
    """A small graded notebook: a story cell, then per exercise a solution and a check cell."""
    cells = [new_markdown_cell("# A tiny graded notebook"), new_code_cell("story = 41")]
    for name, body in bodies.items():
        meta = {"solution": True, "grade": False, "locked": False, "schema_version": 3}
        cells.append(
            new_code_cell(
                f"def {name}(x):\n    ### BEGIN SOLUTION\n{body}\n    ### END SOLUTION",
                metadata={"nbgrader": {**meta, "grade_id": f"ex_{name}"}},
            )
        )
        meta = {"solution": False, "grade": True, "locked": True, "points": 1, "schema_version": 3}
        cells.append(
            new_code_cell(
                f"assert {name}(1) == 2, 'add one'\n### BEGIN HIDDEN TESTS\n"
                f"assert {name}(5) == 6\n### END HIDDEN TESTS",
                metadata={"nbgrader": {**meta, "grade_id": f"ex_{name}_check"}},
            )
        )
    cells.append(new_code_cell("story += 1\nprint(story)"))
    nb = new_notebook(cells=cells)
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """The tiny notebook built, and its bad submissions graded with a 3 s limit per cell."""
    base = tmp_path_factory.mktemp("tiny")
    (base / "notebooks").mkdir()
    nbformat.write(
        _tiny_notebook(dict.fromkeys("abcd", TINY_GOOD)), base / "notebooks" / "tiny.ipynb"
    )
    grade.build_student(base / "notebooks", base / "course", base / "student")
    blank = _read(base / "student" / "tiny.ipynb")
    for student, changes in TINY_SUBMISSIONS.items():
        nb = _read(base / "student" / "tiny.ipynb")
        for cell in nb.cells:
            if is_solution(cell):
                name = cell.metadata.nbgrader["grade_id"].removeprefix("ex_")
                cell.source = changes.get(name, f"def {name}(x):\n{TINY_GOOD}")
        for gid in TINY_COPIED.get(student, ()):
            i = next(
                i
                for i, c in enumerate(nb.cells)
                if c.metadata.get("nbgrader", {}).get("grade_id") == gid
            )
            copy = nbformat.from_dict(json.loads(json.dumps(nb.cells[i])))
            copy.id = f"{nb.cells[i].id}-copy"
            if is_solution(copy):
                copy.source = copy.source.replace(TINY_GOOD, "    raise NotImplementedError()")
            nb.cells.insert(i, copy)
        (base / "submissions" / student).mkdir(parents=True)
        nbformat.write(nb, base / "submissions" / student / "tiny.ipynb")
    assert blank.cells  # the blank version exists too (used by the CLI test)
    start = time.perf_counter()
    csv_path = grade.grade(
        base / "submissions",
        base / "notebooks",
        base / "course",
        base / "student",
        timeout=3,
        sandbox=SANDBOX,
    )
    seconds = time.perf_counter() - start
    with csv_path.open() as f:
        rows = {(r["student"], r["grade_id"]): r for r in csv.DictReader(f)}
    return base, rows, seconds


@pytest.mark.parametrize("student", list(TINY_SUBMISSIONS))
def test_bad_submission_loses_only_its_own_exercises(tiny, student):
    base, rows, seconds = tiny
    for name in "abcd":
        row = rows[student, f"ex_{name}_check"]
        assert row["status"] == "graded", row
        expected = 0.0 if name in TINY_LOST.get(student, ()) else 1.0
        assert float(row["points"]) == expected, (student, name, row)
    autograded = base / "course" / "autograded" / student / "tiny" / "tiny.ipynb"
    assert autograded.stat().st_size < 1_000_000, "the grader must bound what a cell prints"
    feedback = base / "course" / "feedback" / student / "tiny" / "tiny.html"
    assert feedback.stat().st_size < 1_500_000
    story = _read(autograded).cells[-1]
    assert any("42" in o.get("text", "") for o in story.outputs), (
        "the story after the exercises ran"
    )
    print(f"4 bad submissions graded in {seconds:.0f} s")


class _LosesAReply(GuardedExecute):
    """GuardedExecute that never receives the execute reply of a cell containing LOSE."""

    async def _async_poll_for_reply(self, msg_id, cell, *args):
        if "LOSE" not in cell.source:
            return await super()._async_poll_for_reply(msg_id, cell, *args)
        channel = self.kc.shell_channel
        real = channel.get_msg

        async def get_msg(*a, **k):
            msg = await ensure_async(real(*a, **k))
            if msg["parent_header"].get("msg_id") == msg_id:
                raise Empty  # the reply is lost on the way
            return msg

        channel.get_msg = get_msg
        try:
            return await super()._async_poll_for_reply(msg_id, cell, *args)
        finally:
            channel.get_msg = real


def test_a_lost_kernel_reply_costs_seconds_not_the_time_limit(tmp_path):
    cells = [new_code_cell("x = 1"), new_code_cell("print(x + 1)  # LOSE"), new_code_cell("x + 2")]
    nb = new_notebook(cells=cells)
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    executor = _LosesAReply(timeout=600, story_timeout=600, lost_reply_grace=2.0)
    start = time.perf_counter()
    nb, _ = executor.preprocess(nb, {"metadata": {"path": str(tmp_path)}})
    took = time.perf_counter() - start
    assert took < 120, f"waited {took:.0f} s for a reply the kernel had sent"
    assert executor.lost_replies == [1]
    assert nb.cells[1].outputs[0]["text"] == "2\n"
    assert nb.cells[2].outputs[0]["data"]["text/plain"] == "3", "the next cell ran"


def test_loop_is_reported_as_a_timeout_and_a_dead_kernel_as_such(tiny):
    base, _, _ = tiny

    def errors(student):
        nb = _read(base / "course" / "autograded" / student / "tiny" / "tiny.ipynb")
        return {
            o.ename
            for c in nb.cells
            if c.cell_type == "code"
            for o in c.outputs
            if o.output_type == "error"
        }

    assert "CellTimeoutError" in errors("loops")
    assert {"KernelDied", "KernelExit"} <= errors("dies")


def test_nbgrader_validate_command_passes_instructor_and_inverts_on_student(tiny):
    base = tiny[0]
    cmd = [sys.executable, "-m", "nbgrader", "validate"]
    env = {**os.environ, **ONE_THREAD}
    run = subprocess.run(
        [*cmd, str(base / "notebooks" / "tiny.ipynb")], capture_output=True, text=True, env=env
    )
    assert "Success! Your notebook passes all the tests." in run.stdout, run.stdout + run.stderr
    run = subprocess.run(
        [*cmd, "--invert", str(base / "student" / "tiny.ipynb")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert "Success! The notebook does not pass any tests." in run.stdout, run.stdout + run.stderr


def test_submissions_outside_the_layout_are_reported_not_graded(tmp_path):
    (tmp_path / "alice").mkdir()
    (tmp_path / "alice" / "03_self_attention.ipynb").write_text("{}")
    (tmp_path / "alice" / "notes.txt").write_text("")
    (tmp_path / "alice" / "99_unknown.ipynb").write_text("{}")
    (tmp_path / "stray.ipynb").write_text("{}")
    (tmp_path / "bad id!").mkdir()
    found, warnings = grade.find_submissions(tmp_path, ["03_self_attention"])
    assert [(s.student, s.notebook) for s in found] == [("alice", "03_self_attention")]
    assert len(warnings) == 4, warnings


def test_student_ids_are_fully_matched_unicode_and_unique_ignoring_case(tmp_path):
    for name in ("zoë", "李雷", "bob.smith@uni", "Alice", "alice", "eve\n", "_x", "a b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "03_self_attention.ipynb").write_text("{}")
    found, warnings = grade.find_submissions(tmp_path, ["03_self_attention"])
    students = sorted(s.student for s in found)
    assert students == sorted(["zoë", "李雷", "bob.smith@uni", "Alice"]), students
    assert len(warnings) == 4, warnings  # alice (case), "eve\n", "_x", "a b"
