"""Exercise 6.3 (masked_softmax): the reference passes, a blank fails alone, mistakes are named."""

from __future__ import annotations

import pytest
import torch

from course_lib import checks

NEG_INF = float("-inf")


def masked_softmax(scores, mask):  # written independently of the check's answer key
    weights = torch.softmax(scores.float().masked_fill(~mask, NEG_INF), dim=-1)
    return torch.where(mask.any(-1, keepdim=True), weights, 0.0).to(scores.dtype)


def with_fill(fill):
    return lambda s, m: torch.softmax(s.masked_fill(~m, fill), dim=-1)


MISTAKES = [
    (with_fill(NEG_INF), "came out NaN"),  # no guard for the empty rows
    (with_fill(-1e9), "sum to 1 (spread over hidden keys)"),  # finite fill: uniform empty rows
    (lambda s, m: with_fill(torch.finfo(s.dtype).min)(s, m), "large finite fill"),
    (
        lambda s, m: masked_softmax(s.masked_fill(~m, -10.0), torch.ones_like(m)),
        "not negative enough",
    ),
    (lambda s, m: masked_softmax(s, ~m), "polarity reversed"),
    (lambda s, m: torch.softmax(s, dim=-1), "mask was ignored"),
    (lambda s, m: torch.softmax(s.masked_fill(~m, NEG_INF), -2).nan_to_num(0.0), "wrong axis"),
    (lambda s, m: torch.softmax(s, dim=-1) * m, "do not sum to 1"),
    (lambda s, m: masked_softmax(s.float(), m), "keep the scores' dtype"),
    (lambda s, m: (masked_softmax(s, m), m), "one torch.Tensor"),
]


def test_the_reference_passes_with_one_line(capsys):
    checks.check_masked_softmax(masked_softmax)
    assert capsys.readouterr().out.strip() == "✓ masked_softmax: all 3 cases pass"


def test_the_notebook_solution_passes():
    def notebook(scores, mask):
        weights = torch.softmax(scores.masked_fill(~mask, NEG_INF), dim=-1)
        return weights.masked_fill(~mask.any(dim=-1, keepdim=True), 0.0)

    checks.check_masked_softmax(notebook)
    checks.check_masked_softmax(lambda s, m: with_fill(NEG_INF)(s, m).nan_to_num(0.0))


@pytest.mark.parametrize(("wrong", "phrase"), MISTAKES, ids=[p for _, p in MISTAKES])
def test_each_typical_mistake_is_named(wrong, phrase):
    with pytest.raises(AssertionError) as info:
        checks.check_masked_softmax(wrong)
    assert phrase in str(info.value), str(info.value)
    assert str(info.value).startswith("masked_softmax, case")


def test_a_float16_fill_that_does_not_fit_is_explained():
    def fp16_only(scores, mask):  # right in float32, -1e9 in float16
        if scores.dtype == torch.float16:
            return with_fill(-1e9)(scores, mask)
        return masked_softmax(scores, mask)

    with pytest.raises(AssertionError, match=r"(?s)case 3/3.*raised RuntimeError.*65504"):
        checks.check_masked_softmax(fp16_only)


def test_a_blank_fails_only_its_own_check():
    def blank(scores, mask):
        raise NotImplementedError

    with pytest.raises(AssertionError, match="Exercise not attempted yet"):
        checks.check_masked_softmax(blank)
    checks.check_padding_mask(lambda t, p: (t != p)[:, None, None, :])
    checks.check_causal_mask(lambda L: torch.ones(L, L, dtype=torch.bool).tril())


def test_calling_the_course_attention_is_refused():
    from course_lib.attention import scaled_dot_product_attention

    def via_reference(scores, mask):
        eye = torch.eye(scores.shape[-1], dtype=scores.dtype)
        return scaled_dot_product_attention(scores, eye, eye, mask)[1]

    with pytest.raises(AssertionError, match="write it yourself"):
        checks.check_masked_softmax(via_reference)


def test_no_message_gives_the_solution_line():
    from course_lib.checks.masking import SOFTMAX_HINTS

    for text in SOFTMAX_HINTS.values():
        assert "masked_fill(" not in text and "float('-inf')" not in text
        assert 'float("-inf")' not in text and ".any(" not in text
