"""The checks for notebook 07: the cross-attention sublayer and field-level cross-attention.

Public through `course_lib.checks`; see that module for how a check works. The expected output
of the sublayer comes from PyTorch's own `nn.MultiheadAttention` (with `key_padding_mask`, its
True = PAD convention); the learner's function receives a wrapper with the course's calling
convention, so only the wiring (queries, keys, values, norm, residual, mask) is tested.
Exercise 7.2 sums a character-level cross-attention map over the fields of a date.
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
    require_callable,
)

CROSS_HINTS = {
    "error": "mha(query, key, value, mask) takes a query (B, L_q, D) and a key and a value "
    "(B, L_k, D) of one same length L_k, and a mask (B, 1, 1, L_k) or None; it returns a tuple "
    "(out, weights), out of shape (B, L_q, D); norm maps (..., D) to (..., D)",
    "tuple": "you returned a tuple: mha gives (out, weights), but the sublayer returns only the "
    "new decoder states, one (B, L_t, D) tensor",
    "no_residual": "the residual is missing: you returned what cross-attention brings back, so "
    "the decoder's own state is replaced by a mix of source vectors (section 5); a sublayer "
    "adds its output to the residual stream",
    "post_ln": "this is post-LN (norm after the residual add, as in the 2017 paper): the "
    "exercise asks for pre-LN, where the norm is applied to the sublayer's input and the "
    "residual adds to the raw x",
    "residual_from_normed": "the residual adds the normalised vector: the residual path must "
    "carry the raw x, and only the sublayer's input is normalised",
    "self_attention": "keys and values came from the decoder: that is self-attention. In "
    "cross-attention the decoder asks (the queries) and the encoder's memory answers (the keys "
    "and the values)",
    "memory_normed": "memory was normalised with the sublayer's norm: that LayerNorm belongs to "
    "the decoder's stream, and the memory arrives already normalised by the encoder's final "
    "LayerNorm",
    "query_not_normed": "the queries were not normalised: pre-LN normalises the sublayer's "
    "input, so the queries are the normalised decoder states, while the residual adds the raw x",
    "keys_values_mixed": "keys and values came from different sequences: in cross-attention "
    "both are the encoder's memory (the keys decide where each query reads, the values are what "
    "it reads there)",
    "mask_ignored": "the source padding mask was ignored: the PAD positions of the source "
    "receive attention; the mask has to reach the attention",
    "mask_reversed": "mask polarity reversed: src_mask is True at the real source tokens (may "
    "attend), the course's convention for every mask; you hid the real tokens and let PAD in",
    "shape": "The result has x's shape (B, L_t, D): one row per target position, because the "
    "decoder's positions are the ones that ask",
    "steps": "This is not the pre-LN cross-attention sublayer of section 3. Check which "
    "sequence supplies the queries and which the keys and values, what the sublayer's "
    'LayerNorm is applied to, and what the result is added to; hint("ex7_1") goes one step '
    "further each time you call it.",
}

CrossAttentionFn = Callable[..., Any]

# Hint ladders, one per exercise: the idea, then the operations and axes, then code.
# `hint("exN_k")` in course_lib.checks walks up them; only the last level shows code.
LADDERS: dict[str, tuple[str, ...]] = {
    "ex7_1": (
        "In cross-attention the decoder asks and the encoder answers: decide which sequence gives "
        "the queries and which the keys and values. Pre-LN normalises only the copy of the "
        "decoder's stream that goes into the sublayer (the memory already comes normalised from "
        "the encoder), and the sublayer's output is added to the raw stream, not put in its place.",
        "Queries: norm applied to x. Keys and values: memory, both, as it is. Pass src_mask to "
        "mha unchanged (True = may attend). mha returns (out, weights): keep out, (B, L_t, D), "
        "and add it to the raw x.",
        "out, _ = mha(norm(x), memory, memory, src_mask)\nreturn x + out",
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
        self._require_shapes(query, key, value)
        pad = None
        if mask is not None:
            B, L_k = key.shape[0], key.shape[1]
            pad = ~mask.expand(B, 1, 1, L_k).reshape(B, L_k)  # (B, L_k), True = PAD
        out, weights = self.mha(
            query, key, value, key_padding_mask=pad, need_weights=True, average_attn_weights=False
        )
        return out, (weights if need_weights else None)

    forward = __call__

    def _require_shapes(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> None:
        """Raise a ValueError naming the misfit, where PyTorch would raise a bare AssertionError."""
        D = self.mha.embed_dim
        shapes = {n: tuple(t.shape) for n, t in (("query", query), ("key", key), ("value", value))}
        for name, shape in shapes.items():
            if len(shape) != 3 or shape[-1] != D:
                raise ValueError(f"mha got a {name} of shape {shape}: it takes (B, L, {D}) tensors")
        if shapes["key"] != shapes["value"]:
            raise ValueError(
                f"mha got a key of shape {shapes['key']} and a value of shape {shapes['value']}: "
                "keys and values are one sequence, one value per key"
            )
        if shapes["query"][0] != shapes["key"][0]:
            B_q, B_k = shapes["query"][0], shapes["key"][0]
            raise ValueError(f"mha got queries for {B_q} sentences and keys for {B_k}")


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
        "mixed": (memory, h),  # these two raise when L_t != L_s: the variant is then skipped
        "mixed_rev": (h, memory),
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
        (1, 5, 5, 16, 4, [3]),  # L_t = L_s: keys and values from different sequences run
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
        (h["keys_values_mixed"], wrong(kv="mixed_rev")),
    ]
    if mask is not None:
        mistakes += [
            (h["mask_ignored"], wrong(mask_mode="ignore")),
            (h["mask_reversed"], wrong(mask_mode="reverse")),
        ]
    compare(label, [out], [expected], ("the output",), mistakes, h["shape"], h["steps"])


# Exercise 7.2: field-level cross-attention. Texts a failing check can show.
FIELD_HINTS = {
    "error": "weights is a (L_t, L_s) tensor (rows: decoder positions, columns: source "
    "characters); out_fields and src_fields map a field name to (start, end), end exclusive, "
    "rows of weights for out_fields and columns for src_fields",
    "shape": "one row per output field and one column per source field, in the dicts' order: "
    "(len(out_fields), len(src_fields))",
    "transposed": "the result is transposed: rows are the output fields (the queries, which "
    "ask) and columns the source fields (the keys, which are read)",
    "mean_keys": "you averaged over the source characters of a field: a row of weights is a "
    "distribution over the source, so the share of attention a field gets is the *sum* of its "
    "characters' weights (a 5-letter month would otherwise count a fifth)",
    "sum_rows": "you summed over the output rows of a field: the result would grow with the "
    "field's length (a year has 4 rows, a month 2); average the rows so each entry stays a "
    "share between 0 and 1",
    "inclusive": "off by one: end is exclusive, as in a Python slice; a field covers the "
    "positions start, start + 1, ..., end - 1",
    "swapped_spans": "out_fields index the rows (the decoder positions) and src_fields the "
    "columns (the source characters); you used them the other way round",
    "renormalised": "the rows of your table sum to 1: spaces and punctuation belong to no "
    "field, so the shares one output field gives the source fields may add up to less than 1; "
    "each entry is a share of the whole row of weights, not of the fields' total",
    "values": "Each entry is a share between 0 and 1, and a row of the table sums to at most "
    "1; compare how you combine one row's weights on the characters of a source field, and "
    "how you combine the several rows of one output field, with the definition in the prompt",
}

FIELD_LADDER = (
    "Row i of the weights is how decoder position i spreads its attention over the source "
    "characters; it sums to 1. The share one row gives a source field is the total weight on "
    "that field's characters, not their average (a long field is not penalised). An output "
    "field has several rows, and an entry must stay a share between 0 and 1 whatever the "
    "field's length.",
    "For output field f (rows a to b) and source field g (columns c to d), end exclusive: take "
    "the block of weights, sum it over the columns (one share per row), then average those "
    "shares over the rows. Stack the numbers into a (len(out_fields), len(src_fields)) tensor, "
    "keeping the dicts' order.",
    "return torch.tensor([[weights[a:b, c:d].sum(-1).mean().item() for c, d in src_fields.values()]\n"
    "                     for a, b in out_fields.values()])",
)
LADDERS["ex7_2"] = FIELD_LADDER


def _fields_expected(weights: torch.Tensor, out_f: dict, src_f: dict, **knobs: Any) -> torch.Tensor:
    """The expected table in float64, with knobs for the typical mistakes."""
    w = weights.double()
    if knobs.get("swap"):
        w = w.T
    grid = torch.zeros(len(out_f), len(src_f), dtype=torch.float64)
    extra = 1 if knobs.get("inclusive") else 0
    for i, (a, b) in enumerate(out_f.values()):
        for j, (c, d) in enumerate(src_f.values()):
            block = w[a : b + extra, c : d + extra]
            per_row = block.mean(-1) if knobs.get("mean_keys") else block.sum(-1)
            grid[i, j] = per_row.sum() if knobs.get("sum_rows") else per_row.mean()
    if knobs.get("renormalise"):
        grid = grid / grid.sum(-1, keepdim=True)
    return grid.T if knobs.get("transpose") else grid


@isolated
def check_field_attention(fn: Callable[..., Any]) -> None:
    """Check fn(weights (L_t, L_s), out_fields, src_fields) -> (F_out, F_src) shares."""
    name = "field_attention"
    require_callable(fn, name)
    g = torch.Generator().manual_seed(17)
    cases = [  # (L_t, L_s, out_fields, src_fields)
        (11, 13, {"year": (0, 4), "month": (5, 7), "day": (8, 10)},
         {"month": (0, 5), "day": (6, 7), "year": (9, 13)}),
        (11, 21, {"year": (0, 4), "month": (5, 7), "day": (8, 10)},
         {"weekday": (0, 8), "day": (9, 10), "month": (11, 16), "year": (17, 21)}),
        (6, 9, {"a": (0, 3), "b": (3, 6)}, {"x": (1, 2), "y": (4, 9)}),
    ]  # fmt: skip
    for i, (L_t, L_s, out_f, src_f) in enumerate(cases, 1):
        weights = torch.softmax(2.0 * randn(g, L_t, L_s), dim=-1)  # rows sum to 1
        desc = f"weights {(L_t, L_s)}, {len(out_f)} output fields, {len(src_f)} source fields"
        _field_case(fn, case_label(name, i, len(cases), desc), weights, out_f, src_f)
    passed(name, len(cases))


def _field_case(fn, label: str, weights: torch.Tensor, out_f: dict, src_f: dict) -> None:
    """One field_attention case: shape, then values, naming the typical mistakes."""
    h = FIELD_HINTS
    expected = _fields_expected(weights, out_f, src_f)  # before the learner's code runs
    result = call_learner(fn, label, (weights, out_f, src_f), h["error"])
    (table,) = as_tensors(result, label, ("the table",))

    def wrong(**knobs: Any) -> Callable[[], torch.Tensor]:
        return lambda: _fields_expected(weights, out_f, src_f, **knobs)

    mistakes = [
        (h["transposed"], wrong(transpose=True)),
        (h["mean_keys"], wrong(mean_keys=True)),
        (h["sum_rows"], wrong(sum_rows=True)),
        (h["inclusive"], wrong(inclusive=True)),
        (h["swapped_spans"], lambda: _fields_expected(weights.T, src_f, out_f).T),
        (h["renormalised"], wrong(renormalise=True)),
    ]
    compare(label, [table], [expected], ("the table",), mistakes, h["shape"], h["values"])
