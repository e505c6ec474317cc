"""The check for notebook 08's exercise: the forward pass of a pre-LN encoder layer.

Public through `course_lib.checks`; see that module for how a check works. The expected output
comes from PyTorch's own `nn.TransformerEncoderLayer(norm_first=True)`; the learner's function
receives that layer's sublayers, so only the wiring (residuals, where the norms go) is tested.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

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

ENCODER_HINTS = {
    "error": "self_attn(q, k, v, mask) takes three (B, L, D) tensors (queries, keys, values) "
    "and a mask (B, 1, 1, L) or None, and returns one (B, L, D) tensor; ff(h), norm1(h) and "
    "norm2(h) map (B, L, D) to (B, L, D)",
    "no_residual": "no residual connections: each sublayer's output must be *added* to its "
    "input; a sublayer that replaces its input makes the block forget it",
    "no_attn_residual": "the attention sublayer has no residual: its output must be added to the raw x, not replace it",
    "no_ff_residual": "the feed-forward sublayer has no residual: add its output to its raw input x",
    "post_ln": "this is post-LN (norm after the residual add, as in the 2017 paper): the "
    "exercise asks for pre-LN, where only the sublayer's input is normalised and the residual "
    "path stays un-normalised",
    "residual_from_normed": "the residual adds the normalised vector: normalise only the copy that goes into the sublayer; the residual path must carry the raw x",
    "norms_swapped": "norm1 and norm2 are swapped: norm1 goes before self-attention and norm2 "
    "before the feed-forward network",
    "one_norm": "the same LayerNorm is used twice: norm1 before self-attention, norm2 before "
    "the feed-forward network (each has its own gain and bias)",
    "mask_ignored": "the mask was not passed to self_attn: PAD positions leak into the real ones; pass mask on",
    "kv_not_normed": "keys and values come from the raw x: in pre-LN self-attention the "
    "queries, keys and values are all the same normalised copy of x",
    "order": "feed-forward before self-attention: an encoder layer attends first (tokens "
    "exchange information), then transforms each token with the feed-forward network",
    "steps": "out is not the pre-LN encoder layer of section 1. Check, for each sublayer, "
    "which tensor it reads, which LayerNorm comes before it, and what its output is added to; "
    'hint("ex8_1") goes one step further each time you call it.',
}


# Hint ladders, one per exercise: the idea, then the operations and axes, then code.
# `hint("exN_k")` in course_lib.checks walks up them; only the last level shows code.
LADDERS: dict[str, tuple[str, ...]] = {
    "ex8_1": (
        "A pre-LN encoder layer is two sublayers, each 'normalise a copy, transform it, add the "
        "result back to the running vector': first self-attention, then the feed-forward network. "
        "The running vector itself is never normalised inside the block, and in self-attention "
        "the queries, keys and values are all the same normalised copy.",
        "Use norm1 before self-attention (queries, keys and values are all the same normalised x; "
        "pass the mask) and norm2 before ff; both residuals add to the un-normalised running x.",
        "h = norm1(x)\nx = x + self_attn(h, h, h, mask)\nreturn x + ff(norm2(x))",
    ),
    "ex8_2": (
        "LayerNorm standardises each token's own feature vector (mean 0, variance 1 over its D "
        "features), then applies a learned scale gamma and shift beta. Two usual traps: "
        "PyTorch's variance and standard deviation divide by D - 1 unless told otherwise, while "
        "the formula's variance divides by D; and eps belongs inside the square root.",
        "Mean and variance over the last axis (whatever x's rank), keeping that axis with size 1 "
        "so they broadcast against x; the variance is the biased one (divide by D, as "
        "nn.LayerNorm); add eps to it, take the square root, divide; then times gamma plus beta.",
        "mean = x.mean(dim=-1, keepdim=True)\nvar = x.var(dim=-1, unbiased=False, keepdim=True)\nreturn (x - mean) / torch.sqrt(var + eps) * gamma + beta",
    ),
    "ex8_3": (
        "Read the two probes as symptoms. A leak into earlier positions under a causal mask means "
        "something mixes positions outside attention: which operation could let a position see "
        "later ones (section 7)? A mean cosine near 1 after a deep stack means the tokens "
        "collapsed onto one direction: which part of a block keeps a token's own vector alive "
        "through a deep stack (section 3)? Fix one bug, run the probes again.",
        "The hand-written norm averages over the wrong axis (which axis holds one token's features?), and one sublayer forgets the identity path that the other one has. Everything else in the colleague's code is right.",
        "In norm: mean and var over dim=-1 (one token's D features).\nx = x + attn(h, h, h, mask)\nreturn x + ff(norm(x, g2, b2))",
    ),
}

BLOCK_HINTS = {
    "error": "attn(q, k, v, mask) takes three (B, L, D) tensors and returns one (B, L, D) tensor; "
    "ff(h) maps (B, L, D) to (B, L, D); g1, b1, g2, b2 are (D,) gains and biases",
    "both": "this is still the colleague's block: both bugs are there. Run block_symptoms on "
    "your function and read each number as a symptom; after one fix, run it again",
    "positions": "the norm still averages over the positions of each sequence: then position i "
    "reads a summary of later positions, which no causal mask can stop (the probe's leak). "
    "LayerNorm averages over one token's own features",
    "no_residual": "the attention sublayer still replaces x instead of adding to it: without that "
    "residual a deep stack collapses every token onto one direction (the probe's cosine, and "
    "section 3)",
    "batch": "the norm now averages over the batch, like BatchNorm: a sentence's output depends "
    "on its batch-mates. LayerNorm averages over one token's own features",
    "whole": "the norm averages over the whole (B, L, D) tensor: a sentence's output then depends "
    "on every other token in the batch. LayerNorm averages over one token's own features",
    "unbiased": "the variance is now the unbiased one (divide by D - 1); the colleague's biased "
    "variance (divide by D, as nn.LayerNorm) was right: that was not one of the bugs",
    "eps": "eps moved or disappeared; the colleague had it right, inside the square root: that "
    "was not one of the bugs",
    "from_normed": "the residual adds the normalised vector: the residual path must carry the raw "
    "x, and only the copy that goes into the sublayer is normalised",
    "ff_residual": "the feed-forward residual is gone: that part of the colleague's block was "
    "right, keep adding the feed-forward output to its input",
    "post_ln": "this is post-LN (norm after the residual add): the block is pre-LN, only its "
    "input is normalised and the residual path stays un-normalised",
    "mask_ignored": "the mask was not passed to attn: with a causal mask left out, position i "
    "attends to later positions; pass mask on",
    "steps": "The colleague's block has exactly two bugs and everything else in it is right: "
    "change only what the probes point to. A correct block reads leak 0 and a mean cosine well "
    'below 1 in block_symptoms; hint("ex8_3") goes one step further each time you call it.',
}


def _random_torch_layer(
    g: torch.Generator, D: int, H: int, d_ff: int
) -> nn.TransformerEncoderLayer:
    """A pre-LN nn.TransformerEncoderLayer with weights (LayerNorm gains and biases included) from g."""
    layer = nn.TransformerEncoderLayer(D, H, d_ff, dropout=0.0, batch_first=True, norm_first=True)
    with torch.no_grad():
        for p in layer.parameters():
            fan_in = p.shape[-1] if p.dim() > 1 else 1
            p.copy_(torch.randn(p.shape, generator=g) / fan_in**0.5 * (0.8 if p.dim() > 1 else 0.3))
        for norm in (layer.norm1, layer.norm2):  # gains near 1, different for the two norms
            norm.weight.add_(1.0)
    return layer.train()  # train mode (dropout is 0) keeps PyTorch off its fused fast path


class _Sublayers:
    """The sublayers of one nn.TransformerEncoderLayer, in the course's conventions."""

    def __init__(self, layer: nn.TransformerEncoderLayer):
        self.layer = layer

    def self_attn(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, L, D) x3 -> (B, L, D); mask (B, 1, 1, L) bool, True = may attend."""
        pad = None if mask is None else ~mask.reshape(mask.shape[0], -1)  # (B, L) True = PAD
        return self.layer.self_attn(q, k, v, key_padding_mask=pad, need_weights=False)[0]

    def ff(self, h: torch.Tensor) -> torch.Tensor:
        """Position-wise feed-forward: linear2(relu(linear1(h)))."""
        return self.layer.linear2(self.layer.activation(self.layer.linear1(h)))


def _wired(
    x: torch.Tensor,
    s: _Sublayers,
    mask: torch.Tensor | None,
    residual: tuple[bool, bool] = (True, True),
    post: bool = False,
    from_normed: tuple[bool, bool] = (False, False),
    norms: tuple[str, str] = ("norm1", "norm2"),
    pass_mask: bool = True,
    kv_normed: bool = True,
    ff_first: bool = False,
) -> torch.Tensor:
    """An encoder layer wired from the sublayers, with knobs for the typical mistakes."""
    n1, n2 = (getattr(s.layer, n) for n in norms)
    m = mask if pass_mask else None

    def attn_block(x: torch.Tensor) -> torch.Tensor:
        if post:
            y = s.self_attn(x, x, x, m)
            return n1(x + y if residual[0] else y)
        h = n1(x)
        kv = h if kv_normed else x
        y = s.self_attn(h, kv, kv, m)
        base = h if from_normed[0] else x
        return base + y if residual[0] else y

    def ff_block(x: torch.Tensor) -> torch.Tensor:
        if post:
            y = s.ff(x)
            return n2(x + y if residual[1] else y)
        h = n2(x)
        y = s.ff(h)
        base = h if from_normed[1] else x
        return base + y if residual[1] else y

    if ff_first:
        return attn_block(ff_block(x))
    return ff_block(attn_block(x))


@isolated
def check_encoder_layer(fn: Callable[..., Any]) -> None:
    """Check fn(x (B, L, D), self_attn, ff, norm1, norm2, mask=None) -> (B, L, D), pre-LN.

    self_attn(q, k, v, mask) -> (B, L, D) is multi-head attention (mask (B, 1, 1, L) bool, True =
    may attend); ff is the position-wise feed-forward network; norm1 and norm2 are LayerNorms.
    Compared with PyTorch's nn.TransformerEncoderLayer(norm_first=True) holding the same weights.
    """
    name = "encoder_layer"
    require_callable(fn, name)
    g = torch.Generator().manual_seed(11)
    cases = [  # (B, L, D, H, d_ff, lengths of the real tokens or None)
        (2, 5, 8, 2, 16, None),
        (3, 6, 12, 3, 24, [6, 4, 2]),
        (1, 4, 16, 4, 32, None),
    ]
    for i, (B, L, D, H, d_ff, lengths) in enumerate(cases, 1):
        desc = f"x {(B, L, D)}, {H} heads" + (", padding mask" if lengths else "")
        layer = _random_torch_layer(g, D, H, d_ff)
        x = randn(g, B, L, D) * 2.0 + 0.5  # not already normalised: misplaced norms show
        mask = None
        if lengths is not None:
            mask = (torch.arange(L)[None, :] < torch.tensor(lengths)[:, None])[:, None, None, :]
        _encoder_case(fn, case_label(name, i, len(cases), desc), layer, x, mask)
    passed(name, len(cases))


def _encoder_case(fn, label: str, layer: nn.TransformerEncoderLayer, x, mask) -> None:
    """One encoder-layer case: call with the sublayers, compare with PyTorch, diagnose."""
    s = _Sublayers(layer)
    args = (x, s.self_attn, s.ff, layer.norm1, layer.norm2)
    args += () if mask is None else (mask,)
    key_padding = None if mask is None else ~mask.reshape(mask.shape[0], -1)
    expected = layer(x, src_key_padding_mask=key_padding)  # (B, L, D), before the learner runs
    (out,) = as_tensors(call_learner(fn, label, args, ENCODER_HINTS["error"]), label, ("out",))

    def wrong(**knobs: Any) -> Callable[[], torch.Tensor]:
        return lambda: _wired(x, s, mask, **knobs)

    h = ENCODER_HINTS
    mistakes = [
        (h["no_residual"], wrong(residual=(False, False))),
        (h["no_attn_residual"], wrong(residual=(False, True))),
        (h["no_ff_residual"], wrong(residual=(True, False))),
        (h["post_ln"], wrong(post=True)),
        (h["residual_from_normed"], wrong(from_normed=(True, True))),
        (h["residual_from_normed"], wrong(from_normed=(True, False))),
        (h["residual_from_normed"], wrong(from_normed=(False, True))),
        (h["norms_swapped"], wrong(norms=("norm2", "norm1"))),
        (h["one_norm"], wrong(norms=("norm1", "norm1"))),
        (h["one_norm"], wrong(norms=("norm2", "norm2"))),
        (h["kv_not_normed"], wrong(kv_normed=False)),
        (h["order"], wrong(ff_first=True)),
    ]
    if mask is not None:
        mistakes.append((h["mask_ignored"], wrong(pass_mask=False)))
    compare(
        label,
        [out],
        [expected],
        ("out",),
        mistakes,
        "out has the shape of x, (B, L, D).",
        h["steps"],
    )


class _CausalSublayers(_Sublayers):
    """The sublayers of one nn.TransformerEncoderLayer; the mask is (1, 1, L, L) or None."""

    def self_attn(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, L, D) x3 -> (B, L, D); mask (1, 1, L, L) bool, True = may attend."""
        hidden = None if mask is None else ~mask[0, 0]  # PyTorch: True = hidden
        return self.layer.self_attn(q, k, v, attn_mask=hidden, need_weights=False)[0]


