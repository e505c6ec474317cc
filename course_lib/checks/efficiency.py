"""The checks of notebook 11 (efficiency): the online-softmax update and cached attention.

Public through `course_lib.checks`; `_machinery` explains how a check works.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from . import _answers as O
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

NEG_INF = float("-inf")
Step = Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]

EFFICIENCY_HINTS = {
    # the online-softmax update
    "os_acc": "forgot to rescale the old accumulator: acc_prev was summed against the old max, "
    "so multiply it by exp(m_prev - m_new) before adding this block's terms",
    "os_l": "forgot to rescale l: the old denominator was summed against the old max, so "
    "multiply it by exp(m_prev - m_new) before adding this block's terms",
    "os_both": "forgot to rescale l and acc: both were built relative to the old max, multiply "
    "each by exp(m_prev - m_new)",
    "os_inverted": "the rescale factor is inverted: the old state was measured against the old "
    "max, and the new max is at least as large, so the factor that converts it is "
    "exp(old max - new max) <= 1, not its reciprocal",
    "os_max": "the running max must be the larger of the old max and this block's max (per "
    "query), not this block's max alone",
    "os_unstable": "exp(scores) without subtracting the running max overflows for large scores; "
    "measure this block's terms against the new max, exp(scores - m_new), and rescale the old "
    "state",
    "os_normalised": "keep acc un-normalised: divide by l only once, after the last block",
    "os_shapes": "m and l are (..., L_q, 1) (the last axis kept, of size 1), acc (..., L_q, d_v), "
    "scores_block (..., L_q, B_k), v_block (..., B_k, d_v)",
    "os_guard": "a row whose keys in this block are all hidden (-inf) while its state is still "
    "empty (m = -inf) came out NaN: its new max is -inf too, and -inf - (-inf) is NaN, "
    "so the exponential is NaN. Such a row has seen no key yet, so its state must stay empty (m = -inf, l = 0, "
    "acc = 0): where the new max is -inf, shift the scores and the old max by 0 instead "
    "(notebook 06 met the same NaN in a softmax over a fully masked row)",
    "ca_error": "q_new, k_new, v_new are (B, H, T_new, d) and the cache (B, H, T_past, d): join "
    "cache and new entries along the positions axis (axis 2), then attend with a boolean "
    "mask of shape (T_new, T_past + T_new) that broadcasts over B and H",
    "ca_top_left": "your causal mask is aligned top-left: new query i sees keys 0 .. i, as "
    "PyTorch's is_causal switch or a square lower triangle does. After a "
    "cache, new query i sits at position T_past + i, so it must see every cached key and the "
    "new keys up to and including its own: the mask's diagonal is shifted right by T_past",
    "ca_no_mask": "nothing is masked: with several new tokens, new query i must not see the "
    "new keys after it (positions > T_past + i)",
    "ca_not_self": "off by one: each new query must also see its own key (position "
    "T_past + i); you hid the diagonal",
    "ca_next": "off by one: each new query also sees the key right after it, one step into "
    "the future",
    "ca_new_only": "the cache was ignored in the attention: the new queries must attend over "
    "the cached keys and values as well as the new ones",
    "ca_order": "the new positions come after the cached ones: the cache goes first along the "
    "positions axis (keys and values alike)",
    "ca_no_scale": "scores are not scaled: divide them by the square root of d, the head size",
    "ca_swapped": "keys and values swapped: the scores come from the queries and the *keys*, "
    "the output mixes the *values*",
    "ca_shapes": "three tensors come back, in this order: the output (B, H, T_new, d), then "
    "the joined keys and the joined values, each (B, H, T_past + T_new, d)",
    "ca_steps": "out[b, h, i] = softmax over j <= T_past + i of q_new[b, h, i] · k_all[b, h, j] "
    "/ sqrt(d), applied to v_all[b, h, j]; k_all and v_all are the cache followed by the new "
    "entries.",
}
E = EFFICIENCY_HINTS


# Hint ladders, one per exercise: the idea, then the operations and axes, then code.
# `hint("exN_k")` in course_lib.checks walks up them; only the last level shows code.
LADDERS: dict[str, tuple[str, ...]] = {
    "ex11_1": (
        "Online softmax keeps, per query, a running max m, a running sum l of exp(score - m) and an un-normalised weighted sum acc; a new block may raise the max, and then the old l and acc, measured against the old max, must be converted. A query whose keys are all hidden so far has max -inf, and -inf - (-inf) is NaN: that case needs care.",
        "New max = elementwise max of the old one and the block's max (keepdim). This block's terms are exp(scores - new max); the old l and acc are multiplied by exp(old max - new max) before adding them. Do not divide by l here. Where the new max is still -inf (the query has seen no key), subtract 0 instead of it, in the block's terms and in the rescale factor: its state then stays empty.",
        "m_new = torch.maximum(m_prev, scores_block.amax(-1, keepdim=True))\nshift = torch.where(torch.isinf(m_new), torch.zeros_like(m_new), m_new)\np = torch.exp(scores_block - shift); alpha = torch.exp(m_prev - shift)\nreturn m_new, l_prev * alpha + p.sum(-1, keepdim=True), acc_prev * alpha + p @ v_block",
    ),
    "ex11_2": (
        "The cache holds positions 0 .. T_past - 1; the T_new new tokens are positions T_past .. T_past + T_new - 1. Each new query may read every cached position and the new ones up to its own: the causal rule written in absolute positions. The usual trap: a square causal mask (or PyTorch's is_causal switch) is aligned top-left, as if the new queries were positions 0 .. T_new - 1.",
        "Join cache and new keys (and values) along the positions axis, cache first. Build a boolean (T_new, T_all) mask from two position ranges: row i holds the absolute position T_past + i, column j the key position j, and True where j <= that row's position. A square lower triangle (or PyTorch's is_causal switch) is aligned top-left, which is wrong here.",
        "k_all = torch.cat([cache_k, k_new], dim=2); v_all = torch.cat([cache_v, v_new], dim=2)\nT_new, T_all = q_new.shape[2], k_all.shape[2]\nmask = torch.arange(T_all)[None, :] <= torch.arange(T_all - T_new, T_all)[:, None]\nout = F.scaled_dot_product_attention(q_new, k_all, v_all, attn_mask=mask)\nreturn out, k_all, v_all",
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
    n = len(cases) + 3
    for i, (desc, lead, s0, s1) in enumerate(cases, 1):
        state = _empty(lead, 3, 5)
        if s0:
            state = O.online_step(*state, randn(g, *lead, 3, 4) * s0, randn(g, *lead, 4, 5))
        block = (randn(g, *lead, 3, 4) + s1, randn(g, *lead, 4, 5))
        _online_case(fn, case_label(name, i, n, desc), (*state, *block))
    scores, v = randn(g, 2, 3, 12) * 2, randn(g, 2, 12, 5)
    blocks = [(scores[..., j : j + 4], v[..., j : j + 4, :]) for j in (0, 4, 8)]
    _online_fold_case(fn, case_label(name, 4, n, "three blocks in turn"), scores, v, blocks)
    # a block that hides every key of some queries (padding, or a causal tile above the diagonal)
    masked = randn(g, 2, 3, 4).masked_fill(torch.tensor([True, False, True])[:, None], NEG_INF)
    desc = "empty state, a block that hides every key of queries 0 and 2"
    _online_case(fn, case_label(name, 5, n, desc), (*_empty((2,), 3, 5), masked, randn(g, 2, 4, 5)))
    scores = randn(g, 2, 3, 12) * 2
    scores[:, 0, :4] = NEG_INF  # query 0: its first key block is entirely hidden
    scores[:, 1, 4:8] = NEG_INF  # query 1: a hidden block after it has seen keys
    v = randn(g, 2, 12, 5)
    blocks = [(scores[..., j : j + 4], v[..., j : j + 4, :]) for j in (0, 4, 8)]
    desc = "three blocks, one of them fully hidden for some queries"
    _online_fold_case(fn, case_label(name, 6, n, desc), scores, v, blocks)
    passed(name, n)


def _empty(lead: tuple[int, ...], L_q: int, d_v: int) -> tuple[torch.Tensor, ...]:
    """The starting state: m = -inf, l = 0, acc = 0."""
    m = torch.full((*lead, L_q, 1), float("-inf"))
    return m, torch.zeros(*lead, L_q, 1), torch.zeros(*lead, L_q, d_v)


_NAN = (
    "With the empty state m = -inf, so a factor exp(m_prev - m_new) is exp(-inf) = 0; a NaN "
    "means a factor became exp(+inf) = inf and met a 0 (0 · inf), or a row with no visible key "
    "computed exp(-inf - (-inf)): check the rescale factor and the rows that see no key yet"
)
_OS_MISTAKES: list[tuple[str, dict[str, Any]]] = [
    (E["os_guard"], {"guard": False}),
    (E["os_both"], {"rescale_acc": False, "rescale_l": False}),
    (E["os_acc"], {"rescale_acc": False}),
    (E["os_l"], {"rescale_l": False}),
    (E["os_inverted"], {"inverted": True}),
    (E["os_max"], {"keep_max": False}),
    (E["os_unstable"], {"stable": False}),
    (E["os_normalised"], {"normalise": "simple"}),
    (E["os_normalised"], {"normalise": "weighted"}),
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
    result = as_tensors(call_learner(fn, label, args, E["os_shapes"]), label, names)

    def wrong(knobs: dict[str, Any]) -> Callable[[], tuple[torch.Tensor, ...]]:
        return lambda: O.online_step(*args, **knobs)

    mistakes = [(hint, wrong(knobs)) for hint, knobs in _OS_MISTAKES]
    compare(label, result, expected, names, mistakes, E["os_shapes"], nan_hint=_NAN)


def _online_fold_case(fn: Step, label: str, scores, v, blocks: list) -> None:
    """Fold the learner's update over all blocks; compare with the full softmax."""
    names = ("m", "l", "acc")

    def learner(*args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = call_learner(fn, label, args, E["os_shapes"])
        return tuple(as_tensors(out, label, ("m_new", "l_new", "acc_new")))

    start = _empty((2,), 3, 5)
    m = scores.amax(dim=-1, keepdim=True)  # every query sees some key over all blocks
    p = torch.exp(scores - m)
    expected = (m, p.sum(dim=-1, keepdim=True), p @ v)  # before the learner's code runs
    result = list(_fold(learner, start, blocks))

    def wrong(knobs: dict[str, Any]) -> Callable[[], tuple[torch.Tensor, ...]]:
        return lambda: _fold(lambda *a: O.online_step(*a, **knobs), start, blocks)

    mistakes = [(hint, wrong(knobs)) for hint, knobs in _OS_MISTAKES]
    compare(label, result, expected, names, mistakes, E["os_shapes"], nan_hint=_NAN)


# ----------------------------------------------------------------------------- cached attention


def _cached(
    q,
    k_new,
    v_new,
    cache_k,
    cache_v,
    shift: int | str | None = 0,
    use_cache: bool = True,
    order: str = "cache first",
    scale: bool = True,
    swap: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Attention after a cache in float64 with plain loops over the mask; knobs = mistakes.

    shift: new query i sees keys j <= T_past + i + shift (0 is right, -1 hides itself,
    +1 sees the next key); None masks nothing; "top-left" is is_causal's j <= i.
    """
    pairs = ((cache_k, k_new), (cache_v, v_new))
    k_all, v_all = (torch.cat(p if order == "cache first" else p[::-1], dim=2) for p in pairs)
    keys, values = (k_all, v_all) if use_cache else (k_new, v_new)
    if swap:
        keys, values = values, keys
    T_new, T_all = q.shape[2], keys.shape[2]
    T_past = T_all - T_new
    visible = torch.zeros(T_new, T_all, dtype=torch.bool)
    for i in range(T_new):
        for j in range(T_all):
            if shift is None:
                visible[i, j] = True
            elif shift == "top-left":
                visible[i, j] = j <= i
            else:
                visible[i, j] = j <= T_past + i + shift
    scores = q.double() @ keys.double().transpose(-2, -1)  # (B, H, T_new, T_all)
    if scale:
        scores = scores / q.shape[-1] ** 0.5
    weights = scores.masked_fill(~visible, NEG_INF).softmax(dim=-1)
    return (weights @ values.double()).float(), k_all, v_all


@isolated
def check_cached_attention(fn: Callable[..., tuple[torch.Tensor, ...]]) -> None:
    """Check fn(q_new, k_new, v_new, cache_k, cache_v) -> (out, k_all, v_all).

    q_new, k_new, v_new (B, H, T_new, d), the cache (B, H, T_past, d); new query i sits at
    position T_past + i and may see keys 0 .. T_past + i.
    """
    name = "cached_attention"
    require_callable(fn, name)
    g = torch.Generator().manual_seed(10)
    cases = [
        ("empty cache, 4 new tokens (the prompt): plain causal attention", 2, 2, 0, 4),
        ("cache of 5, one new token (a generation step)", 2, 2, 5, 1),
        ("cache of 4, three new tokens: the offset matters", 2, 2, 4, 3),
        ("B=1, H=3, cache of 2, five new tokens", 1, 3, 2, 5),
    ]
    for i, (desc, B, H, T_past, T_new) in enumerate(cases, 1):
        q, k, v = (randn(g, B, H, T_new, 4) for _ in range(3))
        cache_k, cache_v = randn(g, B, H, T_past, 4), randn(g, B, H, T_past, 4)
        _cached_case(fn, case_label(name, i, len(cases), desc), (q, k, v, cache_k, cache_v))
    passed(name, len(cases))


def _cached_case(fn, label: str, args: tuple[torch.Tensor, ...]) -> None:
    """One cached step, compared with loops over the offset causal mask."""
    names = ("output", "k_all", "v_all")
    expected = _cached(*args)  # before the learner's code runs
    allow = ("course_lib.attention.scaled_dot_product_attention",)
    result = call_learner(fn, label, args, E["ca_error"], allow=allow)
    out = as_tensors(result, label, names, E["ca_shapes"])

    def wrong(**knobs: Any) -> Callable[[], tuple[torch.Tensor, ...]]:
        return lambda: _cached(*args, **knobs)

    mistakes = [
        (E["ca_top_left"], wrong(shift="top-left")),
        (E["ca_no_mask"], wrong(shift=None)),
        (E["ca_not_self"], wrong(shift=-1)),
        (E["ca_next"], wrong(shift=1)),
        (E["ca_new_only"], wrong(use_cache=False)),
        (E["ca_order"], wrong(order="new first")),
        (E["ca_no_scale"], wrong(scale=False)),
        (E["ca_swapped"], wrong(swap=True)),
    ]
    compare(
        label, out, expected, names, mistakes, E["ca_shapes"], E["ca_steps"], nan_hint=NAN_MASK_HINT
    )
