"""The checks for LayerNorm, the RNN-era exercises and the efficient-inference exercises.

Public through `course_lib.checks`; see that module for how a check works.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from . import _oracles as O
from ._checking import (
    as_tensors,
    call_learner,
    case_label,
    compare,
    isolated,
    passed,
    randn,
    require_callable,
)
from ._hints import HINTS, MASK_HINTS


def _valid(lengths: list[int], L: int) -> torch.Tensor:
    """(B, L) bool mask, True at the first lengths[b] positions."""
    return torch.arange(L)[None, :] < torch.tensor(lengths)[:, None]


@isolated
def check_layer_norm(fn: Callable[..., torch.Tensor]) -> None:
    """Check fn(x (B, L, D), gamma (D,), beta (D,), eps=1e-5) against nn.LayerNorm."""
    name = "layer_norm"
    require_callable(fn, name)
    g = torch.Generator().manual_seed(5)
    cases = [
        ("x (2, 5, 8)", (2, 5, 8), 1.0, 0.0, 1e-5),
        ("x (3, 4, 6), scaled and shifted", (3, 4, 6), 3.0, 2.0, 1e-5),
        ("x (2, 3, 8), tiny variance", (2, 3, 8), 0.01, 0.0, 1e-5),
        ("x (2, 4, 8), tiny variance, eps=1e-3", (2, 4, 8), 0.01, 1.0, 1e-3),
    ]
    for i, (desc, shape, scale, shift, eps) in enumerate(cases, 1):
        x = randn(g, *shape) * scale + shift
        gamma, beta = 1 + 0.5 * randn(g, shape[-1]), 0.5 * randn(g, shape[-1])
        _layer_norm_case(fn, case_label(name, i, len(cases), desc), x, gamma, beta, eps)
    passed(name, len(cases))


def _layer_norm_case(fn, label: str, x, gamma, beta, eps: float) -> None:
    """One layer_norm case, compared with F.layer_norm."""
    hint = "mean and var over the last axis with keepdim=True keep them broadcastable"
    result = call_learner(fn, label, (x, gamma, beta, eps), hint)
    (out,) = as_tensors(result, label, ("the output",))
    expected = torch.nn.functional.layer_norm(x, x.shape[-1:], gamma, beta, eps)

    def wrong(gamma=gamma, beta=beta, eps=eps, **knobs: Any) -> Callable[[], torch.Tensor]:
        return lambda: O.layer_norm(x, gamma, beta, eps, **knobs)

    mistakes = [(HINTS["ln_batchnorm"], wrong(dims=d)) for d in ((0,), (1,), (0, 1), (0, 1, 2))]
    mistakes += [
        (HINTS["ln_unbiased"], wrong(unbiased=True)),
        (HINTS["ln_eps_outside"], wrong(eps_where="outside")),
        (HINTS["ln_std"], wrong(unbiased=True, eps_where="outside")),
        (HINTS["ln_no_eps"], wrong(eps_where="none")),
        (HINTS["ln_fixed_eps"], wrong(eps=1e-5)),
        (HINTS["ln_no_affine"], wrong(gamma=None, beta=None)),
        (HINTS["ln_no_beta"], wrong(beta=None)),
        (HINTS["ln_no_gamma"], wrong(gamma=None)),
        (HINTS["ln_swapped"], wrong(gamma=beta, beta=gamma)),
    ]
    compare(label, [out], [expected], ("the output",), mistakes, "Same shape as x.")


@isolated
def check_rnn_cell(fn: Callable[..., torch.Tensor]) -> None:
    """Check fn(x (B, I), h (B, H), W_ih (H, I), W_hh (H, H), b_ih, b_hh) -> h' (B, H)."""
    name = "rnn_cell"
    require_callable(fn, name)
    g = torch.Generator().manual_seed(6)
    cases = [(2, 3, 4), (3, 5, 5), (1, 4, 6)]
    for i, (B, n_in, H) in enumerate(cases, 1):
        args = (randn(g, B, n_in), randn(g, B, H), randn(g, H, n_in) / math.sqrt(n_in))
        args += (randn(g, H, H) / math.sqrt(H), 0.5 * randn(g, H), 0.5 * randn(g, H))
        _rnn_case(fn, case_label(name, i, len(cases), f"B={B}, I={n_in}, H={H}"), args)
    passed(name, len(cases))