def _block(
    x: torch.Tensor,
    s: _CausalSublayers,
    mask: torch.Tensor | None,
    dims: tuple[int, ...] = (-1,),
    attn_res: bool = True,
    ff_res: bool = True,
    from_normed: bool = False,
    unbiased: bool = False,
    eps_where: str = "inside",
    post: bool = False,
    pass_mask: bool = True,
) -> torch.Tensor:
    """The colleague's block with knobs: each knob at its default is the fixed block."""
    n1, n2 = s.layer.norm1, s.layer.norm2
    norm = lambda h, n: O.layer_norm(h, n.weight, n.bias, 1e-5, dims, unbiased, eps_where)  # noqa: E731
    m = mask if pass_mask else None
    if post:
        x = norm(x + s.self_attn(x, x, x, m), n1)
        return norm(x + s.ff(x), n2)
    h = norm(x, n1)
    x = (h if from_normed else x if attn_res else 0) + s.self_attn(h, h, h, m)
    h = norm(x, n2)
    return (h if from_normed else x if ff_res else 0) + s.ff(h)


@isolated
def check_fixed_block(fn: Callable[..., Any]) -> None:
    """Check fn(x (B, L, D), attn, ff, g1, b1, g2, b2, mask=None) -> (B, L, D): the debugged block.

    Compared with PyTorch's nn.TransformerEncoderLayer(norm_first=True) holding the same
    weights; mask is None or a causal (1, 1, L, L) bool mask, True = may attend.
    """
    name = "fixed_block"
    require_callable(fn, name)
    g = torch.Generator().manual_seed(83)
    cases = [(2, 5, 8, 2, 16, True), (3, 6, 12, 3, 24, False), (1, 4, 16, 4, 32, True)]
    for i, (B, L, D, H, d_ff, causal) in enumerate(cases, 1):
        desc = f"x {(B, L, D)}, {H} heads" + (", causal mask" if causal else ", no mask")
        layer = _random_torch_layer(g, D, H, d_ff)
        x = randn(g, B, L, D) * 2.0 + 0.5  # not already normalised: misplaced norms show
        mask = torch.ones(L, L, dtype=torch.bool).tril()[None, None] if causal else None
        _block_case(fn, case_label(name, i, len(cases), desc), layer, x, mask)
    passed(name, len(cases))


