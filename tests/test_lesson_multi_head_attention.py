"""Specifications of course_lib.lessons.multi_head_attention (notebook 04) and of the
position-comparison helpers of course_lib.lessons.positional_encoding (notebook 05)."""

from __future__ import annotations

import pytest
import torch

from course_lib.attention import MultiHeadAttention
from course_lib.lessons.multi_head_attention import (
    ablated_heads,
    first_and_previous,
    head_means,
    tagger_accuracy,
    train_tagger,
)
from course_lib.lessons.positional_encoding import (
    POSITION_KINDS,
    RotarySelfAttention,
    position_tagger,
)
from course_lib.models import EncoderTagger
from course_lib.positional import RotaryEmbedding


def test_first_and_previous_labels_each_position_with_the_first_and_the_previous_letter():
    x, y = first_and_previous(5, torch.Generator().manual_seed(0), seq_len=6, num_letters=3)
    assert x.shape == y.shape == (5, 6) and (y[:, 0] == -100).all()
    for i in range(1, 6):
        assert torch.equal(y[:, i], x[:, 0] * 3 + x[:, i - 1])


def test_train_tagger_learns_the_task_and_records_held_out_accuracy():
    torch.manual_seed(0)
    model = EncoderTagger(4, 16, d_model=16, num_heads=2, num_layers=1, max_len=8)
    held_out = first_and_previous(200, torch.Generator().manual_seed(1))
    before = tagger_accuracy(model, *held_out)[0]
    history = train_tagger(model, 150, eval_data=held_out, eval_every=50)
    assert len(history.loss) == 150 and len(history.eval_acc) == 3
    assert history.eval_acc[-1] == pytest.approx(tagger_accuracy(model, *held_out)[0])
    assert history.eval_acc[-1] > before + 0.2  # it learned something in 150 steps


def test_ablating_a_head_zeroes_its_slice_before_the_output_projection():
    torch.manual_seed(0)
    mha = MultiHeadAttention(12, 3)
    x = torch.randn(2, 5, 12)
    captured = {}
    hook = mha.w_o.register_forward_pre_hook(lambda m, a: captured.setdefault("merged", a[0]))
    full, _ = mha(x, x, x)
    hook.remove()
    merged = captured["merged"].clone()  # (B, L, D): the three heads side by side
    merged[..., 4:8] = 0.0  # head 1
    with ablated_heads([(mha, 1)]):
        ablated, _ = mha(x, x, x)
    torch.testing.assert_close(ablated, mha.w_o(merged))
    assert not torch.allclose(ablated, full)
    torch.testing.assert_close(mha(x, x, x)[0], full)  # the hook is gone after the block


def test_ablating_every_head_leaves_only_the_output_bias():
    torch.manual_seed(0)
    mha = MultiHeadAttention(8, 2)
    x = torch.randn(1, 4, 8)
    with ablated_heads([(mha, 0), (mha, 1)]):
        out, _ = mha(x, x, x)
    torch.testing.assert_close(out, mha.w_o.bias.expand(1, 4, 8))


def test_mean_ablation_puts_the_head_mean_over_the_reference_batch_in_its_slice():
    torch.manual_seed(0)
    mha = MultiHeadAttention(8, 2)
    ref, x = torch.randn(6, 4, 8), torch.randn(2, 4, 8)
    means = {id(mha): head_means(mha, lambda: mha(ref, ref, ref))}  # (L, D)
    captured = []
    hook = mha.w_o.register_forward_pre_hook(lambda m, a: captured.append(a[0]))
    mha(ref, ref, ref)
    mha(x, x, x)
    hook.remove()
    torch.testing.assert_close(means[id(mha)], captured[0].mean(dim=0))
    merged = captured[1].clone()
    merged[..., 4:] = means[id(mha)][:, 4:]  # head 1 says what it says on average, nothing more
    with ablated_heads([(mha, 1)], means=means):
        out, _ = mha(x, x, x)
    torch.testing.assert_close(out, mha.w_o(merged))
    with ablated_heads([(mha, 0), (mha, 1)], means=means):  # the same for every input
        a, _ = mha(x[:1], x[:1], x[:1])
        b, _ = mha(x[1:], x[1:], x[1:])
    torch.testing.assert_close(a, b)


def test_ablating_a_head_that_does_not_exist_is_explained_and_leaves_no_hook():
    mha = MultiHeadAttention(8, 2)
    with pytest.raises(ValueError, match="head 2 does not exist: this layer has 2"):
        with ablated_heads([(mha, 0), (mha, 2)]):
            pass
    assert not mha.w_o._forward_pre_hooks


SIZE = dict(vocab_size=4, num_classes=16, d_model=16, num_heads=2, num_layers=2)


def test_every_kind_of_position_starts_from_the_same_other_weights():
    models = {}
    for kind in POSITION_KINDS:
        torch.manual_seed(3)
        models[kind] = position_tagger(kind, max_len=12, **SIZE)
    ref = models["none"].state_dict()
    for kind, model in models.items():
        for name, value in model.state_dict().items():
            if name in ref and not name.startswith("pos."):
                torch.testing.assert_close(value, ref[name], msg=f"{kind}: {name}")


def test_the_two_learned_tables_are_one_random_table_at_two_scales():
    torch.manual_seed(0)
    small = position_tagger("learned (std 0.02)", max_len=64, **SIZE).pos.embedding.weight
    torch.manual_seed(0)
    big = position_tagger("learned (sinusoid scale)", max_len=64, **SIZE).pos.embedding.weight
    torch.testing.assert_close(big, small * (2**-0.5 / 0.02))
    assert 0.015 < small.std().item() < 0.025
    assert abs(big.norm(dim=1).mean().item() - (16 / 2) ** 0.5) < 0.4  # as long as a sinusoid row


def test_none_and_rope_add_nothing_and_rope_rotates_queries_and_keys():
    torch.manual_seed(0)
    none, rope = (position_tagger(k, max_len=12, **SIZE) for k in ("none", "RoPE"))
    assert none.pos.pe.abs().max() == 0 and rope.pos.pe.abs().max() == 0
    assert all(isinstance(layer.self_attn, RotarySelfAttention) for layer in rope.layers)
    tokens = torch.tensor([[0, 1, 2, 3, 0, 1]])
    # without positions, reversing the input reverses the output; RoPE breaks that symmetry
    with torch.no_grad():
        for model, symmetric in ((none, True), (rope, False)):
            model.eval()
            out, rev = model(tokens), model(tokens.flip(1)).flip(1)
            assert torch.allclose(out, rev, atol=1e-5) == symmetric


def test_rotary_self_attention_scores_depend_only_on_the_offset():
    torch.manual_seed(0)
    attn = RotarySelfAttention(8, 2, max_len=16)
    same = torch.randn(1, 1, 8).expand(1, 10, 8)  # one token repeated at 10 positions
    _, w = attn(same, same, same)
    assert w.shape == (1, 2, 10, 10)
    q = attn.w_q(same).view(1, 10, 2, 4).transpose(1, 2)
    k = attn.w_k(same).view(1, 10, 2, 4).transpose(1, 2)
    rq, rk = RotaryEmbedding(4, 16)(q, k)
    scores = rq @ rk.transpose(-2, -1)
    for off in range(-8, 9):
        diag = torch.diagonal(scores[0, 0], off)
        assert diag.std() < 1e-4 if diag.numel() > 1 else True
    with pytest.raises(ValueError, match="self-attention"):
        attn(same, same.clone(), same)


def test_an_unknown_kind_lists_the_kinds():
    with pytest.raises(ValueError, match="kind must be one of"):
        position_tagger("alibi", **SIZE)
