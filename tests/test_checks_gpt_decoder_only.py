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
        ("zero", "set them to floating-point minus infinity", "case 1/7"),
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


# ----------------------------------------------------------------------------- 10.1, 10.3, the hints


def causal_lm_loss(logits, tokens, shift=1):
    """A learner's loss: right with shift=1, no shift with 0, the wrong way with -1."""
    V = logits.shape[-1]
    if shift == 1:
        x, t = logits[:, :-1], tokens[:, 1:]
    elif shift == -1:
        x, t = logits[:, 1:], tokens[:, :-1]
    else:
        x, t = logits, tokens
    return torch.nn.functional.cross_entropy(x.reshape(-1, V), t.reshape(-1))


def top_p(logits, p, mode="right"):
    """A right nucleus filter (default) or one typical mistake."""
    values, order = logits.sort(dim=-1, descending=True)
    mass = values if mode.startswith("logits") else values.softmax(dim=-1)  # what is added up
    keep_sorted = mass.cumsum(dim=-1) - mass < p
    if mode == "logits, up to p":
        keep_sorted = mass.cumsum(dim=-1) <= p
    if mode == "sorted mask":  # the decision left in sorted order
        return logits.masked_fill(~keep_sorted, NEG_INF)
    if mode == "gather":  # moved back with the sort order itself, not its inverse
        return logits.masked_fill(~keep_sorted.gather(-1, order), NEG_INF)
    if mode == "sorted logits":
        return values.masked_fill(~keep_sorted, NEG_INF)
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    return logits.masked_fill(~keep, NEG_INF)


def test_the_loss_and_nucleus_references_pass(capsys):
    checks.check_causal_lm_loss(causal_lm_loss)
    checks.check_top_p(top_p)
    assert (
        capsys.readouterr().out == "✓ causal_lm_loss: all 3 cases pass\n✓ top_p: all 5 cases pass\n"
    )


@pytest.mark.parametrize(("shift", "phrase"), [(0, "no shift"), (-1, "shifted the wrong way")])
def test_loss_shift_mistakes_are_named(shift, phrase):
    with pytest.raises(AssertionError, match=phrase):
        checks.check_causal_lm_loss(lambda x, t: causal_lm_loss(x, t, shift))


@pytest.mark.parametrize(
    ("mode", "phrase"),
    [
        ("logits", "you accumulated logits, not probabilities"),
        ("logits, up to p", "you accumulated logits, not probabilities"),
        ("sorted mask", "the keep/remove decision is still in sorted order"),
        ("gather", "moved back the wrong way"),
        ("sorted logits", "you returned the logits in sorted order"),
    ],
)
def test_top_p_mistakes_are_named(mode, phrase):
    with pytest.raises(AssertionError) as info:
        checks.check_top_p(lambda x, p: top_p(x, p, mode))
    message = str(info.value)
    assert phrase in message and "increasing order" not in message, message


@pytest.mark.parametrize("check", ["check_top_k", "check_top_p"])
def test_a_filter_that_overwrites_its_input_is_told_so(check):
    def in_place(logits, k_or_p):
        right = top_k(logits, k_or_p) if check == "check_top_k" else top_p(logits, k_or_p)
        logits.copy_(right)  # the caller's logits are gone
        return logits

    with pytest.raises(AssertionError, match="changed its input `logits` in place"):
        getattr(checks, check)(in_place)


@pytest.mark.parametrize(
    ("exercise", "signature", "check"),
    [
        ("ex10_1", "(logits, tokens)", "check_causal_lm_loss"),
        ("ex10_2", "(logits, k)", "check_top_k"),
        ("ex10_3", "(logits, p)", "check_top_p"),
    ],
)
def test_the_last_hint_level_is_a_working_answer(exercise, signature, check):
    from test_checks_full_transformer import from_ladder

    getattr(checks, check)(from_ladder(exercise, signature))


def test_the_messages_of_typical_mistakes_show_no_code():
    from test_feedback_shows_no_code import code_fragments

    wrongs = [
        (checks.check_causal_lm_loss, lambda x, t, s=s: causal_lm_loss(x, t, s)) for s in (0, -1)
    ]
    wrongs += [(checks.check_top_k, lambda x, k, m=m: top_k(x, k, m)) for m in ("zero", "probs")]
    wrongs += [
        (checks.check_top_p, lambda x, p, m=m: top_p(x, p, m))
        for m in ("logits", "sorted mask", "gather", "sorted logits")
    ]
    for check, wrong in wrongs:
        with pytest.raises(AssertionError) as info:
            check(wrong)
        message = str(info.value).split("(at line")[0]  # the learner's own line may show
        assert not code_fragments(message), message


def test_the_notebooks_markdown_holds_no_solution_line():
    from test_feedback_shows_no_code import markdown_leaks

    assert not markdown_leaks("10"), markdown_leaks("10")
