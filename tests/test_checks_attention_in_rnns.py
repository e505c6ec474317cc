"""Specifications of notebook 02's composing exercise (2.3, one attention decoder step)."""

from __future__ import annotations

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
