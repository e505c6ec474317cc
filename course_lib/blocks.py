"""Transformer building blocks: the feed-forward network, encoder and decoder layers.

Attribute names follow `nn.TransformerEncoderLayer` / `nn.TransformerDecoderLayer`
(`self_attn`, `norm1`, `dropout1`, ...) so that copying their weights reads line by line.
Masks are boolean with True = "may attend" (see `course_lib.masks`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from .attention import MultiHeadAttention
from .utils import expect_ndim, fmt_shape

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}


def _check_sequence(name: str, x: torch.Tensor, d_model: int) -> None:
    """Raise a ValueError unless x is (B, L, d_model)."""
    expect_ndim(name, x, 3, "(B, L, D)")
    if x.shape[-1] != d_model:
        raise ValueError(
            f"{name} has {x.shape[-1]} features but the layer expects d_model={d_model}: "
            f"shape {fmt_shape(x.shape)}; did you forget the embedding?"
        )


class FeedForward(nn.Module):
    """Position-wise feed-forward network: Linear -> activation -> dropout -> Linear."""

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0, activation: str = "relu"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.activation_name = activation
        self.linear1 = nn.Linear(d_model, d_ff)
        self.activation = ACTIVATIONS[activation]()
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ff, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, L, D) -> (B, L, D); every position is transformed independently."""
        d_model = self.linear1.in_features
        if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[-1] != d_model:
            shape = fmt_shape(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(
                f"x must end in d_model={d_model} features, got {shape}; "
                "the feed-forward network reads one d_model-wide vector per position"
            )
        h = self.dropout(self.activation(self.linear1(x)))  # (B, L, d_ff)
        return self.linear2(h)  # (B, L, D)


def _detach(weights: torch.Tensor | None) -> torch.Tensor | None:
    """Detached attention weights for plotting, or None when they were not computed."""
    return None if weights is None else weights.detach()


class EncoderLayer(nn.Module):
    """Self-attention then feed-forward, each wrapped in a residual connection and LayerNorm."""

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        d_ff: int,
        dropout: float = 0.0,
        norm_first: bool = True,
        activation: str = "relu",
    ):
        super().__init__()
        self.d_model, self.num_heads, self.norm_first = d_model, num_heads, norm_first
        self.self_attn = MultiHeadAttention(d_model, num_heads, dropout)
        self.ff = FeedForward(d_model, d_ff, dropout, activation)
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.dropout1, self.dropout2 = nn.Dropout(dropout), nn.Dropout(dropout)
        self.record_attention = False  # True (or `recording_attention`) keeps the weights
        self.self_attn_weights: torch.Tensor | None = None  # (B, H, L, L) when recorded

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, L, D), mask broadcastable to (B, H, L, L) (padding: (B, 1, 1, L)) -> (B, L, D)."""
        _check_sequence("x", x, self.d_model)
        if self.norm_first:  # pre-LN: x + sublayer(LN(x))
            x = x + self.dropout1(self._self_attention(self.norm1(x), mask))
            x = x + self.dropout2(self.ff(self.norm2(x)))
        else:  # post-LN, as in the paper: LN(x + sublayer(x))
            x = self.norm1(x + self.dropout1(self._self_attention(x, mask)))
            x = self.norm2(x + self.dropout2(self.ff(x)))
        return x  # (B, L, D)

    def _self_attention(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Queries, keys and values all from x; records the weights if asked to."""
        out, weights = self.self_attn(x, x, x, mask, need_weights=self.record_attention)
        self.self_attn_weights = _detach(weights)
        return out  # (B, L, D)


