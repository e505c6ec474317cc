"""Choosing the next token from a language model's logits: greedy, temperature, top-k, top-p,
and the one beam search that both the Transformer and the GPT decode with.

Every function works on logits of shape (..., V) (one row per sequence) and leaves the leading
axes alone. Filters return *logits* with the removed tokens set to -inf, so they compose:
temperature first, then top-k, then top-p (the order Hugging Face's `generate` uses).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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


# ----------------------------------------------------------------------------
# Beam search


def gnmt_length_penalty(length: int, alpha: float) -> float:
    """((5 + length) / 6) ** alpha, the length penalty of Wu et al. (2016, GNMT).

    A hypothesis is ranked by log p / penalty. Summed log-probabilities only fall as a
    sentence grows, so without a penalty (alpha = 0) the search favours short outputs;
    alpha > 0 divides long ones by more and evens this out (GNMT used 0.6 to 0.7).
    The 5 keeps the penalty gentle for the first few tokens, and dividing by 6 = 5 + 1
    makes it exactly 1 for a one-token output, whatever alpha.
    """
    return ((5 + length) / 6) ** alpha


@dataclass
class Hypothesis:
    """One beam-search result: the continuation and its scores."""

    tokens: list[int]  # ends with eos_id when finished
    log_prob: float  # sum of log p(token | everything before it) over the tokens
    score: float  # log_prob / gnmt_length_penalty(len(tokens), alpha): what the beam ranks by
    finished: bool  # True if it ended with eos_id, False if it ran out of steps


StepFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def beam_search(
    step_fn: StepFn,
    max_steps: int,
    eos_id: int,
    beam_size: int = 4,
    length_penalty: float = 0.0,
    device: torch.device | str | None = None,
) -> list[Hypothesis]:
    """Beam search for one sequence; returns every hypothesis kept, best first.

    step_fn(prefixes, parents) -> log-probs (k, V) of the next token for each of the k live
    prefixes (k, t) (t = 0 on the first call). parents (k,) says which prefix of the previous
    call each one extends, so a step function with a KV cache reorders it with `parents`;
    one without a cache ignores it. Each step extends every live prefix by every token and
    keeps the best `beam_size` by summed log-probability; an extension ending in `eos_id` is
    set aside as finished and the beam shrinks by one. Finished hypotheses rank first, by
    log p / gnmt_length_penalty(length, length_penalty); those that ran out of `max_steps`
    follow. With beam_size=1 this is greedy decoding.
    """
    if not isinstance(beam_size, int) or beam_size < 1:
        raise ValueError(f"beam_size must be a positive integer, got {beam_size!r}")
    if not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"the number of steps must be a positive integer, got {max_steps!r}")
    beams = torch.zeros(1, 0, dtype=torch.long, device=device)  # (k, t): the live prefixes
    scores = torch.zeros(1, device=device)  # (k,): their summed log-probabilities
    parents = torch.zeros(1, dtype=torch.long, device=device)  # (k,)
    finished: list[Hypothesis] = []
    for _ in range(max_steps):
        log_probs = step_fn(beams, parents)  # (k, V)
        if log_probs.dim() != 2 or log_probs.shape[0] != len(beams):
            raise ValueError(
                f"step_fn must return log-probs (k, V) with k = {len(beams)} live prefixes, "
                f"got {fmt_shape(log_probs.shape)}"
            )
        V = log_probs.shape[1]
        cand = (scores[:, None] + log_probs).flatten()  # (k * V,)
        slots = beam_size - len(finished)  # the beam shrinks as hypotheses finish
        scores, flat = cand.topk(min(slots, cand.numel()))  # (slots,): the best extensions
        parents, token = flat // V, flat % V
        beams = torch.cat([beams[parents], token[:, None]], dim=1)  # (slots, t + 1)
        ended = token == eos_id
        finished += _hypotheses(beams[ended], scores[ended], True, length_penalty)
        beams, scores, parents = beams[~ended], scores[~ended], parents[~ended]
        if len(beams) == 0:
            break
    finished += _hypotheses(beams, scores, False, length_penalty)  # still going at max_steps
    return sorted(finished, key=lambda h: (h.finished, h.score), reverse=True)  # stable


def _hypotheses(
    beams: torch.Tensor, scores: torch.Tensor, finished: bool, alpha: float
) -> list[Hypothesis]:
    """One Hypothesis per row of beams (n, t) with summed log-probabilities scores (n,)."""
    return [
        Hypothesis(tokens, logp, logp / gnmt_length_penalty(len(tokens), alpha), finished)
        for tokens, logp in zip(beams.tolist(), scores.tolist(), strict=True)
    ]


__all__ = [
    "Hypothesis",
    "apply_temperature",
    "beam_search",
    "entropy",
    "filter_logits",
    "gnmt_length_penalty",
    "next_token_probs",
    "sample_next",
    "top_k_filter",
    "top_p_filter",
]
