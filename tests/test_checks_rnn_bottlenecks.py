"""Specifications of notebook 01's checks (course_lib/checks/rnn_bottlenecks.py), Exercise 1.3
above all: the chained Jacobian norms ||dh_T / dh_(T-d)|| of a tanh RNN."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
import torch
from torch import nn

from course_lib import checks
from course_lib.checks import rnn_bottlenecks as R

# --- answers written independently of the check module ------------------------------------


def rnn_step_jacobian(h_new, W_hh):
    return (1 - h_new**2)[:, :, None] * W_hh


def gradient_reach(states, W_hh):
    B, T1, H = states.shape
    J = torch.eye(H, dtype=states.dtype).expand(B, H, H)
    norms = [torch.ones(B, dtype=states.dtype)]
    for k in range(T1 - 1, 0, -1):
        J = J @ rnn_step_jacobian(states[:, k], W_hh)
        norms.append(torch.linalg.matrix_norm(J, ord=2))
    return torch.stack(norms, dim=1)


def reach_with(order="right", use="new", norm=2, chain=True):
    """gradient_reach with one slip, written the way a learner would."""

    def fn(states, W_hh):
        B, T1, H = states.shape
        J = torch.eye(H, dtype=states.dtype).expand(B, H, H)
        total = torch.ones(B, dtype=states.dtype)
        norms = [torch.ones(B, dtype=states.dtype)]
        for k in range(T1 - 1, 0, -1):
            step = rnn_step_jacobian(states[:, k] if use == "new" else states[:, k - 1], W_hh)
            J = J @ step if order == "right" else step @ J
            total = total * torch.linalg.matrix_norm(step, ord=norm)
            norms.append(torch.linalg.matrix_norm(J, ord=norm) if chain else total)
        return torch.stack(norms, dim=1)

    return fn


def blank(states, W_hh):
    raise NotImplementedError


# --- the reference passes, a blank is "not attempted" --------------------------------------


def test_the_reference_answer_passes_with_one_line(capsys):
    checks.check_gradient_reach(gradient_reach)
    assert capsys.readouterr().out == "✓ gradient_reach: all 3 cases pass\n"


def test_the_last_hint_level_is_an_answer_that_passes(capsys):
    body = checks.LADDERS["ex1_3"][-1]
    source = "def reach(states, W_hh):\n    B, T1, H = states.shape\n    T = T1 - 1\n"
    source += "".join(f"    {line}\n" for line in body.splitlines())
    space = {"torch": torch, "rnn_step_jacobian": rnn_step_jacobian}
    exec(source, space)  # noqa: S102 - the ladder's own code, run as a learner would
    checks.check_gradient_reach(space["reach"])
    assert "✓ gradient_reach" in capsys.readouterr().out


def test_a_float64_answer_passes_too():
    checks.check_gradient_reach(lambda s, W: gradient_reach(s.double(), W.double()))


def test_a_blank_fails_only_its_own_check():
    with pytest.raises(AssertionError, match="not attempted"):
        checks.check_gradient_reach(blank)
    results = checks.progress(
        "01",
        {"rnn_cell": lambda x, h, Wi, Wh, bi, bh: torch.tanh(x @ Wi.T + bi + h @ Wh.T + bh),
         "rnn_step_jacobian": rnn_step_jacobian, "gradient_reach": blank},
    )  # fmt: skip
    assert results["rnn_cell"][0] == "pass" and results["rnn_step_jacobian"][0] == "pass"
    assert results["gradient_reach"][0] == "not attempted"


def test_progress_lists_notebook_01_in_its_order(capsys):
    assert list(checks.EXERCISES["01"]) == ["rnn_cell", "rnn_step_jacobian", "gradient_reach"]
    assert checks.EXERCISE_IDS["ex1_3"] == "gradient_reach"


# --- typical mistakes are named ------------------------------------------------------------


MISTAKES = [
    (reach_with(order="left"), "wrong order"),
    (reach_with(use="old"), "wrong state"),
    (reach_with(norm="fro"), "Frobenius"),
    (reach_with(chain=False), "multiplied the norms"),
    (lambda s, W: gradient_reach(s, W).flip(-1), "reverse order"),
    (lambda s, W: gradient_reach(s, W)[:, 1:], "distance 0 is missing"),
    (
        lambda s, W: gradient_reach(torch.zeros_like(s), W),  # W_hh alone: tanh' left out
        "tanh' factor is missing",
    ),
    (lambda s, W: gradient_reach(s, W)[0], "shape"),  # dropped the batch
    (lambda s, W: (gradient_reach(s, W), None), "one torch.Tensor"),
]


@pytest.mark.parametrize(("wrong", "phrase"), MISTAKES, ids=[p for _, p in MISTAKES])
def test_each_typical_mistake_is_named(wrong, phrase):
    with pytest.raises(AssertionError) as info:
        checks.check_gradient_reach(wrong)
    assert phrase.lower() in str(info.value).lower(), str(info.value)


def test_a_wrong_earlier_jacobian_is_blamed_on_exercise_1_2():
    space = {"torch": torch}
    exec(  # noqa: S102 - a learner's notebook: 1.2 wrong (no square), 1.3 calls it
        "def rnn_step_jacobian(h_new, W_hh):\n    return (1 - h_new)[:, :, None] * W_hh\n"
        "def gradient_reach(states, W_hh):\n"
        "    B, T1, H = states.shape\n"
        "    J = torch.eye(H, dtype=states.dtype).expand(B, H, H)\n"
        "    norms = [torch.ones(B, dtype=states.dtype)]\n"
        "    for k in range(T1 - 1, 0, -1):\n"
        "        J = J @ rnn_step_jacobian(states[:, k], W_hh)\n"
        "        norms.append(torch.linalg.matrix_norm(J, ord=2))\n"
        "    return torch.stack(norms, dim=1)\n",
        space,
    )
    with pytest.raises(AssertionError, match="Fix Exercise 1.2 first"):
        checks.check_gradient_reach(space["gradient_reach"])


def test_the_course_jacobian_is_allowed_but_the_answer_key_is_not():
    from course_lib.rnn import rnn_step_jacobian as course_jacobian

    def with_course_step(states, W_hh):
        B, T1, H = states.shape
        J = torch.eye(H, dtype=states.dtype).expand(B, H, H)
        norms = [torch.ones(B, dtype=states.dtype)]
        for k in range(T1 - 1, 0, -1):
            J = J @ course_jacobian(states[:, k], W_hh)
            norms.append(torch.linalg.matrix_norm(J, ord=2))
        return torch.stack(norms, dim=1)

    checks.check_gradient_reach(with_course_step)  # the prompt allows Exercise 1.2's reference
    with pytest.raises(AssertionError, match="reference"):
        checks.check_gradient_reach(lambda s, W, _r=R.reach_variant: _r(s, W))


def test_the_expected_values_come_from_autograd_through_nn_rnncell():
    g = torch.Generator().manual_seed(0)
    states, w_hh, cell, xs = R._rnn_states(g, 2, 5, 3, 4, 1.5)
    assert isinstance(cell, nn.RNNCell)
    expected = R._autograd_reach(cell, xs, states)
    assert torch.allclose(expected, gradient_reach(states, w_hh), atol=1e-10)
    assert torch.all(expected[:, 0] == 1)


def test_no_reach_message_holds_a_line_of_the_ladders_code():
    code = [line.strip() for line in checks.LADDERS["ex1_3"][-1].splitlines()]
    for text in R.REACH_HINTS.values():
        assert not [line for line in code if len(line) > 12 and line in text], text
    for level in checks.LADDERS["ex1_3"][:-1]:
        assert "matrix_norm(J" not in level and "J @" not in level


# --- Exercises 1.1 and 1.2: their messages no longer spell out code --------------------------


@pytest.mark.parametrize(
    ("exercise", "wrong", "phrase"),
    [
        ("rnn_cell", lambda x, h, Wi, Wh, bi, bh: x @ Wi.T + bi + h @ Wh.T + bh, "tanh"),
        (
            "rnn_cell",
            lambda x, h, Wi, Wh, bi, bh: torch.tanh(x @ Wi + bi + h @ Wh + bh),
            "transpose",
        ),
        ("rnn_cell", lambda x, h, Wi, Wh, bi, bh: torch.tanh(x @ Wi.T + bi + bh), "memory"),
        ("rnn_step_jacobian", lambda h, W: (1 - h)[:, :, None] * W, "square"),
        ("rnn_step_jacobian", lambda h, W: (1 - torch.tanh(h) ** 2)[:, :, None] * W, "tanh again"),
    ],
)
def test_messages_of_1_1_and_1_2_name_the_idea_without_code(exercise, wrong, phrase):
    with pytest.raises(AssertionError) as info:
        getattr(checks, f"check_{exercise}")(wrong)
    message = re.sub(r"\(at line \d+ of your code: `.*`\)", "", str(info.value))  # their line
    assert phrase.lower() in message.lower(), message
    for code in (".T", "h_new**2", "[:, :, None]", "@ W"):
        assert code not in message, message


# --- issue #14: the prompts state the task, not the traps; the traps live in the ladders ---------

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "01_rnn_bottlenecks.ipynb"
PROMPTS = {"ex1_1": "5f1b4af7", "ex1_2": "9cd4529a", "ex1_3": "a01ex13p"}  # markdown cell ids
NUDGES = {  # sentences that pre-empted the classic mistakes, now at hint level 1 or 2
    "ex1_1": ("which way round", "(out, in)"),
    "ex1_2": ("never need", "which index", "row or a column"),
    "ex1_3": ("distance-0 term comes from", "which state each step", "on which side"),
}


def _prompt(exercise: str) -> str:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    return next(c.source for c in nb.cells if c.get("id") == PROMPTS[exercise])


@pytest.mark.parametrize("exercise", sorted(PROMPTS))
def test_the_prompt_names_no_trap_and_the_first_hint_level_does(exercise):
    prompt = _prompt(exercise)
    assert prompt.startswith(f"### Exercise {exercise[2]}.{exercise[4]}")
    for nudge in NUDGES[exercise]:
        assert nudge not in prompt, nudge
    level_1 = checks.LADDERS[exercise][0]
    assert any(nudge in level_1 for nudge in NUDGES[exercise]), level_1


def test_the_prompt_of_1_3_keeps_its_requirements():
    prompt = _prompt("ex1_3")
    assert "(B, T+1)" in prompt and "operator norm" in prompt
    assert r"entry 0 is $\partial h_T / \partial h_T$" in prompt


@pytest.mark.parametrize(("exercise", "args"), [("ex1_1", "x, h, W_ih, W_hh, b_ih, b_hh"),
                                                ("ex1_2", "h_new, W_hh")])  # fmt: skip
def test_the_last_hint_levels_of_1_1_and_1_2_are_answers_that_pass(exercise, args, capsys):
    space = {"torch": torch}
    exec(f"def f({args}):\n    {checks.LADDERS[exercise][-1]}\n", space)  # noqa: S102
    getattr(checks, f"check_{checks.EXERCISE_IDS[exercise]}")(space["f"])
    assert "all 3 cases pass" in capsys.readouterr().out


def test_the_hint_levels_before_the_last_show_no_library_call():
    for exercise in PROMPTS:
        for level in checks.LADDERS[exercise][:-1]:
            assert "torch." not in level and "ord=" not in level, level


def test_an_rnn_cell_written_for_column_vectors_is_told_each_row_is_an_example():
    def columns(x, h, W_ih, W_hh, b_ih, b_hh):  # (H, B): the textbook W x + b, one column each
        return torch.tanh(W_ih @ x.T + b_ih[:, None] + W_hh @ h.T + b_hh[:, None])

    with pytest.raises(AssertionError) as info:
        checks.check_rnn_cell(columns)
    message = str(info.value)
    assert "(H, B)" in message and "column-vector" in message and "ROW is one example" in message
    assert ".T" not in message and "@" not in message


def _walk_forward(new_left=True):
    def fn(states, W_hh):  # from h_0 forward: entry d is about dh_d/dh_0, not dh_T/dh_(T-d)
        B, T1, H = states.shape
        J = torch.eye(H, dtype=states.dtype).expand(B, H, H)
        norms = [torch.ones(B, dtype=states.dtype)]
        for k in range(1, T1):
            step = rnn_step_jacobian(states[:, k], W_hh)
            J = step @ J if new_left else J @ step
            norms.append(torch.linalg.matrix_norm(J, ord=2))
        return torch.stack(norms, dim=1)

    return fn


def _smallest_stretch(states, W_hh):
    B, T1, H = states.shape
    J = torch.eye(H, dtype=states.dtype).expand(B, H, H)
    norms = [torch.ones(B, dtype=states.dtype)]
    for k in range(T1 - 1, 0, -1):
        J = J @ rnn_step_jacobian(states[:, k], W_hh)
        norms.append(torch.linalg.svdvals(J)[:, -1])
    return torch.stack(norms, dim=1)


@pytest.mark.parametrize(
    ("wrong", "phrase"),
    [
        (_walk_forward(), "walked forward from h_0"),
        (_walk_forward(new_left=False), "walked forward from h_0"),
        (_smallest_stretch, "smallest singular value"),
        (lambda s, W: gradient_reach(s, W) * 1.5, "Entry [b, d] is the operator norm"),  # unnamed
    ],
)
def test_more_mistakes_of_1_3_are_named_in_words(wrong, phrase):
    with pytest.raises(AssertionError) as info:
        checks.check_gradient_reach(wrong)
    message = str(info.value)
    assert phrase in message, message
    for code in ("torch.", "@", "[:, k]", "range("):
        assert code not in message, message
