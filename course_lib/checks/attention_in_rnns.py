"""The checks of notebook 02 (attention in RNNs): additive (Bahdanau) and dot (Luong) attention.

Public through `course_lib.checks`; `_machinery` explains how a check works.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from ..rnn import AdditiveAttention, DotAttention
from . import _answers as O
from ._hints import HINTS, MASK_HINTS
from ._machinery import (
    NAN_MASK_HINT,
    _all_close,
    as_tensors,
    call_learner,
    case_label,
    compare,
    isolated,
    passed,
    randn,
    require_callable,
)

# The messages of the pooling half that 2.1 and 2.2 share (scores (B, L) -> weights -> context).
RNN_POOL_HINTS = {
    "batch": "softmax over the wrong axis (the batch axis): each example's weights must sum to "
    "1 over its own L source positions, so the softmax runs over the last axis of the (B, L) "
    "scores, the positions",
    "fill_zero": "hidden scores were filled with 0 instead of -inf: 0 is an ordinary score, and "
    "exp(0) = 1, so the PAD positions still take part of the weight and pull the context "
    "towards their states. A hidden position needs a score whose exponential is exactly 0, and "
    "only -inf gives that",
    "extra_axis": "an extra size-1 axis is left in the answer (context (B, 1, H_enc) or weights "
    "(B, L, 1)): the axis you added for a batched product is still there. The answer is context "
    "(B, H_enc) and weights (B, L)",
    "batch_mix": "context is (B, B, H_enc): the (B, L) weights were multiplied as ONE matrix "
    "with every sentence's keys, so each sentence's keys were averaged with the weights of "
    "every sentence. Each example must use its own row of L weights against its own (L, H_enc) "
    "keys, one product per example",
    "bare_squeeze": "This case has {what}, and the cases before it passed: the likely cause is "
    "a lost size-1 axis. A squeeze that does not name its axis removes EVERY axis of size 1: "
    "the batch axis too when B = 1, the length axis too when L = 1; the shapes then no longer "
    "line up, and a softmax over the last axis may run across the batch. Remove only the one "
    "axis you added, by naming it; context must stay (B, H_enc) and weights (B, L)",
    "values": "each example's weights must sum to 1 over its L positions, with weight 0 at every "
    "hidden position, and the context is the weighted average of that example's keys",
}


# Hint ladders, one per exercise: the idea, then the operations and axes, then code.
# `hint("exN_k")` in course_lib.checks walks up them; only the last level shows code.
LADDERS: dict[str, tuple[str, ...]] = {
    "ex2_1": (
        "Score every source position against the decoder state with a small network, turn the scores into weights that sum to 1 over the positions, and average the keys with those weights. The usual traps: one query per sentence must meet all L keys (the shapes differ by one axis), and a PAD position must lose before the softmax, not be zeroed after it (the rest would no longer sum to 1).",
        "W_q(query) is (B, A) and W_k(keys) (B, L, A): add a length axis to the first so they add up, apply tanh and v, and drop the last size-1 axis (name the axis). Hide PAD with -inf before a softmax over L; the context is the weighted sum of keys over L.",
        "scores = v(torch.tanh(W_q(query)[:, None, :] + W_k(keys))).squeeze(-1)\nif mask is not None:\n    scores = scores.masked_fill(~mask, float('-inf'))\nweights = torch.softmax(scores, dim=-1)\nreturn (weights[:, :, None] * keys).sum(1), weights",
    ),
    "ex2_2": (
        "Luong's dot score is how well each key points along the query: a plain dot product, no scaling, one per position and sentence. Then the same mask, softmax and weighted average as in Exercise 2.1. The usual trap: a squeeze that names no axis also removes the batch axis when B = 1.",
        "keys (B, L, H) times query (B, H) per example gives (B, L): a batched matrix product with the query as a column, or multiply and sum over H. Squeeze only the axis you added, never the batch.",
        "scores = torch.bmm(keys, query[:, :, None]).squeeze(-1)\nif mask is not None:\n    scores = scores.masked_fill(~mask, float('-inf'))\nweights = torch.softmax(scores, dim=-1)\nreturn torch.bmm(weights[:, None, :], keys).squeeze(1), weights",
    ),
}


def _valid(lengths: list[int], L: int) -> torch.Tensor:
    """(B, L) bool mask, True at the first lengths[b] positions."""
    return torch.arange(L)[None, :] < torch.tensor(lengths)[:, None]


def _size_one(B: int, L: int) -> str:
    """'B = 1' / 'L = 1' / '' : which size-1 axis a case has (the bare-squeeze cases)."""
    what = [
        f"{n} = 1 ({d})"
        for n, d, v in (("B", "one example", B), ("L", "one position", L))
        if v == 1
    ]
    return " and ".join(what)


def _pool_mistakes(scores: Callable[..., torch.Tensor], keys, mask) -> list:
    """Known wrong (context, weights) for attention over (B, L) scores, RNN-era style."""

    def wrong(**knobs: Any) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
        return lambda: O.pool(scores(), keys, mask, **knobs)

    def squeezed(ctx3: bool, w3: bool) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
        ctx, w = O.pool(scores(), keys, mask)
        return lambda: (ctx[:, None] if ctx3 else ctx, w[..., None] if w3 else w)

    def mixed() -> tuple[torch.Tensor, torch.Tensor]:  # (B, L) weights @ (B, L, H): (B, B, H)
        _, w = O.pool(scores(), keys, mask)
        return torch.einsum("il,blh->bih", w, keys), w

    mistakes = [(RNN_POOL_HINTS["batch"], wrong(softmax_dim=0))]
    if mask is not None:
        mistakes += [(hint, wrong(mask_mode=mode)) for mode, hint in MASK_HINTS.items()]
        mistakes.append((RNN_POOL_HINTS["fill_zero"], wrong(fill=0.0)))
    mistakes += [(RNN_POOL_HINTS["extra_axis"], squeezed(*f)) for f in ((0, 1), (1, 0), (1, 1))]
    if keys.shape[0] > 1:
        mistakes.append((RNN_POOL_HINTS["batch_mix"], mixed))
    return mistakes


def _pool_error_hint(hint: str, keys: torch.Tensor) -> str:
    """The exception hint of a case: on a B = 1 or L = 1 case, the lost size-1 axis first."""
    what = _size_one(keys.shape[0], keys.shape[1])
    return RNN_POOL_HINTS["bare_squeeze"].format(what=what) if what else hint


def _pool_compare(label: str, result: Any, expected, mistakes: list) -> None:
    """Compare a (context, weights) answer.

    The cases with B = 1 or L = 1 come last, so a wrong answer there (after the other cases
    passed) is told about the size-1 axis a bare squeeze removes, besides its shapes or values.
    """
    names = ("context", "weights")
    context, weights = as_tensors(result, label, names, "Return (context, weights).")
    shape_hint, value_hint = "context is (B, H_enc), weights (B, L).", RNN_POOL_HINTS["values"]
    what = _size_one(*expected[1].shape)
    if what and not _all_close([context, weights], expected):
        shape_hint = value_hint = RNN_POOL_HINTS["bare_squeeze"].format(what=what) + "."
    compare(
        label,
        [context, weights],
        expected,
        names,
        mistakes,
        shape_hint,
        value_hint,
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
    result = call_learner(fn, label, args, _pool_error_hint(HINTS["additive_error"], keys))

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
    result = call_learner(fn, label, args, _pool_error_hint(HINTS["dot_error"], keys))
    mistakes = _pool_mistakes(lambda: O.dot_scores(query, keys), keys, mask)
    scaled = O.dot_scores(query, keys, 1 / math.sqrt(query.shape[-1]))
    mistakes.append((HINTS["dot_scaled"], lambda: O.pool(scaled, keys, mask)))
    _pool_compare(label, result, expected, mistakes)


DECODER_STEP_HINTS = {
    "error": "follow the shapes of one step: the embedding of y_prev is (B, E) and the context "
    "(B, K), so the GRU cell's input is their concatenation (B, E + K) and its state (B, H); "
    "the output layer takes the new state and the context together, (B, H + K)",
    "new_query": "the weights come from a query made with the *new* state s_t: in this decoder "
    "(Bahdanau's order) the previous state s_{t-1} asks, before the GRU step; the context is "
    "part of the GRU's input, so it must exist before the step",
    "out_prev": "the output layer read the previous state s_{t-1}: it reads the new state s_t "
    "(the one the GRU cell just produced) together with the context",
    "gru_order": "the GRU input is [embedding of y_prev ; context], in that order: the cell's "
    "weights expect the letter's features first",
    "out_order": "the output layer reads [s_t ; c_t], in that order: new state first, then the "
    "context",
    "probs": "you returned probabilities (a softmax of the logits); return the logits, the raw "
    "scores of the output layer: the loss applies the softmax itself",
    "no_mask": "the mask was ignored: pass it to `attend` so PAD positions get weight 0",
    "return_order": "return (logits, new state, weights) in that order: logits (B, V), "
    "s_t (B, H), weights (B, L)",
    "steps": "Compare your step with the equations of section 5 (Bahdanau's order): which state asks the attention, what the GRU cell reads and in which order, and what the output layer reads.",
}

LADDERS["ex2_3"] = (
    "Compose the pieces of one decoder step: the previous state asks which encoder states "
    "matter, the answer (the context) joins the last letter as the GRU's input, and the output "
    "layer reads the new state together with the context. Check three things against the "
    "equations of section 5: which state asks, what the GRU cell reads (and in which order its "
    "input is assembled), what the output layer reads.",
    "Order: call attend with the previous state, the encoder states and the mask, which gives "
    "(context (B, K), weights (B, L)); the GRU cell "
    "takes the concatenation (last axis) of the letter's embedding (B, E) and the context, and "
    "the previous state; the output layer takes the concatenation of the new state and the "
    "context. Return the logits, the new state and the weights.",
    "context, weights = attend(s_prev, states, mask)\n"
    "s = cell(torch.cat([embed(y_prev), context], dim=-1), s_prev)\n"
    "return out(torch.cat([s, context], dim=-1)), s, weights",
)


def _step_variant(parts, y_prev, s_prev, states, mask, knob: str = "") -> tuple:
    """(logits, s, weights) of one Bahdanau-order step, or of one typical mistake (`knob`)."""
    embed, attend, cell, out = parts
    context, weights = attend(s_prev, states, None if knob == "no_mask" else mask)
    e = embed(y_prev)
    s = cell(torch.cat([context, e] if knob == "gru_order" else [e, context], -1), s_prev)
    if knob == "luong":  # attends again with the new state and uses that context for the output
        context, weights = attend(s, states, mask)
    read = s_prev if knob == "out_prev" else s
    feats = [context, read] if knob == "out_order" else [read, context]
    logits = out(torch.cat(feats, -1))
    if knob == "new_query":
        weights = attend(s, states, mask)[1]
    if knob == "probs":
        logits = torch.softmax(logits, -1)
    return logits, s, weights


@isolated
def check_decoder_step(fn: Callable[..., Any]) -> None:
    """Check fn(y_prev (B,), s_prev (B, H), states (B, L, K), mask (B, L), embed, attend, cell,
    out) -> (logits (B, V), s (B, H), weights (B, L)): one attention decoder step, Bahdanau's order.

    attend(query, keys, mask) -> (context (B, K), weights (B, L)); cell = nn.GRUCell(E + K, H);
    out = nn.Linear(H + K, V).
    """
    name = "decoder_step"
    require_callable(fn, name)
    cases = [  # (B, L, H, K, E, V, lengths, score)
        (3, 5, 6, 4, 5, 11, [5, 3, 2], "additive"),
        (2, 4, 4, 4, 3, 9, [4, 4], "dot"),
        (1, 6, 5, 8, 4, 7, [4], "general"),
    ]
    for i, (B, L, H, K, E, V, lengths, score) in enumerate(cases, 1):
        torch.manual_seed(100 + i)  # the module weights; isolated() restores the RNG
        attend = AdditiveAttention(H, K, 6) if score == "additive" else DotAttention(H, K, score)
        parts = (
            torch.nn.Embedding(V, E),
            attend,
            torch.nn.GRUCell(E + K, H),
            torch.nn.Linear(H + K, V),
        )
        y_prev, s_prev = torch.randint(V, (B,)), torch.randn(B, H)
        states, mask = torch.randn(B, L, K), _valid(lengths, L)
        states = states.masked_fill(~mask[..., None], 0.0)
        desc = f"B={B}, L={L}, H={H}, K={K}, E={E}, V={V}, {score} score, mask"
        _decoder_step_case(
            fn, case_label(name, i, len(cases), desc), parts, y_prev, s_prev, states, mask
        )
    passed(name, len(cases))


def _decoder_step_case(fn, label: str, parts, y_prev, s_prev, states, mask) -> None:
    """One decoder step case: expected first, then the learner's call, then the diagnosis."""
    hints = DECODER_STEP_HINTS
    inputs = (y_prev, s_prev, states, mask)
    expected = _step_variant(parts, *inputs)  # before the learner's code runs
    result = call_learner(fn, label, (*inputs, *parts), hints["error"])
    names = ("logits", "new state", "weights")
    got = as_tensors(result, label, names, hints["return_order"])
    mistakes = [
        (hints[k], lambda k=k: _step_variant(parts, *inputs, knob=k))
        for k in ("new_query", "out_prev", "gru_order", "out_order", "probs", "no_mask")
    ]
    mistakes.append((hints["new_query"], lambda: _step_variant(parts, *inputs, knob="luong")))
    e_logits, e_s, e_w = expected
    mistakes.append((hints["return_order"], lambda: (e_s, e_logits, e_w)))
    compare(label, got, expected, names, mistakes, hints["return_order"], hints["steps"])
