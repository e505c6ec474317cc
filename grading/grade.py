"""Student notebooks and autograding for the course, with nbgrader.

    python -m grading.grade student             # build/student/: the notebooks learners get
    python -m grading.grade grade SUBMISSIONS   # autograde SUBMISSIONS/<student>/<notebook>.ipynb

Every notebook in notebooks/ that has nbgrader cells is one nbgrader assignment whose id is the
notebook's name (03_self_attention), so a crash in one notebook cannot cost the scores of another.
nbgrader's course directory is build/grading/: `source/` is copied from notebooks/ at every run,
`release/` is what `generate_assignment` makes of it, then `submitted/`, `autograded/`,
`feedback/`, the gradebook and grades.csv. Notebooks without exercises go to build/student/ with
their outputs cleared. Configuration: grading/nbgrader_config.py.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import shutil
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbgrader.api import Gradebook, MissingEntry
from nbgrader.converters import Autograde, GenerateAssignment, GenerateFeedback
from nbgrader.coursedir import CourseDirectory
from nbgrader.utils import capture_log, is_grade, is_solution, is_task
from sqlalchemy.exc import SAWarning
from traitlets.config import Config, PyFileConfigLoader

from grading import report
from grading import sandbox as sandboxing

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
COURSE = ROOT / "build" / "grading"
STUDENT = ROOT / "build" / "student"
CONFIG = Path(__file__).resolve().with_name("nbgrader_config.py")
CSV_COLUMNS = ("student", "notebook", "grade_id", "points", "max_points", "status")
# A letter or digit (any script: "zoë" and "李" are fine), then those or _ . @ -; checked with
# fullmatch, so a trailing newline ("eve\n") is refused too.
STUDENT_ID = re.compile(r"[^\W_][\w.@-]*")


def has_exercises(path: Path) -> bool:
    """True if the notebook has nbgrader solution, grade or task cells."""
    nb = nbformat.read(path, as_version=4)
    return any(is_solution(c) or is_grade(c) or is_task(c) for c in nb.cells)


def course_notebooks(notebooks: Path = NOTEBOOKS) -> tuple[list[Path], list[Path]]:
    """(notebooks with exercises, notebooks without), each sorted by name."""
    paths = sorted(notebooks.glob("*.ipynb"))
    graded = [p for p in paths if has_exercises(p)]
    return graded, [p for p in paths if p not in graded]


def load_config(
    course: Path,
    timeout: int | None = None,
    story_timeout: int | None = None,
    sandbox: str | None = None,
    notebook_timeout: int | None = None,
) -> Config:
    """grading/nbgrader_config.py, pointed at `course`, with optional limits and sandbox."""
    # nbgrader runs the `alembic` command when it creates a gradebook: use this environment's.
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = os.pathsep.join([bin_dir, os.environ.get("PATH", "")])
    config = PyFileConfigLoader(CONFIG.name, path=str(CONFIG.parent)).load_config()
    config.CourseDirectory.root = str(course)
    if timeout is not None:
        config.Execute.timeout = timeout
    if story_timeout is not None:
        config.GuardedExecute.story_timeout = story_timeout
    if sandbox is not None:
        config.SandboxedExecute.sandbox = sandbox
    if notebook_timeout is not None:
        config.SandboxedExecute.notebook_timeout = notebook_timeout
    return config


def _nbgrader(converter: type, config: Config, **coursedir: str) -> dict:
    """Run one nbgrader converter in this process; {'success': bool, 'log': str, ...}."""
    app = converter(coursedir=CourseDirectory(config=config, **coursedir), config=config)
    app.force = True  # rebuild / regrade what is already there
    if isinstance(app, GenerateAssignment):
        app.create_assignment = True  # record the assignment in the gradebook
    with warnings.catch_warnings():  # nbgrader's own SQLAlchemy usage, harmless
        warnings.simplefilter("ignore", SAWarning)
        return capture_log(app)


def _write_course_config(course: Path) -> None:
    """A nbgrader_config.py in the course directory, so nbgrader can be run there by hand."""
    (course / "nbgrader_config.py").write_text(
        "# Written by grading/grade.py: the course's configuration lives in the repository.\n"
        f"load_subconfig({str(CONFIG)!r})  # noqa: F821\n"
        f"get_config().CourseDirectory.root = {str(course)!r}  # noqa: F821\n"
    )


def build_student(
    notebooks: Path = NOTEBOOKS, course: Path = COURSE, out: Path = STUDENT
) -> list[str]:
    """Generate every assignment with nbgrader and gather the student notebooks in `out`.

    Returns the assignment ids (names of the notebooks with exercises).
    """
    graded, plain = course_notebooks(notebooks)
    course.mkdir(parents=True, exist_ok=True)
    _write_course_config(course)
    config = load_config(course)
    for sub in ("source", "release"):
        shutil.rmtree(course / sub, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    assignments = []
    for path in graded:
        assignment = path.stem
        (course / "source" / assignment).mkdir(parents=True)
        shutil.copy2(path, course / "source" / assignment / path.name)
        result = _nbgrader(GenerateAssignment, config, assignment_id=assignment)
        if not result["success"]:
            raise RuntimeError(
                f"nbgrader generate_assignment {assignment} failed:\n{result.get('log', '')}"
            )
        shutil.copy2(course / "release" / assignment / path.name, out / path.name)
        assignments.append(assignment)
    for path in plain:  # no exercises: the same notebook, outputs cleared
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
        nbformat.write(nb, out / path.name)
    return assignments


@dataclass
class Submission:
    student: str
    notebook: str  # = assignment id
    path: Path


def find_submissions(folder: Path, assignments: list[str]) -> tuple[list[Submission], list[str]]:
    """Submissions in folder/<student_id>/<notebook>.ipynb, and a warning for everything else."""
    found: list[Submission] = []
    warnings: list[str] = []
    seen: dict[str, str] = {}  # casefolded id -> the id graded under it
    if not folder.is_dir():
        raise SystemExit(
            f"{folder} is not a folder of submissions (expected <student>/<notebook>.ipynb)"
        )
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            warnings.append(f"ignored {entry}: expected one folder per student")
            continue
        if not STUDENT_ID.fullmatch(entry.name):
            warnings.append(f"ignored {entry!r}: a student id uses letters, digits and _ . @ -")
            continue
        folded = entry.name.casefold()
        if folded in seen:  # alice and Alice would share files on a case-insensitive disk
            warnings.append(f"ignored {entry}: same id as {seen[folded]} except for case")
            continue
        seen[folded] = entry.name
        for nb in sorted(entry.iterdir()):
            if nb.suffix == ".ipynb" and nb.stem in assignments:
                found.append(Submission(entry.name, nb.stem, nb))
            elif not nb.name.startswith(".") and nb.suffix == ".ipynb":
                warnings.append(f"ignored {nb}: not a course notebook with exercises")
            elif not nb.name.startswith("."):
                warnings.append(f"ignored {nb}: not a notebook")
    return found, warnings


def _grade_cells(course: Path, assignment: str) -> list[str]:
    """grade_ids of the graded cells of an assignment, in notebook order."""
    nb = nbformat.read(course / "source" / assignment / f"{assignment}.ipynb", as_version=4)
    return [c.metadata.nbgrader["grade_id"] for c in nb.cells if is_grade(c)]


def grade(
    submissions: Path,
    notebooks: Path = NOTEBOOKS,
    course: Path = COURSE,
    student_out: Path = STUDENT,
    timeout: int | None = None,
    story_timeout: int | None = None,
    sandbox: str | None = None,
    notebook_timeout: int | None = None,
) -> Path:
    """Autograde every submission, write the feedback HTML and grades.csv; return the CSV path.

    `sandbox` is "bwrap" (the default; refused with SandboxUnavailable where bubblewrap cannot
    run) or "none" (no isolation: only when the lecturer asks for it; UNSAFE_NO_SANDBOX=1).
    """
    sandbox = sandboxing.choose(sandbox)
    if sandbox == "none":
        print(
            "warning: grading WITHOUT a sandbox (UNSAFE_NO_SANDBOX=1 / --unsafe-no-sandbox): "
            "student code runs as you and can read and change your files and the gradebook"
        )
    assignments = build_student(notebooks, course, student_out)
    found, problems = find_submissions(Path(submissions), assignments)
    for problem in problems:
        print(f"warning: {problem}")
    students = sorted({s.student for s in found})
    config = load_config(course, timeout, story_timeout, sandbox, notebook_timeout)
    errors = course / "autograde-errors.log"
    errors.unlink(missing_ok=True)
    for student in students:  # a fresh start for everyone in this folder
        for stage in ("submitted", "autograded", "feedback"):
            shutil.rmtree(course / stage / student, ignore_errors=True)
    status: dict[tuple[str, str], str] = {}
    reports: dict[tuple[str, str], dict] = {}
    logs = course / "logs"
    for sub in found:
        start = time.perf_counter()
        dest = course / "submitted" / sub.student / sub.notebook / f"{sub.notebook}.ipynb"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(sub.path, dest)
        ids = {"assignment_id": sub.notebook, "student_id": sub.student}
        report.take(sub.student, sub.notebook)
        result = _nbgrader(Autograde, config, **ids)
        notes = report.take(sub.student, sub.notebook)
        log = f"== autograde {sub.student} / {sub.notebook}\n{result.get('log', '')}\n{result.get('error', '')}\n"
        if result["success"]:
            status[sub.student, sub.notebook] = "graded"
            result = _nbgrader(GenerateFeedback, config, **ids)
            log += f"== generate_feedback\n{result.get('log', '')}\n{result.get('error', '')}\n"
        else:
            status[sub.student, sub.notebook] = "grading failed"
            notes.setdefault("failed", _last_error(result))
        if not result["success"]:
            with errors.open("a") as f:
                f.write(log)
        reports[sub.student, sub.notebook] = notes
        _write_log(logs / sub.student / f"{sub.notebook}.log", log, notes)
        took = time.perf_counter() - start
        note = "" if result["success"] else f", see {errors.name}"
        print(
            f"{sub.student:>12} {sub.notebook:<28} {status[sub.student, sub.notebook]}{note}",
            end="",
        )
        print(f" ({took:.1f} s)")
    csv_path = course / "grades.csv"
    rows = _rows(config, assignments, students, status)
    with csv_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        writer.writerows(rows)
    _summary(rows, course, reports)
    return csv_path


def _last_error(result: dict) -> str:
    """The last line of an nbgrader failure that says what went wrong."""
    text = f"{result.get('log', '')}\n{result.get('error', '')}"
    lines = [x.strip() for x in text.splitlines() if "Error:" in x or "error" in x.lower()]
    specific = [x for x in lines if "RuntimeError:" in x or "Exception:" in x]
    return (specific or lines or ["see autograde-errors.log"])[-1][:300]


def _write_log(path: Path, log: str, notes: dict) -> None:
    """Keep one autograde's log: nbgrader's, the grader's notes, and the sandbox's own."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sandbox_log = notes.get("log", "")
    shown = {k: v for k, v in notes.items() if k != "log"}
    with path.open("w") as f:
        f.write(log)
        f.write("== grader's notes\n")
        for key, value in shown.items():
            f.write(f"{key}: {value}\n")
        f.write(f"== sandbox (runner and kernel stderr)\n{sandbox_log}\n")


