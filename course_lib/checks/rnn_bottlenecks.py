"""The check for notebook 01's gradient exercise: the Jacobian of one tanh RNN step.

Public through `course_lib.checks`; see that module for how a check works. The expected answer
comes from autograd through `nn.RNNCell`, independently of the formula the learner writes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from . import _answers as O
from ._hints import HINTS
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

JACOBIAN_HINTS = {
    "error": "h_new is (B, H) and W_hh (H, H): (1 - h_new**2) is (B, H); give it a last axis "
    "with [:, :, None] so that it scales the rows of W_hh, giving (B, H, H)",
    "no_tanh": "this is W_hh alone: the step is h' = tanh(a), so the chain rule multiplies by "
    "tanh'(a) = 1 - h'^2 as well",
    "not_squared": "tanh'(a) = 1 - tanh(a)^2 = 1 - h_new**2, not 1 - h_new",
    "tanh_again": "h_new is already tanh(a): tanh'(a) = 1 - h_new**2, do not apply tanh again",
    "columns": "tanh' scales the rows of W_hh (output i of the step), not its columns: the "
    "Jacobian is diag(1 - h'^2) @ W_hh, so the factor needs a trailing axis, not a middle one",
    "transposed": "W_hh is transposed: entry (i, j) is d h'_i / d h_j = tanh'(a_i) * W_hh[i, j]",
}


# Hint ladders, one per exercise: the idea, then the operations and axes, then code.
# `hint("exN_k")` in course_lib.checks walks up them; only the last level shows code.
LADDERS: dict[str, tuple[str, ...]] = {
    "ex1_1": (
        "One step of a vanilla RNN mixes the new input and the previous state linearly, adds both biases, and squashes the sum with tanh.",
        "W_ih is (H, I) and x is (B, I): a batch of row vectors times a weight stored as (out, in) needs the weight transposed; the same holds for h and W_hh. Both products are (B, H); add b_ih and b_hh, then tanh.",
        "return torch.tanh(x @ W_ih.T + b_ih + h @ W_hh.T + b_hh)",
    ),
    "ex1_2": (
        "Chain rule: h_new = tanh(a) with a linear in h_prev, so d h_new / d h_prev = tanh'(a) times d a / d h_prev = W_hh; you already have tanh(a).",
        "tanh'(a) = 1 - tanh(a)^2 = 1 - h_new**2, one number per output unit i; it scales row i of W_hh. Give it a trailing axis so it broadcasts to (B, H, H).",
        "return (1 - h_new**2)[:, :, None] * W_hh",
    ),
}


def _autograd_jacobian(x, h, w_ih, w_hh, b_ih, b_hh) -> tuple[torch.Tensor, torch.Tensor]:
    """(h_new (B, H), d h_new / d h (B, H, H)) through nn.RNNCell and autograd, row by row."""
    cell = nn.RNNCell(w_ih.shape[1], w_ih.shape[0]).double()
    with torch.no_grad():
        for p, w in zip(cell.parameters(), (w_ih, w_hh, b_ih, b_hh), strict=True):
            p.copy_(w)
    with torch.enable_grad():
        jac = torch.stack(
            [
                torch.autograd.functional.jacobian(
                    lambda s, b=b: cell(x[b : b + 1], s)[0], h[b : b + 1]
                )[:, 0]
                for b in range(x.shape[0])
            ]
        )  # (B, H, H)
    return cell(x, h).detach(), jac.detach()


@isolated
def check_rnn_step_jacobian(fn: Callable[..., torch.Tensor]) -> None:
    """Check fn(h_new (B, H), W_hh (H, H)) -> d h_new / d h_prev (B, H, H) for a tanh RNN step."""
    name = "rnn_step_jacobian"
    require_callable(fn, name)
    g = torch.Generator().manual_seed(11)
    cases = [(2, 3, 4, 1.0), (3, 5, 5, 2.0), (1, 4, 6, 0.5)]
    for i, (B, n_in, H, scale) in enumerate(cases, 1):
        x, h = randn(g, B, n_in).double(), randn(g, B, H).double()
        w_ih = (randn(g, H, n_in) / math.sqrt(n_in)).double()
        w_hh = (scale * randn(g, H, H) / math.sqrt(H)).double()
        b_ih, b_hh = (0.5 * randn(g, H)).double(), (0.5 * randn(g, H)).double()
        h_new, expected = _autograd_jacobian(x, h, w_ih, w_hh, b_ih, b_hh)
        desc = f"B={B}, H={H}, W_hh scale {scale}"
        _jacobian_case(fn, case_label(name, i, len(cases), desc), h_new, w_hh, expected)
    passed(name, len(cases))


def _jacobian_case(fn, label: str, h_new, w_hh, expected) -> None:
    """One case, with the usual chain-rule slips as named mistakes."""
    result = call_learner(fn, label, (h_new, w_hh), JACOBIAN_HINTS["error"])
    (jac,) = as_tensors(result, label, ("the Jacobian",))
    B, H = h_new.shape

    def scaled(d: torch.Tensor, w: torch.Tensor, rows: bool = True) -> Callable[[], Any]:
        return lambda: (d[:, :, None] if rows else d[:, None, :]) * w

    mistakes = [
        (JACOBIAN_HINTS["no_tanh"], lambda: w_hh.expand(B, H, H)),
        (JACOBIAN_HINTS["not_squared"], scaled(1 - h_new, w_hh)),
        (JACOBIAN_HINTS["tanh_again"], scaled(1 - torch.tanh(h_new) ** 2, w_hh)),
        (JACOBIAN_HINTS["columns"], scaled(1 - h_new**2, w_hh, rows=False)),
        (JACOBIAN_HINTS["transposed"], scaled(1 - h_new**2, w_hh.T)),
    ]
    compare(label, [jac], [expected], ("the Jacobian",), mistakes, "It is (B, H, H).")


__all__ = ["check_rnn_step_jacobian"]


@isolated
def check_rnn_cell(fn: Callable[..., torch.Tensor]) -> None:
    """Check fn(x (B, I), h (B, H), W_ih (H, I), W_hh (H, H), b_ih, b_hh) -> h' (B, H)."""
    name = "rnn_cell"
    require_callable(fn, name)
    g = torch.Generator().manual_seed(6)
    cases = [(2, 3, 4), (3, 5, 5), (1, 4, 6)]
    for i, (B, n_in, H) in enumerate(cases, 1):
        args = (randn(g, B, n_in), randn(g, B, H), randn(g, H, n_in) / math.sqrt(n_in))
        args += (randn(g, H, H) / math.sqrt(H), 0.5 * randn(g, H), 0.5 * randn(g, H))
        _rnn_case(fn, case_label(name, i, len(cases), f"B={B}, I={n_in}, H={H}"), args)
    passed(name, len(cases))


def _rnn_case(fn, label: str, args: tuple[torch.Tensor, ...]) -> None:
    """One RNN step, compared with nn.RNNCell."""
    expected = O.rnn_cell_torch(*args)  # before the learner's code runs
    (out,) = as_tensors(call_learner(fn, label, args, HINTS["rnn_error"]), label, ("h'",))

    def wrong(**knobs: Any) -> Callable[[], torch.Tensor]:
        return lambda: O.rnn_cell(*args, **knobs)

    mistakes = [
        (HINTS["rnn_no_tanh"], wrong(act=lambda z: z)),
        (HINTS["rnn_relu"], wrong(act=torch.relu)),
        (HINTS["rnn_no_transpose"], wrong(t_ih=False, t_hh=False)),
        (HINTS["rnn_no_transpose"], wrong(t_hh=False)),
        (HINTS["rnn_no_transpose"], wrong(t_ih=False)),
        (HINTS["rnn_no_hidden"], wrong(hidden=False)),
    ]
    mistakes += [(HINTS["rnn_bias"], wrong(bias=b)) for b in ((0, 1), (1, 0), (0, 0))]
    compare(label, [out], [expected], ("h'",), mistakes, "h' is (B, H).")
