"""Attention masks. Convention: a boolean mask where True means "may attend".

This is the convention of `torch.nn.functional.scaled_dot_product_attention`.
(`nn.MultiheadAttention`'s `attn_mask` / `key_padding_mask` use the opposite one:
True there means "masked out". Notebook 06 shows both side by side.)
"""

from __future__ import annotations

import torch

from .utils import fmt_shape


def padding_mask(tokens: torch.Tensor, pad_id: int) -> torch.Tensor:
    """(B, L) token ids -> (B, 1, 1, L) mask, True at real tokens, False at PAD."""
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2:
        shape = fmt_shape(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens)
        raise ValueError(
            f"padding_mask expects token ids of shape (B, L), got {shape}; "
            "pass the integer tokens, not their embeddings"
        )
    return (tokens != pad_id)[:, None, None, :]  # (B, 1, 1, L)


def causal_mask(length: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(1, 1, L, L) lower-triangular mask: query i may attend to keys 0..i."""
    if length < 1:
        raise ValueError(f"causal_mask needs a positive length, got {length}")
    ones = torch.ones(length, length, dtype=torch.bool, device=device)
    return torch.tril(ones)[None, None]  # (1, 1, L, L)


def combine_masks(*masks: torch.Tensor | None) -> torch.Tensor | None:
    """Combine boolean masks by AND (a key is visible only if every mask allows it)."""
    result = None
    for m in masks:
        if m is None:
            continue
        if m.dtype != torch.bool:
            raise ValueError(f"masks must be boolean (True = may attend), got dtype {m.dtype}")
        result = m if result is None else result & m
    return result


def decoder_mask(tgt_tokens: torch.Tensor, pad_id: int) -> torch.Tensor:
    """(B, L) target ids -> (B, 1, L, L): causal AND not-PAD, for decoder self-attention."""
    mask = padding_mask(tgt_tokens, pad_id)  # validates (B, L)
    L = tgt_tokens.shape[1]
    return combine_masks(mask, causal_mask(L, device=tgt_tokens.device))
