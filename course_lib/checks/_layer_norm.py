"""The check for notebook 08's Exercise 8.2, LayerNorm from scratch, with its mistakes.

Public through `course_lib.checks` (its ladder is with notebook 08's others, in
`checks/transformer_block.py`); see that module for how a check works.
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
    require_callable,
)

# Exercise 8.2: LayerNorm from scratch. Texts a failing check can show.
LN_HINTS = {
    "error": "x is (..., D) and gamma, beta are (D,); each token's mean and variance must keep a "
    "size-1 feature axis so that they broadcast against x",
    "rank": "this x is {rank}-D: the exercise asks for any number of leading axes, a single "
    "token (D,) included. The features are always the last axis, whatever x's rank, so do not "
    "count on x being (B, L, D)",
    "batchnorm": "normalised over the batch axis (BatchNorm-like): a sentence's output then "
    "depends on its batch-mates. LayerNorm takes one mean and one variance per token, over its "
    "own D features",
    "positions": "normalised over the positions of each sequence: a token's output then depends "
    "on the other (later) tokens. LayerNorm takes one mean and one variance per token, over its "
    "own D features",
    "whole": "normalised over more than one token (a whole sequence or the whole tensor): "
    "LayerNorm takes one mean and one variance per token, over its own D features only",
    "fixed_axis": "your statistics are over axis 2, which holds the features only when x is "
    "(B, L, D): this x has two leading batch axes, and its features are the last axis. The "
    "exercise asks for any number of leading axes",
    "unbiased": "unbiased variance (divided by D - 1): PyTorch's variance and standard "
    "deviation divide by D - 1 unless told otherwise, while LayerNorm's variance divides by D "
    "(section 5's formula, and nn.LayerNorm)",
    "unbiased_no_eps": "unbiased variance (divided by D - 1) and no eps: LayerNorm's variance "
    "divides by D, and eps is added to it before the square root",
    "eps_outside": "eps outside the square root: LayerNorm adds eps to the variance first, then "
    "takes the square root",
    "std": "you divided by std + eps with the unbiased std: two differences from LayerNorm, "
    "which divides by the square root of (biased variance + eps)",
    "no_eps": "eps is missing: it is added to the variance before the square root, so a "
    "constant vector does not divide by zero and a tiny variance is not blown up",
    "fixed_eps": "eps is hard-coded: use the eps argument you were given",
    "no_sqrt": "divided by the variance itself: standardising divides by the standard "
    "deviation, the square root of (variance + eps)",
    "no_centre": "the mean was not subtracted: LayerNorm centres each token (its features minus "
    "their mean) before dividing by the standard deviation",
    "rms": "this is RMSNorm (section 5): you divided by the root mean square without centring. "
    "LayerNorm subtracts each token's mean and divides by the standard deviation around it",
    "no_affine": "forgot gamma and beta: after normalising, scale each feature by gamma and "
    "shift it by beta",
    "no_beta": "forgot beta: after the scale gamma, shift each feature by beta",
    "no_gamma": "forgot gamma: scale each normalised feature by gamma before the shift beta",
    "swapped": "gamma and beta swapped: gamma scales the normalised features, beta shifts them",
    "values": "compare with the formula of section 5: per token, the mean and the variance "
    "(1/D) Σ (x_d - μ)² of its D features, eps inside the square root, then gain and bias",
}


def _ln(
    x: torch.Tensor,
    gamma: torch.Tensor | None,
    beta: torch.Tensor | None,
    eps: float,
    dims: tuple[int, ...] = (-1,),
    unbiased: bool = False,
    eps_where: str = "inside",
    centre: bool = True,
    spread: str = "std",
) -> torch.Tensor:
    """LayerNorm with knobs for the typical mistakes (float64, so variants are exact)."""
    x = x.double()
    mean = x.mean(dim=dims, keepdim=True)
    var = x.var(dim=dims, keepdim=True, unbiased=unbiased)
    if spread == "rms":  # RMSNorm: no centring, root mean square of the raw x
        var = (x**2).mean(dim=dims, keepdim=True)
    y = x - mean if centre else x
    if spread == "var":  # divided by the variance, not its square root
        y = y / (var + eps)
    else:
        denom = {"inside": (var + eps).sqrt(), "outside": var.sqrt() + eps, "none": var.sqrt()}
        y = y / denom[eps_where]
    y = y * gamma.double() if gamma is not None else y
    return y + beta.double() if beta is not None else y


@isolated
def check_layer_norm(fn: Callable[..., torch.Tensor]) -> None:
    """Check fn(x (..., D), gamma (D,), beta (D,), eps=1e-5) against nn.LayerNorm, any rank."""
    name = "layer_norm"
    require_callable(fn, name)
    g = torch.Generator().manual_seed(5)
    cases = [
        ("x (2, 5, 8)", (2, 5, 8), 1.0, 0.0, 1e-5),
        ("x (3, 4, 6), scaled and shifted", (3, 4, 6), 3.0, 2.0, 1e-5),
        ("x (2, 3, 8), tiny variance", (2, 3, 8), 0.01, 0.0, 1e-5),
        ("x (2, 4, 8), tiny variance, eps=1e-3", (2, 4, 8), 0.01, 1.0, 1e-3),
        ("x (2, 2, 3, 8), two leading batch axes", (2, 2, 3, 8), 2.0, -1.0, 1e-5),
        ("x (8,), a single token", (8,), 2.0, 1.0, 1e-5),
    ]
    for i, (desc, shape, scale, shift, eps) in enumerate(cases, 1):
        x = randn(g, *shape) * scale + shift
        gamma, beta = 1 + 0.5 * randn(g, shape[-1]), 0.5 * randn(g, shape[-1])
        _layer_norm_case(fn, case_label(name, i, len(cases), desc), x, gamma, beta, eps)
    passed(name, len(cases))


def _axis_mistakes(rank: int) -> list[tuple[str, tuple[int, ...]]]:
    """(hint key, axes) for statistics taken over the wrong axes of a rank-`rank` x."""
    if rank == 3:
        return [("batchnorm", (0,)), ("batchnorm", (0, 1)), ("positions", (1,)),
                ("whole", (1, 2)), ("whole", (0, 1, 2))]  # fmt: skip
    if rank == 4:
        return [("fixed_axis", (2,)), ("batchnorm", (0,)),
                ("positions", (2,)), ("whole", (2, 3)), ("whole", (0, 1, 2, 3))]  # fmt: skip
    return []


def _layer_norm_case(fn, label: str, x, gamma, beta, eps: float) -> None:
    """One layer_norm case, compared with nn.LayerNorm's functional form."""
    h = LN_HINTS
    expected = torch.nn.functional.layer_norm(x, x.shape[-1:], gamma, beta, eps)
    error = h["error"] if x.dim() == 3 else h["rank"].format(rank=x.dim())
    result = call_learner(fn, label, (x, gamma, beta, eps), error)
    (out,) = as_tensors(result, label, ("the output",))

    def wrong(gamma=gamma, beta=beta, eps=eps, **knobs: Any) -> Callable[[], torch.Tensor]:
        return lambda: _ln(x, gamma, beta, eps, **knobs)

    mistakes = [(h[key], wrong(dims=d)) for key, d in _axis_mistakes(x.dim())]
    mistakes += [
        (h["unbiased"], wrong(unbiased=True)),
        (h["eps_outside"], wrong(eps_where="outside")),
        (h["std"], wrong(unbiased=True, eps_where="outside")),
        (h["no_eps"], wrong(eps_where="none")),
        (h["unbiased_no_eps"], wrong(unbiased=True, eps_where="none")),
        (h["fixed_eps"], wrong(eps=1e-5)),
        (h["no_sqrt"], wrong(spread="var")),
        (h["rms"], wrong(centre=False, spread="rms")),
        (h["no_centre"], wrong(centre=False)),
        (h["no_affine"], wrong(gamma=None, beta=None)),
        (h["no_beta"], wrong(beta=None)),
        (h["no_gamma"], wrong(gamma=None)),
        (h["swapped"], wrong(gamma=beta, beta=gamma)),
    ]
    mistakes = _nearest_first(out, mistakes)
    compare(label, [out], [expected], ("the output",), mistakes, "Same shape as x.", h["values"])


def _nearest_first(out: torch.Tensor, mistakes: list) -> list:
    """The mistakes, the variant nearest to out first: with a variance near 1, eps barely moves
    the output, so several variants can match within the tolerance; the nearest is the one made."""

    def distance(mistake) -> float:
        try:
            candidate = mistake[1]()
        except Exception:  # a variant that cannot run on this case
            return float("inf")
        if candidate.shape != out.shape:
            return float("inf")
        d = (candidate.double() - out.double()).abs().max().item()
        return d if d == d else float("inf")  # NaN sorts last

    return sorted(mistakes, key=distance)  # stable: ties keep the listed order
