"""Specifications of notebook 10's top-k exercise (10.2) after its change: exactly k survive,
also when logits tie at the k-th value, and the hints name the tie mistakes."""

from __future__ import annotations

import pytest
import torch
from test_checks_hints import _normal, solution_lines

from course_lib import checks, sampling

NEG_INF = float("-inf")


def top_k(logits, k, mode="positions"):
    """A right filter (default) or one typical mistake."""
    k_ = min(k, logits.shape[-1])
    kth = logits.topk(k_, dim=-1).values[..., -1:]
    if mode == "threshold":  # keeps every tied logit
        return logits.masked_fill(logits < kth, NEG_INF)
    if mode == "strict":  # drops every tied logit
        return logits.masked_fill(logits <= kth, NEG_INF)
    idx = logits.topk(k_, dim=-1).indices
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, idx, True)
    if mode == "zero":
        return torch.where(keep, logits, torch.zeros_like(logits))
    if mode == "probs":
        return logits.masked_fill(~keep, NEG_INF).softmax(dim=-1)
    if mode == "smallest":
        idx = (-logits).topk(k_, dim=-1).indices
        keep = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, idx, True)
    return logits.masked_fill(~keep, NEG_INF)


def blank(*args):
    raise NotImplementedError


def test_the_reference_and_course_lib_agree_and_pass(capsys):
    checks.check_top_k(top_k)
    assert capsys.readouterr().out == "✓ top_k: all 7 cases pass\n"
    tied = torch.tensor([[3.0, 1.0, 1.0, 1.0, 0.0]])
    assert int(sampling.top_k_filter(tied, 2).isfinite().sum()) == 2  # the library keeps exactly k


def test_any_k_of_the_tied_tokens_may_survive():
    def last_of_the_ties(logits, k):  # break ties towards the later position
        flipped = top_k(logits.flip(-1), k).flip(-1)
        return flipped

    checks.check_top_k(last_of_the_ties)


def test_a_blank_fails_only_its_own_exercise():
    from test_checks import causal_lm_loss, top_p_filter

    space = {"causal_lm_loss": causal_lm_loss, "top_k_filter": blank, "top_p_filter": top_p_filter}
    results = checks.progress("10", namespace=space)
    assert results == {
        "causal_lm_loss": ("pass", ""),
        "top_k": ("not attempted", ""),
        "top_p": ("pass", ""),
    }


@pytest.mark.parametrize(
    ("mode", "phrase", "case"),
    [
        ("threshold", "kept all of them, so more than k", "case 6/7"),
        ("strict", "kept k - 1 tokens", "case 1/7"),  # without ties a strict > keeps k - 1
        ("zero", "set them to float('-inf')", "case 1/7"),
        ("probs", "returned probabilities", "case 1/7"),
        ("smallest", "k *smallest*", "case 1/7"),
    ],
)
def test_top_k_mistakes_are_named(mode, phrase, case):
    with pytest.raises(AssertionError) as info:
        checks.check_top_k(lambda x, k: top_k(x, k, mode))
    message = str(info.value)
    assert case in message and phrase in message, message


def test_the_threshold_filter_passes_every_case_without_ties_and_is_named_on_ties():
    with pytest.raises(AssertionError) as info:
        checks.check_top_k(lambda x, k: top_k(x, k, "threshold"))
    assert "case 6/7 (ties at the border" in str(info.value)
    assert "exactly k" in str(info.value)


def test_the_strict_filter_on_ties_is_told_it_dropped_them():
    tied = torch.tensor([[3.0, 1.0, 1.0, 1.0, 0.0], [2.0, 2.0, 2.0, 5.0, -1.0]])
    from course_lib.checks.gpt_decoder_only import _top_k_tie_case

    with pytest.raises(AssertionError, match="dropped\\s+all of them"):
        _top_k_tie_case(lambda x, k: top_k(x, k, "strict"), "label", tied, 2)
    with pytest.raises(AssertionError, match="kept all\\s+of them"):
        _top_k_tie_case(lambda x, k: top_k(x, k, "threshold"), "label", tied, 2)
    _top_k_tie_case(top_k, "label", tied, 2)


def test_a_tie_filter_that_keeps_a_smaller_logit_is_told_so():
    from course_lib.checks.gpt_decoder_only import _top_k_tie_case

    tied = torch.tensor([[3.0, 1.0, 1.0, 1.0, 0.0]])
    wrong = lambda x, k: x.masked_fill(torch.tensor([[False, True, True, True, False]]), NEG_INF)  # noqa: E731
    with pytest.raises(AssertionError, match="larger than a kept one"):
        _top_k_tie_case(wrong, "label", tied, 2)


def test_messages_hold_no_solution_line():
    lines = solution_lines()
    for mode in ("threshold", "strict", "zero", "probs", "smallest"):
        with pytest.raises(AssertionError) as info:
            checks.check_top_k(lambda x, k, mode=mode: top_k(x, k, mode))
        text = _normal(str(info.value).split("(at line")[0])
        assert not [line for line in lines if line in text], str(info.value)
