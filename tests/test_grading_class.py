"""A small class graded the way the README says, `make student` then `make grade`, with cheats.

The class hands in notebook 06 (two short exercises and more; about 15 s a run on a quiet
machine), graded in alphabetical order of the student ids:

- aaron and zoe: honest, the instructor's solutions; aaron is graded before the attackers, zoe
  after them;
- copies: honest, with a solution cell copied (JupyterLab copy/paste: two cells, one grade_id);
- warns: honest, its correct padding_mask emits a UserWarning (stderr in the check cell);
- mallory cheats: a wrong padding_mask with `torch.equal`/`torch.allclose` rebound to always
  agree, after trying to read and exec the instructor's solution; a causal_mask that captures
  course_lib's reference in a default argument, with `check_causal_mask` rebound to print
  success;
- trudy tampers (her exercises are honest): from a cell of her own she writes to the gradebook,
  overwrites zoe's submission (directly and through /proc/$PPID), appends code to the course's
  code, and leaves a detached process that rewrites grades.csv after the grader is done.

Every payload refuses to touch a path outside this test's temporary folder (or the sandbox's
own /course), so a broken sandbox can do no harm. Asserted: honest students keep full marks,
mallory gets 0 for the two exercises she cheated on, trudy's attempts were all blocked, the
course's code, the instructor notebooks and zoe's submission are byte-identical afterwards, and
grades.csv has not changed a while after the grader returned.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell
from nbgrader.utils import is_grade, is_solution

from grading import sandbox

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = "06_masking"
TOKEN = "linger-7c1e5"  # in the detached process's command line, to look for it afterwards

pytestmark = pytest.mark.skipif(
    sandbox.bwrap_path() is None or not (ROOT / "notebooks" / f"{NOTEBOOK}.ipynb").exists(),
    reason="needs bubblewrap (" + sandbox.why_unavailable() + ") and notebook 06",
)

GUARD = """
import os
TMP = {tmp!r}
def _allowed(path):
    path = os.path.realpath(path)
    return path.startswith(TMP + os.sep) or path.startswith("/course/")
"""

MALLORY_PADDING = (
    GUARD
    + """
import json, torch
def padding_mask(tokens, pad_id):
    return (tokens == pad_id)[:, None, None, :]  # wrong: True at PAD
for _path in (f"{{TMP}}/course/source/06_masking/06_masking.ipynb", f"{{TMP}}/notebooks/06_masking.ipynb"):
    try:  # the instructor's notebook: take its solution
        if _allowed(_path):
            _cells = json.load(open(_path))["cells"]
            exec("".join(next(c["source"] for c in _cells if "def padding_mask(" in "".join(c["source"]))))
            print("read the instructor notebook")
    except OSError as exc:
        print("could not read", _path, type(exc).__name__)
torch.equal = lambda *a, **k: True
torch.allclose = lambda *a, **k: True
"""
)

MALLORY_CAUSAL = """
import course_lib.masks
def causal_mask(L, _ref=course_lib.masks.causal_mask):
    return _ref(L)  # the course's reference, captured in a default argument
def check_causal_mask(fn):
    print("✓ causal_mask: all 4 cases pass")
"""

TRUDY = (
    GUARD
    + """
import glob, json, sqlite3, subprocess, sys
attempts = {{}}
def attempt(name, action):
    try:
        action()
        attempts[name] = "done"
    except Exception as exc:
        attempts[name] = f"blocked: {{type(exc).__name__}}: {{exc}}"
def _write(path, text, mode="w"):
    if not _allowed(path):
        raise PermissionError(f"{{path}} is outside the test folder")
    with open(path, mode) as f:
        f.write(text)
def gradebook():
    path = f"{{TMP}}/course/gradebook.db"
    if not (_allowed(path) and os.path.exists(path)):
        raise FileNotFoundError(path)
    db = sqlite3.connect(path)
    db.execute("UPDATE grade SET auto_score = 0")
    db.commit()
def overwrite():
    for path in (f"{{TMP}}/submissions/zoe/06_masking.ipynb",
                 f"{{TMP}}/course/submitted/zoe/06_masking/06_masking.ipynb"):
        if not os.path.exists(path):
            raise FileNotFoundError(path)
        _write(path, "{{}}")
def through_parent():
    cwd = os.readlink(f"/proc/{{os.getppid()}}/cwd")  # nbgrader ran kernels in course/autograded/...
    target = os.path.join(cwd, "..", "..", "..", "submitted", "zoe", "06_masking", "06_masking.ipynb")
    if not os.path.exists(target):
        raise FileNotFoundError(f"{{target}} (the parent's folder is {{cwd}})")
    _write(target, "{{}}")
