"""Specifications of course_lib.attention, checked against PyTorch's own implementations."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_lib.attention import (
    MultiHeadAttention,
    merge_heads,
    scaled_dot_product_attention,
    split_heads,
)
from course_lib.masks import causal_mask, padding_mask

TOL = 1e-5


def _qkv(B=2, H=3, L_q=5, L_k=7, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(B, H, L_q, d, generator=g),
        torch.randn(B, H, L_k, d, generator=g),
        torch.randn(B, H, L_k, d, generator=g),
    )


def test_sdpa_matches_torch_without_mask():
    q, k, v = _qkv()
    out, weights = scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v), atol=TOL, rtol=TOL)
    assert weights.shape == (2, 3, 5, 7)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3, 5))


def test_sdpa_matches_torch_with_causal_and_padding_masks():
    q, k, v = _qkv(L_q=6, L_k=6)
    tokens = torch.tensor([[5, 6, 7, 8, 0, 0], [5, 6, 7, 8, 9, 4]])
    mask = padding_mask(tokens, pad_id=0) & causal_mask(6)  # (B, 1, 6, 6)
    out, weights = scaled_dot_product_attention(q, k, v, mask)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(out, expected, atol=TOL, rtol=TOL)
    assert (weights.masked_select(~mask.expand_as(weights)) == 0).all()


def test_sdpa_works_on_three_dimensional_inputs():
    q, k, v = (t[:, 0] for t in _qkv())  # (B, L, d)
    out, _ = scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v), atol=TOL, rtol=TOL)


def test_fully_masked_query_rows_give_zeros_not_nan_and_no_nan_gradient():
    q, k, v = (t.requires_grad_() for t in _qkv(L_q=4, L_k=4))
    mask = torch.ones(1, 1, 4, 4, dtype=torch.bool)
    mask[..., 2, :] = False  # query 2 may attend to nothing
    out, weights = scaled_dot_product_attention(q, k, v, mask)
    assert not out.isnan().any() and (out[:, :, 2] == 0).all() and (weights[:, :, 2] == 0).all()
    out.sum().backward()
    assert not any(t.grad.isnan().any() for t in (q, k, v))


def test_bad_mask_shape_names_both_shapes_and_the_likely_cause():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match=r"mask of shape \(4, 7\) cannot broadcast to scores"):
        scaled_dot_product_attention(q, k, v, torch.ones(4, 7, dtype=torch.bool))


def test_float_mask_is_rejected_with_the_convention_explained():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="True = 'may attend'"):
        scaled_dot_product_attention(q, k, v, torch.zeros(1, 1, 5, 7))


def test_mismatched_key_width_is_explained():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="last dimension d_k"):
        scaled_dot_product_attention(q, k[..., :4], v)


def test_split_then_merge_heads_is_the_identity():
    x = torch.randn(2, 5, 12)
    heads = split_heads(x, 3)
    assert heads.shape == (2, 3, 5, 4)
    torch.testing.assert_close(heads[:, 1], x[..., 4:8])  # head h holds features h*d_k..(h+1)*d_k
    torch.testing.assert_close(merge_heads(heads), x)


def test_split_heads_rejects_indivisible_width():
    with pytest.raises(ValueError, match="d_model=10 is not divisible by num_heads=3"):
        split_heads(torch.randn(1, 2, 10), 3)


def _pair(d_model=16, heads=4, bias=True, seed=0):
    torch.manual_seed(seed)
    theirs = nn.MultiheadAttention(d_model, heads, batch_first=True, bias=bias)
    ours = MultiHeadAttention(d_model, heads, bias=bias).load_from_torch(theirs)
    return ours, theirs


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("need_weights", [True, False])
def test_multi_head_attention_matches_torch_with_copied_weights(bias, need_weights):
    ours, theirs = _pair(bias=bias)
    x, mem = torch.randn(2, 5, 16), torch.randn(2, 7, 16)
    out, w = ours(x, mem, mem, need_weights=need_weights)
    ref, ref_w = theirs(x, mem, mem, need_weights=True, average_attn_weights=False)
    torch.testing.assert_close(out, ref, atol=TOL, rtol=TOL)
    if need_weights:
        torch.testing.assert_close(w, ref_w, atol=TOL, rtol=TOL)
    else:
        assert w is None


def test_multi_head_attention_masks_match_torch_opposite_convention():
    ours, theirs = _pair()
    x = torch.randn(2, 6, 16)
    tokens = torch.tensor([[3, 4, 5, 0, 0, 0], [3, 4, 5, 6, 7, 8]])
    ours_mask = padding_mask(tokens, 0) & causal_mask(6)  # True = may attend
    out, _ = ours(x, x, x, mask=ours_mask)
    ref, _ = theirs(
        x, x, x, key_padding_mask=tokens == 0, attn_mask=~causal_mask(6)[0, 0]
    )  # True = masked out
    real = tokens != 0
    torch.testing.assert_close(out[real], ref[real], atol=TOL, rtol=TOL)


def test_fast_and_naive_paths_agree_including_empty_rows():
    ours, _ = _pair()
    x = torch.randn(2, 4, 16)
    mask = torch.ones(2, 1, 4, 4, dtype=torch.bool)
    mask[0, :, 1] = False
    slow, _ = ours(x, x, x, mask=mask, need_weights=True)
    fast, _ = ours(x, x, x, mask=mask, need_weights=False)
    torch.testing.assert_close(slow, fast, atol=TOL, rtol=TOL)


def test_multi_head_attention_parameter_count_equals_one_full_width_head():
    mha = MultiHeadAttention(64, 8)
    assert sum(p.numel() for p in mha.parameters()) == 4 * (64 * 64 + 64)


def test_multi_head_attention_explains_bad_configuration_and_inputs():
    with pytest.raises(ValueError, match="d_model=128 is not divisible by num_heads=3"):
        MultiHeadAttention(128, 3)
    mha = MultiHeadAttention(16, 4)
    with pytest.raises(ValueError, match=r"expects d_model=16"):
        mha(torch.randn(2, 5, 8), torch.randn(2, 5, 8), torch.randn(2, 5, 8))
    with pytest.raises(ValueError, match=r"\(B, L, d_model\)"):
        mha(torch.randn(5, 16), torch.randn(5, 16), torch.randn(5, 16))
