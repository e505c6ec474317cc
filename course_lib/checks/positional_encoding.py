"""The check for notebook 05's rotary position embedding (RoPE) exercise.

Public through `course_lib.checks`; see that module for how a check works.
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

ROPE_HINTS = {
    "error": "x is (..., L, d) with d even, float32 or float16: positions run along axis -2, "
    "features along -1; the angles pos / 10000^(2i/d) form an (L, d/2) grid, one per position "
    "and pair, and pair i is the even feature 2i with the odd feature 2i+1",
    "direction": "rotated the wrong way (by -angle, clockwise): the pair must turn "
    "counter-clockwise by +angle, with the even feature as the first coordinate of the point; "
    "check which of the two new coordinates gets the minus sign",
    "halves": "you paired dimension i with i + d/2 (the 'rotate_half' layout of some "
    "libraries); this exercise pairs neighbours: feature 2i with feature 2i+1",
    "exp_i": "wrong frequencies: pair i turns at 1 / 10000^(2i/d), not 1 / 10000^(i/d); "
    "with i = 0, 1, ..., d/2 - 1 the exponent 2i/d runs over the even feature indices divided by d",
    "from_one": "positions start at 0: the first token is not rotated at all (angle 0); "
    "yours turns the first token by one step already",
    "no_mix": "each feature was only scaled by cos: a rotation mixes the two members of a "
    "pair, so the sin terms are missing",
    "one_freq": "every pair turns at the same speed (angle = pos): pair i should turn at "
    "1 / 10000^(2i/d), fast for the first pairs, slowly for the last (an integer division "
    "in the exponent gives 0 for every pair)",
    "multiply": "the angle is pos / 10000^(2i/d): you multiplied pos by the power of 10000 "
    "instead of dividing by it",
    "wrong_axis": "positions should run along axis -2 (L), the one before the features; "
    "you rotated along another axis",
    "unchanged": "you returned x unchanged: every pair (x[..., 2i], x[..., 2i+1]) at position "
    "pos must be turned by its angle pos / 10000^(2i/d)",
    "sequential": "the odd member of each pair was computed from the already-rotated even "
    "member: a rotation turns the old point (x_even, x_odd) as a whole, so both new "
    "coordinates must come from the old values",
    "dtype": "the output must have x's dtype ({want}), got {got}: a float16 query stays float16 "
    "(compute the angles in a wider type if you like, and return x's dtype)",
    "half_angles": "for float16 x your angles lose precision: at position {pos} float16 can only "
    "hold the angle to about {step:g} rad, so the rotation is visibly off; the angles (positions "
    "times frequencies) need float32, only the result takes x's dtype",
    "half_values": "float16 x: the rotated values are further from the exact rotation than "
    "float16 rounding explains; the angles need float32 precision and the result x's dtype",
    "formula": "For pair i at position pos, angle = pos / 10000^(2i/d): "
    "out[2i] = x[2i]·cos(angle) - x[2i+1]·sin(angle), "
    "out[2i+1] = x[2i]·sin(angle) + x[2i+1]·cos(angle).",
}

# Exercise 5.1's texts (no solution line and no code in any).
PE_HINTS = {
    "error": "the table is (max_len, d_model), float, d_model even: one row per position "
    "0 .. max_len-1, one column per dimension",
    "swapped": "sin and cos swapped: the even dimension 2i of a pair holds the sine, the odd "
    "dimension 2i+1 the cosine",
    "halves": "sin and cos laid out in two halves [sin ... | cos ...]; the paper interleaves "
    "them: the two dimensions of a pair sit side by side, the sine in the even column 2i and "
    "the cosine in the odd column 2i+1",
    "exp_i": "wrong exponent: with i the pair index (0, 1, ..., d_model/2 - 1) the angle is "
    "pos / 10000^(2i/d_model); you used i/d_model, so the slowest pair turns far too fast",
    "exp_j": "wrong exponent: you used each dimension's own index j in 10000^(j/d_model), so "
    "sin and cos of a pair get different frequencies; dimensions 2i and 2i+1 share "
    "pos / 10000^(2i/d_model)",
    "multiply": "the angle is pos / 10000^(2i/d_model): you multiplied by the power of the "
    "base instead of dividing by it",
    "one_freq": "every pair turns at the same speed, one radian per position: the exponent "
    "2i/d_model came out 0 for every pair (an integer division?); pair i turns at "
    "1 / 10000^(2i/d_model), slower and slower along the row",
    "from_one": "positions start at 0: row 0 is sin 0 = 0 in the even columns and cos 0 = 1 in "
    "the odd ones; your table starts at position 1",
    "batch": "the table has an extra leading axis of size 1; return the 2-D "
    "(max_len, d_model) table",
    "formula": "PE[pos, 2i] = sin(pos / 10000^(2i/d_model)), PE[pos, 2i+1] = cos(...).",
}


# Hint ladders, one per exercise: the idea, then the operations and axes, then code.
# `hint("exN_k")` in course_lib.checks walks up them; only the last level shows code.
LADDERS: dict[str, tuple[str, ...]] = {
    "ex5_1": (
        "Every pair of dimensions (2i, 2i+1) is a clock turning at its own speed omega_i = 1/10000^(2i/d_model): the even one holds the sine of pos*omega_i, the odd one the cosine. The usual trap is the exponent: i counts pairs, so 2i/d_model runs over 0, 2/d_model, 4/d_model, ... — the even dimension indices divided by d_model, not every index.",
        "You need one angle per (position, pair): a (max_len, d_model/2) grid, built at once by broadcasting a column of positions 0 .. max_len-1 (max_len, 1) against a row of frequencies (d_model/2,), no loops. Fill the even columns of a (max_len, d_model) table with the sines of that grid and the odd columns with the cosines of the same angles.",
        "pos = torch.arange(max_len, dtype=torch.float32)[:, None]\nomega = 10000 ** (-torch.arange(0, d_model, 2, dtype=torch.float32) / d_model)\npe = torch.zeros(max_len, d_model)\npe[:, 0::2], pe[:, 1::2] = torch.sin(pos * omega), torch.cos(pos * omega)\nreturn pe",
    ),
    "ex5_2": (
        "RoPE turns each neighbouring feature pair (2i, 2i+1) at position pos by the angle pos*omega_i, the same angles as Exercise 5.1: one per position and pair, an (L, d/2) grid; position 0 is not turned. The usual traps: computing the new odd feature from the already-turned even one (both new coordinates come from the old pair), and building the angles in float16 when x is float16 (float16 holds an angle near 200 only to about 0.1 rad).",
        "Angles are (L, d/2) in float32 and broadcast over the leading axes. Take the even-indexed and the odd-indexed features as the two coordinates of each pair, apply the 2-D rotation (cos, -sin; sin, cos) to the old values, and write both results back interleaved into a new tensor of x's shape and dtype.",
        "theta = torch.arange(L)[:, None] * 10000 ** (-torch.arange(0, d, 2) / d)\nxe, xo = x[..., 0::2], x[..., 1::2]\nout = torch.empty_like(x)\nout[..., 0::2] = xe * theta.cos() - xo * theta.sin()\nout[..., 1::2] = xe * theta.sin() + xo * theta.cos()\nreturn out",
    ),
}


def rope_oracle(
    x: torch.Tensor,
    base: float = 10000.0,
    sign: float = 1.0,
    exponent: float = 2.0,
    layout: str = "pairs",
    start: int = 0,
    mix: bool = True,
    divide: bool = True,
    pos_axis: int = -2,
    sequential: bool = False,
) -> torch.Tensor:
    """RoPE as complex multiplication in float64, with knobs that reproduce typical mistakes.

    sequential: the odd coordinate is computed from the already-rotated even one.
    """
    d = x.shape[-1]
    L = x.shape[pos_axis]
    i = torch.arange(d // 2, dtype=torch.float64)
    freq = base ** ((-1.0 if divide else 1.0) * exponent * i / d)  # (d/2,)
    pos = torch.arange(start, start + L, dtype=torch.float64)
    angle = sign * pos[:, None] * freq  # (L, d/2)
    if pos_axis != -2:  # positions along another axis: move that axis next to the features
        shape = [1] * x.dim()
        shape[pos_axis], shape[-1] = L, d // 2
        angle = angle.reshape(shape)
    xd = x.double()
    if layout == "halves":
        a, b = xd[..., : d // 2], xd[..., d // 2 :]
    else:
        a, b = xd[..., 0::2], xd[..., 1::2]
    z = torch.complex(a, b) * (torch.polar(torch.ones_like(angle), angle) if mix else angle.cos())
    if sequential:  # new_odd = new_even·sin + x_odd·cos
        z = torch.complex(z.real, z.real * angle.sin() + b * angle.cos())
    if layout == "halves":
        return torch.cat([z.real, z.imag], dim=-1).float()
    return torch.stack([z.real, z.imag], dim=-1).reshape(x.shape).float()


@isolated
def check_rope(fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Check fn(x (..., L, d)) -> RoPE-rotated x, pair (2i, 2i+1) at pos turned by pos/10000^(2i/d).

    x is float32 or float16; the output keeps x's dtype, with angles accurate to float32. The
    function must not call course_lib.positional's apply_rope, rope_angles or RotaryEmbedding.
    """
    name = "rope"
    require_callable(fn, name)
    g = torch.Generator().manual_seed(5)
    cases = [(6, 4), (2, 5, 8), (2, 3, 7, 16)]
    n = len(cases) + 1
    for i, shape in enumerate(cases, 1):
        _rope_case(fn, case_label(name, i, n, f"x {shape}"), randn(g, *shape))
    x16 = randn(g, 2, HALF_L, 8).half()
    _rope_half_case(fn, case_label(name, n, n, f"float16 x {tuple(x16.shape)}"), x16)
    passed(name, n)


