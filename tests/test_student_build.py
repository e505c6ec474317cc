"""Specification of the student build (`make student`): learners get the prompts, never the answers.

The notebooks are built once for this module with `grading.grade.build_student` (the function
behind `python -m grading.grade student`), into a temporary folder, not build/. Then, for every
notebook with exercises:

(a) no markdown cell and no code cell of the student version contains a line of any
    `### BEGIN SOLUTION` ... `### END SOLUTION` region of the instructor notebook;
(b) no hidden-test region is left: no markers, no hidden-test lines, and each check cell is the
    instructor's check cell without its hidden tests;
(c) every exercise's solution cell, run as the learner gets it, raises NotImplementedError.

What counts as "a line of the solution" (the rule `solution_fragments` implements):
- every physical line of a solution region, comments dropped (with Python's tokenizer, so a
  `#` inside a string stays), all whitespace removed and quotes unified, so `q@k` and `q @ k`,
  or a line re-indented or re-spaced inside a markdown hint, still match;
- besides the whole line, what an assignment assigns and what a `return` returns, so a hint
  that pastes only the expression (`q @ k.transpose(-2, -1) / math.sqrt(d_k)`) is caught too;
- left out, as carrying no solution content: fragments under 15 characters once whitespace is
  removed (`return x`, `B, L, D = x.shape`, `k_all = ...` names alone); `pass`; imports (the
  setup cell imports what the course uses: an import names a tool, not how to use it); bare
  names and attribute chains (`return context, weights`, `m_new, l_new, acc_new`); a guard or
  loop header on bare names (`if mask is not None:`, `for _ in range(max_len):`), the skeleton
  every guard or loop shares; the content is in the lines under it, which are checked.
- an assigned or returned expression that is only a call on bare names (`model.encode(src)`,
  `step_fn(prefixes)`, `scaled_dot_product_attention(q, k, v)`) is the interface of a function
  the prompt hands over and must be allowed to state, and so is the whole line when it binds
  that call to bare names (`memory = model.encode(src)`, `out, _ = attend(q, k, v)`): naming
  the result adds no solution content. Anything computed around the call is still checked.
- not a leak: a line the exercise itself hands over as code, i.e. found in a code cell of its
  prompt (from the exercise's heading to its solution cell). A debug exercise ("find the two
  bugs in this block") must show the block, and the fix keeps most of its lines. Markdown is
  never excused, and neither is a story code cell before or after the exercise.

What tests/test_grading.py already checks, and what this adds: its student-build tests look for
the markers, for `raise NotImplementedError()` as text, and for solution lines verbatim, but they
excuse every line that the instructor notebook also shows outside its regions, so a solution line
pasted into a markdown hint or a story cell passes there. This module does not excuse those, matches
re-spaced lines and bare expressions, requires each check cell to be exactly its visible part, runs
each stub, and pins its own leak finder on fabricated notebooks.

The rule is pinned below on fabricated notebooks (a hint with a pasted solution line must be
found, a re-spaced one too, the handed-over block of a debug exercise must not) before it is
applied to the real notebooks.
"""

from __future__ import annotations

import ast
import builtins
import io
import math
import re
import textwrap
import tokenize
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
import torch
import torch.nn.functional as F
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook
from nbgrader.utils import is_grade, is_solution
from torch import nn

from grading import grade

MIN_CHARS = 15  # shorter fragments (whitespace removed) carry no solution content
REGION = {
    kind: re.compile(
        rf"^[ \t]*### BEGIN {kind}[^\n]*\n(.*?)^[ \t]*### END {kind}[^\n]*$", re.S | re.M
    )
    for kind in ("SOLUTION", "HIDDEN TESTS")
}
MARKERS = (
    "### BEGIN SOLUTION",
    "### END SOLUTION",
    "### BEGIN HIDDEN TESTS",
    "### END HIDDEN TESTS",
)
ASSIGN = re.compile(
    r"^(?P<target>[\w\s.,\[\]:*]+?)\s*(?:[-+*/@%|&^]|//|\*\*)?=(?!=)\s*(?P<value>.+)$"
)
# names, attributes, constant indices (`x.shape[-1]`) and tuples of them
BARE = re.compile(r"(return)?([\w.,]|\[-?\d+\])*(=([\w.,]|\[-?\d+\])*)?")
BARE_HEADER = re.compile(r"(if|elif|while|else|try|finally)(not)?[\w.]*(isnot|is|in|notin)?[\w.]*:")
RANGE_LOOP = re.compile(r"for[\w,]+inrange\([\w.]+\):")
SIMPLE_CALL = re.compile(r"[\w.]+\([\w.,]*\)(\[-?\d+\])?")  # f(a, b): a given function's interface
EXERCISE_HEADING = re.compile(r"^#+ .*Exercise", re.M)
NOTEBOOKS = grade.course_notebooks(grade.NOTEBOOKS)[0]  # the notebooks with exercises