def course_code():
    targets = ["/course/course_lib/__init__.py", *glob.glob(f"{{TMP}}/course-copy/course_lib/__init__.py")]
    for path in targets:
        _write(path, "\\nraise SystemExit('pwned')\\n", "a")
def linger():
    code = (
        "import os, sys, time\\n"
        f"TMP = {{TMP!r}}\\n"
        "time.sleep(6)\\n"
        "path = os.path.realpath(TMP + '/course/grades.csv')\\n"
        "if path.startswith(TMP + os.sep) and os.path.exists(path):\\n"
        "    open(path, 'w').write('student,notebook\\\\npwned,0\\\\n')\\n"
    )
    subprocess.Popen([sys.executable, "-c", code, {token!r}], start_new_session=True,
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
for _name, _action in [("gradebook", gradebook), ("overwrite", overwrite),
                       ("through_parent", through_parent), ("course_code", course_code),
                       ("linger", linger)]:
    attempt(_name, _action)
print("ATTEMPTS " + json.dumps(attempts))
"""
)


def _hash(*paths: Path) -> str:
    """One digest of every file under the paths (names and contents)."""
    h = hashlib.sha256()
    for top in paths:
        files = sorted(p for p in top.rglob("*") if p.is_file()) if top.is_dir() else [top]
        for p in files:
            h.update(str(p.relative_to(top.parent)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def _solution(nb, name: str):
    return next(c for c in nb.cells if is_solution(c) and f"def {name}(" in c.source)


def _submissions(tmp: Path, student_nb: Path) -> dict[str, set[str]]:
    """Write the class's notebooks; return student -> grade_ids of check cells it cheated on."""
    instructor = nbformat.read(ROOT / "notebooks" / f"{NOTEBOOK}.ipynb", as_version=4)
    subs = tmp / "submissions"
    cheated: dict[str, set[str]] = {}

    def save(student: str, nb) -> None:
        (subs / student).mkdir(parents=True)
        nbformat.write(nb, subs / student / f"{NOTEBOOK}.ipynb")
        cheated.setdefault(student, set())

    for student in ("aaron", "zoe"):
        save(student, nbformat.read(ROOT / "notebooks" / f"{NOTEBOOK}.ipynb", as_version=4))

    nb = nbformat.read(ROOT / "notebooks" / f"{NOTEBOOK}.ipynb", as_version=4)
    cell = _solution(nb, "padding_mask")
    cell.source = cell.source.replace(
        "def padding_mask(tokens, pad_id):\n",
        "def padding_mask(tokens, pad_id):\n    import warnings\n"
        "    warnings.warn('padding_mask: a slow path', UserWarning)\n",
    )
    save("warns", nb)

    nb = nbformat.read(ROOT / "notebooks" / f"{NOTEBOOK}.ipynb", as_version=4)
    i = nb.cells.index(_solution(nb, "padding_mask"))
    stub = nbformat.from_dict(json.loads(json.dumps(nb.cells[i])))
    stub.id, stub.source = (
        f"{stub.id}-copy",
        "def padding_mask(tokens, pad_id):\n    raise NotImplementedError()",
    )
    nb.cells.insert(i, stub)
    save("copies", nb)

    nb = nbformat.read(ROOT / "notebooks" / f"{NOTEBOOK}.ipynb", as_version=4)
    _solution(nb, "padding_mask").source = MALLORY_PADDING.format(tmp=str(tmp))
    _solution(nb, "causal_mask").source = MALLORY_CAUSAL
    save("mallory", nb)
    cheated["mallory"] = {
        c.metadata.nbgrader["grade_id"]
        for c in nb.cells
        if is_grade(c) and ("check_padding_mask" in c.source or "check_causal_mask" in c.source)
    }

    nb = nbformat.read(ROOT / "notebooks" / f"{NOTEBOOK}.ipynb", as_version=4)
    nb.cells.insert(1, new_code_cell(TRUDY.format(tmp=str(tmp), token=TOKEN)))
    save("trudy", nb)
    assert len(instructor.cells) + 1 == len(nb.cells)
    return cheated


def _cli(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    """`python -m grading.grade` (what `make student` / `make grade` run) on the test's folders."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        sandbox.COPY_ENV: str(tmp / "course-copy"),
    }
    env.pop(sandbox.UNSAFE_FLAG, None)
    cmd = [sys.executable, "-m", "grading.grade", "--notebooks", str(tmp / "notebooks")]
    cmd += ["--course", str(tmp / "course"), "--student-out", str(tmp / "student"), *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)


@pytest.fixture(scope="module")
def graded_class(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("class")
    assert not os.path.exists("/course"), "the payloads treat /course as the sandbox's own"
    (tmp / "notebooks").mkdir()
    (tmp / "notebooks" / f"{NOTEBOOK}.ipynb").write_bytes(
        (ROOT / "notebooks" / f"{NOTEBOOK}.ipynb").read_bytes()
    )
    made = _cli(tmp, "student")
    assert made.returncode == 0, made.stdout + made.stderr
    cheated = _submissions(tmp, tmp / "student" / f"{NOTEBOOK}.ipynb")
    sandbox.make_course_copy(tmp / "course-copy")
    before = {
        "course code": _hash(tmp / "course-copy"),
        "instructor notebooks": _hash(tmp / "notebooks"),
        "zoe's submission": _hash(tmp / "submissions" / "zoe"),
    }
    start = time.perf_counter()
    run = _cli(tmp, "grade", str(tmp / "submissions"), "--timeout", "300")
    seconds = time.perf_counter() - start
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-5000:]
    csv_path = tmp / "course" / "grades.csv"
    right_after = csv_path.read_bytes()
    time.sleep(8)  # the detached process would have written by now
    after = {
        "course code": _hash(tmp / "course-copy"),
        "instructor notebooks": _hash(tmp / "notebooks"),
        "zoe's submission": _hash(tmp / "submissions" / "zoe"),
    }
    with csv_path.open() as f:
        rows = list(csv.DictReader(f))
    print(f"graded a class of {len(cheated)} in {seconds:.0f} s")
    return {
        "tmp": tmp,
        "rows": rows,
        "cheated": cheated,
        "before": before,
        "after": after,
        "csv_changed": csv_path.read_bytes() != right_after,
        "stdout": run.stdout,
    }


def _points(rows, student: str) -> dict[str, tuple[float, float]]:
    return {
        r["grade_id"]: (float(r["points"] or 0), float(r["max_points"]))
        for r in rows
        if r["student"] == student and r["notebook"] == NOTEBOOK
    }


@pytest.mark.parametrize("student", ["aaron", "copies", "warns", "trudy", "zoe"])
def test_every_honest_exercise_gets_full_marks(graded_class, student):
    points = _points(graded_class["rows"], student)
    assert points, f"{student} was not graded"
    lost = {gid: p for gid, p in points.items() if p[0] != p[1]}
    assert not lost, f"{student} lost points: {lost}\n{graded_class['stdout'][-3000:]}"


def test_the_cheater_gets_nothing_for_what_she_cheated_on(graded_class):
    points = _points(graded_class["rows"], "mallory")
    cheated = graded_class["cheated"]["mallory"]
    assert len(cheated) == 2
    for gid, (got, most) in points.items():
        assert got == (0 if gid in cheated else most), (gid, got, most)
    autograded = graded_class["tmp"] / "course" / "autograded" / "mallory" / NOTEBOOK
    nb = nbformat.read(autograded / f"{NOTEBOOK}.ipynb", as_version=4)
    printed = "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
    )
    assert "could not read" in printed, "the payload did not run"
    assert "read the instructor notebook" not in printed, "the instructor notebook was readable"


def test_tampering_was_blocked_and_changed_nothing(graded_class):
    nb = nbformat.read(
        graded_class["tmp"] / "course" / "autograded" / "trudy" / NOTEBOOK / f"{NOTEBOOK}.ipynb",
        as_version=4,
    )
    text = "".join(o.get("text", "") for o in nb.cells[1].outputs)
    line = next(x for x in text.splitlines() if x.startswith("ATTEMPTS "))
    attempts = json.loads(line[len("ATTEMPTS ") :])
    for name in ("gradebook", "overwrite", "through_parent", "course_code"):
        assert attempts[name].startswith("blocked"), (name, attempts[name])
    assert graded_class["before"] == graded_class["after"]
    assert not graded_class["csv_changed"], "grades.csv changed after the grader returned"
    left = subprocess.run(["pgrep", "-f", TOKEN], capture_output=True, text=True)
    assert left.stdout.strip() == "", "a process the student started outlived the grading"


def test_the_summary_says_what_cost_points(graded_class):
    out = graded_class["stdout"]
    assert "mallory: " in out and "0 points:" in out
    assert "copied cells, graded by their last copy" in out
    logs = graded_class["tmp"] / "course" / "logs"
    for student in ("aaron", "copies", "mallory", "trudy", "warns", "zoe"):
        assert (logs / student / f"{NOTEBOOK}.log").stat().st_size > 0


def test_feedback_shows_the_checks_message_not_the_hidden_tests(graded_class):
    feedback = graded_class["tmp"] / "course" / "feedback" / "mallory" / NOTEBOOK
    text = (feedback / f"{NOTEBOOK}.html").read_text()
    assert "HIDDEN TESTS" not in text and "padding_mask_ref(batch.src" not in text
    assert "True at PAD" in text or "polarity" in text.lower() or "pad" in text.lower()
