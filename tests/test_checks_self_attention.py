"""Specifications of notebook 03's design exercise (3.3, projections for the successor task)."""

from __future__ import annotations

import math

import pytest
import torch
from test_checks_hints import _normal, solution_lines

from course_lib import checks


def projections(n, shift=1, scale=None, wrap=True, same=False, d_k=None):
    """A right answer (defaults) or one typical mistake."""
    eye = torch.eye(n)
    perm = eye.roll(shift, dims=1) if wrap else torch.diag(torch.ones(n - 1), shift)  # i -> i+shift
    c = math.sqrt(n) * math.log(9 * (n - 1)) + 1.0 if scale is None else scale
    if same:
        return c * eye, c * eye
    w_q, w_k = c * perm, eye
    if d_k is not None:
        w_k = torch.eye(n, d_k)
    return w_q, w_k


def blank(n):
    raise NotImplementedError


def test_a_right_design_passes_with_one_line(capsys):
    checks.check_successor_projections(projections)
    assert capsys.readouterr().out == "✓ successor_projections: all 3 cases pass\n"


def test_another_right_design_with_a_wider_d_k_passes_too():
    def wide(n):
        g = torch.Generator().manual_seed(0)
        basis = torch.linalg.qr(torch.randn(2 * n, 2 * n, generator=g))[0][:n]  # (n, 2n)
        c = 60.0
        return c * torch.eye(n).roll(1, dims=1) @ basis, basis

    checks.check_successor_projections(wide)


def test_a_blank_design_reads_as_not_attempted():
    with pytest.raises(AssertionError, match="not attempted"):
        checks.check_successor_projections(blank)
    results = checks.progress("03", namespace={"successor_projections": blank})
    assert results["successor_projections"][0] == "not attempted"
    assert results["self_attention"][0] == "not attempted"


@pytest.mark.parametrize(
    ("wrong", "phrase"),
    [
        (lambda n: projections(n, same=True), "largest weight is on itself"),
        (lambda n: projections(n, shift=-1), "direction reversed"),
        (lambda n: projections(n, wrap=False), "wrap around"),
        (lambda n: projections(n, scale=2.0), "too softly"),
        (lambda n: projections(n, d_k=n + 1), "same d_k"),
        (lambda n: projections(n)[0], "tuple (W_q, W_k)"),
        (lambda n: projections(n, shift=2), "not on its successor"),
    ],
)
def test_each_typical_design_mistake_is_named(wrong, phrase):
    with pytest.raises(AssertionError) as info:
        checks.check_successor_projections(wrong)
    assert phrase in str(info.value)


def test_successor_messages_hold_no_solution_line():
    lines = solution_lines()
    for wrong in (lambda n: projections(n, same=True), lambda n: projections(n, scale=2.0)):
        with pytest.raises(AssertionError) as info:
            checks.check_successor_projections(wrong)
        text = _normal(str(info.value).split("(at line")[0])
        assert not [line for line in lines if line in text], str(info.value)


def test_integer_projections_are_refused_as_not_float():
    """The prompt asks for two float tensors; an integer design is told so, whatever it scores."""

    def integer_design(n):
        w_q = torch.eye(n, dtype=torch.long) * 10
        return w_q, w_q.roll(1, dims=1)

    with pytest.raises(AssertionError, match="must be float tensors"):
        checks.check_successor_projections(integer_design)