def normal(text: str) -> str:
    """Code with all whitespace removed and quotes unified, for substring tests."""
    return re.sub(r"\s+", "", text.replace("'", '"'))


def regions(source: str, kind: str = "SOLUTION") -> list[str]:
    """The text between each `### BEGIN <kind>` and `### END <kind>` of a cell's source."""
    return REGION[kind].findall(source)


def code_lines(block: str) -> list[str]:
    """The physical lines of a code block with comments removed (Python's tokenizer)."""
    block = textwrap.dedent(block)
    lines = block.splitlines()
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(block).readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return [line.split("  #")[0] for line in lines]  # not Python: the course's comment style
    for tok in reversed(tokens):
        if tok.type == tokenize.COMMENT:
            row, col = tok.start
            lines[row - 1] = lines[row - 1][:col]
    return lines


def solution_fragments(line: str) -> set[str]:
    """The normalised pieces of one solution line that must not reach a learner (module doc)."""
    code = line.strip()
    if not code or code == "pass" or code.startswith(("import ", "from ")):
        return set()
    parts = [code]
    if code.startswith("return "):
        parts.append(code.removeprefix("return "))
    if (m := ASSIGN.match(code)) and not code.startswith(("if ", "elif ", "while ", "return ")):
        parts.append(m.group("value"))
    found = set()
    for k, part in enumerate(parts):
        n = normal(part)
        if len(n) < MIN_CHARS or BARE.fullmatch(n) or BARE_HEADER.fullmatch(n):
            continue
        if k > 0 and SIMPLE_CALL.fullmatch(n):
            continue  # only an expression: the call of a given function, its interface
        plain = (m := ASSIGN.match(code)) and code[m.end("target") :].lstrip().startswith("=")
        if k == 0 and plain and BARE.fullmatch(normal(m.group("target"))):
            if SIMPLE_CALL.fullmatch(normal(m.group("value"))):
                continue  # bare names = a given function's call: still only its interface
        if RANGE_LOOP.fullmatch(n):
            continue
        found.add(n)
    return found


@dataclass(frozen=True)
class Leak:
    notebook: str
    cell: int  # index in the student notebook
    cell_type: str
    exercise: str  # grade_id of the solution cell the line belongs to
    where: str  # before / in the prompt of / after the exercise
    line: str  # the solution line as the instructor wrote it

    def __str__(self) -> str:
        return (
            f"{self.notebook} cell {self.cell} ({self.cell_type}, {self.where} {self.exercise}):"
            f" {self.line!r}"
        )


def _grade_id(cell) -> str:
    return cell.metadata.get("nbgrader", {}).get("grade_id", "")


def exercise_spans(nb) -> dict[str, tuple[int, int]]:
    """grade_id of each solution cell -> (index of its exercise heading, index of the cell)."""
    spans = {}
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and is_solution(cell):
            heading = next(
                (
                    j
                    for j in range(i - 1, -1, -1)
                    if nb.cells[j].cell_type == "markdown"
                    and EXERCISE_HEADING.search(nb.cells[j].source)
                ),
                i,
            )
            spans[_grade_id(cell)] = (heading, i)
    return spans


