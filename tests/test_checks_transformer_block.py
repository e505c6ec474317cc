"""Specifications of notebook 08's exercises: 8.1 encoder layer, 8.2 LayerNorm, 8.3 debug a block.

Each exercise: the reference solution passes, a blank reads as not attempted and fails only its
own check, typical mistakes are named, and no message (nor any hint level but the last) shows a
line of the solution.
"""

from __future__ import annotations

import pytest
import torch

from course_lib import checks

# ----------------------------------------------------------------------------- reference answers


def encoder_layer(x, self_attn, ff, norm1, norm2, mask=None):
    h = norm1(x)
    x = x + self_attn(h, h, h, mask)
    return x + ff(norm2(x))


def layer_norm(x, gamma, beta, eps=1e-5):
    mean = x.mean(dim=-1, keepdim=True)
    var = x.var(dim=-1, unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * gamma + beta


def block_with(dims=(-1,), attn_res=True, ff_res=True, unbiased=False, eps=1e-5, mask_on=True):
    """The colleague's block of Exercise 8.3 with each bug (or a new mistake) switchable."""

    def fixed_block(x, attn, ff, g1, b1, g2, b2, mask=None):
        def norm(h, gamma, beta):
            mean = h.mean(dim=dims, keepdim=True)
            var = h.var(dim=dims, unbiased=unbiased, keepdim=True)
            return (h - mean) / torch.sqrt(var + eps) * gamma + beta

        h = norm(x, g1, b1)
        a = attn(h, h, h, mask if mask_on else None)
        x = x + a if attn_res else a
        f = ff(norm(x, g2, b2))
        return x + f if ff_res else f

    return fixed_block


fixed_block = block_with()
suspect_block = block_with(dims=(1,), attn_res=False)  # the notebook's colleague's block


def test_the_reference_fix_passes_with_one_line(capsys):
    checks.check_fixed_block(fixed_block)
    assert capsys.readouterr().out.strip() == "✓ fixed_block: all 3 cases pass"


def test_the_fix_may_use_the_learners_own_layer_norm_or_pytorchs():
    def with_torch(x, attn, ff, g1, b1, g2, b2, mask=None):
        norm = lambda h, g, b: torch.nn.functional.layer_norm(h, h.shape[-1:], g, b)  # noqa: E731
        h = norm(x, g1, b1)
        x = x + attn(h, h, h, mask)
        return x + ff(norm(x, g2, b2))

    checks.check_fixed_block(with_torch)


@pytest.mark.parametrize(
    "wrong, words",
    [
        (suspect_block, "still the colleague's block: both bugs"),
        (block_with(dims=(1,)), "averages over the positions"),
        (block_with(attn_res=False), "attention sublayer still replaces x"),
        (block_with(dims=(0,)), "averages over the batch"),
        (block_with(dims=(0, 1, 2)), "whole"),
        (block_with(unbiased=True), "not one of the bugs"),
        (block_with(ff_res=False), "feed-forward residual is gone"),
        (block_with(mask_on=False), "mask was not passed"),
    ],
)
def test_each_remaining_bug_and_new_mistake_is_named(wrong, words):
    with pytest.raises(AssertionError, match=words):
        checks.check_fixed_block(wrong)


def test_a_tuple_instead_of_a_tensor_is_explained():
    with pytest.raises(AssertionError, match="return only the tensor"):
        checks.check_fixed_block(lambda *args, **kw: (fixed_block(*args, **kw),))


BLANK = "Exercise not attempted yet"


def _blank(*args, **kwargs):
    raise NotImplementedError


@pytest.mark.parametrize("exercise", ["encoder_layer", "layer_norm", "fixed_block"])
def test_a_blank_exercise_fails_only_its_own_check(exercise):
    space = {"encoder_layer": encoder_layer, "layer_norm": layer_norm, "fixed_block": fixed_block}
    space[exercise] = _blank
    results = checks.progress("08", namespace=space)
    assert list(results) == ["encoder_layer", "layer_norm", "fixed_block"], "notebook order"
    for name, (status, _) in results.items():
        assert status == ("not attempted" if name == exercise else "pass"), name


def _messages(check, wrongs):
    out = []
    for wrong in wrongs:
        with pytest.raises(AssertionError) as info:
            check(wrong)
        out.append(str(info.value))
    return out


SOLUTION_LINES = {
    "ex8_1": ["x = x + self_attn(h, h, h, mask)", "ff(norm2(x))", "h = norm1(x)"],
    "ex8_2": ["torch.sqrt(var + eps)", "unbiased=False", "* gamma + beta", "keepdim=True"],
    "ex8_3": ["x = x + attn(", "dim=-1", "ff(norm(x, g2, b2))"],
}


def test_no_failure_message_contains_a_solution_line():
    msgs = _messages(
        checks.check_fixed_block,
        [suspect_block, block_with(dims=(1,)), block_with(attn_res=False), block_with(dims=(0,))],
    )
    msgs += _messages(
        checks.check_encoder_layer,
        [
            lambda x, a, f, n1, n2, mask=None: f(a(n1(x), n1(x), n1(x), mask)),
            lambda x, a, f, n1, n2, mask=None: n2(n1(x + a(x, x, x, mask)) + f(x)),
        ],
    )
    msgs += _messages(
        checks.check_layer_norm,
        [
            lambda x, g, b, eps=1e-5: (
                (x - x.mean(-1, keepdim=True)) / (x.std(-1, keepdim=True) + eps)
            ),
            lambda x, g, b, eps=1e-5: (
                (x - x.mean(0, keepdim=True)) / x.std(0, keepdim=True) * g + b
            ),
        ],
    )
    for msg in msgs:
        for lines in SOLUTION_LINES.values():
            for line in lines:
                assert line not in msg, (line, msg)


def test_only_the_last_hint_level_shows_code():
    for key, lines in SOLUTION_LINES.items():
        ladder = checks.LADDERS[key]
        assert len(ladder) >= 3
        for level in ladder[:-1]:
            assert not any(line in level for line in lines), (key, level)
        assert any(line in ladder[-1] for line in lines), key


def test_exercise_8_3_is_registered_as_the_third_exercise_of_notebook_08():
    assert checks.EXERCISE_IDS["ex8_3"] == "fixed_block"