HALF_L = 256  # float16 positions up to 255: angles built in float16 are off by up to 1/16 rad
HALF_TOL = 5e-3  # float16 rounding of a right answer stays below 2e-3 (a float16 angle: ~4e-2)


def _rope_half_case(fn, label: str, x: torch.Tensor) -> None:
    """The float16 case: x's dtype comes back, and the angles are as accurate as float32."""
    expected = rope_oracle(x.double()).double()  # exact rotation of the float16 inputs
    (out,) = as_tensors(call_learner(fn, label, (x,), ROPE_HINTS["error"]), label, ("the output",))
    if tuple(out.shape) != tuple(x.shape):
        raise AssertionError(
            f"{label}: the output has shape {tuple(out.shape)}, expected {tuple(x.shape)}; "
            "RoPE keeps the shape of x."
        )
    if out.dtype != x.dtype:
        raise AssertionError(f"{label}: {ROPE_HINTS['dtype'].format(want=x.dtype, got=out.dtype)}")
    err = (out.double() - expected).abs() / (1.0 + expected.abs())
    if not torch.isfinite(err).all():
        raise AssertionError(f"{label}: the output contains NaN or inf. {ROPE_HINTS['formula']}")
    if err.max() <= HALF_TOL:
        return
    if _rope_half_angles(x).sub(out.double()).abs().max() < 1e-2:
        pos = x.shape[-2] - 1
        step = 2.0 ** (int(torch.tensor(float(pos)).log2().floor()) - 10)
        raise AssertionError(f"{label}: {ROPE_HINTS['half_angles'].format(pos=pos, step=step)}")
    raise AssertionError(
        f"{label}: {ROPE_HINTS['half_values']} (largest error {err.max().item():.2e} of a value's "
        f"size, float16 rounding stays below {HALF_TOL:g})"
    )


