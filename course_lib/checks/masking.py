"""The checks of notebook 06 (masking): the causal mask and the padding mask.

Public through `course_lib.checks`; `_machinery` explains how a check works.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ._hints import HINTS
from ._machinery import (
    as_tensors,
    call_learner,
    case_label,
    compare,
    isolated,
    passed,
    require_bool_mask,
    require_callable,
)

# Hint ladders, one per exercise: the idea, then the operations and axes, then code.
# `hint("exN_k")` in course_lib.checks walks up them; only the last level shows code.
LADDERS: dict[str, tuple[str, ...]] = {
    "ex6_1": (
        "The mask answers 'may this key be attended to?': True at real tokens, False at PAD. It must broadcast over heads and queries, which see the same keys.",
        "One comparison of the tokens with pad_id gives (B, L) bools; insert the head and query axes (size 1) so the result is (B, 1, 1, L) and lines up with the keys, the last axis of (B, H, L_q, L_k).",
        "return (tokens != pad_id)[:, None, None, :]",
    ),
    "ex6_2": (
        "A token may look at itself and the past, never the future: True at (query i, key j) exactly when j <= i.",
        "That is the lower triangle of an all-True (L, L) bool matrix, diagonal included; add two leading size-1 axes for batch and heads.",
        "return torch.ones(L, L, dtype=torch.bool).tril()[None, None]",
    ),
}


@isolated
def check_causal_mask(fn: Callable[[int], torch.Tensor]) -> None:
    """Check fn(L) -> bool (L, L) or (1, 1, L, L) mask, True where key j <= query i."""
    name = "causal_mask"
    require_callable(fn, name)
    cases = [4, 7, 1]
    for i, L in enumerate(cases, 1):
        _causal_case(fn, case_label(name, i, len(cases), f"L={L}"), L)
    passed(name, len(cases))


def _causal_case(fn, label: str, L: int) -> None:
    """One causal_mask case: shape, dtype, then values."""
    hint = "build an (L, L) lower-triangular bool mask, e.g. with torch.tril"
    expected = torch.tensor([[j <= q for j in range(L)] for q in range(L)], dtype=torch.bool)
    (mask,) = as_tensors(call_learner(fn, label, (L,), hint), label, ("the mask",))
    shape = tuple(mask.shape)
    if len(shape) < 2 or len(shape) > 4 or shape[-2:] != (L, L) or any(s != 1 for s in shape[:-2]):
        raise AssertionError(
            f"{label}: the mask should have shape ({L}, {L}) or (1, 1, {L}, {L}) so it "
            f"broadcasts over batch and heads, got {shape}"
        )
    mask = mask.reshape(L, L)
    require_bool_mask(label, mask, expected)
    ones = torch.ones(L, L, dtype=torch.bool)
    mistakes = [
        (HINTS["causal_reversed"], lambda: ones.triu(1)),
        (HINTS["causal_future"], lambda: ones.tril(1)),
        (HINTS["causal_self"], lambda: ones.tril(-1)),
        (HINTS["causal_transposed"], lambda: ones.triu(0)),
        (HINTS["causal_both"], lambda: ones.triu(2)),
        (HINTS["causal_none"], lambda: ones),
    ]
    value_hint = "True at (query i, key j) exactly when j <= i."
    compare(label, [mask], [expected], ("the mask",), mistakes, value_hint=value_hint)


@isolated
def check_padding_mask(fn: Callable[[torch.Tensor, int], torch.Tensor]) -> None:
    """Check fn(tokens (B, L), pad_id) -> (B, 1, 1, L) bool mask, True at real tokens."""
    name = "padding_mask"
    require_callable(fn, name)
    g = torch.Generator().manual_seed(3)
    cases = [((5, 3, 1), 5, 0), ((6, 2), 6, 1), ((4, 4, 2, 3), 4, 0)]
    for i, (lengths, L, pad) in enumerate(cases, 1):
        tokens = torch.randint(2, 20, (len(lengths), L), generator=g)
        for b, n in enumerate(lengths):
            tokens[b, n:] = pad
        label = case_label(name, i, len(cases), f"tokens {tuple(tokens.shape)}, pad_id={pad}")
        _padding_case(fn, label, tokens, pad)
    passed(name, len(cases))


def _padding_case(fn, label: str, tokens: torch.Tensor, pad: int) -> None:
    """One padding_mask case: shape (with the reason), dtype, then polarity."""
    B, L = tokens.shape
    hint = "compare the tokens with pad_id, then add the head and query axes"
    expected = torch.zeros(B, 1, 1, L, dtype=torch.bool)
    for b in range(B):
        for j in range(L):
            expected[b, 0, 0, j] = bool(tokens[b, j] != pad)
    (mask,) = as_tensors(call_learner(fn, label, (tokens, pad), hint), label, ("the mask",))
    shape = tuple(mask.shape)
    if shape != (B, 1, 1, L):
        why = (
            f"It must be (B, 1, 1, L) = {(B, 1, 1, L)}: attention scores are (B, H, L_q, L_k) "
            "and the mask hides keys (the last axis) for every head and every query, so the "
            "head and query axes are 1 and broadcast."
        )
        if shape == (B, 1, L, 1):
            why = f"(B, 1, L, 1) would mask queries, not keys. {why}"
        raise AssertionError(f"{label}: the mask has shape {shape}. {why}")
    require_bool_mask(label, mask, expected)
    mistakes = [(HINTS["pad_reversed"], lambda: ~expected)]
    compare(label, [mask], [expected], ("the mask",), mistakes)
