"""The checks of notebook 06 (masking): the padding mask, the causal mask and a masked softmax.

Public through `course_lib.checks`; `_machinery` explains how a check works.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ._machinery import (
    as_tensors,
    call_learner,
    case_label,
    compare,
    isolated,
    passed,
    randn,
    require_bool_mask,
    require_callable,
)

# Exercises 6.1 and 6.2: the texts their failing checks can show (no code in any).
PAD_HINTS = {
    "error": "tokens is a (B, L) tensor of integer ids and pad_id an int; return a bool mask of "
    "shape (B, 1, 1, L), True at real tokens",
    "reversed": "mask polarity reversed: True must mark real tokens (may attend) and False the "
    "PAD positions",
    "zero": "you compared the tokens with 0, not with pad_id: the PAD id is an argument (here "
    "{pad}); do not assume it is 0",
    "prefix": "your mask marks the first n positions of each row as real, n being the number "
    "of real tokens (a length count or a cumulative test); that only holds for right padding. "
    "PAD may sit on the left too: whether a key is PAD is a property of that token alone",
    "after_first": "you hid everything from the first PAD on: with left padding the real tokens "
    "come after the PADs. Whether a key is PAD is a property of that token alone",
}

CAUSAL_HINTS = {
    "error": "L is an int; return a bool mask of shape (L, L) or (1, 1, L, L), rows are "
    "queries and columns keys, True at (i, j) exactly when j <= i",
    "reversed": "mask polarity reversed: True must mean 'may attend' (the lower triangle and "
    "the diagonal); you marked the hidden future positions True",
    "future": "off by one: each query can also see the next (future) token; query i may see "
    "keys 0 .. i and no further, so the triangle ends at the diagonal",
    "self": "off by one: a token cannot see itself in your mask; the diagonal must be True "
    "(key j = i is the query's own position, and it may attend to it)",
    "transposed": "the mask is transposed: rows are queries and columns keys, and query i may "
    "attend keys 0..i (the lower triangle), not i..L-1",
    "both": "mask polarity reversed and off by one: True must mean 'may attend', i.e. "
    "key j <= query i",
    "none": "nothing is masked: query i must not see keys j > i",
}

# Hint ladders, one per exercise: the idea, then the operations and axes, then code.
# `hint("exN_k")` in course_lib.checks walks up them; only the last level shows code.
LADDERS: dict[str, tuple[str, ...]] = {
    "ex6_1": (
        "The mask answers 'may this key be attended to?': True at real tokens, False at PAD. It must broadcast over heads and queries, which see the same keys. The usual trap: deciding from a row's length (the first n tokens are real), which fails for left padding; whether a token is PAD depends on that token alone, and pad_id need not be 0.",
        "One comparison of the tokens with pad_id gives (B, L) bools; insert the head and query axes (size 1) so the result is (B, 1, 1, L) and lines up with the keys, the last axis of (B, H, L_q, L_k).",
        "return (tokens != pad_id)[:, None, None, :]",
    ),
    "ex6_2": (
        "A token may look at itself and the past, never the future: True at (query i, key j) exactly when j <= i. The usual traps are the polarity (True = may attend, not 'is hidden') and the diagonal (a token may see itself).",
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
    hint = CAUSAL_HINTS["error"]
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
        (CAUSAL_HINTS["reversed"], lambda: ones.triu(1)),
        (CAUSAL_HINTS["future"], lambda: ones.tril(1)),
        (CAUSAL_HINTS["self"], lambda: ones.tril(-1)),
        (CAUSAL_HINTS["transposed"], lambda: ones.triu(0)),
        (CAUSAL_HINTS["both"], lambda: ones.triu(2)),
        (CAUSAL_HINTS["none"], lambda: ones),
    ]
    value_hint = "True at (query i, key j) exactly when j <= i."
    compare(label, [mask], [expected], ("the mask",), mistakes, value_hint=value_hint)


@isolated
def check_padding_mask(fn: Callable[[torch.Tensor, int], torch.Tensor]) -> None:
    """Check fn(tokens (B, L), pad_id) -> (B, 1, 1, L) bool mask, True at real tokens.

    PAD may sit on either side of a row (right padding, left padding for batched generation).
    """
    name = "padding_mask"
    require_callable(fn, name)
    g = torch.Generator().manual_seed(3)
    cases = [
        ((5, 3, 1), 5, 0, "right"),
        ((6, 2), 6, 1, "right"),
        ((4, 4, 2, 3), 4, 0, "right"),
        ((6, 3, 1), 6, 2, "left"),
    ]
    for i, (lengths, L, pad, side) in enumerate(cases, 1):
        tokens = torch.randint(3, 20, (len(lengths), L), generator=g)
        for b, n in enumerate(lengths):
            if side == "right":
                tokens[b, n:] = pad
            else:
                tokens[b, : L - n] = pad
        desc = f"tokens {tuple(tokens.shape)}, pad_id={pad}, {side} padding"
        _padding_case(fn, case_label(name, i, len(cases), desc), tokens, pad)
    passed(name, len(cases))


def _padding_case(fn, label: str, tokens: torch.Tensor, pad: int) -> None:
    """One padding_mask case: shape (with the reason), dtype, then polarity."""
    B, L = tokens.shape
    hint = PAD_HINTS["error"]
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
    real = expected[:, 0, 0, :]  # (B, L)
    n = real.sum(-1, keepdim=True)  # real tokens per row
    first_pad = torch.where(~real, torch.arange(L), L).amin(-1, keepdim=True)
    mistakes = [
        (PAD_HINTS["reversed"], lambda: ~expected),
        (PAD_HINTS["zero"].format(pad=pad), lambda: (tokens != 0)[:, None, None, :]),
        (PAD_HINTS["zero"].format(pad=pad), lambda: (tokens == 0)[:, None, None, :]),
        (PAD_HINTS["prefix"], lambda: (torch.arange(L) < n)[:, None, None, :]),
        (PAD_HINTS["after_first"], lambda: (torch.arange(L) < first_pad)[:, None, None, :]),
    ]
    compare(label, [mask], [expected], ("the mask",), mistakes)


# Exercise 6.3: the texts a failing masked_softmax check can show (no solution line in any).
SOFTMAX_HINTS = {
    "error": "scores are float32 or float16, mask is bool and broadcasts to scores (True = may "
    "attend). float16 holds numbers only up to ±65504: a fill value such as -1e9 does not fit "
    "(PyTorch refuses to write it into a float16 tensor), so pick one that every float type "
    "can hold",
    "shape": "the weights have the scores' shape: one weight per (query, key) cell",
    "dtype": "the weights must keep the scores' dtype ({want}), got {got}: compute in a wider "
    "type if you like, but return the dtype you were given",
    "nan": "rows with no visible key came out NaN: their scores are all -inf and the softmax "
    "computes 0/0. Such a row attends to nothing: give it zero weights (notebook 06, section 5)",
    "nan_other": "NaN in rows that do have visible keys: check what you fill the hidden scores "
    "with and how you combine the mask with the scores",
    "uniform": "rows with no visible key got weights that sum to 1 (spread over hidden keys): "
    "a large finite fill such as -1e4 or finfo.min gives every cell of an all-hidden row the "
    "same score, and the softmax then spreads 1 over them. Such a row must attend to nothing: "
    "all zeros",
    "leak": "hidden keys still get weight (largest {leak:.1e}): a fill value such as -10 is not "
    "negative enough for e^(fill - max) to underflow to exactly 0; use a fill that does",
    "reversed": "mask polarity reversed: True means 'may attend', yet the cells where mask is "
    "True got no weight and the hidden ones did",
    "reversed_nan": "; the rows that came out NaN are those in which every key is visible: your "
    "fill hid all of their keys",
    "reversed_zero": "; the rows that came out all zeros are those in which every key is "
    "visible: your fill hid all of their keys, and zeroing the NaN rows covered up the reversal",
    "ignored": "the mask was ignored: hidden keys get weight although mask is False there",
    "axis": "softmax over the wrong axis: each query's weights (a row, the last axis) must sum "
    "to 1 over its visible keys; yours sum to 1 down the columns",
    "after": "the rows with visible keys do not sum to 1: zeroing the hidden weights after the "
    "softmax leaves the rest as they were; hide the keys before the softmax so the visible "
    "ones share the whole weight",
    "values": "the weights of visible keys are wrong: they should be the softmax of the "
    "visible scores alone",
}

LADDERS["ex6_3"] = (
    "The usual traps: a fill value that does not fit float16 or does not underflow to exactly 0, "
    "and the row that may see nothing. Hidden keys must get exactly 0, the visible keys of a row share the whole weight, and a row "
    "with no visible key is all zeros: its softmax over only -inf is 0/0 = NaN, and a large "
    "finite fill would spread the weight uniformly instead. -inf is the one fill that fits "
    "float16 and underflows exactly.",
    "Fill the hidden scores (where the mask is False) with -inf, take the softmax over the last "
    "axis, the keys; then find the rows whose mask has no True along the keys (keep that axis, "
    "size 1, so it broadcasts) and set their weights to 0 with an operation that keeps the "
    "scores' dtype.",
    "weights = torch.softmax(scores.masked_fill(~mask, float('-inf')), dim=-1)\n"
    "empty = ~mask.any(dim=-1, keepdim=True)\n"
    "return weights.masked_fill(empty, 0.0)",
)


def _softmax_expected(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The right weights in float64, written row by row with plain exp (no softmax call)."""
    s = scores.double()
    m = mask.expand(s.shape)
    out = torch.zeros_like(s)
    flat_s, flat_m, flat_o = (
        s.reshape(-1, s.shape[-1]),
        m.reshape(-1, s.shape[-1]),
        out.view(-1, s.shape[-1]),
    )
    for r in range(flat_s.shape[0]):
        keep = flat_m[r]
        if keep.any():
            e = torch.exp(flat_s[r][keep] - flat_s[r][keep].max())
            flat_o[r][keep] = e / e.sum()
    return out


