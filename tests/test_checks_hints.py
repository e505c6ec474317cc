"""Specifications of the hint ladders and of what a failure message may say: no solution line."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import pytest

from course_lib import checks
from course_lib.checks import _hints

NOTEBOOKS = sorted(Path(__file__).resolve().parents[1].glob("notebooks/[01][0-9]_*.ipynb"))


def _normal(text: str) -> str:
    """Code text with quotes unified and whitespace removed, for substring tests."""
    return re.sub(r"\s+", "", text.replace("'", '"'))


def solution_lines() -> set[str]:
    """Every statement of every `### BEGIN SOLUTION` block (comments dropped), the right-hand
    side of each assignment and what each return returns, normalised; short ones left out."""
    lines: set[str] = set()
    for path in NOTEBOOKS:
        for cell in json.loads(path.read_text())["cells"]:
            source = "".join(cell["source"])
            for block in re.findall(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", source, re.S):
                for line in block.splitlines():
                    code = line.split("  #")[0].strip()
                    parts = [code] + ([code.split(" = ", 1)[1]] if " = " in code else [])
                    parts += [code.removeprefix("return ")] if code.startswith("return ") else []
                    lines |= {_normal(p) for p in parts if len(_normal(p)) >= 14}
    return lines


def _texts(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _texts(v)]
    if isinstance(value, tuple | list):
        return [t for v in value for t in _texts(v)]
    return []


def _checks_modules() -> list[object]:
    """Every module of course_lib.checks, the private ones a check is split into included."""
    package = Path(checks.__file__).parent
    return [
        importlib.import_module(f"course_lib.checks.{p.stem}") for p in sorted(package.glob("*.py"))
    ]


def message_texts() -> dict[str, str]:
    """Every hint text a failure message can contain: _hints and each module's *_HINTS."""
    found = {
        f"_hints.{n}[{i}]": t
        for n in ("HINTS", "MASK_HINTS")
        for i, t in enumerate(_texts(getattr(_hints, n)))
    }
    found["_hints.SOFTMAX_AXIS"] = _hints.SOFTMAX_AXIS
    for module in _checks_modules():
        for name, value in vars(module).items():
            if name.endswith("_HINTS"):
                for i, text in enumerate(_texts(value)):
                    found[f"{module.__name__}.{name}[{i}]"] = text
    return found


def test_solution_lines_are_found_in_every_notebook():
    lines = solution_lines()
    assert len(NOTEBOOKS) >= 11 and len(lines) > 40
    assert _normal("torch.tanh(x @ W_ih.T + b_ih + h @ W_hh.T + b_hh)") in lines


@pytest.mark.parametrize("where", sorted(message_texts()))
def test_no_failure_message_contains_a_solution_line(where):
    text = _normal(message_texts()[where])
    leaked = [line for line in solution_lines() if line in text]
    assert not leaked, f"{where} gives away {leaked}"


@pytest.mark.parametrize("exercise", sorted(checks.EXERCISE_IDS))
def test_every_exercise_has_a_ladder_whose_early_levels_hold_no_solution_line(exercise):
    ladder = checks.LADDERS[exercise]
    assert len(ladder) >= 3 and all(isinstance(t, str) and t for t in ladder)
    for level, text in enumerate(ladder[:-1], 1):
        leaked = [line for line in solution_lines() if line in _normal(text)]
        assert not leaked, f"{exercise} level {level} gives away {leaked}"


def test_hint_walks_up_the_ladder_and_stops_at_the_last_level(capsys):
    checks._hint_level.pop("ex6_2", None)
    ladder = checks.LADDERS["ex6_2"]
    shown = []
    for _ in range(len(ladder) + 1):
        assert checks.hint("ex6_2") is None  # printed once, not echoed again as a value
        shown.append(capsys.readouterr().out)
    for level, (out, text) in enumerate(zip(shown, [*ladder, ladder[-1]], strict=True), 1):
        assert f"Hint {min(level, len(ladder))}/{len(ladder)} for ex6_2" in out and text in out
    assert "the last level: it shows code" in shown[-1]
    checks.hint("ex6_2", level=2)
    assert ladder[1] in capsys.readouterr().out
    checks.hint("6.1", level=1)
    assert checks.LADDERS["ex6_1"][0] in capsys.readouterr().out


def test_an_unknown_exercise_id_lists_the_notebooks_ids():
    with pytest.raises(ValueError, match="notebook 03 has hints for: ex3_1, ex3_2"):
        checks.hint("ex3_7")
    with pytest.raises(ValueError, match="level must be 1 .. 3"):
        checks.hint("ex3_1", level=4)


def test_a_check_prints_one_short_line_on_success(capsys):
    checks.check_causal_mask(lambda L: __import__("torch").ones(L, L, dtype=bool).tril())
    out = capsys.readouterr().out
    assert out == "✓ causal_mask: all 3 cases pass\n"


def test_the_messages_of_typical_mistakes_hold_no_solution_line():
    from test_checks import MISTAKES, run_check  # the typical mistakes of tests/test_checks.py

    lines = solution_lines()
    for exercise, wrong, _ in MISTAKES:
        with pytest.raises(AssertionError) as info:
            run_check(exercise, wrong)
        text = _normal(str(info.value).split("(at line")[0])  # the learner's own line may show
        assert not [line for line in lines if line in text], str(info.value)
