"""Attention without the L x L matrix: the online softmax and tiled attention (FlashAttention's idea).

`online_softmax_step` is one update of the running (max, denominator, output) over a block of
keys; `online_softmax_attention` folds it over every key block and never holds more than
(L_q, block_size) scores. Its backward pass recomputes the blocks instead of storing them.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .utils import fmt_shape

# ----------------------------------------------------------------------------- online softmax


def online_softmax_step(
    m_prev: torch.Tensor,
    l_prev: torch.Tensor,
    acc_prev: torch.Tensor,
    scores_block: torch.Tensor,
    v_block: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fold one key block into the running state; returns (m_new, l_new, acc_new).

    m, l: (..., L_q, 1) running max and softmax denominator; acc: (..., L_q, d_v) the
    un-normalised output sum_j exp(s_j - m) v_j; scores_block (..., L_q, B_k) already scaled
    (and -inf where masked); v_block (..., B_k, d_v). Start from m = -inf, l = acc = 0 and
    divide acc by l after the last block.
    """
    m_new = torch.maximum(m_prev, scores_block.amax(dim=-1, keepdim=True))  # (..., L_q, 1)
    shift = torch.where(torch.isinf(m_new), torch.zeros_like(m_new), m_new)  # rows seen no key yet
    p = torch.exp(scores_block - shift)  # (..., L_q, B_k), every entry <= 1
    alpha = torch.exp(m_prev - shift)  # (..., L_q, 1): the old state was relative to m_prev
    l_new = l_prev * alpha + p.sum(dim=-1, keepdim=True)
    acc_new = acc_prev * alpha + p @ v_block  # (..., L_q, d_v)
    return m_new, l_new, acc_new


def _check_blocks(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_size: int) -> None:
    """Raise ValueError unless q, k, v are (..., L, d) tensors that attend together."""
    if q.dim() < 2 or q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ValueError(
            f"expected q (..., L_q, d_k), k (..., L_k, d_k), v (..., L_k, d_v); got q "
            f"{fmt_shape(q.shape)}, k {fmt_shape(k.shape)}, v {fmt_shape(v.shape)}"
        )
    if block_size < 1:
        raise ValueError(f"block_size must be a positive number of keys, got {block_size}")


def _block_scores(q, k_blk, scale: float, causal: bool, q0: int, k0: int) -> torch.Tensor:
    """Scaled scores of queries q0.. against keys k0..; future keys get -inf when causal."""
    s = (q @ k_blk.transpose(-2, -1)) * scale  # (..., L_q, B_k)
    if causal:
        rows = torch.arange(q0, q0 + q.shape[-2], device=q.device)[:, None]
        cols = torch.arange(k0, k0 + k_blk.shape[-2], device=q.device)[None, :]
        s = s.masked_fill(cols > rows, float("-inf"))
    return s


def online_softmax_forward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_size: int = 64, causal: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention one key block at a time; returns (out (..., L_q, d_v), logsumexp (..., L_q, 1)).

    The largest intermediate is (..., L_q, block_size): the (L_q, L_k) matrix never exists.
    With causal=True query i sees keys 0..i (queries and keys aligned at position 0).
    """
    _check_blocks(q, k, v, block_size)
    scale = 1.0 / math.sqrt(q.shape[-1])
    lead, L_q, L_k = q.shape[:-2], q.shape[-2], k.shape[-2]
    m = q.new_full((*lead, L_q, 1), float("-inf"))  # running max of the scores
    l_sum = q.new_zeros((*lead, L_q, 1))  # running softmax denominator
    acc = q.new_zeros((*lead, L_q, v.shape[-1]))  # running un-normalised output
    for k0 in range(0, L_k, block_size):
        if causal and k0 >= L_q:
            break  # every later key is in every query's future
        k_blk, v_blk = k[..., k0 : k0 + block_size, :], v[..., k0 : k0 + block_size, :]
        s = _block_scores(q, k_blk, scale, causal, 0, k0)  # (..., L_q, B_k)
        m, l_sum, acc = online_softmax_step(m, l_sum, acc, s, v_blk)
    out = acc / l_sum.clamp_min(torch.finfo(acc.dtype).tiny)  # rows with no key stay 0
    return out, m + torch.log(l_sum)


class _OnlineAttention(torch.autograd.Function):
    """Tiled forward; the backward recomputes each block's weights from the saved logsumexp."""

    @staticmethod
    def forward(ctx: Any, q, k, v, block_size: int, causal: bool) -> torch.Tensor:
        out, lse = online_softmax_forward(q, k, v, block_size, causal)
        ctx.save_for_backward(q, k, v, out, lse)  # O(L) memory: no (L_q, L_k) matrix is kept
        ctx.block_size, ctx.causal = block_size, causal
        return out

    @staticmethod
    def backward(ctx: Any, d_out: torch.Tensor):
        q, k, v, out, lse = ctx.saved_tensors
        scale = 1.0 / math.sqrt(q.shape[-1])
        lse = torch.where(torch.isinf(lse), torch.zeros_like(lse), lse)  # rows with no key
        delta = (d_out * out).sum(dim=-1, keepdim=True)  # (..., L_q, 1) = sum_j p_ij dp_ij
        dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
        for k0 in range(0, k.shape[-2], ctx.block_size):
            sl = slice(k0, k0 + ctx.block_size)
            s = _block_scores(q, k[..., sl, :], scale, ctx.causal, 0, k0)
            p = torch.exp(s - lse)  # (..., L_q, B_k): this block's attention weights, recomputed
            dv[..., sl, :] = p.transpose(-2, -1) @ d_out
            ds = p * (d_out @ v[..., sl, :].transpose(-2, -1) - delta)  # softmax backward
            dq += (ds @ k[..., sl, :]) * scale
            dk[..., sl, :] = (ds.transpose(-2, -1) @ q) * scale
        return dq, dk, dv, None, None


def online_softmax_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_size: int = 64, causal: bool = False
) -> torch.Tensor:
    """softmax(q kᵀ / √d_k) v computed over key blocks of `block_size`; differentiable.

    q (..., L_q, d_k), k (..., L_k, d_k), v (..., L_k, d_v) -> (..., L_q, d_v); equal to
    standard attention up to float rounding, with O(L_q * block_size) extra memory.
    """
    _check_blocks(q, k, v, block_size)
    return _OnlineAttention.apply(q, k, v, block_size, causal)


# ----------------------------------------------------------------------------- measuring memory


# ----------------------------------------------------------------------------- the three paths


# ----------------------------------------------------------------------------- the KV cache