def _rnn_case(fn, label: str, args: tuple[torch.Tensor, ...]) -> None:
    """One RNN step, compared with nn.RNNCell."""
    (out,) = as_tensors(call_learner(fn, label, args, HINTS["rnn_error"]), label, ("h'",))

    def wrong(**knobs: Any) -> Callable[[], torch.Tensor]:
        return lambda: O.rnn_cell(*args, **knobs)

    mistakes = [
        (HINTS["rnn_no_tanh"], wrong(act=lambda z: z)),
        (HINTS["rnn_relu"], wrong(act=torch.relu)),
        (HINTS["rnn_no_transpose"], wrong(t_ih=False, t_hh=False)),
        (HINTS["rnn_no_transpose"], wrong(t_hh=False)),
        (HINTS["rnn_no_transpose"], wrong(t_ih=False)),
        (HINTS["rnn_no_hidden"], wrong(hidden=False)),
    ]
    mistakes += [(HINTS["rnn_bias"], wrong(bias=b)) for b in ((0, 1), (1, 0), (0, 0))]
    compare(label, [out], [O.rnn_cell_torch(*args)], ("h'",), mistakes, "h' is (B, H).")


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
    mistakes += [(HINTS["pool_squeeze"], squeezed(*f)) for f in ((0, 1), (1, 0), (1, 1))]
    return mistakes


def _pool_compare(label: str, result: Any, expected, mistakes: list) -> None:
    """Compare a (context, weights) answer."""
    names = ("context", "weights")
    context, weights = as_tensors(result, label, names, "Return (context, weights).")
    hint = "context is (B, H_enc), weights (B, L)."
    compare(label, [context, weights], expected, names, mistakes, hint, HINTS["pool_values"])


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
    result = call_learner(fn, label, args, HINTS["additive_error"])

    def scores(use_tanh: bool = True) -> Callable[[], torch.Tensor]:
        return lambda: O.additive_scores(query, keys, *layers, use_tanh=use_tanh)

    mistakes = _pool_mistakes(scores(), keys, mask)
    mistakes.append((HINTS["additive_no_tanh"], lambda: O.pool(scores(False)(), keys, mask)))
    _pool_compare(label, result, O.pool(scores()(), keys, mask), mistakes)


@isolated
def check_dot_attention(fn: Callable[..., Any]) -> None:
    """Check fn(query (B, H), keys (B, L, H), mask=None) -> (context (B, H), weights (B, L)).

    Luong dot attention: score_j = keys[:, j] · query, no scaling; mask (B, L), True = valid.
    """
    name = "dot_attention"
    require_callable(fn, name)
    g = torch.Generator().manual_seed(8)
    cases = [((3, 5, 4), None), ((3, 5, 4), [5, 2, 4]), ((2, 6, 3), [6, 1])]
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
    result = call_learner(fn, label, args, HINTS["dot_error"])
    mistakes = _pool_mistakes(lambda: O.dot_scores(query, keys), keys, mask)
    scaled = O.dot_scores(query, keys, 1 / math.sqrt(query.shape[-1]))
    mistakes.append((HINTS["dot_scaled"], lambda: O.pool(scaled, keys, mask)))
    _pool_compare(label, result, O.pool(O.dot_scores(query, keys), keys, mask), mistakes)


Step = Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


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


_OS_MISTAKES: list[tuple[str, dict[str, Any]]] = [
    (HINTS["os_both"], {"rescale_acc": False, "rescale_l": False}),
    (HINTS["os_acc"], {"rescale_acc": False}),
    (HINTS["os_l"], {"rescale_l": False}),
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
    result = as_tensors(call_learner(fn, label, args, HINTS["os_shapes"]), label, names)

    def wrong(knobs: dict[str, Any]) -> Callable[[], tuple[torch.Tensor, ...]]:
        return lambda: O.online_step(*args, **knobs)

    mistakes = [(hint, wrong(knobs)) for hint, knobs in _OS_MISTAKES]
    compare(label, result, O.online_step(*args), names, mistakes, HINTS["os_shapes"])


def _online_fold_case(fn: Step, label: str, scores, v, blocks: list) -> None:
    """Fold the learner's update over all blocks; compare with the full softmax."""
    names = ("m", "l", "acc")

    def learner(*args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = call_learner(fn, label, args, HINTS["os_shapes"])
        return tuple(as_tensors(out, label, ("m_new", "l_new", "acc_new")))

    start = _empty((2,), 3, 5)
    result = list(_fold(learner, start, blocks))
    m = scores.amax(dim=-1, keepdim=True)
    p = torch.exp(scores - m)
    expected = (m, p.sum(dim=-1, keepdim=True), p @ v)

    def wrong(knobs: dict[str, Any]) -> Callable[[], tuple[torch.Tensor, ...]]:
        return lambda: _fold(lambda *a: O.online_step(*a, **knobs), start, blocks)

    mistakes = [(hint, wrong(knobs)) for hint, knobs in _OS_MISTAKES]
    compare(label, result, expected, names, mistakes, HINTS["os_shapes"])


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
    result = call_learner(fn, label, (cache_k, cache_v, k_new, v_new), HINTS["kv_error"])
    k_all, v_all = as_tensors(result, label, names, "Return (k_all, v_all).")
    L = cache_k.shape[2] + k_new.shape[2]
    expected = [torch.empty(2, 3, L, 4), torch.empty(2, 3, L, 4)]
    for out, old, new in zip(expected, (cache_k, cache_v), (k_new, v_new), strict=True):
        out[:, :, : old.shape[2]], out[:, :, old.shape[2] :] = old, new

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
