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


def check_token_ids(name: str, tokens: torch.Tensor, vocab_size: int) -> None:
    """Raise a ValueError unless `tokens` is a non-empty (B, L) integer tensor of ids in [0, V)."""
    expect_ndim(name, tokens, 2, "(B, L) of token ids")
    if tokens.dtype.is_floating_point or tokens.dtype.is_complex or tokens.dtype == torch.bool:
        raise ValueError(
            f"{name} must hold integer token ids, got dtype {tokens.dtype} with shape "
            f"{fmt_shape(tokens.shape)}; pass the ids, not embeddings or a mask"
        )
    if tokens.numel() == 0:
        raise ValueError(
            f"{name} is empty, shape {fmt_shape(tokens.shape)}: the model needs at least one "
            "sequence of at least one token (an empty batch, or a prompt with nothing in it?)"
        )
    lo, hi = (int(t) for t in torch.aminmax(tokens))  # one pass over the ids
    if lo < 0 or hi >= vocab_size:
        bad = lo if lo < 0 else hi
        cause = (
            "negative ids are not tokens (-100 marks ignored targets, not inputs)"
            if bad < 0
            else "were the ids made with a vocabulary from another data set or tokenizer?"
        )
        raise ValueError(
            f"{name} contains the token id {bad}, but the vocabulary has {vocab_size} ids "
            f"(0 to {vocab_size - 1}); {cause}"
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


def configure_threads(default: int = 1) -> int:
    """Set PyTorch's CPU thread count to the course's policy (env `COURSE_THREADS`, else 1)."""
    # One thread: measured in benchmarks/bench_threads.py, two threads on a 2-core machine
    # with one busy core ran 7-15x slower; one thread lost <= 35% when the machine was quiet.
    raw = os.environ.get("COURSE_THREADS", "").strip()
    if raw and not raw.isdigit():
        raise ValueError(f"COURSE_THREADS must be a positive integer, got {raw!r}")
    threads = int(raw) if raw else default
    if threads < 1:
        raise ValueError(f"COURSE_THREADS must be at least 1, got {threads}")
    torch.set_num_threads(threads)
    return threads
