"""The check for notebook 03's self-attention layer (the six steps with W_q, W_k, W_v).

Public through `course_lib.checks`; see that module for how a check works.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

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
from ._hints import HINTS, SOFTMAX_AXIS

# The learner may reuse scaled dot-product attention (an earlier exercise), not a whole layer.
SELF_ATTENTION_ALLOWED = ("course_lib.attention.scaled_dot_product_attention",)

SELF_ATTENTION_HINTS = {
    "error": "x is (..., L, d_model) and w_q, w_k are (d_model, d_k), w_v (d_model, d_v): "
    "project with x @ w_q (no transpose: these are plain matrices, not nn.Linear), then "
    "scores = q @ k.transpose(-2, -1) of shape (..., L, L)",
    "no_proj": "you attended with x itself (Q = K = V = x): project first, q = x @ w_q, "
    "k = x @ w_k, v = x @ w_v; these learned matrices are what makes a layer more than a "
    "similarity average",
    "v_not_projected": "the values were not projected: the weights are right, but average "
    "v = x @ w_v, not x",
    "swap_qk": "queries and keys swapped: q = x @ w_q asks, k = x @ w_k answers; swapping them "
    "transposes the score matrix, and projected scores are not symmetric",
    "transposed": "the projection matrices were transposed: with w of shape (d_model, d_k) "
    "compute x @ w, not x @ w.T",
    "scale_d_model": "scores divided by √d_model: the scale is √d_k with d_k = w_q.shape[1], "
    "the width of the queries, not the width of x",
    "steps": "Six steps: q, k, v = x @ w_q, x @ w_k, x @ w_v; scores = q @ k.transpose(-2, -1); "
    "divide by √d_k; softmax over the last axis; weights @ v (the weighted sum).",
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
        _expected(x, w_q, w_k, w_v),
        ("out", "weights"),
        mistakes,
        shape_hint="out is (..., L, d_v) and weights (..., L, L).",
        value_hint=hints["steps"],
    )