def _rows(
    config: Config, assignments: list[str], students: list[str], status: dict[tuple[str, str], str]
) -> list[tuple]:
    """One row per (student, notebook, graded cell), from the gradebook."""
    rows = []
    coursedir = CourseDirectory(config=config)
    course = Path(coursedir.root)
    with Gradebook(coursedir.db_url, coursedir.course_id) as gb:
        for student in students:
            for assignment in assignments:
                state = status.get((student, assignment), "not submitted")
                for grade_id in _grade_cells(course, assignment):
                    cell = gb.find_grade_cell(grade_id, assignment, assignment)
                    points, row_state = 0.0, state
                    if state == "graded":
                        try:
                            g = gb.find_grade(grade_id, assignment, assignment, student)
                        except MissingEntry:
                            g = None
                        if g is None or g.score is None or g.needs_manual_grade:
                            points, row_state = "", "needs manual grading"
                        else:
                            points = g.score
                    rows.append(
                        (
                            student,
                            assignment,
                            grade_id,
                            _num(points),
                            _num(cell.max_score),
                            row_state,
                        )
                    )
    return rows


def _num(x: float | str) -> str:
    """2.0 -> '2', 1.5 -> '1.5', '' stays ''."""
    return x if isinstance(x, str) else f"{x:g}"


