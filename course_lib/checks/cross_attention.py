"""The checks for notebook 07: the cross-attention sublayer and the cross-attention mask.

Public through `course_lib.checks`; see that module for how a check works. The expected output
of the sublayer comes from PyTorch's own `nn.MultiheadAttention` (with `key_padding_mask`, its
True = PAD convention); the learner's function receives a wrapper with the course's calling
convention, so only the wiring (queries, keys, values, norm, residual, mask) is tested.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

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

CROSS_HINTS = {
    "error": "mha(query, key, value, mask) returns a tuple (out, weights): take out = "
    "mha(...)[0]. query is norm(x) (B, L_t, D), key and value are memory (B, L_s, D), mask is "
    "src_mask (B, 1, 1, L_s); norm(x) maps (B, L_t, D) to (B, L_t, D)",
    "tuple": "you returned a tuple: mha(...) gives (out, weights); the sublayer returns only the new decoder states, one (B, L_t, D) tensor",
    "no_residual": "the residual is missing: return x + cross-attention, not the cross-attention "
    "alone; without `x +` the decoder state is replaced by a mix of source vectors",
    "post_ln": "this is post-LN (norm after the residual add, as in the 2017 paper): the exercise asks for pre-LN, where the norm is applied to the sublayer's input and the residual adds to the raw x",
    "residual_from_normed": "the residual adds the normalised vector: the residual path must carry the raw x, and only the sublayer's input is normalised",
    "self_attention": "keys and values came from the decoder: that is self-attention. In cross-attention the queries come from the (normalised) decoder states and the keys and values from the encoder output, memory",
    "memory_normed": "memory was normalised too: the encoder already normalised its output, and "
    "`norm` belongs to the decoder; pass memory as it is for the keys and values",
    "query_not_normed": "the queries were not normalised: pre-LN normalises the sublayer's "
    "input, so the query is norm(x), while the residual adds the raw x",
    "keys_values_mixed": "keys and values must both be the encoder memory",
    "mask_ignored": "the source padding mask was ignored: PAD positions of the source receive "
    "attention; pass src_mask to mha",
    "mask_reversed": "mask polarity reversed: src_mask is True at real source tokens (may "
    "attend); pass it as it is, do not invert it",
    "shape": "The result has x's shape (B, L_t, D): one row per target position. Queries come "
    "from x (the decoder), so the output has x's length, not memory's",
    "steps": "Pre-LN cross-attention: h = norm(x); out, _ = mha(h, memory, memory, src_mask); "
    "return x + out.",
    "mask_error": "src is (B, L_s) token ids: (src != pad_id) is (B, L_s); add the head and "
    "query axes with [:, None, None, :] to get (B, 1, 1, L_s), then .expand(B, num_heads, "
    "tgt_len, L_s)",
    "mask_not_expanded": "It broadcasts but was not expanded: this exercise asks for the "
    "full (B, num_heads, tgt_len, L_s) tensor, e.g. mask.expand(B, num_heads, tgt_len, L_s)",
    "mask_transposed": "Axes swapped: cross-attention scores are (B, H, L_t, L_s), target "
    "queries on rows and source keys on columns; the padding hides source *keys*, the last axis",
    "mask_polarity": "mask polarity reversed: True must mark real source tokens (may attend) "
    "and False the PAD positions; use src != pad_id",
    "mask_causal": "a causal mask does not belong in cross-attention: the whole source sentence "
    "is known before decoding starts, so every target position may read every real source "
    "token; hide only the PAD keys",
    "mask_tgt_pad": "pad_id is an argument: compare src with pad_id, not with 0",
}

CrossAttentionFn = Callable[..., Any]

# Exercise 7.2's prompt says "start from the padding mask": the padding-mask reference (the
# answer to Exercise 6.1) is allowed there, the causal mask and the decoder mask are not.
MASK_ALLOWED = ("course_lib.masks.padding_mask",)


# Hint ladders, one per exercise: the idea, then the operations and axes, then code.
# `hint("exN_k")` in course_lib.checks walks up them; only the last level shows code.
LADDERS: dict[str, tuple[str, ...]] = {
    "ex7_1": (
        "In cross-attention the decoder asks and the encoder answers; pre-LN normalises what goes into the sublayer and adds the sublayer's output to the raw input.",
        "Queries come from the normalised decoder states; keys and values are the encoder memory as it is (already normalised by the encoder); pass src_mask; mha returns (out, weights); the residual adds out to the raw x.",
        "out, _ = mha(norm(x), memory, memory, src_mask)\nreturn x + out",
    ),
    "ex7_2": (
        "Cross-attention hides only PAD source tokens: the whole source is known before decoding starts, so no causal part. The exercise wants the mask at its full (B, H, L_t, L_s) shape.",
        "Start from the (B, 1, 1, L_s) padding mask (yours from 6.1 or the course's is allowed) and expand its size-1 axes to num_heads and tgt_len.",
        "B, L_s = src.shape\nreturn (src != pad_id)[:, None, None, :].expand(B, num_heads, tgt_len, L_s)",
    ),
}


class _CourseStyleMHA:
    """nn.MultiheadAttention behind the course's interface: mha(q, k, v, mask) -> (out, weights).

    mask is a bool tensor broadcastable to (B, 1, 1, L_k) with True = may attend (the course
    convention); it is handed to PyTorch as key_padding_mask, where True means PAD.
    """

    def __init__(self, mha: nn.MultiheadAttention):
        self.mha = mha
        self.num_heads = mha.num_heads

    def __call__(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        mask: torch.Tensor | None = None,
        need_weights: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """query (B, L_q, D), key/value (B, L_k, D) -> (out (B, L_q, D), weights (B, H, L_q, L_k))."""
        pad = None
        if mask is not None:
            B, L_k = key.shape[0], key.shape[1]
            pad = ~mask.expand(B, 1, 1, L_k).reshape(B, L_k)  # (B, L_k), True = PAD
        out, weights = self.mha(
            query, key, value, key_padding_mask=pad, need_weights=True, average_attn_weights=False
        )
        return out, (weights if need_weights else None)

    forward = __call__


def _random_mha(g: torch.Generator, D: int, H: int) -> nn.MultiheadAttention:
    """An nn.MultiheadAttention whose weights come from the check's generator."""
    mha = nn.MultiheadAttention(D, H, batch_first=True)
    with torch.no_grad():
        for p in mha.parameters():
            scale = 1.0 / p.shape[-1] ** 0.5 if p.dim() > 1 else 0.1
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return mha.train()  # train mode (dropout is 0) keeps PyTorch off its fused fast path


