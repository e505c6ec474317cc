"""The check for notebook 03's self-attention layer (the six steps with W_q, W_k, W_v).

Public through `course_lib.checks`; see that module for how a check works.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from . import _answers as O
from ._hints import HINTS, MASK_HINTS, SOFTMAX_AXIS
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

# The learner may reuse scaled dot-product attention (an earlier exercise), not a whole layer.
SELF_ATTENTION_ALLOWED = ("course_lib.attention.scaled_dot_product_attention",)

SELF_ATTENTION_HINTS = {
    "error": "x is (..., L, d_model) and w_q, w_k are (d_model, d_k), w_v (d_model, d_v): multiply x by each matrix as it is (no transpose: these are plain matrices, not nn.Linear layers); the scores are (..., L, L), one per query and key",
    "no_proj": "you attended with x itself (Q = K = V = x): project x first into queries, keys and values with the three matrices; these learned matrices are what makes a layer more than a similarity average",
    "v_not_projected": "the values were not projected: the weights are right, but the output must average the projected values (x times w_v), not x",
    "swap_qk": "queries and keys swapped: the queries come from w_q (they ask) and the keys from w_k (they answer); swapping them transposes the score matrix, and projected scores are not symmetric",
    "transposed": "the projection matrices were transposed: with w of shape (d_model, d_k) multiply x by w itself, not by its transpose",
    "scale_d_model": "scores divided by √d_model: the scale is √d_k, with d_k the width of the queries (the columns of w_q), not the width of x",
    "steps": "Six steps: project x into queries, keys and values with the three matrices; scores = queries times transposed keys; divide by √d_k; softmax over the last axis; the weighted sum of the values.",
}


# Hint ladders, one per exercise: the idea, then the operations and axes, then code.
# `hint("exN_k")` in course_lib.checks walks up them; only the last level shows code.
LADDERS: dict[str, tuple[str, ...]] = {
    "ex3_1": (
        "Each query compares itself with every key (a dot product), the comparisons are scaled so their spread does not grow with d_k, turned into weights that sum to 1 over the keys, and the values are averaged with those weights. A hidden key must get weight exactly 0: think about which score gives e^s = 0.",
        "Scores are (..., L_q, L_k): swap only the last two axes of k. Divide by sqrt(d_k). Where the mask is False, the score must become -inf before the softmax; the softmax runs over the last axis (the keys). out = weights times v.",
        "scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])\nif mask is not None:\n    scores = scores.masked_fill(~mask, float('-inf'))\nweights = torch.softmax(scores, dim=-1)\nreturn weights @ v, weights",
    ),
    "ex3_2": (
        "A layer learns what to ask, what to answer and what to hand over: three projections of x (queries, keys, values), then the attention of Exercise 3.1. Which width sets the scale: the width of x or of the queries?",
        "w_q, w_k, w_v are plain (d_model, d) matrices: multiply x by each, no transpose. The scale is the square root of the width of the queries (the number of columns of w_q), not of x. You may call your Exercise 3.1 function.",
        "q, k, v = x @ w_q, x @ w_k, x @ w_v\nreturn scaled_dot_product_attention(q, k, v)",
    ),
}


def _layer(
    x: torch.Tensor,
    w_q: torch.Tensor,
    w_k: torch.Tensor,
    w_v: torch.Tensor,
    scale: float | None = None,
    softmax_dim: int = -1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, weights) of self-attention in float64 with knobs for the scale and softmax axis."""
    q, k, v = (x.double() @ w.double() for w in (w_q, w_k, w_v))  # (..., L, d)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    weights = torch.softmax(q @ k.transpose(-2, -1) * scale, dim=softmax_dim)  # (..., L, L)
    return (weights @ v).float(), weights.float()


def _expected(x, w_q, w_k, w_v) -> tuple[torch.Tensor, torch.Tensor]:
    """The output from PyTorch's fused attention; the weights from a float64 softmax."""
    out = F.scaled_dot_product_attention(x @ w_q, x @ w_k, x @ w_v)  # (..., L, d_v)
    return out, _layer(x, w_q, w_k, w_v)[1]


