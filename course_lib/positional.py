"""Positional information: the paper's sinusoidal encoding, learned positions, and RoPE."""

from __future__ import annotations

import math

import torch
from torch import nn

from .utils import fmt_shape


def sinusoidal_encoding(max_len: int, d_model: int, base: float = 10000.0) -> torch.Tensor:
    """(max_len, d_model) table: PE[pos, 2i] = sin(pos / base^(2i/d)), PE[pos, 2i+1] = cos(...)."""
    if d_model % 2 != 0:
        raise ValueError(f"d_model={d_model} must be even: dimensions come in (sin, cos) pairs")
    pos = torch.arange(max_len, dtype=torch.float32)[:, None]  # (L, 1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float32)  # (d/2,)
    freq = torch.exp(-math.log(base) * two_i / d_model)  # 1 / base^(2i/d)
    pe = torch.zeros(max_len, d_model)
    pe[:, 0::2] = torch.sin(pos * freq)  # even dimensions
    pe[:, 1::2] = torch.cos(pos * freq)  # odd dimensions
    return pe


def _check_embeddings(x: torch.Tensor, d_model: int) -> None:
    """Raise a ValueError unless x is a batch (B, L, d_model) of embeddings."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor of shape (B, L, D), got {type(x).__name__}")
    if x.dim() != 3:
        hint = "; for one sequence add a batch axis first: x[None]" if x.dim() == 2 else ""
        raise ValueError(
            f"x should have 3 dimensions (B, L, D), got shape {fmt_shape(x.shape)}{hint}"
        )
    if x.shape[-1] != d_model:
        raise ValueError(
            f"x has {x.shape[-1]} features but this encoding was built for d_model={d_model}: "
            f"shape {fmt_shape(x.shape)}; build it with the embedding width"
        )


class SinusoidalPositionalEncoding(nn.Module):
    """Adds the fixed sinusoidal table to (B, L, D) embeddings; nothing here is learned."""

    def __init__(self, d_model: int, max_len: int = 512, dropout: float = 0.0):
        super().__init__()
        self.register_buffer("pe", sinusoidal_encoding(max_len, d_model), persistent=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, L, D) -> x + PE[:L]."""
        _check_embeddings(x, self.pe.shape[1])
        L, max_len = x.shape[1], self.pe.shape[0]
        if L > max_len:
            raise ValueError(f"sequence length {L} exceeds max_len={max_len} of this encoding")
        return self.dropout(x + self.pe[:L])  # (B, L, D)


class LearnedPositionalEmbedding(nn.Module):
    """Adds a trained vector per position (as in BERT and GPT-2); undefined past max_len."""

    def __init__(self, d_model: int, max_len: int = 512, dropout: float = 0.0):
        super().__init__()
        self.embedding = nn.Embedding(max_len, d_model)
        nn.init.normal_(self.embedding.weight, std=0.02)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, L, D) -> x + P[:L]."""
        _check_embeddings(x, self.embedding.embedding_dim)
        L, max_len = x.shape[1], self.embedding.num_embeddings
        if L > max_len:
            raise ValueError(
                f"sequence length {L} exceeds max_len={max_len}: a learned position table has "
                "no vector for positions it never saw (the sinusoidal encoding has no such limit)"
            )
        pos = torch.arange(L, device=x.device)
        return self.dropout(x + self.embedding(pos))  # (B, L, D)


def rope_angles(max_len: int, d: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables (max_len, d/2) for rotary embeddings: angle = pos * base^(-2i/d)."""
    if d % 2 != 0:
        raise ValueError(
            f"RoPE rotates features in pairs, so the width must be even; got d={d} "
            "(the head dimension d_model / num_heads)"
        )
    inv_freq = torch.exp(-math.log(base) * torch.arange(0, d, 2, dtype=torch.float32) / d)
    angles = torch.arange(max_len, dtype=torch.float32)[:, None] * inv_freq  # (L, d/2)
    return torch.cos(angles), torch.sin(angles)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each (even, odd) feature pair of x (..., L, d) by its position's angle."""
    if not isinstance(x, torch.Tensor) or x.dim() < 2:
        raise ValueError(f"x must be a tensor of shape (..., L, d), got {x!r:.60}")
    L, d = x.shape[-2], x.shape[-1]
    if d % 2 != 0:
        raise ValueError(
            f"x has an odd width d={d}, shape {fmt_shape(x.shape)}; RoPE rotates features in "
            "pairs, so the width must be even"
        )
    if cos.shape[0] < L or cos.shape[1] * 2 != d:
        raise ValueError(
            f"RoPE tables {fmt_shape(cos.shape)} do not fit x {fmt_shape(x.shape)}: "
            f"need at least ({L}, {d // 2})"
        )
    cos, sin = cos[:L].to(x.dtype), sin[:L].to(x.dtype)  # (L, d/2)
    x_even, x_odd = x[..., 0::2], x[..., 1::2]  # (..., L, d/2) each
    out = torch.empty_like(x)
    out[..., 0::2] = x_even * cos - x_odd * sin
    out[..., 1::2] = x_even * sin + x_odd * cos
    return out


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (RoPE): rotates queries and keys so q.k sees only the offset."""

    def __init__(self, head_dim: int, max_len: int = 2048, base: float = 10000.0):
        super().__init__()
        cos, sin = rope_angles(max_len, head_dim, base)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def forward(self, q: torch.Tensor, k: torch.Tensor, offset: int = 0):
        """q, k (B, H, L, d_k) -> rotated (q, k); `offset` shifts positions (for a KV cache)."""
        cos, sin = self.cos[offset:], self.sin[offset:]
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin)