def _random_norm(g: torch.Generator, D: int) -> nn.LayerNorm:
    """A LayerNorm with gains near 1 and small biases, not the identity."""
    norm = nn.LayerNorm(D)
    with torch.no_grad():
        norm.weight.copy_(1.0 + 0.3 * torch.randn(D, generator=g))
        norm.bias.copy_(0.3 * torch.randn(D, generator=g))
    return norm


def _wired(
    x: torch.Tensor,
    memory: torch.Tensor,
    mha: _CourseStyleMHA,
    norm: nn.LayerNorm,
    mask: torch.Tensor | None,
    residual: bool = True,
    post: bool = False,
    from_normed: bool = False,
    kv: str = "memory",
    query_normed: bool = True,
    mask_mode: str = "pass",
) -> torch.Tensor:
    """The cross-attention sublayer, with knobs for the typical mistakes."""
    m = {"pass": mask, "ignore": None, "reverse": None if mask is None else ~mask}[mask_mode]
    if post:
        return norm(x + mha(x, memory, memory, m)[0])
    h = norm(x)
    q = h if query_normed else x
    keys, values = {
        "memory": (memory, memory),
        "self": (h, h),
        "normed_memory": (norm(memory), norm(memory)),
        "mixed": (memory, h),  # raises when L_t != L_s: the variant is then skipped
    }[kv]
    out = mha(q, keys, values, m)[0]
    if not residual:
        return out
    return (h if from_normed else x) + out


@isolated
def check_cross_attention(fn: CrossAttentionFn) -> None:
    """Check fn(x (B, L_t, D), memory (B, L_s, D), mha, norm, src_mask) -> (B, L_t, D), pre-LN.

    mha(query, key, value, mask) -> (out, weights) is multi-head attention in the course's
    convention (mask (B, 1, 1, L_s) bool, True = may attend); norm is a LayerNorm. Expected:
    x + mha(norm(x), memory, memory, src_mask)[0], computed with PyTorch's nn.MultiheadAttention.
    """
    name = "cross_attention"
    require_callable(fn, name)
    g = torch.Generator().manual_seed(12)
    cases = [  # (B, L_t, L_s, D, H, lengths of the real source tokens or None)
        (2, 3, 5, 8, 2, None),
        (3, 4, 6, 12, 3, [6, 4, 2]),
        (1, 5, 4, 16, 4, None),
    ]
    for i, (B, L_t, L_s, D, H, lengths) in enumerate(cases, 1):
        desc = f"x {(B, L_t, D)}, memory {(B, L_s, D)}, {H} heads"
        desc += ", source padding" if lengths else ", no mask"
        mha, norm = _CourseStyleMHA(_random_mha(g, D, H)), _random_norm(g, D)
        x = randn(g, B, L_t, D) * 2.0 + 0.5  # not already normalised: misplaced norms show
        memory = randn(g, B, L_s, D) * 1.5 - 0.3
        mask = None
        if lengths is not None:
            mask = (torch.arange(L_s)[None, :] < torch.tensor(lengths)[:, None])[:, None, None, :]
        _cross_case(fn, case_label(name, i, len(cases), desc), x, memory, mha, norm, mask)
    passed(name, len(cases))