class DecoderLayer(nn.Module):
    """Masked self-attention, cross-attention to the encoder memory, then feed-forward."""

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        d_ff: int,
        dropout: float = 0.0,
        norm_first: bool = True,
        activation: str = "relu",
    ):
        super().__init__()
        self.d_model, self.num_heads, self.norm_first = d_model, num_heads, norm_first
        self.self_attn = MultiHeadAttention(d_model, num_heads, dropout)
        self.cross_attn = MultiHeadAttention(d_model, num_heads, dropout)
        self.ff = FeedForward(d_model, d_ff, dropout, activation)
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(d_model) for _ in range(3))
        self.dropout1, self.dropout2, self.dropout3 = (nn.Dropout(dropout) for _ in range(3))
        self.record_attention = False  # True (or `recording_attention`) keeps the weights
        self.self_attn_weights: torch.Tensor | None = None  # (B, H, L_t, L_t) when recorded
        self.cross_attn_weights: torch.Tensor | None = None  # (B, H, L_t, L_s) when recorded

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        tgt_mask: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x (B, L_t, D), memory (B, L_s, D) -> (B, L_t, D).

        tgt_mask broadcasts to (B, H, L_t, L_t) (causal AND padding, see `masks.decoder_mask`);
        memory_mask to (B, H, L_t, L_s) (the source padding mask (B, 1, 1, L_s)).
        """
        _check_sequence("x", x, self.d_model)
        _check_sequence("memory", memory, self.d_model)
        if memory.shape[0] != x.shape[0]:
            raise ValueError(
                f"x {fmt_shape(x.shape)} and memory {fmt_shape(memory.shape)} have different "
                "batch sizes; memory must be the encoder output for the same source sentences"
            )
        if self.norm_first:  # pre-LN: x + sublayer(LN(x))
            x = x + self.dropout1(self._self_attention(self.norm1(x), tgt_mask))
            x = x + self.dropout2(self._cross_attention(self.norm2(x), memory, memory_mask))
            x = x + self.dropout3(self.ff(self.norm3(x)))
        else:  # post-LN, as in the paper: LN(x + sublayer(x))
            x = self.norm1(x + self.dropout1(self._self_attention(x, tgt_mask)))
            x = self.norm2(x + self.dropout2(self._cross_attention(x, memory, memory_mask)))
            x = self.norm3(x + self.dropout3(self.ff(x)))
        return x  # (B, L_t, D)

    def _self_attention(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Queries, keys and values all from x; records the weights if asked to."""
        out, weights = self.self_attn(x, x, x, mask, need_weights=self.record_attention)
        self.self_attn_weights = _detach(weights)
        return out  # (B, L_t, D)

    def _cross_attention(
        self, x: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """Queries from the decoder, keys and values from the encoder memory."""
        out, weights = self.cross_attn(x, memory, memory, mask, need_weights=self.record_attention)
        self.cross_attn_weights = _detach(weights)
        return out  # (B, L_t, D)


@contextmanager
def recording_attention(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, every layer of `model` keeps its attention weights for plotting."""
    layers = [m for m in model.modules() if hasattr(m, "record_attention")]
    previous = [m.record_attention for m in layers]
    for m in layers:
        m.record_attention = True
    try:
        yield model
    finally:
        for m, was in zip(layers, previous, strict=True):
            m.record_attention = was


# ----------------------------------------------------------------------------
# Copying weights from PyTorch's own layers (to prove ours compute the same thing)


def _torch_activation_name(fn) -> str:
    """'relu' or 'gelu' for the activation stored in an nn.Transformer*Layer."""
    if fn is F.relu or isinstance(fn, nn.ReLU):
        return "relu"
    if fn is F.gelu or (isinstance(fn, nn.GELU) and fn.approximate == "none"):
        return "gelu"
    raise ValueError(f"cannot copy a layer whose activation is {fn!r}; only relu and gelu")


def _check_compatible(ours: EncoderLayer | DecoderLayer, theirs: nn.Module) -> None:
    """Raise a ValueError if `theirs` has different sizes, LayerNorm placement or activation."""
    mine = (ours.d_model, ours.num_heads, ours.ff.linear1.out_features, ours.norm_first)
    other = (
        theirs.self_attn.embed_dim,
        theirs.self_attn.num_heads,
        theirs.linear1.out_features,
        theirs.norm_first,
    )
    if mine != other:
        raise ValueError(
            f"layers differ in (d_model, num_heads, d_ff, norm_first): ours {mine}, "
            f"PyTorch's {other}"
        )
    if ours.ff.activation_name != _torch_activation_name(theirs.activation):
        raise ValueError(
            f"activations differ: ours {ours.ff.activation_name!r}, "
            f"PyTorch's {_torch_activation_name(theirs.activation)!r}"
        )


@torch.no_grad()
def _copy_linear(dst: nn.Linear, src: nn.Linear) -> None:
    dst.weight.copy_(src.weight)
    dst.bias.copy_(src.bias)


@torch.no_grad()
def _copy_norm(dst: nn.LayerNorm, src: nn.LayerNorm) -> None:
    dst.weight.copy_(src.weight)
    dst.bias.copy_(src.bias)
    dst.eps = src.eps


def load_encoder_layer_from_torch(
    ours: EncoderLayer, theirs: nn.TransformerEncoderLayer
) -> EncoderLayer:
    """Copy every weight of an `nn.TransformerEncoderLayer` into our `EncoderLayer`."""
    _check_compatible(ours, theirs)
    ours.self_attn.load_from_torch(theirs.self_attn)
    _copy_linear(ours.ff.linear1, theirs.linear1)
    _copy_linear(ours.ff.linear2, theirs.linear2)
    _copy_norm(ours.norm1, theirs.norm1)
    _copy_norm(ours.norm2, theirs.norm2)
    return ours


def load_decoder_layer_from_torch(
    ours: DecoderLayer, theirs: nn.TransformerDecoderLayer
) -> DecoderLayer:
    """Copy every weight of an `nn.TransformerDecoderLayer` into our `DecoderLayer`."""
    _check_compatible(ours, theirs)
    ours.self_attn.load_from_torch(theirs.self_attn)
    ours.cross_attn.load_from_torch(theirs.multihead_attn)  # PyTorch's name for cross-attention
    _copy_linear(ours.ff.linear1, theirs.linear1)
    _copy_linear(ours.ff.linear2, theirs.linear2)
    _copy_norm(ours.norm1, theirs.norm1)
    _copy_norm(ours.norm2, theirs.norm2)
    _copy_norm(ours.norm3, theirs.norm3)
    return ours
