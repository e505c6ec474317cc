"""Scaled dot-product attention and multi-head attention, written out step by step.

Layout is batch-first everywhere: (B, L, D) for sequences, (B, H, L, d_k) inside heads.
Masks are boolean with True meaning "may attend" (see `course_lib.masks`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .utils import expect_ndim, fmt_shape


def _check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """Raise a ValueError that names the mismatch if q, k, v cannot be attended together."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor) or t.dim() < 2:
            raise ValueError(f"{name} must be a tensor of shape (..., L, d), got {t!r:.60}")
        if not t.is_floating_point():
            raise ValueError(
                f"{name} must be floating point, got dtype {t.dtype} with shape "
                f"{fmt_shape(t.shape)}; attention mixes feature vectors, so embed token ids first"
            )
    if not q.dtype == k.dtype == v.dtype:
        raise ValueError(
            f"q, k and v must share one dtype, got {q.dtype}, {k.dtype} and {v.dtype}; "
            "cast them with .to(q.dtype), or compute all three inside the same torch.autocast"
        )
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"q and k must share their last dimension d_k: q {fmt_shape(q.shape)} vs "
            f"k {fmt_shape(k.shape)}; did you project them with different widths?"
        )
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(
            f"k and v must have the same number of positions L_k: k {fmt_shape(k.shape)} vs "
            f"v {fmt_shape(v.shape)}; keys and values come from the same sequence"
        )
    try:
        torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    except RuntimeError:
        raise ValueError(
            f"q {fmt_shape(q.shape)}, k {fmt_shape(k.shape)} and v {fmt_shape(v.shape)} have "
            "different batch (or head) sizes before the last two axes; they should come from "
            "the same batch of sentences"
        ) from None


def _check_mask(mask: torch.Tensor, scores_shape: torch.Size) -> torch.Tensor:
    """Return `mask` if it is boolean and broadcasts to `scores_shape`, else raise ValueError."""
    if not isinstance(mask, torch.Tensor):
        raise ValueError(f"mask must be a boolean tensor, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise ValueError(
            f"mask must be boolean with True = 'may attend', got dtype {mask.dtype}; "
            "an additive float mask (0 / -inf) can be converted with `mask == 0`"
        )
    try:
        ok = torch.broadcast_shapes(mask.shape, scores_shape) == scores_shape
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(
            f"mask of shape {fmt_shape(mask.shape)} cannot broadcast to scores "
            f"{fmt_shape(scores_shape)} (B, H, L_q, L_k); a padding mask should be "
            "(B, 1, 1, L_k) and a causal mask (1, 1, L_q, L_k)"
        )
    return mask


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """softmax over the last axis, only over positions where mask is True (True = may attend).

    A row with no allowed position gets all-zero weights, never NaN (softmax of all -inf is
    0/0). mask must broadcast to scores.
    """
    if mask is None:
        return torch.softmax(scores, dim=-1)
    scores = scores.masked_fill(~mask, float("-inf"))
    empty_rows = ~mask.any(dim=-1, keepdim=True)  # (..., 1): nothing to attend to
    weights = torch.softmax(scores.masked_fill(empty_rows, 0.0), dim=-1)
    return weights.masked_fill(empty_rows, 0.0)