def _cross_case(fn, label: str, x, memory, mha, norm, mask) -> None:
    """One cross-attention case: call, check the structure, compare, diagnose."""
    h = CROSS_HINTS
    expected = _wired(x, memory, mha, norm, mask)  # before the learner's code runs
    result = call_learner(fn, label, (x, memory, mha, norm, mask), h["error"])
    if isinstance(result, tuple | list):
        raise AssertionError(f"{label}: {h['tuple']}")
    (out,) = as_tensors(result, label, ("the output",))

    def wrong(**knobs: Any) -> Callable[[], torch.Tensor]:
        return lambda: _wired(x, memory, mha, norm, mask, **knobs)

    mistakes = [
        (h["no_residual"], wrong(residual=False)),
        (h["post_ln"], wrong(post=True)),
        (h["residual_from_normed"], wrong(from_normed=True)),
        (h["self_attention"], wrong(kv="self")),
        (h["memory_normed"], wrong(kv="normed_memory")),
        (h["query_not_normed"], wrong(query_normed=False)),
        (h["keys_values_mixed"], wrong(kv="mixed")),
    ]
    if mask is not None:
        mistakes += [
            (h["mask_ignored"], wrong(mask_mode="ignore")),
            (h["mask_reversed"], wrong(mask_mode="reverse")),
        ]
    compare(label, [out], [expected], ("the output",), mistakes, h["shape"], h["steps"])


@isolated
def check_cross_attention_mask(fn: Callable[..., torch.Tensor]) -> None:
    """Check fn(src (B, L_s), pad_id, tgt_len, num_heads) -> (B, H, L_t, L_s) bool mask.

    True = may attend: every target position may read every real (non-PAD) source token.
    """
    name = "cross_attention_mask"
    require_callable(fn, name)
    g = torch.Generator().manual_seed(13)
    cases = [  # (source lengths, L_s, pad_id, L_t, H)
        ((5, 3, 1), 5, 0, 4, 2),
        ((6, 2), 6, 1, 3, 4),
        ((4, 4, 2, 3), 4, 0, 7, 1),
    ]
    for i, (lengths, L_s, pad, L_t, H) in enumerate(cases, 1):
        src = torch.randint(2, 20, (len(lengths), L_s), generator=g)
        for b, n in enumerate(lengths):
            src[b, n:] = pad
        desc = f"src {tuple(src.shape)}, pad_id={pad}, tgt_len={L_t}, num_heads={H}"
        _mask_case(fn, case_label(name, i, len(cases), desc), src, pad, L_t, H)
    passed(name, len(cases))


def _mask_case(fn, label: str, src: torch.Tensor, pad: int, L_t: int, H: int) -> None:
    """One cross-attention mask case: shape (with the reason), dtype, then values."""
    h = CROSS_HINTS
    B, L_s = src.shape
    expected = torch.zeros(B, H, L_t, L_s, dtype=torch.bool)
    for b in range(B):
        for j in range(L_s):
            expected[b, :, :, j] = bool(src[b, j] != pad)
    result = call_learner(fn, label, (src, pad, L_t, H), h["mask_error"], allow=MASK_ALLOWED)
    (mask,) = as_tensors(result, label, ("the mask",))
    shape, want = tuple(mask.shape), (B, H, L_t, L_s)
    if shape != want:
        if shape in ((B, 1, 1, L_s), (B, L_s), (B, 1, L_t, L_s), (B, H, 1, L_s)):
            why = h["mask_not_expanded"]
        elif shape in ((B, H, L_s, L_t), (B, 1, L_s, 1), (B, 1, L_s, L_t)):
            why = h["mask_transposed"]
        else:
            why = f"the mask must be (B, num_heads, tgt_len, L_s) = {want}"
        raise AssertionError(f"{label}: the mask has shape {shape}. {why}")
    require_bool_mask(label, mask, expected)
    causal = torch.ones(L_t, L_s, dtype=torch.bool).tril()
    mistakes = [
        (h["mask_polarity"], lambda: ~expected),
        (h["mask_causal"], lambda: expected & causal),
        (h["mask_causal"], lambda: ~expected & causal),
        (h["mask_tgt_pad"], lambda: (src != 0)[:, None, None, :].expand(B, H, L_t, L_s)),
    ]
    value_hint = "True at [b, h, i, j] exactly when src[b, j] != pad_id."
    compare(label, [mask.contiguous()], [expected], ("the mask",), mistakes, value_hint=value_hint)
