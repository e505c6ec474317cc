"""The check for notebook 05's Exercise 5.3: RoPE inside multi-head self-attention.

Public through `course_lib.checks` (its ladder is with notebook 05's others, in
`checks/positional_encoding.py`); see that module for how a check works.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from . import _answers as O
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
from .positional_encoding import rope_oracle

ROPE_ATTN_HINTS = {
    "error": "follow the shapes: x and the projections are (B, L, D), one head's queries, keys "
    "and values (B, H, L, d_k) with d_k = D / num_heads even, the output (B, L, D); your rope "
    "takes (..., L, d) with positions on axis -2",
    "tuple": "return the output tensor alone, (B, L, D), not (out, weights)",
    "no_rope": "your scores are those of plain multi-head attention, which do not know where "
    "the tokens are: either nothing was rotated, or every position was turned by the same "
    "angle (positions counted along the head axis, say), which cancels in q·k. Rotate each "
    "head's queries and keys by their positions along L, axis -2 of (B, H, L, d_k)",
    "rope_v": "the values were rotated too: RoPE turns only the queries and keys, so that the "
    "scores see the offset; the values carry content and are averaged as they are",
    "one_side": "only one of queries and keys was rotated: a score then depends on an absolute "
    "position. Rotate both, so that only their offset is left in q·k",
    "before_split": "you rotated the full D-wide projections before splitting them into heads: "
    "the feature pairs and their speeds belong to each head's own d_k features (pair i of a "
    "head turns at 1/10000^(2i/d_k)), so split first, then rotate",
    "rope_x": "you rotated x before the projections: a linear map after the rotation breaks "
    "the offset property. Rotate the projected queries and keys of every head",
    "no_proj": "output projection missing: apply w_o to the merged heads",
    "no_scale": "scores not scaled: divide q·k by sqrt(d_k), the width of one head",
}

ROPE_ATTN_ALLOWED = (
    "course_lib.attention.scaled_dot_product_attention",
    "course_lib.attention.split_heads",
    "course_lib.attention.merge_heads",
    "course_lib.positional.apply_rope",
    "course_lib.positional.rope_angles",
    "course_lib.positional.RotaryEmbedding",
)


def rope_attention_oracle(
    x: torch.Tensor,
    lins: list,
    num_heads: int,
    rotate: str = "qk",
    where: str = "heads",
    project: bool = True,
    scaled: bool = True,
) -> torch.Tensor:
    """Multi-head self-attention with RoPE on each head's q and k; knobs for typical mistakes.

    rotate: which of q, k, v are turned ("qk", "qkv", "q", "k", ""); where: "heads" (right),
    "before_split" (the D-wide projections), "x" (the input). (Positions counted along the
    head axis turn q and k of a position by the same angle, which cancels: no rotation.)
    """
    w_q, w_k, w_v, w_o = lins
    B, L, D = x.shape
    H, d = num_heads, D // num_heads
    xr = rope_oracle(x) if where == "x" else x

    def project_split(lin, name: str) -> torch.Tensor:
        t = lin(xr)  # (B, L, D)
        turn = name in rotate and where != "x"
        if turn and where == "before_split":
            t = rope_oracle(t)
        t = t.reshape(B, L, H, d).transpose(1, 2)  # (B, H, L, d)
        return rope_oracle(t) if turn and where == "heads" else t

    q, k, v = (project_split(lin, n) for lin, n in ((w_q, "q"), (w_k, "k"), (w_v, "v")))
    out, _ = O.attention(q, k, v, scale=None if scaled else 1.0)
    out = out.transpose(1, 2).reshape(B, L, D)
    return w_o(out) if project else out


@isolated
def check_rope_self_attention(fn: Callable[..., Any]) -> None:
    """Check fn(x (B, L, D), w_q, w_k, w_v, w_o, num_heads) -> out (B, L, D): RoPE self-attention.

    Each head's queries and keys are rotated by position (pairs of its d_k features), values
    are not. The function may use course_lib's scaled_dot_product_attention, split_heads,
    merge_heads and RoPE pieces (earlier exercises), not MultiHeadAttention or the lesson's
    RotarySelfAttention.
    """
    name = "rope_self_attention"
    require_callable(fn, name)
    g = torch.Generator().manual_seed(53)
    cases = [(2, 5, 16, 2), (1, 7, 8, 2), (3, 4, 24, 3)]
    for i, (B, L, D, H) in enumerate(cases, 1):
        label = case_label(name, i, len(cases), f"x {(B, L, D)}, num_heads={H}")
        x = randn(g, B, L, D)
        _rope_attention_case(fn, label, x, [O.random_linear(g, D, D) for _ in range(4)], H)
    passed(name, len(cases))


def _rope_attention_case(fn, label: str, x: torch.Tensor, lins: list, H: int) -> None:
    """One RoPE self-attention case."""
    with torch.no_grad():
        expected = rope_attention_oracle(x, lins, H)  # before the learner's code runs
    hints = ROPE_ATTN_HINTS
    result = call_learner(fn, label, (x, *lins, H), hints["error"], allow=ROPE_ATTN_ALLOWED)
    (out,) = as_tensors(result, label, ("the output",), hints["tuple"])

    def wrong(**knobs: Any) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            with torch.no_grad():
                return rope_attention_oracle(x, lins, H, **knobs)

        return run

    mistakes = [
        (hints["no_rope"], wrong(rotate="")),
        (hints["rope_v"], wrong(rotate="qkv")),
        (hints["one_side"], wrong(rotate="q")),
        (hints["one_side"], wrong(rotate="k")),
        (hints["before_split"], wrong(where="before_split")),
        (hints["before_split"], wrong(where="before_split", rotate="qkv")),
        (hints["rope_x"], wrong(where="x")),
        (hints["no_proj"], wrong(project=False)),
        (hints["no_scale"], wrong(scaled=False)),
    ]
    shape_hint = "The output has the input's shape (B, L, D)."
    compare(label, [out], [expected], ("the output",), mistakes, shape_hint)
