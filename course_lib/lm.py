"""Training and evaluating character language models: windows of ids, fit's adapter, the loss.

A language model's data is one long (N,) tensor of token ids. A training example is a window
of `context` ids and the same window shifted by one: x = data[i : i + T], y = data[i + 1 : i + T + 1],
so position t of x must predict y[t] = x[t + 1].
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .fit import FitConfig, History, fit
from .utils import evaluating, fmt_shape


def check_data(data: torch.Tensor, context: int) -> None:
    """Raise a ValueError unless data is a 1-D id tensor longer than one window."""
    if not isinstance(data, torch.Tensor) or data.dim() != 1:
        shape = fmt_shape(data.shape) if isinstance(data, torch.Tensor) else type(data).__name__
        raise ValueError(f"data must be a 1-D tensor of token ids, got {shape}")
    if len(data) <= context:
        raise ValueError(f"data has {len(data)} ids, need more than context={context}")


def windows(
    data: torch.Tensor, starts: torch.Tensor, context: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The windows of `context` ids at `starts` (B,) and their next ids: (x, y), each (B, T)."""
    positions = starts[:, None] + torch.arange(context)  # (B, T)
    return data[positions], data[positions + 1]  # y[:, t]: the id after x[:, t]


def lm_batch(
    data: torch.Tensor,
    batch_size: int,
    context: int,
    generator: torch.Generator | None = None,
    starts: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """batch_size random windows: (x, y), each (B, context), y = x shifted left by one.

    Windows start anywhere, or only at the positions in `starts` (e.g. where sentences begin).
    """
    check_data(data, context)
    if starts is None:
        starts = torch.randint(len(data) - context, (batch_size,), generator=generator)  # (B,)
    else:
        allowed = starts[starts < len(data) - context]
        if len(allowed) == 0:
            raise ValueError(f"no start position leaves room for a window of {context} + 1 ids")
        starts = allowed[torch.randint(len(allowed), (batch_size,), generator=generator)]
    return windows(data, starts, context)


def evaluate_lm(
    model: nn.Module,
    data: torch.Tensor,
    context: int,
    batch_size: int = 64,
    max_windows: int | None = None,
) -> float:
    """Mean next-token loss (nats) over non-overlapping windows of `data`, deterministically.

    The windows start at 0, context, 2 context, ...; every id after the first is predicted once
    (with 0 .. context - 1 ids of context before it). With `max_windows`, that many windows
    spread evenly over the whole text are used instead (a cheaper estimate for a curve).
    """
    check_data(data, context)
    n = (len(data) - 1) // context
    starts = torch.arange(n) * context  # (n,)
    if max_windows is not None and max_windows < n:
        starts = starts[torch.linspace(0, n - 1, max_windows).round().long()]
    x, y = windows(data, starts, context)  # (n, T) each
    total = 0.0
    with evaluating(model):
        for i in range(0, len(starts), batch_size):
            logits = model(x[i : i + batch_size])[0]  # (b, T, V)
            total += F.cross_entropy(
                logits.flatten(0, 1), y[i : i + batch_size].flatten(), reduction="sum"
            ).item()
    return total / (len(starts) * context)


def train_lm(
    model: nn.Module,
    train_data: torch.Tensor,
    steps: int,
    batch_size: int = 12,
    context: int | None = None,
    lr: float = 1e-3,
    warmup: int = 100,
    weight_decay: float = 0.1,
    clip: float | None = 1.0,
    seed: int = 0,
    val_data: torch.Tensor | None = None,
    eval_every: int = 0,
    eval_windows: int = 256,
    progress: bool = True,
    callback: Callable[[int, History], None] | None = None,
    starts: torch.Tensor | None = None,
) -> History:
    """fit `model(x, y) -> (logits, loss)` on random windows: AdamW, warm-up + cosine to 0.1.

    Batches come from a torch.Generator seeded with `seed`, so a run is repeatable; windows
    start anywhere, or only at the positions in `starts` (see `lm_batch`). Dropout draws from
    the global random state. `warmup` is capped at steps // 2; biases and gains are not decayed.
    Every `eval_every` steps (and after the last) the loss on `eval_windows` windows spread over
    `val_data` is recorded (cheap, for the curve); use `evaluate_lm` on all of it for the result.
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if eval_every and val_data is None:
        raise ValueError(f"eval_every={eval_every} needs val_data to evaluate on")
    context = model.max_len if context is None else context
    check_data(train_data, context)
    config = FitConfig(
        steps, lr, weight_decay, betas=(0.9, 0.99), decay_vectors=False,
        warmup=min(warmup, steps // 2), min_lr_ratio=0.1, clip=clip, eval_every=eval_every,
        seed=None, progress=progress,
    )  # fmt: skip
    gen = torch.Generator().manual_seed(seed)
    batches = iter(lambda: lm_batch(train_data, batch_size, context, gen, starts), None)
    loss_fn = lambda m, xy: m(*xy)[1]  # noqa: E731  (logits, loss) -> loss
    evaluate = None
    if val_data is not None:
        evaluate = lambda m: {  # noqa: E731
            "val_loss": evaluate_lm(m, val_data, context, max_windows=eval_windows)
        }
    return fit(model, batches, loss_fn, config, evaluate, callback)


__all__ = ["check_data", "evaluate_lm", "lm_batch", "train_lm", "windows"]
