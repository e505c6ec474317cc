"""Specifications of notebook 08's exercises: 8.1 encoder layer, 8.2 LayerNorm, 8.3 debug a block.

Each exercise: the reference solution passes, a blank reads as not attempted and fails only its
own check, typical mistakes are named, and no message (nor any hint level but the last) shows a
line of the solution.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
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


# ----------------------------------------------------------------------------- Exercise 8.2 in detail


def ln_with(dims=(-1,), var="biased", eps_where="inside", centre=True, affine="both", eps=None):
    """A learner's LayerNorm with each typical mistake switchable (float32, as a learner writes it)."""

    def fn(x, gamma, beta, eps_arg=1e-5):
        e = eps_arg if eps is None else eps
        mean = x.mean(dim=dims, keepdim=True)
        y = x - mean if centre else x
        if var == "rms":
            spread = ((x**2).mean(dim=dims, keepdim=True) + e).sqrt()
        elif var == "var":
            spread = x.var(dim=dims, unbiased=False, keepdim=True) + e
        else:
            v = x.var(dim=dims, unbiased=var == "unbiased", keepdim=True)
            spread = {"inside": (v + e).sqrt(), "outside": v.sqrt() + e, "none": v.sqrt()}[
                eps_where
            ]
        y = y / spread
        return {
            "both": y * gamma + beta,
            "none": y,
            "no_beta": y * gamma,
            "no_gamma": y + beta,
            "swapped": y * beta + gamma,
        }[affine]

    return fn


def ln_unpacking(x, gamma, beta, eps=1e-5):  # right for (B, L, D) only
    B, L, D = x.shape
    return layer_norm(x, gamma, beta, eps)


def test_layer_norm_passes_on_every_rank(capsys):
    checks.check_layer_norm(layer_norm)
    assert capsys.readouterr().out.strip() == "✓ layer_norm: all 6 cases pass"
    checks.check_layer_norm(
        lambda x, g, b, eps=1e-5: torch.nn.functional.layer_norm(x, x.shape[-1:], g, b, eps)
    )


LN_MISTAKES = [
    (ln_with(var="unbiased"), "unbiased variance (divided by D - 1)"),
    (ln_with(var="unbiased", eps_where="outside"), "std + eps with the unbiased std"),
    (ln_with(eps_where="outside"), "eps outside the square root"),
    (ln_with(eps_where="none"), "eps is missing"),
    (ln_with(var="unbiased", eps_where="none"), "unbiased variance (divided by D - 1) and no eps"),
    (ln_with(eps=1e-5), "eps is hard-coded"),
    (ln_with(dims=(0,)), "over the batch axis (BatchNorm-like)"),
    (ln_with(dims=(0, 1)), "over the batch axis (BatchNorm-like)"),
    (ln_with(dims=(1,)), "over the positions of each sequence"),
    (ln_with(dims=(1, 2)), "more than one token"),
    (ln_with(dims=(0, 1, 2)), "more than one token"),
    (ln_with(dims=(2,)), "axis 2, which holds the features only when x is (B, L, D)"),
    (ln_unpacking, "any number of leading axes"),
    (ln_with(var="rms", centre=False), "this is RMSNorm"),
    (ln_with(centre=False), "the mean was not subtracted"),
    (ln_with(var="var"), "divided by the variance itself"),
    (ln_with(affine="none"), "forgot gamma and beta"),
    (ln_with(affine="no_beta"), "forgot beta"),
    (ln_with(affine="no_gamma"), "forgot gamma"),
    (ln_with(affine="swapped"), "gamma and beta swapped"),
]


@pytest.mark.parametrize(("wrong", "phrase"), LN_MISTAKES, ids=[p for _, p in LN_MISTAKES])
def test_each_layer_norm_mistake_is_named(wrong, phrase):
    with pytest.raises(AssertionError) as info:
        checks.check_layer_norm(wrong)
    assert phrase in str(info.value), str(info.value)


def test_a_hard_coded_last_axis_of_three_fails_on_a_single_token():
    def dim_two(x, gamma, beta, eps=1e-5):
        if x.dim() == 4:  # only the single token is left to catch it
            return layer_norm(x, gamma, beta, eps)
        return ln_with(dims=(2,))(x, gamma, beta, eps)

    with pytest.raises(AssertionError) as info:
        checks.check_layer_norm(dim_two)
    msg = str(info.value)
    assert "a single token" in msg and "this x is 1-D" in msg, msg