@isolated
def check_self_attention(fn: Callable[..., Any]) -> None:
    """Check fn(x (..., L, d_model), w_q, w_k (d_model, d_k), w_v (d_model, d_v)) -> (out, weights).

    out is (..., L, d_v) and weights (..., L, L). The function may use course_lib's
    scaled_dot_product_attention (an earlier exercise) but must do the projections itself.
    """
    name = "self_attention"
    require_callable(fn, name)
    g = torch.Generator().manual_seed(7)
    cases = [  # (x shape, d_k, d_v): d_k != d_model and d_v != d_model tell mistakes apart
        ((5, 6), 4, 3),
        ((2, 4, 8), 8, 8),
        ((3, 6, 4), 2, 5),
    ]
    for i, (shape, d_k, d_v) in enumerate(cases, 1):
        D = shape[-1]
        x = randn(g, *shape)
        w_q, w_k = randn(g, D, d_k) / math.sqrt(D), randn(g, D, d_k) / math.sqrt(D)
        w_v = randn(g, D, d_v) / math.sqrt(D)
        desc = f"x {shape}, d_k={d_k}, d_v={d_v}"
        _self_attention_case(fn, case_label(name, i, len(cases), desc), x, w_q, w_k, w_v)
    passed(name, len(cases))


def _self_attention_case(fn, label: str, x, w_q, w_k, w_v) -> None:
    """One self-attention case: call, check the structure, compare, diagnose."""
    hints = SELF_ATTENTION_HINTS
    expected = _expected(x, w_q, w_k, w_v)  # before the learner's code runs
    result = call_learner(fn, label, (x, w_q, w_k, w_v), hints["error"], SELF_ATTENTION_ALLOWED)
    if isinstance(result, torch.Tensor):
        raise AssertionError(f"{label}: {HINTS['sdpa_single']} (got shape {tuple(result.shape)})")
    out, weights = as_tensors(result, label, ("out", "weights"))
    D, d_k = x.shape[-1], w_q.shape[-1]

    def wrong(*ws: torch.Tensor, **knobs: Any) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
        return lambda: _layer(x, *(ws or (w_q, w_k, w_v)), **knobs)

    eye = torch.eye(D)
    right_weights = _layer(x, w_q, w_k, w_v)[1]
    mistakes = [
        (hints["no_proj"], wrong(eye, eye, eye)),
        (hints["no_proj"], wrong(eye, eye, eye, scale=1.0)),
        (hints["v_not_projected"], lambda: (right_weights @ x, right_weights)),
        (hints["swap_qk"], wrong(w_k, w_q, w_v)),
        (hints["transposed"], wrong(w_q.T, w_k.T, w_v.T)),
        (HINTS["no_scale"], wrong(scale=1.0)),
        (HINTS["scale_d"], wrong(scale=1.0 / d_k)),
        (hints["scale_d_model"], wrong(scale=1.0 / math.sqrt(D))),
        (SOFTMAX_AXIS.format(dim=-2), wrong(softmax_dim=-2)),
    ]
    compare(
        label,
        [out, weights],
        expected,
        ("out", "weights"),
        mistakes,
        shape_hint="out is (..., L, d_v) and weights (..., L, L).",
        value_hint=hints["steps"],
    )


@isolated
def check_scaled_dot_product_attention(fn: Callable[..., Any]) -> None:
    """Check fn(q, k, v, mask=None) -> (out, weights), for 3-D and 4-D inputs and bool masks."""
    name = "scaled_dot_product_attention"
    require_callable(fn, name)
    g = torch.Generator().manual_seed(0)
    causal = torch.ones(5, 5, dtype=torch.bool).tril()[None, None]  # (1, 1, 5, 5)
    padding = (torch.arange(6) < torch.tensor([[6], [4], [2]]))[:, None, None, :]  # (3, 1, 1, 6)
    cases = [
        ("3-D (B, L, d_k)", (2, 4, 8), (2, 4, 8), (2, 4, 8), None),
        ("3-D, L_q=3 != L_k=5, d_v=6", (2, 3, 8), (2, 5, 8), (2, 5, 6), None),
        ("4-D (B, H, L, d_k)", (2, 3, 4, 8), (2, 3, 4, 8), (2, 3, 4, 8), None),
        ("4-D, L_q=3 != L_k=6", (2, 2, 3, 8), (2, 2, 6, 8), (2, 2, 6, 4), None),
        ("causal mask (1, 1, L, L)", (2, 3, 5, 8), (2, 3, 5, 8), (2, 3, 5, 8), causal),
        ("padding mask (B, 1, 1, L_k)", (3, 2, 4, 8), (3, 2, 6, 8), (3, 2, 6, 8), padding),
    ]
    for i, (desc, qs, ks, vs, mask) in enumerate(cases, 1):
        q, k, v = randn(g, *qs), randn(g, *ks), randn(g, *vs)
        _sdpa_case(fn, case_label(name, i, len(cases), desc), q, k, v, mask)
    passed(name, len(cases))


