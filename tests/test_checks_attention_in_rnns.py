"""Specifications of notebook 02's composing exercise (2.3, one attention decoder step)."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
import torch
from test_checks_hints import _normal, solution_lines

from course_lib import checks


def decoder_step(y_prev, s_prev, states, mask, embed, attend, cell, out, knob=""):
    """Bahdanau's order, written independently of course_lib; `knob` makes one mistake."""
    context, weights = attend(s_prev, states, None if knob == "no_mask" else mask)
    e = embed(y_prev)
    s = cell(torch.cat([context, e] if knob == "gru_order" else [e, context], -1), s_prev)
    read = s_prev if knob == "out_prev" else s
    logits = out(torch.cat([context, read] if knob == "out_order" else [read, context], -1))
    if knob == "new_query":
        weights = attend(s, states, mask)[1]
    if knob == "probs":
        logits = logits.softmax(-1)
    if knob == "swap_return":
        return s, logits, weights
    return logits, s, weights


def with_knob(knob):
    return lambda *args: decoder_step(*args, knob=knob)


def blank(*args):
    raise NotImplementedError


def test_a_right_decoder_step_passes_with_one_line(capsys):
    checks.check_decoder_step(decoder_step)
    assert capsys.readouterr().out == "✓ decoder_step: all 3 cases pass\n"


def test_a_blank_decoder_step_reads_as_not_attempted():
    with pytest.raises(AssertionError, match="not attempted"):
        checks.check_decoder_step(blank)


def test_a_blank_decoder_step_fails_only_its_own_check(capsys):
    results = checks.progress("02", namespace={"decoder_step": blank})
    assert results["decoder_step"][0] == "not attempted"
    assert [s for e, (s, _) in results.items() if e != "decoder_step"] == ["not attempted"] * 2


@pytest.mark.parametrize(
    ("knob", "phrase"),
    [
        ("new_query", "previous state s_{t-1} asks"),
        ("out_prev", "read the previous state"),
        ("gru_order", "[embedding of y_prev ; context], in that order"),
        ("out_order", "new state first"),
        ("probs", "return the logits"),
        ("no_mask", "mask was ignored"),
        ("swap_return", "in that order"),
    ],
)
def test_each_typical_decoder_step_mistake_is_named(knob, phrase):
    with pytest.raises(AssertionError) as info:
        checks.check_decoder_step(with_knob(knob))
    assert phrase in str(info.value)


def test_a_decoder_step_without_the_context_in_the_gru_is_told_the_shapes():
    def no_context(y_prev, s_prev, states, mask, embed, attend, cell, out):
        context, weights = attend(s_prev, states, mask)
        s = cell(embed(y_prev), s_prev)
        return out(torch.cat([s, context], -1)), s, weights

    with pytest.raises(AssertionError, match=r"\(B, E \+ K\)"):
        checks.check_decoder_step(no_context)


def test_decoder_step_messages_hold_no_solution_line():
    lines = solution_lines()
    for knob in ("new_query", "out_prev", "gru_order", "out_order", "probs", "no_mask"):
        with pytest.raises(AssertionError) as info:
            checks.check_decoder_step(with_knob(knob))
        text = _normal(str(info.value).split("(at line")[0])
        assert not [line for line in lines if line in text], str(info.value)


def test_the_luong_step_differs_from_bahdanaus_in_what_its_query_and_state_see():
    from course_lib.lessons.attention_in_rnns import LuongDecoderStep, what_changes
    from course_lib.rnn import Seq2SeqRNN

    torch.manual_seed(0)
    model = Seq2SeqRNN(14, emb=8, hidden=6, attention="general", bidirectional_encoder=True)
    luong = LuongDecoderStep(14, emb=8, hidden=6, key_dim=12)
    states, s0, mask = model.encode(torch.randint(4, 14, (3, 5)))
    y, y_other = torch.tensor([4, 5, 6]), torch.tensor([7, 8, 9])

    def bahdanau(y_prev, s_prev, st, m):
        s, _, w = model._step(y_prev, s_prev, st, m, None)
        return None, s, w

    b = what_changes(bahdanau, y, y_other, s0, states, mask)
    lu = what_changes(luong, y, y_other, s0, states, mask)
    assert not b["last letter", "weights"] and lu["last letter", "weights"]
    assert b["encoder states", "new state"] and not lu["encoder states", "new state"]