def find_leaks(instructor, student, name: str = "notebook") -> list[Leak]:
    """Every place where a line of an instructor solution region stands in the student notebook."""
    secrets: dict[str, dict[str, str]] = {}  # grade_id -> normalised fragment -> original line
    for cell in instructor.cells:
        for block in regions(cell.source):
            for line in code_lines(block):
                for frag in solution_fragments(line):
                    secrets.setdefault(_grade_id(cell), {})[frag] = line.strip()
    spans = exercise_spans(student)
    leaks = []
    for i, cell in enumerate(student.cells):
        text = normal(cell.source)
        for exercise, fragments in secrets.items():
            heading, solution = spans.get(exercise, (len(student.cells), len(student.cells)))
            in_prompt = heading <= i < solution
            if cell.cell_type == "code" and in_prompt:
                continue  # code the exercise hands over (a debug exercise's block)
            where = "before" if i < heading else "in the prompt of" if in_prompt else "after"
            for frag, line in fragments.items():
                if frag in text:
                    leaks.append(Leak(name, i, cell.cell_type, exercise, where, line))
    # one report per (cell, solution line), not one per fragment of it
    return list(dict.fromkeys(leaks))


def hidden_test_leaks(instructor, student) -> list[str]:
    """Markers, hidden-test lines or changed check cells in the student notebook."""
    problems = []
    visible = normal("\n".join(REGION["HIDDEN TESTS"].sub("", c.source) for c in instructor.cells))
    student_text = {i: normal(c.source) for i, c in enumerate(student.cells)}
    for i, cell in enumerate(student.cells):
        problems += [f"cell {i} keeps {m!r}" for m in MARKERS if m in cell.source]
    for cell in instructor.cells:
        for block in regions(cell.source, "HIDDEN TESTS"):
            for line in code_lines(block):
                n = normal(line)
                if len(n) < MIN_CHARS or n in visible:
                    continue  # trivial, or shown to learners anyway (the visible check)
                problems += [
                    f"cell {i} has hidden-test line {line.strip()!r}"
                    for i, t in student_text.items()
                    if n in t
                ]
    theirs = {_grade_id(c): c for c in student.cells if is_grade(c)}
    for cell in instructor.cells:
        if is_grade(cell) and regions(cell.source, "HIDDEN TESTS"):
            expected = REGION["HIDDEN TESTS"].sub("", cell.source).split()
            got = theirs.get(_grade_id(cell))
            if got is None:
                problems.append(f"check cell {_grade_id(cell)} is missing")
            elif got.source.split() != expected:
                problems.append(f"check cell {_grade_id(cell)} is not its visible part")
    return problems


# What a solution cell needs at definition time (decorators, default values, base classes); the
# body is a stub, so nothing else is looked up before it raises.
DEFINITION_NAMES = {"torch": torch, "nn": nn, "F": F, "math": math, "__builtins__": builtins}


def stub_failures(instructor, student) -> list[str]:
    """Exercises whose student cell does not raise NotImplementedError when run and called."""
    failures = []
    theirs = {_grade_id(c): c for c in student.cells if is_solution(c)}
    for cell in instructor.cells:
        if cell.cell_type != "code" or not regions(cell.source):
            continue
        gid = _grade_id(cell)
        if gid not in theirs:
            failures.append(f"{gid}: no solution cell in the student version")
            continue
        tree = ast.parse(cell.source)
        # the functions that hold a region in the instructor cell; a region outside any
        # function must make the cell itself raise
        stubbed = [
            node
            for node in tree.body
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and "### BEGIN SOLUTION" in (ast.get_source_segment(cell.source, node) or "")
        ]
        namespace = dict(DEFINITION_NAMES)
        try:
            exec(compile(theirs[gid].source, f"<{gid}>", "exec"), namespace)
        except NotImplementedError:
            if stubbed:
                failures.append(f"{gid}: the cell raises before defining its function")
            continue
        except Exception as e:  # noqa: BLE001 - any other error is the finding
            failures.append(f"{gid}: running the student cell raised {e!r}")
            continue
        if not stubbed:
            failures.append(f"{gid}: the student cell runs without raising NotImplementedError")
        for node in stubbed:
            fn = namespace.get(node.name)
            required = len(node.args.posonlyargs + node.args.args) - len(node.args.defaults)
            try:
                fn(*[None] * required)
            except NotImplementedError:
                continue
            except Exception as e:  # noqa: BLE001
                failures.append(f"{gid}: {node.name}(...) raised {e!r}, not NotImplementedError")
                continue
            failures.append(f"{gid}: {node.name}(...) returned instead of raising")
    return failures


