"""Training and evaluating character language models: batches, the loop, n-gram baselines.

A language model's data is one long (N,) tensor of token ids. A training example is a window
of `context` ids and the same window shifted by one: x = data[i : i + T], y = data[i + 1 : i + T + 1],
so position t of x must predict y[t] = x[t + 1].
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .training import warmup_cosine
from .utils import fmt_shape


def _check_data(data: torch.Tensor, context: int) -> None:
    """Raise a ValueError unless data is a 1-D id tensor longer than one window."""
    if not isinstance(data, torch.Tensor) or data.dim() != 1:
        shape = fmt_shape(data.shape) if isinstance(data, torch.Tensor) else type(data).__name__
        raise ValueError(f"data must be a 1-D tensor of token ids, got {shape}")
    if len(data) <= context:
        raise ValueError(f"data has {len(data)} ids, need more than context={context}")


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
    _check_data(data, context)
    if starts is None:
        starts = torch.randint(len(data) - context, (batch_size,), generator=generator)  # (B,)
    else:
        allowed = starts[starts < len(data) - context]
        if len(allowed) == 0:
            raise ValueError(f"no start position leaves room for a window of {context} + 1 ids")
        starts = allowed[torch.randint(len(allowed), (batch_size,), generator=generator)]
    offsets = torch.arange(context)  # (T,)
    x = data[starts[:, None] + offsets]  # (B, T)
    y = data[starts[:, None] + offsets + 1]  # (B, T): the next id at every position
    return x, y


@torch.no_grad()
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
    _check_data(data, context)
    n = (len(data) - 1) // context
    starts = torch.arange(n) * context  # (n,)
    if max_windows is not None and max_windows < n:
        starts = starts[torch.linspace(0, n - 1, max_windows).round().long()]
    offsets = torch.arange(context)
    x = data[starts[:, None] + offsets]  # (n, T)
    y = data[starts[:, None] + offsets + 1]  # (n, T): the next id at every position
    was_training = model.training
    model.eval()
    total = 0.0
    try:
        for i in range(0, len(starts), batch_size):
            logits = model(x[i : i + batch_size])[0]  # (b, T, V)
            total += F.cross_entropy(
                logits.flatten(0, 1), y[i : i + batch_size].flatten(), reduction="sum"
            ).item()
    finally:
        model.train(was_training)
    return total / (len(starts) * context)


@dataclass
class LMHistory:
    """What train_lm recorded: the loss at every step, the validation loss at some steps."""

    step: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    eval_step: list[int] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)


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
    callback: Callable[[int, LMHistory], None] | None = None,
    starts: torch.Tensor | None = None,
) -> LMHistory:
    """Train `model(x, y) -> (logits, loss)` on random windows with AdamW and warm-up + cosine.

    Batches come from a torch.Generator seeded with `seed`, so a run is repeatable; windows
    start anywhere, or only at the positions in `starts` (see `lm_batch`). Every
    `eval_every` steps (and after the last) the loss on `eval_windows` windows spread over
    `val_data` is recorded (cheap, for the curve); use `evaluate_lm` on all of it for the result.
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if eval_every and val_data is None:
        raise ValueError(f"eval_every={eval_every} needs val_data to evaluate on")
    context = model.max_len if context is None else context
    _check_data(train_data, context)
    decay = [p for p in model.parameters() if p.dim() >= 2]  # matrices and embeddings
    no_decay = [p for p in model.parameters() if p.dim() < 2]  # biases and LayerNorm gains
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=lr,
        betas=(0.9, 0.99),
    )
    warmup = min(warmup, steps // 2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, warmup, steps, min_ratio=0.1)
    )
    gen = torch.Generator().manual_seed(seed)
    history = LMHistory()
    bar = tqdm(range(steps), disable=not progress, desc="training")
    for step in bar:
        model.train()
        x, y = lm_batch(train_data, batch_size, context, gen, starts)
        _, loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            nn.utils.clip_grad_norm_(model.parameters(), clip)
        history.lr.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
        history.step.append(step)
        history.loss.append(loss.item())
        if not math.isfinite(history.loss[-1]):
            raise FloatingPointError(f"loss became {history.loss[-1]} at step {step}; lower lr")
        last = step == steps - 1
        if val_data is not None and (last or (eval_every and (step + 1) % eval_every == 0)):
            history.eval_step.append(step)
            history.val_loss.append(evaluate_lm(model, val_data, context, max_windows=eval_windows))
        if step % 20 == 0 or last:
            postfix = {"loss": f"{history.loss[-1]:.3f}"}
            if history.val_loss:
                postfix["val"] = f"{history.val_loss[-1]:.3f}"
            bar.set_postfix(postfix)
        if callback is not None:
            callback(step, history)
    return history


# ----------------------------------------------------------------------------- n-gram baselines


class CharNGram:
    """A unigram (n=1) or bigram (n=2) model from counts, with add-alpha smoothing.

    p(b | a) = (count(a b) + alpha) / (count(a) + alpha V): every pair has some probability,
    so a pair never seen in training costs a finite loss. n=1 ignores the previous id.
    """

    def __init__(self, data: torch.Tensor, vocab_size: int, n: int = 2, alpha: float = 0.1):
        if n not in (1, 2):
            raise ValueError(f"n must be 1 (unigram) or 2 (bigram), got {n}")
        if alpha <= 0:
            raise ValueError(
                f"alpha must be > 0 so unseen pairs keep some probability, got {alpha}"
            )
        _check_data(data, 1)
        self.n, self.vocab_size = n, vocab_size
        V = vocab_size
        if n == 1:
            counts = torch.bincount(data, minlength=V).double()[None].expand(V, V)
        else:
            counts = torch.bincount(data[:-1] * V + data[1:], minlength=V * V).double().view(V, V)
        smoothed = counts + alpha  # (V, V): row a = the counts of what follows a
        self.log_probs = (smoothed / smoothed.sum(dim=1, keepdim=True)).log().float()  # (V, V)

    def loss(self, data: torch.Tensor) -> float:
        """Mean -log p(next | previous) in nats over data[1:], the positions a GPT predicts too."""
        _check_data(data, 1)
        return -self.log_probs[data[:-1], data[1:]].double().mean().item()

    def generate(
        self, start: torch.Tensor, length: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Sample `length` ids after each start id: start (B,) -> (B, 1 + length)."""
        out = [start]
        for _ in range(length):
            probs = self.log_probs[out[-1]].exp()  # (B, V)
            out.append(torch.multinomial(probs, 1, generator=generator)[:, 0])
        return torch.stack(out, dim=1)


__all__ = ["CharNGram", "LMHistory", "evaluate_lm", "lm_batch", "train_lm"]
