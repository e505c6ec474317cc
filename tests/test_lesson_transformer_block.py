"""Specifications of course_lib.lessons.transformer_block (notebook 08: residuals, LayerNorm, BatchNorm)."""

from __future__ import annotations

import math

import matplotlib
import pytest
import torch
from torch import nn

matplotlib.use("agg")

from course_lib.blocks import EncoderLayer  # noqa: E402
from course_lib.lessons.transformer_block import (
    SeqBatchNorm,
    SwitchableLayer,
    Tagger,
    block_symptoms,
    depth_profiles,
    make_stack,
    mean_cosine,
    plot_norm_axes,
    plot_profiles,
    position_dependence,
    swap_norms,
    task_batch,
    train_eval_gap,
    train_tagger,
)
from course_lib.models import Transformer  # noqa: E402
from course_lib.plots import plot_dependence, smooth  # noqa: E402

CONFIGS = {
    "plain": (False, "none"),
    "residual": (True, "none"),
    "post": (True, "post"),
    "pre": (True, "pre"),
}


@pytest.mark.parametrize("norm_first", [True, False])
def test_switchable_layer_with_residual_and_norm_is_the_course_encoder_layer(norm_first):
    torch.manual_seed(0)
    ours = SwitchableLayer(16, 4, 32, residual=True, norm="pre" if norm_first else "post")
    reference = EncoderLayer(16, 4, 32, norm_first=norm_first)
    reference.load_state_dict(ours.state_dict())
    x = torch.randn(2, 5, 16)
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])[:, None, None, :]
    torch.testing.assert_close(ours(x, mask), reference(x, mask), atol=1e-6, rtol=1e-6)


def test_switchable_layer_rejects_an_unknown_norm_place():
    with pytest.raises(ValueError, match="norm must be one of"):
        SwitchableLayer(8, 2, 16, norm="middle")


def test_without_residual_the_first_layer_of_a_deep_stack_gets_almost_no_gradient():
    profiles = depth_profiles({"plain": CONFIGS["plain"], "residual": CONFIGS["residual"]}, 12)
    assert profiles["plain"]["grad"][0] < 1e-6 * profiles["residual"]["grad"][0]
    assert len(profiles["plain"]["act"]) == 13 and len(profiles["plain"]["grad"]) == 12


def test_post_ln_keeps_every_layer_at_unit_scale_whatever_the_init_gain():
    for gain in (0.5, 2.0):
        acts = depth_profiles({"post": CONFIGS["post"]}, 8, gain)["post"]["act"]
        assert all(abs(a - 1) < 1e-2 for a in acts[1:])


def test_a_large_init_explodes_a_residual_stack_without_norm_but_not_with_pre_ln():
    profiles = depth_profiles({"res": CONFIGS["residual"], "pre": CONFIGS["pre"]}, 16, gain=2.0)
    assert profiles["res"]["act"][-1] > 1e4
    assert profiles["pre"]["act"][-1] < 20


def test_make_stack_scales_every_linear_weight_by_the_gain():
    a, b = make_stack(2, True, "pre", 8, 2, 16, 1.0), make_stack(2, True, "pre", 8, 2, 16, 3.0)
    torch.testing.assert_close(3 * a[0].ff.linear1.weight, b[0].ff.linear1.weight)
    with pytest.raises(ValueError, match="depth"):
        make_stack(0, True, "pre")


def test_task_batches_have_the_promised_targets():
    g = torch.Generator().manual_seed(0)
    x, y = task_batch("reverse", 3, 5, 10, g)
    assert torch.equal(y, x.flip(1))
    x, y = task_batch("next", 3, 5, 10, g)
    assert x.shape == y.shape == (3, 5) and torch.equal(x[:, 1:], y[:, :-1])
    with pytest.raises(ValueError, match="task must be one of"):
        task_batch("sort", 3, 5, 10, g)


def test_a_causal_tagger_does_not_see_later_tokens_but_a_plain_one_does():
    torch.manual_seed(0)
    tokens = torch.randint(0, 10, (1, 6))
    changed = tokens.clone()
    changed[0, -1] = (changed[0, -1] + 1) % 10
    for causal in (True, False):
        model = Tagger(10, 16, 2, 32, 2, causal=causal).eval()
        with torch.no_grad():
            same = torch.allclose(model(tokens)[0, 0], model(changed)[0, 0])
        assert same == causal


def test_train_tagger_reports_losses_and_held_out_numbers():
    torch.manual_seed(0)
    result = train_tagger(Tagger(10, 16, 2, 32, 2), steps=3, batch_size=8, eval_size=16)
    assert len(result["loss"]) == 3
    assert 0 <= result["acc"] <= 1
    assert math.isclose(result["eval_loss"], result["train_mode_loss"], rel_tol=1e-5)