def _summary(rows: list[tuple], course: Path, reports: dict | None = None) -> None:
    """Per student: points, then per notebook what cost points or needs a look; then the files."""
    reports = reports or {}
    totals: dict[str, list[float]] = {}
    for student, _, _, points, max_points, _ in rows:
        t = totals.setdefault(student, [0.0, 0.0])
        t[0] += float(points or 0)
        t[1] += float(max_points)
    for student, (got, most) in totals.items():
        print(f"{student:>12}: {got:g} / {most:g} points")
        for (who, notebook), notes in sorted(reports.items()):
            if who == student:
                for line in _notes(notebook, notes, rows, student):
                    print(f"{'':>14}{line}")
    failed = {(r[0], r[1]) for r in rows if r[5] == "grading failed"}
    if failed:
        print(
            f"{len(failed)} notebook(s) could not be graded (status 'grading failed', 0 points): "
            f"see {course / 'autograde-errors.log'}"
        )
    print(f"scores:   {course / 'grades.csv'}")
    print(f"feedback: {course / 'feedback'}/<student>/<notebook>/<notebook>.html")
    print(f"logs:     {course / 'logs'}/<student>/<notebook>.log")


def _notes(notebook: str, notes: dict, rows: list[tuple], student: str) -> list[str]:
    """The summary lines of one graded notebook."""
    mine = [r for r in rows if r[0] == student and r[1] == notebook]
    got = sum(float(r[3] or 0) for r in mine)
    most = sum(float(r[4]) for r in mine)
    lines = [f"{notebook}: {got:g} / {most:g}"]
    if notes.get("failed"):
        lines.append(f"  grading failed: {notes['failed']}")
    for gid, v in (notes.get("verdicts") or {}).items():
        if v.get("judged") and not v.get("passed"):
            first = (v.get("message") or "failed").splitlines()[0]
            lines.append(f"  {gid}: 0 points: {first[:160]}")
        elif not v.get("judged"):
            lines.append(f"  {gid}: no course check in the cell: graded by its outputs")
    for key, label in (
        ("limits", "hit a limit"),
        ("refused", "refused by the sandbox"),
        ("copied cells", "copied cells, graded by their last copy"),
        ("lost_replies", "lost kernel replies (cells taken as finished)"),
    ):
        if notes.get(key):
            lines.append(f"  {label}: {', '.join(map(str, notes[key]))}")
    if notes.get("restarts"):
        lines.append(f"  kernel restarted {notes['restarts']} time(s)")
    if notes.get("sandbox") == "none":
        lines.append("  ran WITHOUT a sandbox")
    return lines