def _sdpa_case(fn, label: str, q, k, v, mask: torch.Tensor | None) -> None:
    """One attention case: call, check the structure, compare, diagnose."""
    args = (q, k, v) if mask is None else (q, k, v, mask)
    expected = (O.sdpa_out(q, k, v, mask), O.attention(q, k, v, mask)[1])  # before the call
    result = call_learner(fn, label, args, HINTS["sdpa_error"])
    if isinstance(result, torch.Tensor):
        raise AssertionError(f"{label}: {HINTS['sdpa_single']} (got shape {tuple(result.shape)})")
    out, weights = as_tensors(result, label, ("out", "weights"))

    def wrong(**knobs: Any) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
        return lambda: O.attention(q, k, v, mask, **knobs)

    d = q.shape[-1]
    mistakes = [(SOFTMAX_AXIS.format(dim=dim), wrong(softmax_dim=dim)) for dim in (-2, 0, 1)]
    mistakes += [
        (HINTS["no_scale"], wrong(scale=1.0)),
        (HINTS["scale_d"], wrong(scale=1 / d)),
        (HINTS["scale_mul"], wrong(scale=math.sqrt(d))),
    ]
    if mask is not None:
        mistakes += [(hint, wrong(mask_mode=mode)) for mode, hint in MASK_HINTS.items()]
        mistakes.append((HINTS["fill_zero"], wrong(fill=0.0)))
    compare(
        label,
        [out, weights],
        expected,
        ("out", "weights"),
        mistakes,
        shape_hint="out is (..., L_q, d_v) and weights (..., L_q, L_k).",
        value_hint=HINTS["sdpa_steps"],
        nan_hint=NAN_MASK_HINT,
    )


SUCCESSOR_HINTS = {
    "float": "W_q and W_k must be float tensors: a projection is multiplied with float token "
    "vectors, and an integer matrix cannot be (build them in a floating-point dtype)",
    "error": "successor_projections(n) gets one int, the number of distinct numbers, and "
    "returns two float tensors (W_q, W_k), each (n, d_k) with the same d_k of your choice",
    "tuple": "return a tuple (W_q, W_k) of two tensors, each of shape (n, d_k)",
    "shape": "W_q and W_k must both be (n, d_k) with the same d_k: the tokens are one-hot rows "
    "of width n, and a query and a key are compared by a dot product",
    "self": "every token's largest weight is on itself: the scores are symmetric (as with "
    "W_q = W_k), and a symmetric score can never point every token at its successor. The query "
    "of number i must match the key of number i + 1, not its own key",
    "predecessor": "direction reversed: each token looks at the number one *below* it. For one-hot "
    "tokens the score of number a with number b must be large where b = a + 1",
    "wrap": "almost: every token finds its successor except the largest number, whose "
    "successor is 0 (the numbers wrap around)",
    "soft": "the right keys win, but too softly: the smallest weight on a successor is {w:.2f}, "
    "and it must be at least 0.9. After dividing by √d_k, the winning score must beat the n - 1 "
    "others by about ln(9 (n - 1)); scale your matrices up",
    "nan": "the weights contain NaN or inf: the scores overflowed; a moderate scale is enough",
    "other": "token {i} (number {a}) puts its largest weight on number {b}, not on its "
    "successor {c}; for one-hot tokens the score of number a with number b is the entry "
    "(W_q W_kᵀ)[a, b]",
}