def test_seq_batch_norm_normalises_each_feature_over_batch_and_positions():
    torch.manual_seed(0)
    x = torch.randn(4, 6, 8) * 3 + 2
    y = SeqBatchNorm(8).train()(x)
    torch.testing.assert_close(y.mean(dim=(0, 1)), torch.zeros(8), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(dim=(0, 1), unbiased=False), torch.ones(8), atol=1e-3, rtol=0)


def test_swap_norms_replaces_every_layer_norm_and_the_model_still_runs():
    torch.manual_seed(0)
    model = Transformer(12, 12, d_model=16, num_heads=2, num_encoder_layers=2, num_decoder_layers=1)
    assert swap_norms(model) == 2 * 2 + 3 * 1 + 2  # encoder, decoder and the two final norms
    assert not any(isinstance(m, nn.LayerNorm) for m in model.modules())
    src, tgt = torch.randint(4, 12, (3, 5)), torch.randint(4, 12, (3, 4))
    assert model(src, tgt).shape == (3, 4, 12)


def test_layer_norm_has_no_train_eval_gap_but_batch_norm_does():
    texts = ["abc", "abcdef", "ab", "abcd", "a"]
    table = torch.randn(8, 6, generator=torch.Generator().manual_seed(0))

    def make_input(batch):
        L = max(map(len, batch))
        ids = torch.tensor([[ord(c) - 96 for c in t] + [0] * (L - len(t)) for t in batch])
        return table[ids]  # (B, L, 6)

    assert train_eval_gap(nn.LayerNorm(6), make_input, texts, 2, warm_steps=5, probes=3) == 0.0
    assert train_eval_gap(SeqBatchNorm(6), make_input, texts, 2, warm_steps=5, probes=3) > 0.01


def test_the_feed_forward_network_never_mixes_positions():
    torch.manual_seed(0)
    layer = EncoderLayer(8, 2, 16)
    x = torch.randn(5, 8)
    dep = position_dependence(layer.ff, x)
    assert torch.count_nonzero(dep - torch.diag(torch.diag(dep))) == 0
    dep_attn = position_dependence(lambda z: layer.self_attn(z[None], z[None], z[None])[0][0], x)
    assert (dep_attn > 0).all()


def test_pictures_are_titled_and_labelled():
    import matplotlib.pyplot as plt

    fig = plot_norm_axes()
    assert [ax.get_xlabel() for ax in fig.axes[:2]] == ["feature (d_model axis)"] * 2
    profiles = depth_profiles({"pre": CONFIGS["pre"]}, 3)
    ax = plot_profiles(profiles, "grad", mark_layer=2)
    assert ax.get_title() and ax.get_ylabel() and ax.get_xlabel() == "layer"
    with pytest.raises(ValueError, match="quantity"):
        plot_profiles(profiles, "weights")
    _, ax = plt.subplots()
    plot_dependence(torch.eye(3), ["a", "b", "c"], "FFN", ax)
    assert ax.get_title() == "FFN"
    plt.close("all")


def test_smooth_is_a_trailing_moving_average():
    assert smooth([1.0, 3.0, 5.0, 7.0], window=2) == [1.0, 2.0, 4.0, 6.0]
    assert smooth([2.0], window=5) == [2.0]
    with pytest.raises(ValueError, match="window"):
        smooth([1.0], window=0)


def test_mean_cosine_is_one_for_a_collapsed_sequence_and_near_zero_for_random_tokens():
    same = torch.randn(1, 1, 16).expand(3, 5, 16)
    assert math.isclose(mean_cosine(same), 1.0, rel_tol=1e-6)
    g = torch.Generator().manual_seed(0)
    assert abs(mean_cosine(torch.randn(4, 32, 256, generator=g))) < 0.02


def test_without_residuals_a_deep_stack_collapses_every_token_onto_one_direction():
    configs = {"plain": CONFIGS["plain"], "residual": CONFIGS["residual"]}
    profiles = depth_profiles(configs, 8)
    assert len(profiles["plain"]["cos"]) == 9 and abs(profiles["plain"]["cos"][0]) < 0.1
    assert profiles["plain"]["cos"][-1] > 1 - 1e-9
    assert profiles["residual"]["cos"][-1] < 0.95


def _block(norm_dim=-1, attn_residual=True):
    def block(x, attn, ff, g1, b1, g2, b2, mask=None):
        norm = lambda h, g, b: (
            (h - h.mean(norm_dim, keepdim=True))
            / torch.sqrt(  # noqa: E731
                h.var(norm_dim, unbiased=False, keepdim=True) + 1e-5
            )
            * g
            + b
        )
        h = norm(x, g1, b1)
        x = (x if attn_residual else 0) + attn(h, h, h, mask)
        return x + ff(norm(x, g2, b2))

    return block


def test_block_symptoms_find_the_future_leak_and_the_collapse_of_exercise_8_3():
    fixed = block_symptoms(_block())
    assert fixed["leak"] == 0.0 and fixed["cosine"] < 0.9
    assert block_symptoms(_block(norm_dim=1))["leak"] > 1e-2  # norm over positions
    assert block_symptoms(_block(attn_residual=False))["cosine"] > 0.999  # no residual
