"""Helpers that keep notebook 05's cells short.

- pictures of a positional-encoding table (`plot_positional_encoding`, `plot_encoding_curves`);
- `RotarySelfAttention` and `position_tagger`: notebook 04's `EncoderTagger` given its positions
  in one of five ways (none, sinusoidal, learned at two starting scales, RoPE), for a comparison
  in which nothing else differs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes

from ..attention import MultiHeadAttention, merge_heads, scaled_dot_product_attention, split_heads
from ..models import EncoderTagger
from ..plots import DIVERGING_CMAP, as_matrix, heatmap
from ..positional import LearnedPositionalEmbedding, RotaryEmbedding


def plot_positional_encoding(
    pe: Any, title: str = "Positional encoding", ax: Axes | None = None
) -> Axes:
    """Heatmap of a (L, D) positional table: positions on rows, dimensions on columns."""
    table = as_matrix(pe, "pe")
    if ax is None:
        _, ax = plt.subplots(figsize=(7.0, 4.0))
    bound = max(float(np.nanmax(np.abs(table))), 1e-12)  # centre the colour map on zero
    im = heatmap(ax, table, None, None, DIVERGING_CMAP, -bound, bound)
    ax.set_xlabel("dimension")
    ax.set_ylabel("position")
    ax.set_title(title)
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="value")
    return ax


def plot_encoding_curves(
    pe: Any,
    dims: Sequence[int] = (0, 1, 4, 5),
    title: str = "Positional encoding by dimension",
    ax: Axes | None = None,
) -> Axes:
    """One curve per chosen dimension of a (L, D) positional table, against position."""
    table = as_matrix(pe, "pe")
    L, D = table.shape
    bad = [d for d in dims if not 0 <= d < D]
    if bad:
        raise ValueError(f"dims {bad} are out of range for a table with D={D} dimensions")
    if ax is None:
        _, ax = plt.subplots()
    for d in dims:
        ax.plot(np.arange(L), table[:, d], label=f"dim {d}")
    ax.set_xlabel("position")
    ax.set_ylabel("value")
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))  # outside: the curves fill the box
    return ax


# ----------------------------------------------------------------------------- five kinds of position

POSITION_KINDS = ("none", "sinusoidal", "learned (std 0.02)", "learned (sinusoid scale)", "RoPE")


class RotarySelfAttention(MultiHeadAttention):
    """Multi-head self-attention whose queries and keys are rotated by RoPE, head by head.

    The projections are those of `MultiHeadAttention`; only q and k of each head are rotated
    by their position (values carry pure content). Self-attention only: key and value must be
    the query.
    """

    def __init__(self, d_model: int, num_heads: int, max_len: int = 512, dropout: float = 0.0):
        super().__init__(d_model, num_heads, dropout)
        self.rotary = RotaryEmbedding(self.d_k, max_len)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        mask: torch.Tensor | None = None,
        need_weights: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, L, D) three times -> (out (B, L, D), weights (B, H, L, L) or None)."""
        if key is not query or value is not query:
            raise ValueError("RotarySelfAttention is self-attention: pass the same x three times")
        self._check_inputs(x=query)
        q = split_heads(self.w_q(query), self.num_heads)  # (B, H, L, d_k)
        k = split_heads(self.w_k(query), self.num_heads)
        v = split_heads(self.w_v(query), self.num_heads)
        q, k = self.rotary(q, k)  # rotate by position; v is left alone
        p = self.dropout if self.training else 0.0
        out, weights = scaled_dot_product_attention(q, k, v, mask, dropout_p=p)
        return self.w_o(merge_heads(out)), (weights if need_weights else None)


def position_tagger(kind: str, max_len: int = 32, **size: int) -> EncoderTagger:
    """An `EncoderTagger` that differs from the others only in how it is given positions.

    "none": nothing added (the sinusoidal table set to zero); "sinusoidal": the paper's table;
    "learned (std 0.02)": a trained table started as BERT and GPT-2 start it; "learned
    (sinusoid scale)": the same random table scaled to std 1/sqrt(2), so its rows are as long
    as the sinusoid's, sqrt(D/2); "RoPE": nothing added, queries and keys rotated in every
    layer. Every other parameter is drawn exactly as for the other kinds, so after
    `set_seed(s)` all five start from the same weights; the learned table has its own draw.
    """
    if kind not in POSITION_KINDS:
        raise ValueError(f"kind must be one of {POSITION_KINDS}, got {kind!r}")
    model = EncoderTagger(max_len=max_len, positional="sinusoidal", **size)
    if kind in ("none", "RoPE"):
        model.pos.pe.zero_()  # same architecture, no added position vector
    if kind.startswith("learned"):
        with torch.random.fork_rng():  # the table's own draw leaves the global stream alone
            torch.manual_seed(torch.initial_seed() + 1)
            model.pos = LearnedPositionalEmbedding(model.d_model, max_len)  # std 0.02
        if kind == "learned (sinusoid scale)":
            with torch.no_grad():
                model.pos.embedding.weight.mul_(2**-0.5 / 0.02)  # the same table, std 1/sqrt(2)
    if kind == "RoPE":
        for layer in model.layers:
            old = layer.self_attn
            rotary = RotarySelfAttention(old.d_model, old.num_heads, max_len)
            rotary.load_state_dict(old.state_dict())  # the very same projections
            layer.self_attn = rotary
    return model