def test_a_decoder_step_that_attends_again_with_the_new_state_is_told_which_state_asks():
    def luong_like(y_prev, s_prev, states, mask, embed, attend, cell, out):
        context, _ = attend(s_prev, states, mask)
        s = cell(torch.cat([embed(y_prev), context], -1), s_prev)
        context, weights = attend(s, states, mask)
        return out(torch.cat([s, context], -1)), s, weights

    with pytest.raises(AssertionError, match="previous state s_{t-1} asks"):
        checks.check_decoder_step(luong_like)


# --- Exercises 2.1 and 2.2: the pooling half (mask, softmax, context) ---------------------------

NEG_INF = float("-inf")


def pooled(scores, keys, mask, fill=NEG_INF, squeeze_scores=-1, context="sum", dim=-1):
    """The pooling half as a learner writes it; each knob is one typical mistake."""
    scores = scores.squeeze() if squeeze_scores is None else scores.squeeze(squeeze_scores)
    if mask is not None:
        scores = scores.masked_fill(~mask, fill)
    weights = torch.softmax(scores, dim=dim)
    if context == "sum":
        ctx = (weights[..., None] * keys).sum(-2)
    elif context == "bmm":
        ctx = torch.bmm(weights.unsqueeze(1), keys).squeeze(1)
    elif context == "bmm_bare":
        ctx = torch.bmm(weights[:, None, :], keys).squeeze()
    elif context == "einsum":
        ctx = torch.einsum("bl,blh->bh", weights, keys)
    elif context == "matmul":  # (B, L) @ (B, L, H): one matrix against every sentence's keys
        ctx = weights @ keys
    elif context == "kept":  # (B, 1, H): the axis added for the product is left in
        ctx = torch.bmm(weights[:, None, :], keys)
    return ctx, weights


def dot_with(**knobs):
    return lambda q, k, m=None: pooled(torch.bmm(k, q[:, :, None]), k, m, **knobs)


def additive_with(**knobs):
    def fn(q, k, W_q, W_k, v, m=None):
        return pooled(v(torch.tanh(W_q(q)[:, None, :] + W_k(k))), k, m, **knobs)

    return fn


ATTENTION = {"dot": (checks.check_dot_attention, dot_with),
             "additive": (checks.check_additive_attention, additive_with)}  # fmt: skip


def _message(kind, **knobs):
    check, make = ATTENTION[kind]
    with pytest.raises(AssertionError) as info:
        check(make(**knobs))
    return re.sub(r"\(at line \d+ of your code: `.*?`\)", "", str(info.value))  # their own line


@pytest.mark.parametrize("kind", sorted(ATTENTION))
def test_the_reference_pooling_passes_every_case(kind, capsys):
    check, make = ATTENTION[kind]
    for context in ("sum", "bmm", "einsum"):
        check(make(context=context))
    assert capsys.readouterr().out == f"✓ {kind}_attention: all 5 cases pass\n" * 3


@pytest.mark.parametrize("kind", sorted(ATTENTION))
@pytest.mark.parametrize(
    ("knobs", "case"),
    [
        ({"squeeze_scores": None}, "case 5/5"),  # weights come back (B,): told as L = 1
        ({"squeeze_scores": None, "context": "bmm"}, "case 5/5"),  # raises on the 2-D weights
        ({"squeeze_scores": None, "context": "einsum"}, "case 5/5"),  # raises too
        ({"context": "bmm_bare"}, "case 4/5"),  # scores right, context (H,) when B = 1
    ],
)
def test_a_bare_squeeze_is_named_with_the_size_1_axis_it_removes(kind, knobs, case):
    message = _message(kind, **knobs)
    assert case in message, message
    assert "removes EVERY axis of size 1" in message and "the batch axis too when B = 1" in message
    assert ("B = 1 (one example)" if case == "case 4/5" else "L = 1 (one position)") in message
    for code in ("squeeze(", "dim=", "[:, None", "unsqueeze"):
        assert code not in message, message


@pytest.mark.parametrize("kind", sorted(ATTENTION))
def test_masked_scores_set_to_zero_are_named_not_told_the_weights_do_not_sum_to_1(kind):
    message = _message(kind, fill=0.0)
    assert "case 2/5" in message and "filled with 0 instead of -inf" in message, message
    assert "exp(0) = 1" in message
    assert "sum to 1" not in message and "float(" not in message


