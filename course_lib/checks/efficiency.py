"""The checks of notebook 11 (efficiency): the online-softmax update and the KV-cache step.

Public through `course_lib.checks`; `_machinery` explains how a check works.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from . import _answers as O
from ._hints import HINTS
from ._machinery import (
    as_tensors,
    call_learner,
    case_label,
    compare,
    isolated,
    passed,
    randn,
    require_callable,
)

Step = Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


# Hint ladders, one per exercise: the idea, then the operations and axes, then code.
# `hint("exN_k")` in course_lib.checks walks up them; only the last level shows code.
LADDERS: dict[str, tuple[str, ...]] = {
    "ex11_1": (
        "Online softmax keeps, per query, a running max m, a running sum l of exp(score - m) and an un-normalised weighted sum acc; a new block may raise the max, and then the old l and acc, measured against the old max, must be converted.",
        "New max = elementwise max of the old one and the block's max (keepdim). This block's terms are exp(scores - new max); the old l and acc are multiplied by exp(old max - new max) before adding them. Do not divide by l here.",
        "m_new = torch.maximum(m_prev, scores_block.amax(-1, keepdim=True))\np = torch.exp(scores_block - m_new); alpha = torch.exp(m_prev - m_new)\nreturn m_new, l_prev * alpha + p.sum(-1, keepdim=True), acc_prev * alpha + p @ v_block",
    ),
    "ex11_2": (
        "A KV cache remembers the keys and values of every position seen so far; a step appends the new positions after the cached ones.",
        "Tensors are (B, H, L, d): the positions are axis 2. Join the cache and the new entries along that axis, old first; the same for values. An empty cache (L = 0) needs no special case.",
        "return torch.cat([cache_k, k_new], dim=2), torch.cat([cache_v, v_new], dim=2)",
    ),
}


@isolated
def check_online_softmax(fn: Step) -> None:
    """Check fn(m_prev, l_prev, acc_prev, scores_block, v_block) -> (m_new, l_new, acc_new).

    m, l: (..., L_q, 1) running max and denominator; acc: (..., L_q, d_v) un-normalised output;
    scores_block (..., L_q, B_k), v_block (..., B_k, d_v). Start from m = -inf, l = acc = 0.
    """
    name = "online_softmax"
    require_callable(fn, name)
    g = torch.Generator().manual_seed(9)
    cases = [
        ("first block, empty state", (2,), 0.0, 0.0),
        ("second block, larger max: old state must be rescaled", (2,), 1.0, 3.0),
        ("4-D (B, H, L_q, B_k), smaller max in the new block", (2, 2), 2.0, -1.0),
    ]
    for i, (desc, lead, s0, s1) in enumerate(cases, 1):
        state = _empty(lead, 3, 5)
        if s0:
            state = O.online_step(*state, randn(g, *lead, 3, 4) * s0, randn(g, *lead, 4, 5))
        block = (randn(g, *lead, 3, 4) + s1, randn(g, *lead, 4, 5))
        _online_case(fn, case_label(name, i, 4, desc), (*state, *block))
    scores, v = randn(g, 2, 3, 12) * 2, randn(g, 2, 12, 5)
    blocks = [(scores[..., j : j + 4], v[..., j : j + 4, :]) for j in (0, 4, 8)]
    _online_fold_case(fn, case_label(name, 4, 4, "three blocks in turn"), scores, v, blocks)
    passed(name, 4)


def _empty(lead: tuple[int, ...], L_q: int, d_v: int) -> tuple[torch.Tensor, ...]:
    """The starting state: m = -inf, l = 0, acc = 0."""
    m = torch.full((*lead, L_q, 1), float("-inf"))
    return m, torch.zeros(*lead, L_q, 1), torch.zeros(*lead, L_q, d_v)


_NAN = (
    "With the empty state m = -inf, so a factor exp(m_prev - m_new) is exp(-inf) = 0; a NaN "
    "means a factor became exp(+inf) = inf and met a 0 (0 · inf): check the rescale factor"
)
_OS_MISTAKES: list[tuple[str, dict[str, Any]]] = [
    (HINTS["os_both"], {"rescale_acc": False, "rescale_l": False}),
    (HINTS["os_acc"], {"rescale_acc": False}),
    (HINTS["os_l"], {"rescale_l": False}),
    (HINTS["os_inverted"], {"inverted": True}),
    (HINTS["os_max"], {"keep_max": False}),
    (HINTS["os_unstable"], {"stable": False}),
    (HINTS["os_normalised"], {"normalise": "simple"}),
    (HINTS["os_normalised"], {"normalise": "weighted"}),
]


def _fold(step: Step, state: tuple[torch.Tensor, ...], blocks: list) -> tuple[torch.Tensor, ...]:
    """Apply `step` to each (scores, v) block in turn."""
    for scores, v in blocks:
        state = step(*state, scores, v)
    return state


def _online_case(fn: Step, label: str, args: tuple[torch.Tensor, ...]) -> None:
    """One update from a given state, compared with the formula."""
    names = ("m_new", "l_new", "acc_new")
    expected = O.online_step(*args)  # before the learner's code runs
    result = as_tensors(call_learner(fn, label, args, HINTS["os_shapes"]), label, names)

    def wrong(knobs: dict[str, Any]) -> Callable[[], tuple[torch.Tensor, ...]]:
        return lambda: O.online_step(*args, **knobs)

    mistakes = [(hint, wrong(knobs)) for hint, knobs in _OS_MISTAKES]
    compare(label, result, expected, names, mistakes, HINTS["os_shapes"], nan_hint=_NAN)


def _online_fold_case(fn: Step, label: str, scores, v, blocks: list) -> None:
    """Fold the learner's update over all blocks; compare with the full softmax."""
    names = ("m", "l", "acc")

    def learner(*args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = call_learner(fn, label, args, HINTS["os_shapes"])
        return tuple(as_tensors(out, label, ("m_new", "l_new", "acc_new")))

    start = _empty((2,), 3, 5)
    m = scores.amax(dim=-1, keepdim=True)
    p = torch.exp(scores - m)
    expected = (m, p.sum(dim=-1, keepdim=True), p @ v)  # before the learner's code runs
    result = list(_fold(learner, start, blocks))

    def wrong(knobs: dict[str, Any]) -> Callable[[], tuple[torch.Tensor, ...]]:
        return lambda: _fold(lambda *a: O.online_step(*a, **knobs), start, blocks)

    mistakes = [(hint, wrong(knobs)) for hint, knobs in _OS_MISTAKES]
    compare(label, result, expected, names, mistakes, HINTS["os_shapes"], nan_hint=_NAN)


@isolated
def check_kv_cache_step(fn: Callable[..., tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Check fn(cache_k, cache_v, k_new, v_new) -> (k_all, v_all), appending on the L axis.

    All tensors are (B, H, L, d); the cache may be empty (L = 0).
    """
    name = "kv_cache_step"
    require_callable(fn, name)
    g = torch.Generator().manual_seed(10)
    cases = [("cache of 3, one new token", 3, 1), ("empty cache, prefill 4", 0, 4)]
    cases.append(("cache of 2, two new tokens", 2, 2))
    for i, (desc, n_old, n_new) in enumerate(cases, 1):
        tensors = [randn(g, 2, 3, n, 4) for n in (n_old, n_old, n_new, n_new)]
        _kv_case(fn, case_label(name, i, len(cases), desc), *tensors)
    passed(name, len(cases))


def _kv_case(fn, label: str, cache_k, cache_v, k_new, v_new) -> None:
    """One cache update."""
    names = ("k_all", "v_all")
    L = cache_k.shape[2] + k_new.shape[2]
    expected = [torch.empty(2, 3, L, 4), torch.empty(2, 3, L, 4)]
    for out, old, new in zip(expected, (cache_k, cache_v), (k_new, v_new), strict=True):
        out[:, :, : old.shape[2]], out[:, :, old.shape[2] :] = old, new
    result = call_learner(fn, label, (cache_k, cache_v, k_new, v_new), HINTS["kv_error"])
    k_all, v_all = as_tensors(result, label, names, "Return (k_all, v_all).")

    def cat(dim: int, first: int = 0) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
        pairs = ((cache_k, k_new), (cache_v, v_new))
        return lambda: tuple(torch.cat(p if first == 0 else p[::-1], dim=dim) for p in pairs)

    mistakes = [(HINTS["kv_axis"], cat(d)) for d in (0, 1, 3)]
    mistakes += [
        (HINTS["kv_replace"], lambda: (k_new, v_new)),
        (HINTS["kv_order"], cat(2, first=1)),
        (HINTS["kv_swapped"], lambda: tuple(expected[::-1])),
    ]
    compare(label, [k_all, v_all], expected, names, mistakes, "Both are (B, H, L_old + L_new, d).")