def _block_case(fn, label: str, layer: nn.TransformerEncoderLayer, x, mask) -> None:
    """One fixed_block case: call with the sublayers, compare with PyTorch, name the bug left."""
    s = _CausalSublayers(layer)
    gains = [t.detach().clone() for n in (layer.norm1, layer.norm2) for t in (n.weight, n.bias)]
    hidden = None if mask is None else ~mask[0, 0]
    expected = layer(x, src_mask=hidden)  # (B, L, D), before the learner runs
    args = (x, s.self_attn, s.ff, *gains) + (() if mask is None else (mask,))
    (out,) = as_tensors(call_learner(fn, label, args, BLOCK_HINTS["error"]), label, ("out",))

    def wrong(**knobs: Any) -> Callable[[], torch.Tensor]:
        return lambda: _block(x, s, mask, **knobs)

    h = BLOCK_HINTS
    mistakes = [
        (h["both"], wrong(dims=(1,), attn_res=False)),
        (h["positions"], wrong(dims=(1,))),
        (h["no_residual"], wrong(attn_res=False)),
        (h["batch"], wrong(dims=(0,))),
        (h["whole"], wrong(dims=(0, 1, 2))),
        (h["batch"], wrong(dims=(0, 1))),
        (h["unbiased"], wrong(unbiased=True)),
        (h["eps"], wrong(eps_where="outside")),
        (h["eps"], wrong(eps_where="none")),
        (h["from_normed"], wrong(from_normed=True)),
        (h["ff_residual"], wrong(ff_res=False)),
        (h["no_residual"], wrong(attn_res=False, ff_res=False)),
        (h["post_ln"], wrong(post=True)),
    ]
    if mask is not None:
        mistakes.append((h["mask_ignored"], wrong(pass_mask=False)))
    compare(label, [out], [expected], ("out",), mistakes, "out has the shape of x, (B, L, D).",
            h["steps"])  # fmt: skip
