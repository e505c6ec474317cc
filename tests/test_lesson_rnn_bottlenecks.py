"""Specifications of the helpers notebook 01 gained: kernel counts and the memory task's curve."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from course_lib.lessons.rnn_bottlenecks import (
    count_operations,
    memory_accuracy,
    train_memory_task,
    unroll,
)


def test_count_operations_counts_each_autograd_node_once():
    x = torch.randn(3, requires_grad=True)
    y = x * 2  # one node (MulBackward) + the leaf's AccumulateGrad
    assert count_operations(y) == 2
    z = (y + y).sum()  # y is shared: counted once
    assert count_operations(z) == 4


def test_an_unrolled_cell_pays_per_step_while_a_fused_layer_does_not():
    torch.manual_seed(0)
    cell = nn.RNNCell(4, 5)
    counts = [
        count_operations(unroll(cell, torch.randn(2, T, 4, requires_grad=True))) for T in (3, 6)
    ]
    assert counts[1] > counts[0] + 3 * 2  # at least a few operations per extra step
    layer = nn.Linear(4, 5)
    same = [count_operations(layer(torch.randn(2, T, 4, requires_grad=True))) for T in (3, 6)]
    assert same[0] == same[1]


def test_count_operations_refuses_a_tensor_without_a_graph():
    with pytest.raises(ValueError, match="no autograd graph"):
        count_operations(torch.ones(2))


def test_the_memory_curve_is_scored_every_n_steps_and_leaves_training_unchanged():
    model, losses = train_memory_task("lstm", steps=6, max_len=6, eval_every=2, eval_length=5)
    _, plain = train_memory_task("lstm", steps=6, max_len=6)
    assert losses == plain, "scoring during training must not change the training run"
    assert [s for s, _ in model.curve] == [2, 4, 6]
    assert model.curve[-1][1] == pytest.approx(memory_accuracy(model, [5], n=256)[5])
    assert all(0.0 <= a <= 1.0 for _, a in model.curve)
    silent, _ = train_memory_task("rnn", steps=2, max_len=4)
    assert silent.curve == []