def main(argv: list[str] | None = None) -> int:
    """Command line: `student` or `grade SUBMISSIONS`."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--notebooks", type=Path, default=NOTEBOOKS, help="instructor notebooks")
    parser.add_argument("--course", type=Path, default=COURSE, help="nbgrader course directory")
    parser.add_argument("--student-out", type=Path, default=STUDENT, help="student notebooks")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("student", help="build the student notebooks")
    g = commands.add_parser("grade", help="autograde SUBMISSIONS/<student>/<notebook>.ipynb")
    g.add_argument("submissions", type=Path)
    g.add_argument("--timeout", type=int, help="seconds per exercise or check cell (120)")
    g.add_argument("--story-timeout", type=int, help="seconds per other cell (1200)")
    g.add_argument(
        "--notebook-timeout", type=int, help="wall-clock seconds per notebook in all (3600)"
    )
    g.add_argument(
        "--unsafe-no-sandbox",
        action="store_true",
        help=f"run student code without a sandbox (also {sandboxing.UNSAFE_FLAG}=1): unsafe",
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    if args.command == "student":
        made = build_student(args.notebooks, args.course, args.student_out)
        n = len(list(args.student_out.glob("*.ipynb")))
        print(
            f"{n} student notebooks in {args.student_out} ({len(made)} with exercises: "
            f"{', '.join(made) or 'none'}) in {time.perf_counter() - start:.1f} s"
        )
        return 0
    try:
        csv_path = grade(
            args.submissions,
            args.notebooks,
            args.course,
            args.student_out,
            args.timeout,
            args.story_timeout,
            "none" if args.unsafe_no_sandbox else None,
            args.notebook_timeout,
        )
    except sandboxing.SandboxUnavailable as exc:
        print(f"make grade: {exc}", file=sys.stderr)
        return 2
    with csv_path.open() as f:
        graded = [r for r in csv.DictReader(f) if r["status"] != "not submitted"]
    print(f"autograded in {time.perf_counter() - start:.1f} s")
    return 1 if graded and all(r["status"] == "grading failed" for r in graded) else 0


if __name__ == "__main__":
    sys.exit(main())