def test_an_unrecognised_layer_norm_gets_the_definition():
    with pytest.raises(AssertionError) as info:
        checks.check_layer_norm(lambda x, g, b, eps=1e-5: layer_norm(x, g, b, eps) * 1.1)
    assert "formula of section 5" in str(info.value)


def test_the_8_2_prompt_states_the_definition_and_leaves_the_traps_to_the_hints():
    prompt = _prompt("### Exercise 8.2")
    for requirement in (r"\sqrt{\sigma^2 + \varepsilon}", r"\frac{1}{D}\sum_d (x_d - \mu)^2",
                        "any number of leading axes", "(D,)", "nn.LayerNorm(D, eps=eps)"):  # fmt: skip
        assert requirement in prompt, requirement
    for nudge in ("which variance", "where $\\varepsilon$ goes", "the last axis", "broadcast"):
        assert nudge not in prompt, nudge
    assert "D - 1" in checks.LADDERS["ex8_2"][0]


# ----------------------------------------------------------------------------- 8.1 and 8.3 in detail


def kv_from_raw_x(x, self_attn, ff, norm1, norm2, mask=None):
    x = x + self_attn(norm1(x), x, x, mask)
    return x + ff(norm2(x))


def ff_first(x, self_attn, ff, norm1, norm2, mask=None):
    x = x + ff(norm2(x))
    h = norm1(x)
    return x + self_attn(h, h, h, mask)


@pytest.mark.parametrize(
    ("wrong", "phrase"),
    [
        (kv_from_raw_x, "keys and values come from the raw x"),
        (ff_first, "feed-forward before self-attention"),
    ],
)
def test_encoder_layer_names_kv_and_order_mistakes(wrong, phrase):
    with pytest.raises(AssertionError) as info:
        checks.check_encoder_layer(wrong)
    assert phrase in str(info.value), str(info.value)


def test_an_unrecognised_encoder_layer_gets_the_concepts_not_the_recipe():
    def odd(x, self_attn, ff, norm1, norm2, mask=None):
        return 0.5 * encoder_layer(x, self_attn, ff, norm1, norm2, mask)

    with pytest.raises(AssertionError) as info:
        checks.check_encoder_layer(odd)
    msg = str(info.value)
    assert "not the pre-LN encoder layer of section 1" in msg, msg
    assert "norm1 before self-attention" not in msg and "adds its output to the raw x" not in msg


def test_the_encoder_layer_error_hint_does_not_give_the_wiring():
    def crashes(x, self_attn, ff, norm1, norm2, mask=None):
        return self_attn(norm1(x), x)

    with pytest.raises(AssertionError) as info:
        checks.check_encoder_layer(crashes)
    assert "normalised" not in str(info.value), str(info.value)


def test_an_unrecognised_fix_gets_the_symptoms_not_the_bugs_locations():
    with pytest.raises(AssertionError) as info:
        checks.check_fixed_block(lambda *args, **kw: 1.5 * fixed_block(*args, **kw))
    msg = str(info.value)
    assert "exactly two bugs" in msg and "leak 0" in msg, msg
    assert "axis" not in msg and "residual" not in msg, msg


def test_the_unchanged_block_is_named_without_the_bugs_locations():
    with pytest.raises(AssertionError) as info:
        checks.check_fixed_block(suspect_block)
    msg = str(info.value)
    assert "both bugs are there" in msg and "block_symptoms" in msg, msg
    assert "identity path" not in msg and "positions outside attention" not in msg, msg


def test_the_8_1_and_8_3_prompts_leave_the_recipe_and_the_locations_to_the_hints():
    p81 = _prompt("### Exercise 8.1")
    assert "pre-LN" in p81 and "True = may attend" in p81
    for nudge in ("normalised *copy*", "never normalised", "that same normalised copy"):
        assert nudge not in p81, nudge
    p83 = _prompt("### Exercise 8.3")
    assert "a causal block gives exactly 0" in p83 and "exactly **two bugs**" in p83
    for location in ("outside attention", "keeps a token's own vector", "section 3", "section 7",
                     "residual", "axis"):  # fmt: skip
        assert location not in p83, location
    assert "outside attention" in checks.LADDERS["ex8_3"][0]


def _prompt(heading):
    path = Path(__file__).resolve().parents[1] / "notebooks" / "08_transformer_block.ipynb"
    nb = nbformat.read(path, as_version=4)
    (cell,) = [c for c in nb.cells if c.cell_type == "markdown" and heading in c.source]
    return cell.source