def _softmax_mistakes(scores: torch.Tensor, mask: torch.Tensor) -> list[tuple[str, Any]]:
    """Typical wrong answers, as thunks computing their weights in float64."""
    h, s = SOFTMAX_HINTS, scores.double()
    m = mask.expand(s.shape)

    def filled(fill: float, hide: torch.Tensor, dim: int = -1) -> Any:
        return lambda: torch.softmax(s.masked_fill(hide, fill), dim=dim)

    return [
        (h["uniform"], filled(-1e9, ~m)),
        (h["reversed"], filled(float("-inf"), m)),
        (h["ignored"], lambda: torch.softmax(s, dim=-1)),
        (h["axis"], filled(float("-inf"), ~m, dim=-2)),
        (h["after"], lambda: torch.softmax(s, dim=-1) * m),
    ]


@isolated
def check_masked_softmax(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    """Check fn(scores (..., L_q, L_k), mask bool) -> weights: hidden 0, empty rows 0, any dtype."""
    name = "masked_softmax"
    require_callable(fn, name)
    g = torch.Generator().manual_seed(6)
    lengths = torch.tensor([4, 2])  # case 1: a padding mask, no empty row
    pad = (torch.arange(4)[None, :] < lengths[:, None])[:, None, :]  # (2, 1, 4)
    left = torch.tensor([False, False, True, True, True])  # case 2: left padding + causal
    dec = torch.ones(5, 5, dtype=torch.bool).tril() & left[None, :]  # rows 0, 1 empty
    half = torch.rand(2, 3, 6, generator=g) < 0.6  # case 3: float16, some rows empty
    half[0, 1] = False
    half[1, 2] = True
    cases = [
        ("float32 (2, 3, 4), padding mask (2, 1, 4)", 3 * randn(g, 2, 3, 4), pad),
        (
            "float32 (1, 2, 5, 5), left padding + causal: rows 0-1 empty",
            3 * randn(g, 1, 2, 5, 5),
            dec,
        ),
        ("float16 (2, 3, 6), some rows empty", (3 * randn(g, 2, 3, 6)).half(), half),
    ]
    for i, (desc, scores, mask) in enumerate(cases, 1):
        _softmax_case(fn, case_label(name, i, len(cases), desc), scores, mask)
    passed(name, len(cases))


def _refuse_reversed(label: str, w: torch.Tensor, m: torch.Tensor) -> None:
    """Name a reversed mask even when the learner zeroed (or guarded) the rows it empties.

    In every row that has visible and hidden keys, a reversed mask puts no weight on the visible
    keys and all of it on the hidden ones; the rows whose keys are all visible come out NaN, or
    zero once the learner guards them, or uniform with a finite fill.
    """
    mixed = m.any(-1) & ~m.all(-1)  # (..., L_q)
    if not mixed.any():
        return
    wz = w.nan_to_num(0.0)
    on_visible = wz.masked_fill(~m, 0.0).abs().sum(-1)[mixed]
    on_hidden = wz.masked_fill(m, 0.0).sum(-1)[mixed]
    if on_visible.max() > 1e-6 or not torch.allclose(
        on_hidden, torch.ones_like(on_hidden), atol=1e-2
    ):
        return
    full = m.all(-1)  # rows whose keys are all visible: hidden completely by a reversed fill
    message = SOFTMAX_HINTS["reversed"]
    if full.any() and torch.isnan(w[full]).any():
        message += SOFTMAX_HINTS["reversed_nan"]
    elif full.any() and w[full].abs().sum() == 0:
        message += SOFTMAX_HINTS["reversed_zero"]
    raise AssertionError(f"{label}: {message}")


def _softmax_case(fn, label: str, scores: torch.Tensor, mask: torch.Tensor) -> None:
    """One masked_softmax case: structure first (each rule named), then the values."""
    h = SOFTMAX_HINTS
    expected = _softmax_expected(scores, mask)  # before the learner's code runs
    mistakes = _softmax_mistakes(scores, mask)
    (w,) = as_tensors(call_learner(fn, label, (scores, mask), h["error"]), label, ("the weights",))
    if tuple(w.shape) != tuple(scores.shape):
        raise AssertionError(
            f"{label}: the weights have shape {tuple(w.shape)}, expected {tuple(scores.shape)}; "
            f"{h['shape']}"
        )
    if w.dtype != scores.dtype:
        raise AssertionError(f"{label}: {h['dtype'].format(want=scores.dtype, got=w.dtype)}")
    m = mask.expand(scores.shape)
    empty = ~m.any(-1)  # (..., L_q): rows with no visible key
    wd = w.double()
    _refuse_reversed(label, wd, m)
    if torch.isnan(wd).any():
        nan_rows = torch.isnan(wd).any(-1)
        raise AssertionError(
            f"{label}: {h['nan'] if torch.equal(nan_rows, empty) else h['nan_other']}"
        )
    for hint, wrong in mistakes:  # whole-answer matches name the mistake exactly
        if torch.allclose(
            wd, wrong().nan_to_num(0.0), atol=2e-3 if w.dtype == torch.float16 else 1e-5
        ):
            if not torch.allclose(wd, expected, atol=2e-3 if w.dtype == torch.float16 else 1e-5):
                raise AssertionError(f"{label}: {hint}")
    if empty.any() and wd[empty].abs().sum() > 0:
        raise AssertionError(
            f"{label}: {h['uniform'] if torch.allclose(wd[empty].sum(-1), torch.ones(1, dtype=torch.float64), atol=1e-2) else h['nan']}"
        )
    hidden = wd.masked_select(~m)
    if hidden.numel() and hidden.abs().max() > 0:
        raise AssertionError(f"{label}: {h['leak'].format(leak=hidden.abs().max().item())}")
    sums = wd.sum(-1)[~empty]
    tol = 2e-3 if w.dtype == torch.float16 else 1e-5
    if not torch.allclose(sums, torch.ones_like(sums), atol=tol):
        raise AssertionError(f"{label}: {h['after']}")
    if not torch.allclose(wd, expected, atol=tol, rtol=tol):
        worst = (wd - expected).abs().max().item()
        raise AssertionError(f"{label}: {h['values']} (largest difference {worst:.2e})")
