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


# --- issue #14: the reversed mask behind a NaN guard, 6.1's left padding, no code anywhere ---


def reversed_fill(s, m):
    return torch.softmax(s.masked_fill(m, NEG_INF), dim=-1)  # hides the visible keys


REVERSED = [
    (reversed_fill, "came out NaN are those in which every key is visible"),
    (lambda s, m: reversed_fill(s, m).nan_to_num(0.0), "zeroing the NaN rows covered up"),
    (  # the right guard for empty rows on top of the reversed fill: NaN stays in full rows
        lambda s, m: reversed_fill(s, m).masked_fill(~m.any(-1, keepdim=True), 0.0),
        "came out NaN are those in which every key is visible",
    ),
    (  # a guard as reversed as the fill
        lambda s, m: reversed_fill(s, m).masked_fill(m.all(-1, keepdim=True), 0.0),
        "zeroing the NaN rows covered up",
    ),
    (lambda s, m: torch.softmax(s.masked_fill(m, -1e4), dim=-1), "polarity reversed"),
    (
        lambda s, m: torch.softmax(s.masked_fill(m, torch.finfo(s.dtype).min), -1).masked_fill(
            ~m.any(-1, keepdim=True), 0.0
        ),
        "polarity reversed",
    ),
]


@pytest.mark.parametrize(("wrong", "phrase"), REVERSED, ids=[str(i) for i in range(len(REVERSED))])
def test_a_reversed_mask_is_named_whatever_guards_the_nan_rows(wrong, phrase):
    with pytest.raises(AssertionError) as info:
        checks.check_masked_softmax(wrong)
    message = str(info.value)
    assert "polarity reversed" in message and phrase in message, message
    assert "not negative enough" not in message and "NaN in rows that do" not in message


def test_the_padding_mask_reference_passes_left_padding_included(capsys):
    checks.check_padding_mask(lambda t, p: (t != p)[:, None, None, :])
    assert capsys.readouterr().out == "✓ padding_mask: all 4 cases pass\n"


def lengths_mask(tokens, pad_id):  # counts the real tokens: right for right padding only
    n = (tokens != pad_id).sum(-1, keepdim=True)
    return (torch.arange(tokens.shape[1]) < n)[:, None, None, :]


def before_first_pad(tokens, pad_id):  # hides everything from the first PAD on
    return ((tokens == pad_id).cumsum(-1) == 0)[:, None, None, :]


PADDING_MISTAKES = [
    (lambda t, p: (t != 0)[:, None, None, :], "not with pad_id"),
    (lambda t, p: (t > 0)[:, None, None, :], "do not assume it is 0"),
    (lengths_mask, "first n positions of each row"),
    (before_first_pad, "from the first PAD on"),
    (lambda t, p: (t == p)[:, None, None, :], "polarity reversed"),
]


@pytest.mark.parametrize(
    ("wrong", "phrase"), PADDING_MISTAKES, ids=[p for _, p in PADDING_MISTAKES]
)
def test_each_padding_mistake_is_named(wrong, phrase):
    with pytest.raises(AssertionError) as info:
        checks.check_padding_mask(wrong)
    assert phrase in str(info.value), str(info.value)


@pytest.mark.parametrize(
    ("diagonal", "phrase"), [(1, "next (future) token"), (-1, "cannot see itself")]
)
def test_the_causal_off_by_ones_are_named_without_code(diagonal, phrase):
    with pytest.raises(AssertionError) as info:
        checks.check_causal_mask(lambda L: torch.ones(L, L, dtype=torch.bool).tril(diagonal))
    assert "off by one" in str(info.value) and phrase in str(info.value)
    assert "tril" not in str(info.value)


def test_a_causal_mask_that_raises_gets_a_hint_without_code():
    with pytest.raises(AssertionError) as info:
        checks.check_causal_mask(lambda L: torch.tril(L))
    hint = str(info.value).split("Hint: ", 1)[1]
    assert "tril" not in hint and "lower-triangular" not in hint, hint


def test_no_message_or_early_hint_level_of_notebook_06_shows_code():
    from test_feedback_shows_no_code import code_fragments

    from course_lib.checks.masking import CAUSAL_HINTS, LADDERS, PAD_HINTS, SOFTMAX_HINTS

    texts = [*PAD_HINTS.values(), *CAUSAL_HINTS.values(), *SOFTMAX_HINTS.values()]
    texts += [text for k in ("ex6_1", "ex6_2", "ex6_3") for text in LADDERS[k][:-1]]
    assert not [(t, hits) for t in texts if (hits := code_fragments(t))]


def test_the_prompts_of_notebook_06_state_requirements_not_the_traps():
    from pathlib import Path

    import nbformat

    path = Path(__file__).resolve().parents[1] / "notebooks" / "06_masking.ipynb"
    nb = nbformat.read(path, as_version=4)
    prompts = [c.source for c in nb.cells if c.source.startswith("### Exercise 6.")]
    assert len(prompts) == 3
    text = "\n".join(prompts)
    for trap in ("Watch the polarity", "choose a fill value", "no NaN", "spread over"):
        assert trap not in text, trap
    assert "left padding" in prompts[0]  # 6.1's added requirement
    assert "True = may attend" in prompts[2] and "all zeros" in prompts[2]


def test_a_blank_padding_or_causal_mask_fails_only_its_own_check():
    def blank(*args):
        raise NotImplementedError

    def padding(t, p):
        return (t != p)[:, None, None, :]

    def causal(L):
        return torch.ones(L, L, dtype=torch.bool).tril()

    for name in ("padding_mask", "causal_mask"):
        functions = {"padding_mask": padding, "causal_mask": causal}
        functions["masked_softmax"] = masked_softmax
        functions[name] = blank
        results = checks.progress("06", functions)
        assert {k: v[0] for k, v in results.items()} == {
            k: "not attempted" if k == name else "pass" for k in functions
        }


@pytest.mark.parametrize(
    "mask",
    [
        torch.tensor([[0.0, float("-inf")], [0.0, 0.0]]),  # an additive float mask
        torch.tensor([[1, 0], [1, 1]]),  # the right values as integers
        torch.tensor([[0.5, 0.0], [1.0, 1.0]]),  # some other float mask
    ],
)
def test_a_mask_that_is_not_bool_is_told_the_convention_in_words(mask):
    from test_feedback_shows_no_code import code_fragments

    from course_lib.checks._machinery import require_bool_mask

    right = torch.tensor([[True, False], [True, True]])
    with pytest.raises(AssertionError, match="bool mask, True = may attend") as failure:
        require_bool_mask("causal_mask", mask, right)
    assert code_fragments(str(failure.value)) == []