# ----------------------------------------------------------------------------- the rule, pinned

SDPA_SOLUTION = """def scaled_dot_product_attention(q, k, v, mask=None):
    ### BEGIN SOLUTION
    d_k = q.shape[-1]
    scores = q @ k.transpose(-2, -1) / math.sqrt(d_k)  # (..., L_q, L_k)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))  # hidden keys get weight 0
    weights = torch.softmax(scores, dim=-1)  # over the keys
    return weights @ v, weights
    ### END SOLUTION
"""
CHECK = "check_sdpa(scaled_dot_product_attention)\n### BEGIN HIDDEN TESTS\n"
CHECK += "assert scaled_dot_product_attention(_q, _k, _v)[0].shape == (2, 3)\n### END HIDDEN TESTS"
STUB = "def scaled_dot_product_attention(q, k, v, mask=None):\n"
STUB += "    # YOUR CODE HERE\n    raise NotImplementedError()"


def _fabricated(hint: str, given: str = "x = 1", solution: str = SDPA_SOLUTION, check=CHECK):
    """An (instructor, student) pair: heading with `hint`, given code, solution cell, check."""
    meta = {"nbgrader": {"grade_id": "ex_sdpa", "solution": True, "grade": False}}
    check_meta = {"nbgrader": {"grade_id": "ex_sdpa_check", "grade": True, "points": 1}}

    def nb(solution_cell, check_cell):
        return new_notebook(
            cells=[
                new_markdown_cell("Some story."),
                new_markdown_cell(f"### Exercise 3.1 — attention\n\n{hint}"),
                new_code_cell(given),
                new_code_cell(solution_cell, metadata=meta),
                new_code_cell(check_cell, metadata=check_meta),
            ]
        )

    visible_check = REGION["HIDDEN TESTS"].sub("", check)
    return nb(solution, check), nb(STUB, visible_check)


@pytest.mark.parametrize(
    "hint",
    [
        "Hint: `scores = q @ k.transpose(-2, -1) / math.sqrt(d_k)`.",
        "Hint:\n```python\nscores=q@k.transpose( -2,-1 )/math.sqrt(d_k)\n```",
        "The scores are `q @ k.transpose(-2, -1) / math.sqrt(d_k)`, then softmax.",
        "Mask with scores.masked_fill(~mask, float('-inf')) first.",
    ],
    ids=["verbatim", "re-spaced", "expression-only", "other-quotes"],
)
def test_a_solution_line_pasted_into_a_markdown_hint_is_found(hint):
    instructor, student = _fabricated(hint)
    leaks = find_leaks(instructor, student, "fabricated")
    assert [(leak.cell, leak.cell_type, leak.where) for leak in leaks] == [
        (1, "markdown", "in the prompt of")
    ], leaks


def test_a_solution_line_in_a_story_code_cell_is_found():
    instructor, student = _fabricated("Write it.")
    student.cells[0] = new_code_cell(
        "w = torch.softmax(scores, dim=-1)\nweights = torch.softmax(scores, dim=-1)"
    )
    leaks = find_leaks(instructor, student)
    assert [(leak.cell, leak.where, leak.line) for leak in leaks] == [
        (0, "before", "weights = torch.softmax(scores, dim=-1)")
    ]


def test_an_idea_only_prompt_and_trivial_lines_are_not_leaks():
    hint = (
        "Scale the scores by the square root of `d_k`; return `weights @ v` and the weights "
        "(`return out, weights`). Use `if mask is not None:` and `d_k = q.shape[-1]`."
    )
    instructor, student = _fabricated(hint)
    assert find_leaks(instructor, student) == []


def test_the_code_a_debug_exercise_hands_over_is_not_a_leak_but_the_same_line_elsewhere_is():
    given = "def buggy(q, k, v):\n    scores = q @ k.transpose(-2, -1) / math.sqrt(d_k)\n"
    instructor, student = _fabricated("Find the bug in the block below.", given=given)
    assert find_leaks(instructor, student) == []
    student.cells.append(
        new_markdown_cell("Answer: `scores = q @ k.transpose(-2, -1) / math.sqrt(d_k)`")
    )
    assert [(leak.cell, leak.where) for leak in find_leaks(instructor, student)] == [(5, "after")]


