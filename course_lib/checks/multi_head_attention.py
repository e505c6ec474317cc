"""The checks of notebook 04 (multi-head attention): split_heads, merge_heads, multi-head attention.

Public through `course_lib.checks`; `_machinery` explains how a check works.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from . import _answers as O
from ._hints import HINTS, SOFTMAX_AXIS
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

# Hint ladders, one per exercise: the idea, then the operations and axes, then code.
# `hint("exN_k")` in course_lib.checks walks up them; only the last level shows code.
LADDERS: dict[str, tuple[str, ...]] = {
    "ex4_1": (
        "Each head owns a contiguous block of d_k features of every position; the head axis then moves in front of the sequence axis, so attention runs per head. The usual trap: going straight to the final shape gives the right shape and the wrong answer (section 4 shows why).",
        "Look at the feature axis as (H, d_k) without moving any data (view to (B, L, H, d_k)), then swap the sequence and head axes. Reshaping straight to (B, H, L, d_k) gives the right shape but mixes positions.",
        "B, L, D = x.shape\nreturn x.view(B, L, num_heads, D // num_heads).transpose(1, 2)",
    ),
    "ex4_2": (
        "Undo split_heads: bring the sequence axis back in front of the heads, then lay the heads' features side by side. One trap: after two axes are swapped, the numbers no longer lie row by row in memory, so an operation that only reinterprets memory refuses to run.",
        "Swap axes 1 and 2 to get (B, L, H, d_k), then merge the last two axes into H*d_k. After a transpose the tensor is not contiguous, so use reshape (view would fail).",
        "B, H, L, d_k = x.shape\nreturn x.transpose(1, 2).reshape(B, L, H * d_k)",
    ),
    "ex4_3": (
        "Multi-head attention = project, split into heads, attend in every head at once, merge the heads, project again. The output is one (B, L, D) tensor. Ask yourself which operation of notebook 03 runs inside every head, and on tensors of which shape.",
        "w_q(x), w_k(x), w_v(x) are (B, L, D); split each to (B, H, L, d_k); the attention function of Exercise 3.1 handles the 4-D tensors; merge back to (B, L, D) and apply w_o. split/merge from 4.1/4.2 (yours or the course's) are allowed, MultiHeadAttention is not.",
        "q, k, v = (ref_split_heads(w(x), num_heads) for w in (w_q, w_k, w_v))\nout, _ = scaled_dot_product_attention(q, k, v)\nreturn w_o(ref_merge_heads(out))",
    ),
}


@isolated
def check_split_heads(fn: Callable[[torch.Tensor, int], torch.Tensor]) -> None:
    """Check fn(x (B, L, D), num_heads) -> (B, H, L, D/H)."""
    name = "split_heads"
    require_callable(fn, name)
    g = torch.Generator().manual_seed(1)
    cases = [(2, 5, 12, 3), (3, 4, 8, 2), (1, 6, 16, 4)]
    for i, (B, L, D, H) in enumerate(cases, 1):
        label = case_label(name, i, len(cases), f"x {(B, L, D)}, num_heads={H}")
        _split_case(fn, label, randn(g, B, L, D), H)
    passed(name, len(cases))


def _split_case(fn, label: str, x: torch.Tensor, H: int) -> None:
    """One split_heads case."""
    B, L, D = x.shape
    d = D // H
    hint = f"x is (B, L, D) with D = num_heads * d_k; {HINTS['contiguous']}"
    expected = O.split_heads(x, H)
    (out,) = as_tensors(call_learner(fn, label, (x, H), hint), label, ("the output",))
    mistakes = [
        (HINTS["split_no_transpose"], lambda: x.reshape(B, H, L, d)),
        (HINTS["split_wrong_axis"], lambda: x.reshape(B, L, d, H).permute(0, 3, 1, 2)),
        (HINTS["split_blhd"], lambda: x.reshape(B, L, H, d)),
    ]
    shape_hint = "split_heads maps (B, L, D) to (B, H, L, D/H)."
    compare(label, [out], [expected], ("the output",), mistakes, shape_hint)


@isolated
def check_merge_heads(fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Check fn(x (B, H, L, d_k)) -> (B, L, H*d_k), the inverse of split_heads."""
    name = "merge_heads"
    require_callable(fn, name)
    g = torch.Generator().manual_seed(2)
    cases = [(2, 3, 5, 4), (3, 2, 4, 4), (1, 4, 6, 2)]
    for i, shape in enumerate(cases, 1):
        _merge_case(fn, case_label(name, i, len(cases), f"x {shape}"), randn(g, *shape))
    passed(name, len(cases))


