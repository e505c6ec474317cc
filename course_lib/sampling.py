"""Choosing the next token from a language model's logits: greedy, temperature, top-k, top-p.

Every function works on logits of shape (..., V) (one row per sequence) and leaves the leading
axes alone. Filters return *logits* with the removed tokens set to -inf, so they compose:
temperature first, then top-k, then top-p (the order Hugging Face's `generate` uses).
"""

from __future__ import annotations

import torch

from .utils import fmt_shape

NEG_INF = float("-inf")


def _check_logits(logits: torch.Tensor) -> None:
    """Raise a ValueError unless logits is a floating (..., V) tensor."""
    if not isinstance(logits, torch.Tensor) or logits.dim() < 1:
        raise ValueError(f"logits must be a tensor of shape (..., V), got {logits!r:.60}")
    if not logits.is_floating_point():
        raise ValueError(
            f"logits must be floating point, got dtype {logits.dtype} with shape "
            f"{fmt_shape(logits.shape)}; pass the model's scores, not token ids"
        )


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """logits / T: T < 1 sharpens the distribution, T > 1 flattens it (T must be > 0)."""
    _check_logits(logits)
    if not temperature > 0:
        raise ValueError(
            f"temperature must be > 0, got {temperature}; temperature 0 means greedy "
            "decoding, which sample_next does with an argmax"
        )
    return logits / temperature


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits of each row, set the rest to -inf; (..., V) -> (..., V).

    Exactly k tokens survive even when logits tie at the border (torch.topk picks among them).
    """
    _check_logits(logits)
    V = logits.shape[-1]
    if not isinstance(k, int) or not 1 <= k:
        raise ValueError(f"top_k must be a positive int, got {k!r}")
    if k >= V:
        return logits.clone()
    idx = logits.topk(k, dim=-1).indices  # (..., k)
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, idx, True)  # (..., V)
    return logits.masked_fill(~keep, NEG_INF)


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filter: keep the smallest set of most likely tokens whose probability is >= p.

    Tokens are sorted by probability; a token is kept if the mass of the tokens *before* it is
    still < p, so the most likely token always survives and p = 1 keeps everything.
    """
    _check_logits(logits)
    if not 0.0 < p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {p}")
    sorted_logits, order = logits.sort(dim=-1, descending=True)  # (..., V)
    probs = sorted_logits.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # (..., V): mass of the strictly likelier tokens
    keep_sorted = mass_before < p
    keep_sorted[..., 0] = True  # never remove the most likely token
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)  # back to vocab order
    return logits.masked_fill(~keep, NEG_INF)


def filter_logits(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> torch.Tensor:
    """Temperature, then top-k, then top-p; (..., V) -> (..., V) logits (-inf = removed)."""
    out = apply_temperature(logits, temperature)
    if top_k is not None:
        out = top_k_filter(out, top_k)
    if top_p is not None:
        out = top_p_filter(out, top_p)
    return out


def next_token_probs(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> torch.Tensor:
    """The distribution sample_next draws from, (..., V); temperature 0 puts 1 on the argmax."""
    _check_logits(logits)
    if temperature == 0:
        return torch.zeros_like(logits).scatter(-1, logits.argmax(dim=-1, keepdim=True), 1.0)
    return filter_logits(logits, temperature, top_k, top_p).softmax(dim=-1)


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw one token per row: logits (B, V) -> ids (B,); temperature 0 is greedy (argmax)."""
    _check_logits(logits)
    if logits.dim() != 2:
        raise ValueError(
            f"sample_next expects logits (B, V) for the newest position, got "
            f"{fmt_shape(logits.shape)}; take logits[:, -1] of the model's (B, T, V) output"
        )
    if temperature == 0:
        return logits.argmax(dim=-1)  # (B,)
    probs = filter_logits(logits, temperature, top_k, top_p).softmax(dim=-1)  # (B, V)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]  # (B,)


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Shannon entropy in nats of each distribution (..., V) -> (...); 0 log 0 counts as 0."""
    logp = probs.clamp_min(1e-30).log()
    return -(probs * logp).sum(dim=-1)


__all__ = [
    "apply_temperature",
    "entropy",
    "filter_logits",
    "next_token_probs",
    "sample_next",
    "top_k_filter",
    "top_p_filter",
]