def scaled_dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T / sqrt(d_k)) v, returning (out, weights).

    q: (..., L_q, d_k), k: (..., L_k, d_k), v: (..., L_k, d_v); mask broadcasts to
    (..., L_q, L_k) with True = may attend. A query that may attend to nothing gets
    all-zero weights and a zero output (never NaN).
    """
    _check_qkv(q, k, v)
    d_k = q.shape[-1]
    # scale the (L_q, d_k) queries rather than the (L_q, L_k) scores: same maths, less memory traffic
    scores = (q / math.sqrt(d_k)) @ k.transpose(-2, -1)  # (..., L_q, L_k)
    if mask is not None:
        mask = _check_mask(mask, scores.shape)
    weights = masked_softmax(scores, mask)  # (..., L_q, L_k), each row sums to 1 (or is empty)
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p, training=True)
    out = weights @ v  # (..., L_q, d_v)
    return out, weights


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, L, D) -> (B, H, L, D/H): reshape the feature axis into heads, then bring H forward."""
    expect_ndim("x", x, 3, "(B, L, D)")
    B, L, D = x.shape
    if not isinstance(num_heads, int) or num_heads < 1:
        raise ValueError(f"num_heads must be a positive integer, got {num_heads!r}")
    if D % num_heads != 0:
        raise ValueError(
            f"d_model={D} is not divisible by num_heads={num_heads}; "
            "each head gets d_k = d_model / num_heads features"
        )
    return x.view(B, L, num_heads, D // num_heads).transpose(1, 2)  # (B, H, L, d_k)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, H, L, d_k) -> (B, L, H*d_k): the inverse of `split_heads`."""
    expect_ndim("x", x, 4, "(B, H, L, d_k)")
    B, H, L, d_k = x.shape
    return x.transpose(1, 2).reshape(B, L, H * d_k)  # (B, L, D)


class MultiHeadAttention(nn.Module):
    """H attention heads in parallel: project, split into heads, attend, merge, project."""

    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        if num_heads < 1 or d_model % num_heads != 0:
            raise ValueError(
                f"d_model={d_model} is not divisible by num_heads={num_heads}; "
                "each head gets d_k = d_model / num_heads features"
            )
        self.d_model, self.num_heads, self.d_k = d_model, num_heads, d_model // num_heads
        self.dropout = dropout
        self.w_q = nn.Linear(d_model, d_model, bias=bias)
        self.w_k = nn.Linear(d_model, d_model, bias=bias)
        self.w_v = nn.Linear(d_model, d_model, bias=bias)
        self.w_o = nn.Linear(d_model, d_model, bias=bias)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        mask: torch.Tensor | None = None,
        need_weights: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """query (B, L_q, D), key/value (B, L_k, D) -> (out (B, L_q, D), weights (B, H, L_q, L_k)).

        With need_weights=False the fused `F.scaled_dot_product_attention` does the work
        (same result, less memory) and weights is None.
        """
        self._check_inputs(query=query, key=key, value=value)
        if not query.shape[0] == key.shape[0] == value.shape[0]:
            raise ValueError(
                f"query {fmt_shape(query.shape)}, key {fmt_shape(key.shape)} and value "
                f"{fmt_shape(value.shape)} must have the same batch size B"
            )
        if key.shape[1] != value.shape[1]:
            raise ValueError(
                f"key {fmt_shape(key.shape)} and value {fmt_shape(value.shape)} must have the "
                "same length L_k; keys and values come from the same sequence"
            )
        q = split_heads(self.w_q(query), self.num_heads)  # (B, H, L_q, d_k)
        k = split_heads(self.w_k(key), self.num_heads)  # (B, H, L_k, d_k)
        v = split_heads(self.w_v(value), self.num_heads)  # (B, H, L_k, d_k)
        p = self.dropout if self.training else 0.0
        if need_weights:
            out, weights = scaled_dot_product_attention(q, k, v, mask, dropout_p=p)
        else:
            out, weights = _fused_attention(q, k, v, mask, p), None
        return self.w_o(merge_heads(out)), weights  # (B, L_q, D)

    def _check_inputs(self, **inputs: torch.Tensor) -> None:
        """Raise a ValueError unless each input is (B, L, d_model) in the layer's dtype."""
        weight = self.w_q.weight
        for name, t in inputs.items():
            expect_ndim(name, t, 3, "(B, L, d_model)")
            if t.shape[-1] != self.d_model:
                raise ValueError(
                    f"{name} has {t.shape[-1]} features but this layer expects "
                    f"d_model={self.d_model}: shape {fmt_shape(t.shape)}"
                )
            if t.dtype != weight.dtype and not torch.is_autocast_enabled(t.device.type):
                raise ValueError(
                    f"{name} has dtype {t.dtype} but the layer's weights are {weight.dtype}; "
                    "convert one to the other (x.to(torch.float32) or model.to(x.dtype)), "
                    "or run the model inside torch.autocast for mixed precision"
                )

    @torch.no_grad()
    def load_from_torch(self, other: nn.MultiheadAttention) -> MultiHeadAttention:
        """Copy the weights of an `nn.MultiheadAttention` (same d_model, heads) into this module."""
        if other.embed_dim != self.d_model or other.num_heads != self.num_heads:
            raise ValueError(
                f"cannot copy nn.MultiheadAttention(embed_dim={other.embed_dim}, "
                f"num_heads={other.num_heads}) into MultiHeadAttention(d_model={self.d_model}, "
                f"num_heads={self.num_heads})"
            )
        wq, wk, wv = other.in_proj_weight.chunk(3, dim=0)
        for lin, w in ((self.w_q, wq), (self.w_k, wk), (self.w_v, wv)):
            lin.weight.copy_(w)
        self.w_o.weight.copy_(other.out_proj.weight)
        if other.in_proj_bias is not None and self.w_q.bias is not None:
            bq, bk, bv = other.in_proj_bias.chunk(3)
            for lin, b in ((self.w_q, bq), (self.w_k, bk), (self.w_v, bv)):
                lin.bias.copy_(b)
            self.w_o.bias.copy_(other.out_proj.bias)
        return self


def _fused_attention(q, k, v, mask, dropout_p: float) -> torch.Tensor:
    """PyTorch's fused kernel, with rows that may attend to nothing returning zeros."""
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
    mask = _check_mask(mask, q.shape[:-1] + (k.shape[-2],))
    empty_rows = ~mask.any(dim=-1, keepdim=True)  # (..., L_q, 1)
    safe = mask | empty_rows  # let empty rows attend anywhere, then zero them
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=safe, dropout_p=dropout_p)
    return out.masked_fill(empty_rows, 0.0)