def _rope_half_angles(x: torch.Tensor) -> torch.Tensor:
    """RoPE with positions, frequencies and angles built in float16 (the mistake), in float64."""
    L, d = x.shape[-2], x.shape[-1]
    pos = torch.arange(L, dtype=torch.float16)[:, None]
    angle = (pos * 10000.0 ** (-torch.arange(0, d, 2, dtype=torch.float16) / d)).double()
    xe, xo = x[..., 0::2].double(), x[..., 1::2].double()
    return torch.stack(
        [xe * angle.cos() - xo * angle.sin(), xe * angle.sin() + xo * angle.cos()], dim=-1
    ).flatten(-2)


def _rope_case(fn, label: str, x: torch.Tensor) -> None:
    """One RoPE case: call, compare with the oracle, diagnose."""
    expected = rope_oracle(x)  # before the learner's code runs
    (out,) = as_tensors(call_learner(fn, label, (x,), ROPE_HINTS["error"]), label, ("the output",))

    def wrong(**knobs: Any) -> Callable[[], torch.Tensor]:
        return lambda: rope_oracle(x, **knobs)

    mistakes = [
        (ROPE_HINTS["unchanged"], lambda: x),
        (ROPE_HINTS["direction"], wrong(sign=-1.0)),
        (ROPE_HINTS["halves"], wrong(layout="halves")),
        (ROPE_HINTS["halves"], wrong(layout="halves", sign=-1.0)),
        (ROPE_HINTS["exp_i"], wrong(exponent=1.0)),
        (ROPE_HINTS["from_one"], wrong(start=1)),
        (ROPE_HINTS["no_mix"], wrong(mix=False)),
        (ROPE_HINTS["one_freq"], wrong(exponent=0.0)),
        (ROPE_HINTS["multiply"], wrong(divide=False)),
        (ROPE_HINTS["sequential"], wrong(sequential=True)),
    ]
    mistakes += [(ROPE_HINTS["wrong_axis"], wrong(pos_axis=a)) for a in range(x.dim() - 2)]
    mistakes += [
        (f"wrong base: the angle uses 10000, your output matches base {b:g}", wrong(base=b))
        for b in (1000.0, 100.0, 100000.0, 10.0)
    ]
    shape_hint = "RoPE keeps the shape of x: (..., L, d) in, (..., L, d) out."
    compare(label, [out], [expected], ("the output",), mistakes, shape_hint, ROPE_HINTS["formula"])


