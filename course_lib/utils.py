"""Small helpers every notebook uses: seeding, device choice, shape checks."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch


def set_seed(seed: int = 0) -> None:
    """Seed Python, NumPy and PyTorch so a notebook gives the same numbers on every run."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)


def get_device() -> torch.device:
    """Pick the fastest available device: CUDA, then Apple's MPS, then the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def fmt_shape(shape: Sequence[int]) -> str:
    """Format a shape as `(2, 4, 5)` for error messages."""
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"


def expect_ndim(name: str, x: torch.Tensor, ndim: int, layout: str) -> None:
    """Raise a ValueError naming the expected layout if `x` does not have `ndim` dimensions."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != ndim:
        raise ValueError(
            f"{name} should have {ndim} dimensions {layout}, got shape {fmt_shape(x.shape)}"
        )


def count_parameters(module: torch.nn.Module) -> int:
    """Number of trainable parameters in a module."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


@contextmanager
def evaluating(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode and no gradients inside the block; the model's previous mode is restored after."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)
