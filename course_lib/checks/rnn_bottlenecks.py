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
    "error": "h_new is (B, H) and W_hh (H, H); the answer is (B, H, H): one factor per output "
    "unit i scales row i of W_hh, so give the (B, H) factor a trailing axis to broadcast",
    "no_tanh": "this is W_hh alone: the step is h' = tanh(a), so the chain rule multiplies by "
    "tanh'(a) as well",
    "not_squared": "tanh' is 1 minus the square of tanh, not 1 - h_new",
    "tanh_again": "h_new is already tanh(a): do not apply tanh again; tanh'(a) can be written "
    "with h_new itself",
    "columns": "tanh' scales the rows of W_hh (output i of the step), not its columns: the "
    "Jacobian is diag(tanh'(a)) times W_hh, so the factor needs a trailing axis, not a middle one",
    "transposed": "W_hh is transposed: entry (i, j) is d h'_i / d h_j = tanh'(a_i) * W_hh[i, j]",
}


RNN_CELL_HINTS = {
    "column_vectors": "h' came back as (H, B), the transpose of the answer: that is the "
    "column-vector form of the equation, one column per example. In a batch each ROW is one "
    "example, so h' is (B, H), like x and h",
}


# Hint ladders, one per exercise: the idea, then the operations and axes, then code.
# `hint("exN_k")` in course_lib.checks walks up them; only the last level shows code.
LADDERS: dict[str, tuple[str, ...]] = {
    "ex1_1": (
        "One step of a vanilla RNN mixes the new input and the previous state linearly, adds both biases, and squashes the sum with tanh. The usual trap: the equation is written for one column vector, but here each ROW of x and of h is one example, while PyTorch stores each weight as (out, in); ask which way round each product must go to give (B, H).",
        "W_ih is (H, I) and x is (B, I): a batch of row vectors times a weight stored as (out, in) needs the weight transposed; the same holds for h and W_hh. Both products are (B, H); add b_ih and b_hh, then tanh.",
        "return torch.tanh(x @ W_ih.T + b_ih + h @ W_hh.T + b_hh)",
    ),
    "ex1_2": (
        "Chain rule: h_new = tanh(a) with a linear in h_prev, so d h_new / d h_prev = tanh'(a) times d a / d h_prev = W_hh. You never need a itself: tanh' can be written with tanh(a), which you were given. Each output unit i has its own factor tanh'(a_i): work out whether it multiplies a row or a column of W_hh.",
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


__all__ = ["check_gradient_reach", "check_rnn_cell", "check_rnn_step_jacobian"]


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
    mistakes.append((RNN_CELL_HINTS["column_vectors"], lambda: expected.T))
    compare(label, [out], [expected], ("h'",), mistakes, "h' is (B, H).")


# ----------------------------------------------------------------------------- gradient_reach
# Exercise 1.3 composes 1.2: chain the one-step Jacobians back from h_T, one norm per distance.

REACH_ALLOWED = ("course_lib.rnn.rnn_step_jacobian",)
REACH_SHAPE = "They are (B, T+1): one norm per distance d = 0..T, d = 0 included (the identity)."  # 1.3 may build on Exercise 1.2
REACH_HINTS = {
    "error": "states is (B, T+1, H) with h_0 first and h_T last, W_hh (H, H); each step's "
    "Jacobian is (B, H, H) and the answer has one norm per distance d = 0..T, so it is (B, T+1)",
    "order": "the factors are multiplied in the wrong order: walking back from h_T, each new "
    "step's Jacobian goes on the right of the product so far (dh_T/dh_k times dh_k/dh_(k-1)); "
    "matrix products do not commute, and neither do their norms",
    "off_by_one": "each step's Jacobian uses the wrong state: dh_k/dh_(k-1) is built from the "
    "state that step produced, h_k, not from the state it started from",
    "frobenius": "that is the Frobenius norm (the root of the sum of all squared entries); the "
    "exercise asks for the operator norm, the largest singular value: how much the matrix can "
    "stretch a vector",
    "product_of_norms": "you multiplied the norms of the one-step Jacobians; the norm of a "
    "product is at most the product of the norms, and often far below it: take the norm of "
    "the chained matrix",
    "no_tanh": "the tanh' factor is missing: chaining W_hh alone is the linear RNN, whose "
    "stretch is exactly s per step; each step's Jacobian carries its own diag(1 - h_k^2)",
    "reversed": "the entries are in reverse order: entry d is the distance back from h_T, so "
    "entry 0 is dh_T/dh_T (norm 1) and the last entry reaches h_0",
    "no_identity": "distance 0 is missing: dh_T/dh_T is the identity, whose norm is 1, so the "
    "answer has T+1 entries per example, d = 0..T",
    "forward": "you walked forward from h_0, so entry d measures how a state depends on the "
    "FIRST state, h_0; the exercise measures how the LAST state h_T depends on the state d steps "
    "before it, h_(T-d): start at h_T and walk back, taking the d Jacobians nearest h_T",
    "smallest": "that is the smallest singular value, the stretch of the most-shrunk direction; "
    "the operator norm is the largest one, the most any vector can be stretched",
    "values": "Entry [b, d] is the operator norm of dh_T/dh_(T-d), the ordered product of the d "
    "one-step Jacobians nearest h_T (the step-T factor on the left)",
}

LADDERS["ex1_3"] = (
    "The chain rule: dh_T/dh_(T-d) is the product of the d one-step Jacobians between them, "
    "dh_T/dh_(T-1) times dh_(T-1)/dh_(T-2) and so on. Exercise 1.2 gives each factor; its "
    "operator norm (largest singular value) says how much a gradient can grow or shrink. Three "
    "things decide the answer: where the distance-0 term comes from, which state each step's "
    "Jacobian is built from, and on which side a new factor joins the product (matrix products "
    "do not commute).",
    "Start with the identity (distance 0, norm 1) and walk back from k = T down to 1: multiply "
    "the product so far on the right by the Jacobian of step k (built from h_k, the state that "
    "step produced), and record the norm after each step. The operator norm of a batch of "
    "matrices is the matrix norm of order 2 in PyTorch's linear-algebra module; stack the T+1 "
    "norms along axis 1.",
    "J = torch.eye(H).expand(B, H, H); norms = [torch.ones(B)]\n"
    "for k in range(T, 0, -1):\n"
    "    J = J @ rnn_step_jacobian(states[:, k], W_hh)\n"
    "    norms.append(torch.linalg.matrix_norm(J, ord=2))\n"
    "return torch.stack(norms, dim=1)",
)


def reach_variant(states, w_hh, order="right", use="new", norm=2, chain=True, tanh=True):
    """||dh_T/dh_(T-d)|| for d = 0..T with knobs for the usual slips -> (B, T+1)."""
    states, w_hh = states.double(), w_hh.double()
    B, T1, H = states.shape
    J, total = torch.eye(H, dtype=states.dtype).expand(B, H, H), torch.ones(B, dtype=states.dtype)
    norms = [torch.ones(B, dtype=states.dtype)]
    for k in range(T1 - 1, 0, -1):
        h = states[:, k] if use == "new" else states[:, k - 1]
        step = ((1 - h**2) if tanh else torch.ones_like(h))[:, :, None] * w_hh  # (B, H, H)
        J = J @ step if order == "right" else step @ J
        ord_ = "fro" if norm == "fro" else 2
        total = total * torch.linalg.matrix_norm(step, ord=ord_)
        norms.append(torch.linalg.matrix_norm(J, ord=ord_) if chain else total)
    return torch.stack(norms, dim=1)


def _forward_reach(states, w_hh, new_left: bool = True) -> torch.Tensor:
    """A walk forward from h_0: entry d is the norm of the first d step Jacobians' product."""
    states, w_hh = states.double(), w_hh.double()
    B, T1, H = states.shape
    J, norms = torch.eye(H, dtype=states.dtype).expand(B, H, H), [torch.ones(B, dtype=states.dtype)]
    for k in range(1, T1):
        step = (1 - states[:, k] ** 2)[:, :, None] * w_hh
        J = step @ J if new_left else J @ step
        norms.append(torch.linalg.matrix_norm(J, ord=2))
    return torch.stack(norms, dim=1)


def _smallest_singular(states, w_hh) -> torch.Tensor:
    """The right chain, measured by its smallest singular value instead of its largest."""
    states, w_hh = states.double(), w_hh.double()
    B, T1, H = states.shape
    J, out = torch.eye(H, dtype=states.dtype).expand(B, H, H), [torch.ones(B, dtype=states.dtype)]
    for k in range(T1 - 1, 0, -1):
        J = J @ ((1 - states[:, k] ** 2)[:, :, None] * w_hh)
        out.append(torch.linalg.svdvals(J)[:, -1])
    return torch.stack(out, dim=1)


def _rnn_states(g: torch.Generator, B: int, T: int, n_in: int, H: int, scale: float):
    """A tanh RNN run with seeded weights: (states (B, T+1, H) with h_0, w_hh, the cell, xs)."""
    cell = nn.RNNCell(n_in, H).double()
    with torch.no_grad():
        for p in cell.parameters():
            p.copy_(randn(g, *p.shape).double() / math.sqrt(H))
        cell.weight_hh.mul_(scale)
    xs = randn(g, B, T, n_in).double()
    states = [0.3 * randn(g, B, H).double()]
    for t in range(T):
        states.append(cell(xs[:, t], states[-1]))
    return torch.stack(states, dim=1), cell.weight_hh.detach().clone(), cell, xs


def _autograd_reach(cell: nn.RNNCell, xs: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
    """||dh_T/dh_(T-d)||_2 by autograd: rerun the cell from h_(T-d) over the last d inputs."""
    B, T = xs.shape[:2]
    out = torch.ones(B, T + 1, dtype=torch.float64)
    with torch.enable_grad():
        for d in range(1, T + 1):
            for b in range(B):

                def run(h0, b=b, d=d):
                    h = h0[None]
                    for t in range(T - d, T):
                        h = cell(xs[b : b + 1, t], h)
                    return h[0]

                jac = torch.autograd.functional.jacobian(run, states[b, T - d])  # (H, H)
                out[b, d] = torch.linalg.matrix_norm(jac.detach(), ord=2)
    return out


@isolated
def check_gradient_reach(fn: Callable[..., torch.Tensor]) -> None:
    """Check fn(states (B, T+1, H), W_hh (H, H)) -> ||dh_T / dh_(T-d)||_2 for d = 0..T, (B, T+1)."""
    name = "gradient_reach"
    require_callable(fn, name)
    g = torch.Generator().manual_seed(13)
    cases = [(2, 4, 3, 4, 1.5), (3, 6, 2, 5, 2.5), (1, 5, 3, 4, 0.8)]
    for i, (B, T, n_in, H, scale) in enumerate(cases, 1):
        states, w_hh, cell, xs = _rnn_states(g, B, T, n_in, H, scale)
        expected = _autograd_reach(cell, xs, states)  # before the learner's code runs
        desc = f"B={B}, T={T}, H={H}, W_hh scale {scale}"
        label = case_label(name, i, len(cases), desc)  # float32 inputs, like a notebook's
        _reach_case(fn, label, states.float(), w_hh.float(), expected)
    passed(name, len(cases))


def _reach_case(fn, label: str, states, w_hh, expected) -> None:
    """One case, with the usual slips of chaining Jacobians as named mistakes."""
    result = call_learner(fn, label, (states, w_hh), REACH_HINTS["error"], allow=REACH_ALLOWED)
    (reach,) = as_tensors(result, label, ("the norms",))

    def wrong(**knobs: Any) -> Callable[[], torch.Tensor]:
        return lambda: reach_variant(states, w_hh, **knobs)

    mistakes = [
        (REACH_HINTS["order"], wrong(order="left")),
        (REACH_HINTS["off_by_one"], wrong(use="old")),
        (REACH_HINTS["frobenius"], wrong(norm="fro")),
        (REACH_HINTS["product_of_norms"], wrong(chain=False)),
        (REACH_HINTS["no_tanh"], wrong(tanh=False)),
        (REACH_HINTS["reversed"], lambda: expected.flip(-1)),
        (REACH_HINTS["no_identity"], lambda: expected[:, 1:]),
        (REACH_HINTS["smallest"], lambda: _smallest_singular(states, w_hh)),
        (REACH_HINTS["forward"], lambda: _forward_reach(states, w_hh)),
        (REACH_HINTS["forward"], lambda: _forward_reach(states, w_hh, new_left=False)),
    ]
    compare(
        label, [reach], [expected], ("the norms",), mistakes, REACH_SHAPE, REACH_HINTS["values"]
    )
