"""Encoder and decoder layers: equal to PyTorch's, masked correctly, and safe to record."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from course_lib.blocks import (
    DecoderLayer,
    EncoderLayer,
    FeedForward,
    load_decoder_layer_from_torch,
    load_encoder_layer_from_torch,
    recording_attention,
)
from course_lib.masks import causal_mask, padding_mask

ATOL = 1e-5
B, L_S, L_T, D, H, D_FF = 3, 7, 5, 16, 4, 32
PAD = 0


def make_encoder_pair(norm_first: bool, activation: str = "relu"):
    """Our EncoderLayer with the weights of a fresh nn.TransformerEncoderLayer."""
    torch.manual_seed(0)
    theirs = nn.TransformerEncoderLayer(
        D, H, D_FF, dropout=0.0, activation=activation, batch_first=True, norm_first=norm_first
    )
    ours = EncoderLayer(D, H, D_FF, norm_first=norm_first, activation=activation)
    load_encoder_layer_from_torch(ours, theirs)
    # train mode with dropout=0 is deterministic and keeps PyTorch off its nested-tensor
    # fast path (which would zero the padded positions instead of computing them)
    return ours.train(), theirs.train()


def make_decoder_pair(norm_first: bool):
    """Our DecoderLayer with the weights of a fresh nn.TransformerDecoderLayer."""
    torch.manual_seed(0)
    theirs = nn.TransformerDecoderLayer(
        D, H, D_FF, dropout=0.0, batch_first=True, norm_first=norm_first
    )
    ours = DecoderLayer(D, H, D_FF, norm_first=norm_first)
    load_decoder_layer_from_torch(ours, theirs)
    return ours.train(), theirs.train()


def padded_tokens(lengths: list[int], total: int) -> torch.Tensor:
    """(B, total) ids: random real tokens (>= 1) up to each length, PAD after."""
    tokens = torch.randint(1, 10, (len(lengths), total))
    for i, n in enumerate(lengths):
        tokens[i, n:] = PAD
    return tokens


# ----------------------------------------------------------------------------- oracles


@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("norm_first", [True, False], ids=["pre_ln", "post_ln"])
def test_encoder_layer_matches_torch_without_mask(norm_first, activation):
    ours, theirs = make_encoder_pair(norm_first, activation)
    x = torch.randn(B, L_S, D)
    torch.testing.assert_close(ours(x), theirs(x), atol=ATOL, rtol=0)


@pytest.mark.parametrize("norm_first", [True, False], ids=["pre_ln", "post_ln"])
def test_encoder_layer_matches_torch_with_padding_mask(norm_first):
    ours, theirs = make_encoder_pair(norm_first)
    tokens = padded_tokens([7, 4, 2], L_S)
    x = torch.randn(B, L_S, D)
    mask = padding_mask(tokens, PAD)  # (B, 1, 1, L): True = may attend
    torch_pad = tokens == PAD  # (B, L): PyTorch's convention, True = masked out
    expected = theirs(x, src_key_padding_mask=torch_pad)
    torch.testing.assert_close(ours(x, mask), expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("norm_first", [True, False], ids=["pre_ln", "post_ln"])
def test_decoder_layer_matches_torch_with_causal_and_padding_masks(norm_first):
    ours, theirs = make_decoder_pair(norm_first)
    src, tgt = padded_tokens([7, 5, 3], L_S), padded_tokens([5, 5, 3], L_T)
    x, memory = torch.randn(B, L_T, D), torch.randn(B, L_S, D)
    tgt_mask = causal_mask(L_T) & padding_mask(tgt, PAD)  # (B, 1, L_T, L_T)
    memory_mask = padding_mask(src, PAD)  # (B, 1, 1, L_S)
    expected = theirs(
        x,
        memory,
        tgt_mask=~torch.tril(torch.ones(L_T, L_T, dtype=torch.bool)),  # True = masked out
        tgt_key_padding_mask=tgt == PAD,
        memory_key_padding_mask=src == PAD,
    )
    torch.testing.assert_close(ours(x, memory, tgt_mask, memory_mask), expected, atol=ATOL, rtol=0)


def test_loading_a_layer_with_other_settings_raises():
    theirs = nn.TransformerEncoderLayer(D, H, D_FF, batch_first=True, norm_first=False)
    with pytest.raises(ValueError, match="norm_first"):
        load_encoder_layer_from_torch(EncoderLayer(D, H, D_FF, norm_first=True), theirs)
    with pytest.raises(ValueError, match="activation"):
        ours = EncoderLayer(D, H, D_FF, norm_first=False, activation="gelu")
        load_encoder_layer_from_torch(ours, theirs)


# ----------------------------------------------------------------------------- recording


@pytest.mark.parametrize("norm_first", [True, False], ids=["pre_ln", "post_ln"])
def test_fast_path_and_recording_path_give_the_same_outputs(norm_first):
    torch.manual_seed(0)
    enc, dec = EncoderLayer(D, H, D_FF, norm_first=norm_first), DecoderLayer(D, H, D_FF)
    src, tgt = padded_tokens([7, 4, 2], L_S), padded_tokens([5, 3, 1], L_T)
    x, y = torch.randn(B, L_S, D), torch.randn(B, L_T, D)
    src_mask, tgt_mask = padding_mask(src, PAD), causal_mask(L_T) & padding_mask(tgt, PAD)
    fast = enc(x, src_mask), dec(y, x, tgt_mask, src_mask)
    with recording_attention(nn.ModuleList([enc, dec])):
        recorded = enc(x, src_mask), dec(y, x, tgt_mask, src_mask)
    for a, b in zip(fast, recorded, strict=True):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


def test_recording_attention_stores_detached_weights_and_switches_back_off():
    torch.manual_seed(0)
    enc, dec = EncoderLayer(D, H, D_FF), DecoderLayer(D, H, D_FF)
    model = nn.ModuleList([enc, dec])
    src = padded_tokens([7, 4, 2], L_S)
    x, y = torch.randn(B, L_S, D, requires_grad=True), torch.randn(B, L_T, D)
    with recording_attention(model) as m:
        assert m is model and enc.record_attention and dec.record_attention
        dec(y, enc(x, padding_mask(src, PAD)), causal_mask(L_T), padding_mask(src, PAD))
    assert not enc.record_attention and not dec.record_attention
    assert enc.self_attn_weights.shape == (B, H, L_S, L_S)
    assert dec.self_attn_weights.shape == (B, H, L_T, L_T)
    assert dec.cross_attn_weights.shape == (B, H, L_T, L_S)
    assert not enc.self_attn_weights.requires_grad
    torch.testing.assert_close(dec.cross_attn_weights.sum(-1), torch.ones(B, H, L_T))
    assert (dec.cross_attn_weights[1, :, :, 4:] == 0).all()  # PAD keys get no attention
    assert (dec.self_attn_weights.triu(diagonal=1) == 0).all()  # no peeking ahead
    enc(x)  # outside the block: fast path, nothing recorded
    assert enc.self_attn_weights is None


# ----------------------------------------------------------------------------- robustness


@pytest.mark.parametrize("record", [False, True], ids=["fused", "recording"])
def test_fully_masked_rows_give_no_nan_through_a_layer_and_backward(record):
    torch.manual_seed(0)
    enc, dec = EncoderLayer(D, H, D_FF), DecoderLayer(D, H, D_FF)
    enc.record_attention = dec.record_attention = record
    src = padded_tokens([7, 0, 3], L_S)  # the second sentence is all PAD
    mask = padding_mask(src, PAD)
    x = torch.randn(B, L_S, D, requires_grad=True)
    y = torch.randn(B, L_T, D, requires_grad=True)
    out = dec(y, enc(x, mask), causal_mask(L_T), mask)  # cross-attention row 1: nothing to see
    assert torch.isfinite(out).all()
    out.sum().backward()
    params = [p.grad for p in [*enc.parameters(), *dec.parameters()]]
    assert all(torch.isfinite(g).all() for g in [x.grad, y.grad, *params])


def test_feed_forward_treats_every_position_independently():
    torch.manual_seed(0)
    ff = FeedForward(D, D_FF)
    x = torch.randn(B, L_S, D)
    perm = torch.randperm(L_S)
    torch.testing.assert_close(ff(x)[:, perm], ff(x[:, perm]), atol=ATOL, rtol=0)
    torch.testing.assert_close(ff(x[:, :1]), ff(x)[:, :1], atol=ATOL, rtol=0)


def test_layers_reject_inputs_of_the_wrong_width_naming_d_model():
    enc, dec = EncoderLayer(D, H, D_FF), DecoderLayer(D, H, D_FF)
    with pytest.raises(ValueError, match=f"d_model={D}"):
        enc(torch.randn(B, L_S, D + 1))
    with pytest.raises(ValueError, match=r"\(B, L, D\)"):
        enc(torch.randn(L_S, D))
    with pytest.raises(ValueError, match="batch sizes"):
        dec(torch.randn(B, L_T, D), torch.randn(B + 1, L_S, D))
    with pytest.raises(ValueError, match="activation"):
        FeedForward(D, D_FF, activation="tanh")
