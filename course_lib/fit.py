"""The course's one training loop: `fit(model, batches, loss_fn, FitConfig(...))`.

AdamW, linear warm-up then cosine decay (or a constant LR), optional gradient clipping, a
finite-loss check and a History. Every trainer in the course is a thin adapter over it:
training.train_seq2seq, lm.train_lm, train.train_distributed (DDP) and the lessons' loops.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

# ----------------------------------------------------------------------------- schedule


def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float = 0.0) -> float:
    """LR multiplier: linear warm-up to 1 over `warmup` steps, then cosine decay to `min_ratio`.

    f(0) = 1/warmup, f(warmup) = 1, f(total) = min_ratio (and stays there after `total`).
    """
    if total < 1 or not 0 <= warmup <= total:
        raise ValueError(
            f"need 0 <= warmup <= total and total >= 1, got warmup={warmup}, total={total}"
        )
    if not 0.0 <= min_ratio <= 1.0:
        raise ValueError(f"min_ratio must be in [0, 1], got {min_ratio}")
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


# ----------------------------------------------------------------------------- training


@dataclass
class History:
    """What fit recorded: one entry per step, plus evaluations (exact match or held-out loss)."""

    step: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    eval_step: list[int] = field(default_factory=list)
    eval_acc: list[float] = field(default_factory=list)  # seq2seq: exact match
    val_loss: list[float] = field(default_factory=list)  # language models: held-out loss


SCHEDULES = ("cosine", "constant")


@dataclass(frozen=True)
class FitConfig:
    """How fit trains: AdamW, linear warm-up, then cosine decay or a constant LR.

    Warm-up and clipping change the numbers a run gives: a notebook that trains states both.
    `clip=None` switches clipping off (the gradient norm is still measured and recorded).
    `seed` seeds dropout inside a forked RNG (the caller's random state is left untouched);
    `seed=None` leaves dropout to the global random state. Weight decay applies to every
    parameter, or with `decay_vectors=False` only to matrices and embeddings (dim >= 2).
    """

    steps: int
    lr: float = 3e-3
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    decay_vectors: bool = True
    warmup: int = 0
    schedule: str = "cosine"
    min_lr_ratio: float = 0.0  # cosine: the LR multiplier reached at the last step
    clip: float | None = None
    eval_every: int = 0  # 0: evaluate only after the last step
    seed: int | None = 0
    progress: bool = True

    def __post_init__(self):
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps must be a positive int, got {self.steps!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.warmup < 0 or (self.schedule == "cosine" and self.warmup > self.steps):
            raise ValueError(f"need 0 <= warmup <= steps, got warmup={self.warmup}")
        if self.clip is not None and self.clip <= 0:
            raise ValueError(f"clip must be > 0, or None for no clipping, got {self.clip}")
        if self.eval_every < 0:
            raise ValueError(f"eval_every must be >= 0 (0: only at the end), got {self.eval_every}")

    def lr_multiplier(self, step: int) -> float:
        """The factor on `lr` at `step`: warm-up, then cosine decay or constant."""
        if self.schedule == "cosine":
            return warmup_cosine(step, self.warmup, self.steps, self.min_lr_ratio)
        return min(1.0, (step + 1) / self.warmup) if self.warmup > 0 else 1.0


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _optimizer(model: nn.Module, config: FitConfig) -> torch.optim.Optimizer:
    """AdamW over the model's parameters, with or without decay on the 1-D ones."""
    params = list(model.parameters())
    groups: list = params
    if not config.decay_vectors:
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
    return torch.optim.AdamW(
        groups, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay
    )


@contextlib.contextmanager
def _seeded(model: nn.Module, seed: int | None) -> Iterator[None]:
    """Inside: a forked RNG (CPU and the model's GPU) seeded with `seed`; seed=None: no change."""
    if seed is None:
        yield
        return
    device = model_device(model)
    gpus = []  # the CPU generator is always forked; add the model's GPU if it has one
    if device.type == "cuda":
        gpus = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=gpus, device_type=device.type):
        torch.manual_seed(seed)
        yield


def step_update(
    model: nn.Module,
    loss: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    clip: float | None,
) -> float:
    """Backward, clip the gradient (or only measure its norm), step; -> norm before clipping."""
    loss.backward()
    max_norm = clip if clip else float("inf")  # inf: measure the norm without clipping
    grad_norm = nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return float(grad_norm)


def fit(
    model: nn.Module,
    batches: Iterator,
    loss_fn: Callable[[nn.Module, Any], torch.Tensor],
    config: FitConfig,
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
    callback: Callable[[int, History], None] | None = None,
    mean_over_ranks: Callable[[float], float] | None = None,
) -> History:
    """The course's one training loop: `config.steps` AdamW steps on loss_fn(model, next(batches)).

    `evaluate(model)` returns History fields and values, e.g. {"eval_acc": 0.97}; it runs every
    `config.eval_every` steps and after the last. `callback(step, history)` runs after each step.
    Under DDP, `mean_over_ranks` turns this process's loss into the mean over all processes.
    """
    if config.eval_every and evaluate is None:
        raise ValueError(f"eval_every={config.eval_every} needs an evaluate function")
    optimizer = _optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, config.lr_multiplier)
    history = History()
    with _seeded(model, config.seed):
        bar = tqdm(range(config.steps), disable=not config.progress, desc="training")
        for step in bar:
            current_lr = scheduler.get_last_lr()[0]
            model.train()
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model, next(batches))
            grad_norm = step_update(model, loss, optimizer, scheduler, config.clip)
            value = loss.item() if mean_over_ranks is None else mean_over_ranks(loss.item())
            if not math.isfinite(value):
                raise FloatingPointError(
                    f"loss became {value} at step {step}; try a lower lr (now {config.lr}), "
                    f"a longer warm-up (now {config.warmup}) or a clip value (now {config.clip})"
                )
            history.step.append(step)
            history.loss.append(value)
            history.lr.append(current_lr)
            history.grad_norm.append(grad_norm)
            last = step == config.steps - 1
            every = config.eval_every
            if evaluate is not None and (last or (every and (step + 1) % every == 0)):
                history.eval_step.append(step)
                for name, result in evaluate(model).items():
                    getattr(history, name).append(result)
            if step % 10 == 0 or last:
                bar.set_postfix({"loss": f"{value:.4f}", "lr": f"{current_lr:.2e}"})
            if callback is not None:
                callback(step, history)
    return history


__all__ = [
    "FitConfig",
    "History",
    "SCHEDULES",
    "fit",
    "model_device",
    "step_update",
    "warmup_cosine",
]
