"""nbgrader configuration of the course, shared by `make student`, `make grade` and nbgrader itself.

`python -m grading.grade` loads this file and points nbgrader at the course directory it builds
(build/grading/). That directory gets a two-line nbgrader_config.py that loads this one, so
lecturers can also run nbgrader there directly (`cd build/grading && nbgrader formgrader`).
"""

import sys
from pathlib import Path

from nbconvert.preprocessors import ClearMetadataPreprocessor, CSSHTMLHeaderPreprocessor
from nbgrader.preprocessors import (
    AssignLatePenalties,
    CheckCellMetadata,
    ClearOutput,
    DeduplicateIds,
    GetGrades,
    IgnorePattern,
    LimitOutput,
    OverwriteCells,
    OverwriteKernelspec,
    SaveAutoGrades,
)

REPO = str(Path(__file__).resolve().parent.parent)
if REPO not in sys.path:
    sys.path.insert(0, REPO)  # the repository, for grading.execute
from grading.feedback import ShortenCheckTracebacks  # noqa: E402
from grading.judge import Judge, StripHiddenTests  # noqa: E402
from grading.repair import KeepLastDuplicate, StderrIsNotAnError  # noqa: E402
from grading.sandbox import SandboxedExecute  # noqa: E402

c = get_config()  # noqa: F821 (provided by traitlets when it loads this file)

c.CourseDirectory.course_id = "attention-step-by-step"

# Student version: solution regions become this stub, hidden tests and outputs are removed.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# Sanitizing a submission: nbgrader's steps, with a copied cell (two cells, one grade_id) graded
# by its last copy instead of failing the notebook (grading/repair.py).
c.Autograde.sanitize_preprocessors = [
    ClearOutput,
    KeepLastDuplicate,
    DeduplicateIds,
    OverwriteKernelspec,
    OverwriteCells,
    CheckCellMetadata,
]
# Autograding: nbgrader's pipeline with its Execute step replaced by three: the hidden tests
# leave the check cells (they ran in the student's kernel and read story variables: they
# decide nothing), SandboxedExecute runs the notebook in a fresh bubblewrap sandbox
# (grading/sandbox.py) under GuardedExecute (it bounds the output a cell keeps and survives a
# dead kernel; grading/execute.py), and the Judge decides each check cell outside the sandbox
# from what the learner's functions returned (grading/judge.py). A warning on stderr costs no
# points (grading/repair.py).
c.Autograde.autograde_preprocessors = [
    StripHiddenTests,
    SandboxedExecute,
    Judge,
    IgnorePattern,
    ClearMetadataPreprocessor,
    LimitOutput,
    StderrIsNotAnError,
    SaveAutoGrades,
    AssignLatePenalties,
    CheckCellMetadata,
]
# Student code runs in a bubblewrap sandbox; without bubblewrap it is refused, unless the
# lecturer asks for no sandbox: UNSAFE_NO_SANDBOX=1 in the environment (also for nbgrader's own
# commands and the Formgrader), `grade.py --unsafe-no-sandbox`, or here
# c.SandboxedExecute.sandbox = "none".
# One notebook may run this many seconds in all (wall clock), whatever its cells' limits.
c.SandboxedExecute.notebook_timeout = 3600
# An exercise or check cell (learner code) may run this many seconds; then the kernel is
# interrupted, the cell records a CellTimeoutError (0 points if it is a graded cell) and the
# next cell runs. `make grade GRADE_TIMEOUT=300` (`--timeout` of grading/grade.py) overrides it.
c.Execute.timeout = 120
# The other cells are the course's story, trainings included (notebook 09's took 280 s on a
# busy 2-core machine): they get more time. `--story-timeout` overrides it.
c.GuardedExecute.story_timeout = 1200
c.Execute.interrupt_on_timeout = True
c.Execute.error_on_timeout = {
    "ename": "CellTimeoutError",
    "evalue": "this cell ran past the grader's time limit and was interrupted",
    "traceback": [
        "CellTimeoutError: this cell ran past the grader's time limit and was interrupted "
        "(an endless loop, or far more work than the exercise needs?)"
    ],
}
# Output still arriving after a cell finished (a flood of prints) must not abort the notebook.
c.Execute.raise_on_iopub_timeout = False
c.Execute.iopub_timeout = 10
# Keep at most this much output per cell in the graded notebook and the feedback.
c.GuardedExecute.max_output_chars = 100_000
c.LimitOutput.max_lines = 200
c.LimitOutput.max_traceback = 60

# Feedback HTML (`nbgrader generate_feedback`): nbgrader's, with failed checks shown as the
# learner's call plus the check's hint, without the frames of course_lib's checking machinery.
c.GenerateFeedback.preprocessors = [GetGrades, ShortenCheckTracebacks, CSSHTMLHeaderPreprocessor]