@pytest.mark.parametrize("kind", sorted(ATTENTION))
@pytest.mark.parametrize(
    ("knobs", "phrase"),
    [
        ({"dim": 0}, "softmax over the wrong axis (the batch axis)"),
        ({"context": "matmul"}, "(B, B, H_enc)"),
        ({"context": "kept"}, "extra size-1 axis"),
    ],
)
def test_each_pooling_mistake_is_named_without_code(kind, knobs, phrase):
    message = _message(kind, **knobs)
    assert phrase in message, message
    for code in ("dim=", "squeeze(", "float(", "@ ", ".T"):
        assert code not in message, message


def test_the_last_hint_levels_of_2_1_and_2_2_are_answers_that_pass(capsys):
    for exercise, args in (("ex2_1", "query, keys, W_q, W_k, v, mask=None"),
                           ("ex2_2", "query, keys, mask=None")):  # fmt: skip
        body = "".join(f"    {line}\n" for line in checks.LADDERS[exercise][-1].splitlines())
        space = {"torch": torch}
        exec(f"def f({args}):\n{body}", space)  # noqa: S102 - the ladder's own code
        getattr(checks, f"check_{checks.EXERCISE_IDS[exercise]}")(space["f"])
    assert capsys.readouterr().out.count("all 5 cases pass") == 2


def test_a_blank_pooling_exercise_fails_only_its_own_check():
    def blank_attention(*args, **kwargs):
        raise NotImplementedError

    results = checks.progress(
        "02",
        namespace={"additive_attention": blank_attention, "dot_attention": dot_with(),
                   "decoder_step": decoder_step},
    )  # fmt: skip
    assert results["additive_attention"][0] == "not attempted"
    assert results["dot_attention"][0] == "pass" and results["decoder_step"][0] == "pass"


def test_an_unnamed_wrong_decoder_step_is_pointed_at_the_equations_not_given_a_recipe():
    def no_context_out(y_prev, s_prev, states, mask, embed, attend, cell, out):
        context, weights = attend(s_prev, states, mask)
        s = cell(torch.cat([embed(y_prev), context], -1), s_prev)
        return out(torch.cat([s, torch.zeros_like(context)], -1)), s, weights

    with pytest.raises(AssertionError) as info:
        checks.check_decoder_step(no_context_out)
    message = str(info.value)
    assert "wrong values" in message and "equations of section 5" in message, message
    assert "attend with the previous state" not in message  # the old step-by-step recipe


# --- issue #14: the prompts state the task and the requirements, not the traps -----------------

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "02_attention_in_rnns.ipynb"
PROMPTS = {"ex2_1": "f061176c", "ex2_2": "3827481e", "ex2_3": "4ed33919"}  # markdown cell ids
NUDGES = {  # sentences that pre-empted the classic mistakes, now at hint level 1 or 2
    "ex2_1": ("must be added to every projected key", "before the softmax, not after"),
    "ex2_2": ("mask → softmax → weighted average",),
    "ex2_3": ("which state asks", "in which order its input is assembled"),
}


def _prompt(exercise: str) -> str:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    return next(c.source for c in nb.cells if c.get("id") == PROMPTS[exercise])


@pytest.mark.parametrize("exercise", sorted(PROMPTS))
def test_the_prompt_holds_no_nudge(exercise):
    prompt = _prompt(exercise)
    assert prompt.startswith(f"### Exercise {exercise[2]}.{exercise[4]}")
    for nudge in NUDGES[exercise]:
        assert nudge not in prompt, nudge


def test_the_prompts_of_2_1_and_2_2_state_the_size_1_requirement_the_check_tests():
    assert "$B = 1$ (one sentence) and $L = 1$ (one position) work" in _prompt("ex2_1")
    assert "Weight exactly 0 wherever the mask is False" in _prompt("ex2_1")
    assert "requirements of Exercise 2.1 hold, $B = 1$ and $L = 1$ included" in _prompt("ex2_2")
    assert "without scaling" in _prompt("ex2_2")  # defines Luong's score: a requirement


def test_the_traps_taken_out_of_the_prompts_are_named_at_hint_level_1():
    assert "before the softmax, not be zeroed after it" in checks.LADDERS["ex2_1"][0]
    assert "removes the batch axis when B = 1" in checks.LADDERS["ex2_2"][0]
    assert "which state asks" in checks.LADDERS["ex2_3"][0]