def _merge_case(fn, label: str, x: torch.Tensor) -> None:
    """One merge_heads case."""
    B, H, L, d = x.shape
    expected = O.merge_heads(x)
    (out,) = as_tensors(call_learner(fn, label, (x,), HINTS["contiguous"]), label, ("the output",))
    mistakes = [
        (HINTS["merge_no_transpose"], lambda: x.reshape(B, L, H * d)),
        (HINTS["merge_order"], lambda: x.permute(0, 2, 3, 1).reshape(B, L, H * d)),
        (HINTS["merge_no_reshape"], lambda: x.transpose(1, 2)),
    ]
    shape_hint = "merge_heads maps (B, H, L, d_k) to (B, L, H*d_k)."
    compare(label, [out], [expected], ("the output",), mistakes, shape_hint)


MHA_ALLOWED = (
    "course_lib.attention.scaled_dot_product_attention",
    "course_lib.attention.split_heads",
    "course_lib.attention.merge_heads",
)


@isolated
def check_multi_head_attention(fn: Callable[..., Any]) -> None:
    """Check fn(x (B, L, D), w_q, w_k, w_v, w_o, num_heads) -> out (B, L, D), self-attention.

    w_* are nn.Linear(D, D) with bias; the result is the output tensor alone. Your function
    may use course_lib's scaled_dot_product_attention, split_heads and merge_heads (earlier
    exercises), but not course_lib.attention.MultiHeadAttention.
    """
    name = "multi_head_attention"
    require_callable(fn, name)
    g = torch.Generator().manual_seed(4)
    cases = [(2, 5, 12, 3), (1, 4, 8, 2), (3, 6, 16, 4)]
    for i, (B, L, D, H) in enumerate(cases, 1):
        label = case_label(name, i, len(cases), f"x {(B, L, D)}, num_heads={H}")
        x = randn(g, B, L, D)
        _mha_case(fn, label, x, [O.random_linear(g, D, D) for _ in range(4)], H)
    passed(name, len(cases))


def _mha_case(fn, label: str, x: torch.Tensor, lins: list, H: int) -> None:
    """One multi-head attention case, compared with nn.MultiheadAttention."""
    D = x.shape[-1]
    expected = O.torch_mha(x, lins, H)  # before the learner's code runs
    result = call_learner(fn, label, (x, *lins, H), HINTS["mha_error"], allow=MHA_ALLOWED)
    (out,) = as_tensors(result, label, ("the output",), HINTS["mha_tuple"])

    def wrong(**knobs: Any) -> Callable[[], torch.Tensor]:
        return lambda: O.mha(x, lins, H, **knobs)

    mistakes = [
        (HINTS["mha_no_proj"], wrong(project=False)),
        (HINTS["mha_single"], lambda: O.single_head(x, lins, D)),
        (HINTS["mha_single"], lambda: O.single_head(x, lins, D // H)),
        (HINTS["mha_transpose"], wrong(split_ok=False)),
        (HINTS["mha_transpose"], wrong(merge_ok=False)),
        (HINTS["mha_transpose"], wrong(split_ok=False, merge_ok=False)),
        (HINTS["mha_no_scale"], wrong(scale="none")),
        (HINTS["mha_scale_d_model"], wrong(scale="d_model")),
        (SOFTMAX_AXIS.format(dim=-2), wrong(softmax_dim=-2)),
    ]
    shape_hint = "The output has the input's shape (B, L, D)."
    compare(label, [out], [expected], ("the output",), mistakes, shape_hint)