@isolated
def check_sinusoidal_encoding(fn: Callable[[int, int], torch.Tensor]) -> None:
    """Check fn(max_len, d_model) -> (max_len, d_model) table of the paper's encoding."""
    name = "sinusoidal_encoding"
    require_callable(fn, name)
    cases = [(10, 8), (24, 16), (40, 32)]
    for i, (L, D) in enumerate(cases, 1):
        _sinusoid_case(fn, case_label(name, i, len(cases), f"max_len={L}, d_model={D}"), L, D)
    passed(name, len(cases))


def _sinusoid_case(fn, label: str, L: int, D: int) -> None:
    """One sinusoidal_encoding case."""
    hint = PE_HINTS["error"]
    expected = O.sinusoid_loop(L, D)  # before the learner's code runs
    (pe,) = as_tensors(call_learner(fn, label, (L, D), hint), label, ("the table",))

    def wrong(**knobs: Any) -> Callable[[], torch.Tensor]:
        return lambda: O.sinusoid(L, D, **knobs)

    mistakes = [
        (PE_HINTS["swapped"], wrong(first="cos")),
        (PE_HINTS["halves"], wrong(layout="halves")),
        (PE_HINTS["halves"] + "; yours also puts cos first", wrong(layout="halves", first="cos")),
        (PE_HINTS["exp_i"], wrong(exponent="i")),
        (PE_HINTS["exp_j"], wrong(exponent="j")),
        (PE_HINTS["multiply"], wrong(divide=False)),
        (PE_HINTS["one_freq"], wrong(base=1.0)),
        (PE_HINTS["from_one"], lambda: O.sinusoid(L + 1, D)[1:]),
        (PE_HINTS["batch"], lambda: expected[None]),
    ]
    mistakes += [
        (f"wrong base: the paper uses 10000, your table matches base {b:g}", wrong(base=b))
        for b in (1000.0, 100.0, 100000.0, 10.0, float(D), float(L))
    ]
    shape_hint = "One row per position, one column per dimension."
    compare(label, [pe], [expected], ("the table",), mistakes, shape_hint, PE_HINTS["formula"])


LADDERS["ex5_3"] = (
    "RoPE lives inside attention, and the exercise is where it goes: which of queries, keys "
    "and values must be turned so that the scores see only offsets (not the values: they carry "
    "content); whether a pair belongs to the full width D or to one head's d_k features, so "
    "before or after the split into heads; and along which axis the positions run once the "
    "heads are split. Everything else is Exercise 4.3's multi-head attention.",
    "Project x with w_q, w_k, w_v; split each into (B, H, L, d_k); rotate q and k with your "
    "rope from 5.2 (or the course's RotaryEmbedding(d_k)) — it works on (..., L, d_k), so "
    "every head is rotated with d_k-wide pairs; scaled dot-product attention; merge; w_o.",
    "q, k, v = (ref_split_heads(w(x), num_heads) for w in (w_q, w_k, w_v))\n"
    "q, k = rope(q), rope(k)\n"
    "out, _ = scaled_dot_product_attention(q, k, v)\n"
    "return w_o(ref_merge_heads(out))",
)
