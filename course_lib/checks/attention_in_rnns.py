"""The checks of notebook 02 (attention in RNNs): additive (Bahdanau) and dot (Luong) attention.

Public through `course_lib.checks`; `_machinery` explains how a check works.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from . import _answers as O
from ._hints import HINTS, MASK_HINTS
from ._machinery import (
    NAN_MASK_HINT,
    as_tensors,
    call_learner,
    case_label,
    compare,
    isolated,
    passed,
    randn,
    require_callable,
)

# Hint ladders, one per exercise: the idea, then the operations and axes, then code.
# `hint("exN_k")` in course_lib.checks walks up them; only the last level shows code.
LADDERS: dict[str, tuple[str, ...]] = {
    "ex2_1": (
        "Score every source position against the decoder state with a small network, turn the scores into weights that sum to 1 over the positions, and average the keys with those weights. PAD positions must get weight 0.",
        "W_q(query) is (B, A) and W_k(keys) (B, L, A): add a length axis to the first so they add up, apply tanh and v, and drop the last size-1 axis (name the axis). Hide PAD with -inf before a softmax over L; the context is the weighted sum of keys over L.",
        "scores = v(torch.tanh(W_q(query)[:, None, :] + W_k(keys))).squeeze(-1)\nif mask is not None:\n    scores = scores.masked_fill(~mask, float('-inf'))\nweights = torch.softmax(scores, dim=-1)\nreturn (weights[:, :, None] * keys).sum(1), weights",
    ),
    "ex2_2": (
        "Luong's dot score is how well each key points along the query: a plain dot product, no scaling. Then the same mask, softmax and weighted sum as in Exercise 2.1.",
        "keys (B, L, H) times query (B, H) per example gives (B, L): a batched matrix product with the query as a column, or multiply and sum over H. Squeeze only the axis you added, never the batch.",
        "scores = torch.bmm(keys, query[:, :, None]).squeeze(-1)\nif mask is not None:\n    scores = scores.masked_fill(~mask, float('-inf'))\nweights = torch.softmax(scores, dim=-1)\nreturn torch.bmm(weights[:, None, :], keys).squeeze(1), weights",
    ),
}


def _valid(lengths: list[int], L: int) -> torch.Tensor:
    """(B, L) bool mask, True at the first lengths[b] positions."""
    return torch.arange(L)[None, :] < torch.tensor(lengths)[:, None]


def _pool_mistakes(scores: Callable[..., torch.Tensor], keys, mask) -> list:
    """Known wrong (context, weights) for attention over (B, L) scores, RNN-era style."""

    def wrong(**knobs: Any) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
        return lambda: O.pool(scores(), keys, mask, **knobs)

    def squeezed(ctx3: bool, w3: bool) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
        ctx, w = O.pool(scores(), keys, mask)
        return lambda: (ctx[:, None] if ctx3 else ctx, w[..., None] if w3 else w)

    mistakes = [(HINTS["pool_batch"], wrong(softmax_dim=0))]
    if mask is not None:
        mistakes += [(hint, wrong(mask_mode=mode)) for mode, hint in MASK_HINTS.items()]
        mistakes.append((HINTS["fill_zero"], wrong(fill=0.0)))
    mistakes += [(HINTS["pool_squeeze"], squeezed(*f)) for f in ((0, 1), (1, 0), (1, 1))]
    return mistakes


def _pool_compare(label: str, result: Any, expected, mistakes: list) -> None:
    """Compare a (context, weights) answer."""
    names = ("context", "weights")
    context, weights = as_tensors(result, label, names, "Return (context, weights).")
    hint = "context is (B, H_enc), weights (B, L)."
    compare(
        label,
        [context, weights],
        expected,
        names,
        mistakes,
        hint,
        HINTS["pool_values"],
        nan_hint=NAN_MASK_HINT,
    )


@isolated
def check_additive_attention(fn: Callable[..., Any]) -> None:
    """Check fn(query (B, H_dec), keys (B, L, H_enc), W_q, W_k, v, mask=None) -> (context, weights).

    W_q = nn.Linear(H_dec, A, bias=False), W_k = nn.Linear(H_enc, A, bias=False),
    v = nn.Linear(A, 1, bias=False); mask (B, L) bool, True = valid position;
    context (B, H_enc), weights (B, L).
    """
    name = "additive_attention"
    require_callable(fn, name)
    g = torch.Generator().manual_seed(7)
    cases = [
        ((3, 5, 4, 6, 7), None),
        ((3, 5, 4, 6, 7), [5, 3, 2]),
        ((2, 6, 5, 3, 4), [2, 6]),
        ((1, 4, 3, 5, 4), [3]),  # B=1: a bare .squeeze() drops the batch axis
        ((2, 1, 4, 3, 5), None),  # L=1: one source position
    ]
    for i, ((B, L, Hd, He, A), lengths) in enumerate(cases, 1):
        mask = None if lengths is None else _valid(lengths, L)
        desc = f"B={B}, L={L}, H_dec={Hd}, H_enc={He}, A={A}" + (", mask" if lengths else "")
        query, keys = randn(g, B, Hd), randn(g, B, L, He)
        layers = (O.random_linear(g, Hd, A, False), O.random_linear(g, He, A, False))
        layers += (O.random_linear(g, A, 1, False),)
        _additive_case(fn, case_label(name, i, len(cases), desc), query, keys, layers, mask)
    passed(name, len(cases))


def _additive_case(fn, label: str, query, keys, layers, mask) -> None:
    """One Bahdanau attention case."""
    args = (query, keys, *layers) + (() if mask is None else (mask,))

    def scores(use_tanh: bool = True) -> Callable[[], torch.Tensor]:
        return lambda: O.additive_scores(query, keys, *layers, use_tanh=use_tanh)

    expected = O.pool(scores()(), keys, mask)  # before the learner's code runs
    result = call_learner(fn, label, args, HINTS["additive_error"])

    mistakes = _pool_mistakes(scores(), keys, mask)
    mistakes.append((HINTS["additive_no_tanh"], lambda: O.pool(scores(False)(), keys, mask)))
    _pool_compare(label, result, expected, mistakes)


@isolated
def check_dot_attention(fn: Callable[..., Any]) -> None:
    """Check fn(query (B, H), keys (B, L, H), mask=None) -> (context (B, H), weights (B, L)).

    Luong dot attention: score_j = keys[:, j] · query, no scaling; mask (B, L), True = valid.
    """
    name = "dot_attention"
    require_callable(fn, name)
    g = torch.Generator().manual_seed(8)
    cases = [((3, 5, 4), None), ((3, 5, 4), [5, 2, 4]), ((2, 6, 3), [6, 1])]
    cases += [((1, 4, 3), [2]), ((2, 1, 4), None)]  # B=1 and L=1: a bare .squeeze() fails
    for i, ((B, L, H), lengths) in enumerate(cases, 1):
        mask = None if lengths is None else _valid(lengths, L)
        desc = f"B={B}, L={L}, H={H}" + (", mask" if lengths else "")
        _dot_case(
            fn, case_label(name, i, len(cases), desc), randn(g, B, H), randn(g, B, L, H), mask
        )
    passed(name, len(cases))


def _dot_case(fn, label: str, query, keys, mask) -> None:
    """One Luong dot attention case."""
    args = (query, keys) + (() if mask is None else (mask,))
    expected = O.pool(O.dot_scores(query, keys), keys, mask)  # before the learner's code runs
    result = call_learner(fn, label, args, HINTS["dot_error"])
    mistakes = _pool_mistakes(lambda: O.dot_scores(query, keys), keys, mask)
    scaled = O.dot_scores(query, keys, 1 / math.sqrt(query.shape[-1]))
    mistakes.append((HINTS["dot_scaled"], lambda: O.pool(scaled, keys, mask)))
    _pool_compare(label, result, expected, mistakes)