def test_fragments_keep_content_and_drop_skeleton():
    assert solution_fragments(
        code_lines("scores = q @ k.transpose(-2, -1) / math.sqrt(d_k)  # (L_q, L_k)")[0]
    ) == {
        "scores=q@k.transpose(-2,-1)/math.sqrt(d_k)",
        "q@k.transpose(-2,-1)/math.sqrt(d_k)",
    }
    for skeleton in [
        "return x",
        "pass",
        "import torch.nn.functional as F",
        "return m_new, l_new, acc_new",
        "if mask is not None:",
        "for _ in range(max_len):",
        "B, L, D = x.shape",
    ]:
        assert solution_fragments(skeleton) == set(), skeleton
    assert solution_fragments("memory = model.encode(src)") == set()
    assert solution_fragments("out, _ = scaled_dot_product_attention(q, k, v)") == set()
    assert solution_fragments("memory = model.encode(src) * 2") == {
        "memory=model.encode(src)*2",
        "model.encode(src)*2",
    }
    assert solution_fragments("return F.cross_entropy(predictions, next_tokens)") == {
        "returnF.cross_entropy(predictions,next_tokens)"
    }
    assert code_lines('x = f("#not a comment")  # a comment') == ['x = f("#not a comment")  ']


def test_a_left_hidden_test_and_a_kept_solution_are_found():
    instructor, student = _fabricated("Write it.")
    assert hidden_test_leaks(instructor, student) == []
    assert stub_failures(instructor, student) == []
    student.cells[4].source = CHECK  # the hidden tests left in
    assert len(hidden_test_leaks(instructor, student)) == 4  # two markers, the line, the cell
    student.cells[3].source = SDPA_SOLUTION.replace("    ### BEGIN SOLUTION\n", "")
    student.cells[3].source = student.cells[3].source.replace("    ### END SOLUTION\n", "")
    assert stub_failures(instructor, student) == [
        "ex_sdpa: scaled_dot_product_attention(...) raised AttributeError(\"'NoneType' object "
        "has no attribute 'shape'\"), not NotImplementedError"
    ]
    student.cells[3].source = "def scaled_dot_product_attention(q, k, v, mask=None):\n    pass"
    assert stub_failures(instructor, student) == [
        "ex_sdpa: scaled_dot_product_attention(...) returned instead of raising"
    ]


# ----------------------------------------------------------------------------- the real build


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory) -> Path:
    """`make student` (grading.grade.build_student) into a temporary course and output folder."""
    base = tmp_path_factory.mktemp("make_student")
    grade.build_student(grade.NOTEBOOKS, base / "course", base / "student")
    return base / "student"


def _pair(student_dir: Path, path: Path):
    return nbformat.read(path, as_version=4), nbformat.read(student_dir / path.name, as_version=4)


def test_every_notebook_with_exercises_is_built(student_dir):
    assert NOTEBOOKS, "no notebook with exercises found"
    assert sorted(p.name for p in NOTEBOOKS) == sorted(
        p.name for p in student_dir.glob("*.ipynb") if grade.has_exercises(p)
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_no_solution_line_reaches_a_markdown_or_code_cell(student_dir, path):
    instructor, student = _pair(student_dir, path)
    assert any(regions(c.source) for c in instructor.cells), f"{path.name}: no solution region"
    leaks = find_leaks(instructor, student, path.name)
    assert not leaks, "solution lines in the student version:\n" + "\n".join(map(str, leaks))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_no_hidden_test_region_is_left(student_dir, path):
    instructor, student = _pair(student_dir, path)
    problems = hidden_test_leaks(instructor, student)
    assert not problems, f"{path.name}:\n" + "\n".join(problems)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_exercise_raises_not_implemented_error_in_the_student_version(student_dir, path):
    instructor, student = _pair(student_dir, path)
    failures = stub_failures(instructor, student)
    assert not failures, f"{path.name}:\n" + "\n".join(failures)