LADDERS["ex3_3"] = (
    "For one-hot tokens, the score of token i with token j is one entry of a fixed n x n "
    "matrix built from W_q and W_k. Decide which entries should be large (each number with "
    "its successor, wrapping around), then make them large enough that the softmax gives them "
    "at least 0.9.",
    "x_i W_q · x_j W_k = (W_q W_kᵀ)[i, j]. Take W_k as the identity (d_k = n) and W_q as a "
    "scaled permutation matrix that sends row i to column (i + 1) mod n. The softmax gives the "
    "winner exp(c/√n) / (exp(c/√n) + n - 1): solve for the scale c.",
    "n = n_numbers\n"
    "shift = torch.eye(n).roll(1, dims=1)  # row i has its 1 in column (i + 1) % n\n"
    "c = math.sqrt(n) * math.log(9 * (n - 1)) + 1.0\n"
    "return c * shift, torch.eye(n)",
)


@isolated
def check_successor_projections(fn: Callable[..., Any]) -> None:
    """Check fn(n) -> (W_q (n, d_k), W_k (n, d_k)): with one-hot tokens in any order, scaled
    dot-product self-attention puts at least 0.9 of each token's weight on its successor."""
    name = "successor_projections"
    require_callable(fn, name)
    cases = (4, 8, 13)
    for i, n in enumerate(cases, 1):
        _successor_case(fn, case_label(name, i, len(cases), f"n={n}"), n)
    passed(name, len(cases))


def _successor_case(fn, label: str, n: int) -> None:
    """One size n: the weights every token puts on its successor, over a few shuffled orders."""
    hints = SUCCESSOR_HINTS
    result = call_learner(fn, label, (n,), hints["error"])
    if not isinstance(result, tuple | list) or len(result) != 2:
        raise AssertionError(f"{label}: {hints['tuple']}")
    w_q, w_k = as_tensors(result, label, ("W_q", "W_k"), hints["tuple"])
    if not (w_q.is_floating_point() and w_k.is_floating_point()):
        got = f"W_q {w_q.dtype}, W_k {w_k.dtype}"
        raise AssertionError(f"{label}: {hints['float']} (got {got})")
    if w_q.ndim != 2 or w_k.ndim != 2 or w_q.shape[0] != n or w_q.shape != w_k.shape:
        got = f"W_q {tuple(w_q.shape)}, W_k {tuple(w_k.shape)}"
        raise AssertionError(f"{label}: {hints['shape']} (n = {n}; got {got})")
    g = torch.Generator().manual_seed(n)
    for _ in range(3):
        order = torch.randperm(n, generator=g)  # (L,) = (n,): the numbers in a shuffled order
        x = F.one_hot(order, n).double()  # (n, n): one-hot token vectors
        q, k = x @ w_q.double(), x @ w_k.double()  # (n, d_k)
        weights = torch.softmax(q @ k.T / math.sqrt(q.shape[-1]), dim=-1)  # (n, n)
        if not torch.isfinite(weights).all():
            raise AssertionError(f"{label}: {hints['nan']}")
        top = order[weights.argmax(dim=-1)]  # the number each token looks at most
        succ = (order + 1) % n
        wrong = top != succ
        if wrong.any():
            raise AssertionError(f"{label}: {_successor_diagnosis(order, top, succ, n)}")
        on_succ = weights[torch.arange(n), order.argsort()[succ]]  # weight on the successor
        low = on_succ < 0.9
        if low.sum() == 1 and order[low].item() == n - 1:
            raise AssertionError(f"{label}: {hints['wrap']}")
        if low.any():
            raise AssertionError(f"{label}: {hints['soft'].format(w=on_succ.min().item())}")


def _successor_diagnosis(order, top, succ, n: int) -> str:
    """Name the pattern behind wrong top choices: self, predecessor, wrap-around, or one token."""
    hints = SUCCESSOR_HINTS
    wrong = top != succ
    if (top == order).float().mean() > 0.5:
        return hints["self"]
    if (top == (order - 1) % n).float().mean() > 0.5:
        return hints["predecessor"]
    if wrong.sum() == 1 and order[wrong].item() == n - 1:
        return hints["wrap"]
    i = int(wrong.nonzero()[0])
    return hints["other"].format(i=i, a=int(order[i]), b=int(top[i]), c=int(succ[i]))
