"""One readable training loop for every sequence-to-sequence model in the course.

The contract a model follows (the RNNs of notebooks 01-02 and the Transformer of notebook 09):

    model(src, tgt_in) -> logits                       # (B, L_s), (B, L_t) -> (B, L_t, V)
    model.greedy_decode(src, max_len, bos_id, eos_id)  # -> (B, <= max_len) ids, no BOS,
                                                       #    ending at EOS, PAD after it
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

# The checkpoint functions live in .checkpoints; re-exported here, where the notebooks import them.
from .checkpoints import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    load_checkpoint,
    load_model_state,
    save_checkpoint,
)
from .data import Batch, CharVocab, batch_iterator, make_batch
from .utils import fmt_shape

# ----------------------------------------------------------------------------- loss and schedule


def sequence_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    pad_id: int,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """Cross-entropy over the non-PAD target positions: their mean, or their sum with "sum".

    A batch whose targets are all PAD has no mean: "mean" raises a ValueError ("sum" gives 0).
    """
    if logits.dim() != 3 or targets.dim() != 2 or logits.shape[:2] != targets.shape:
        raise ValueError(
            f"sequence_loss expects logits (B, L, V) and targets (B, L), got logits "
            f"{fmt_shape(logits.shape)} and targets {fmt_shape(targets.shape)}; "
            "compare the logits with tgt_out, not with tgt_in or src"
        )
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    if reduction == "mean" and not (targets != pad_id).any():
        raise ValueError(
            f"every target in this batch is PAD (pad_id={pad_id}), so there is no position to "
            "average the loss over; check that targets is tgt_out and pad_id the vocabulary's PAD"
        )
    V = logits.shape[-1]
    return F.cross_entropy(
        logits.reshape(-1, V),  # (B*L, V)
        targets.reshape(-1),  # (B*L,)
        ignore_index=pad_id,
        label_smoothing=label_smoothing,
        reduction=reduction,
    )


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
    """What train_seq2seq recorded: one entry per step, plus evaluations if any."""

    step: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    eval_step: list[int] = field(default_factory=list)
    eval_acc: list[float] = field(default_factory=list)


def _model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def train_step(
    model: nn.Module,
    batch: Batch,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    clip: float | None = 1.0,
    label_smoothing: float = 0.0,
    pad_id: int = CharVocab.pad_id,
    loss_tokens: float | None = None,
) -> tuple[float, float]:
    """One optimisation step on one batch; returns (loss, gradient norm before clipping).

    The loss is the mean over the batch's non-PAD target tokens, or with `loss_tokens` the sum
    over them divided by `loss_tokens` (distributed training passes global tokens / world size).
    """
    model.train()
    batch = batch.to(_model_device(model))
    optimizer.zero_grad(set_to_none=True)
    logits = model(batch.src, batch.tgt_in)  # (B, L_t, V)
    B, L_t = batch.tgt_out.shape
    if not isinstance(logits, torch.Tensor) or logits.dim() != 3 or logits.shape[:2] != (B, L_t):
        got = fmt_shape(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(
            f"model(src, tgt_in) should return logits of shape (B, L_t, V) = ({B}, {L_t}, V), "
            f"got {got}; one prediction per decoder input position is expected"
        )
    if loss_tokens is None:
        loss = sequence_loss(logits, batch.tgt_out, pad_id, label_smoothing)
    else:
        loss = sequence_loss(logits, batch.tgt_out, pad_id, label_smoothing, "sum") / loss_tokens
    loss.backward()
    max_norm = clip if clip else float("inf")  # inf: measure the norm without clipping
    grad_norm = nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return loss.item(), float(grad_norm)


def train_seq2seq(
    model: nn.Module,
    pairs: Sequence[Sequence[str]],
    vocab: CharVocab,
    steps: int,
    batch_size: int = 128,
    lr: float = 3e-3,
    warmup: int = 100,
    weight_decay: float = 0.01,
    clip: float | None = 1.0,
    label_smoothing: float = 0.0,
    seed: int = 0,
    eval_pairs: Sequence[Sequence[str]] | None = None,
    eval_every: int = 0,
    progress: bool = True,
    callback: Callable[[int, History], None] | None = None,
) -> History:
    """Train with AdamW, warm-up + cosine LR, gradient clipping and PAD-masked cross-entropy.

    Batches come from `batch_iterator(pairs, vocab, batch_size, seed)`; dropout is seeded with
    `seed` inside a forked RNG, so two runs from the same initial weights give identical losses
    and the caller's global random state is left untouched. `warmup` is capped at steps // 2.
    Exact match on `eval_pairs` is measured every `eval_every` steps and after the last step
    (only after the last step if eval_every is 0). `callback(step, history)` runs after each step.
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if eval_every < 0:
        raise ValueError(f"eval_every must be >= 0 (0 = only at the end), got {eval_every}")
    if eval_every > 0 and eval_pairs is None:
        raise ValueError(f"eval_every={eval_every} needs eval_pairs to evaluate on")
    if not callable(getattr(model, "greedy_decode", None)) and eval_pairs is not None:
        raise ValueError("evaluation needs model.greedy_decode(src, max_len, bos_id, eos_id)")
    warmup = min(warmup, steps // 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, warmup, steps)
    )
    batches = batch_iterator(pairs, vocab, batch_size, seed=seed)
    history = History()
    device = _model_device(model)
    rng_devices = []  # the CPU generator is always forked; add the model's GPU if it has one
    if device.type == "cuda":
        rng_devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=rng_devices, device_type=device.type):
        torch.manual_seed(seed)
        bar = tqdm(range(steps), disable=not progress, desc="training")
        for step in bar:
            current_lr = scheduler.get_last_lr()[0]
            loss, grad_norm = train_step(
                model, next(batches), optimizer, scheduler, clip, label_smoothing, vocab.pad_id
            )
            if not math.isfinite(loss):
                raise FloatingPointError(
                    f"loss became {loss} at step {step}; try a lower lr (now {lr}) or a clip value"
                )
            history.step.append(step)
            history.loss.append(loss)
            history.lr.append(current_lr)
            history.grad_norm.append(grad_norm)
            last = step == steps - 1
            if eval_pairs is not None and (last or (eval_every and (step + 1) % eval_every == 0)):
                history.eval_step.append(step)
                history.eval_acc.append(exact_match(model, eval_pairs, vocab))
            if step % 10 == 0 or last:
                postfix = {"loss": f"{loss:.4f}", "lr": f"{current_lr:.2e}"}
                if history.eval_acc:
                    postfix["acc"] = f"{history.eval_acc[-1]:.3f}"
                bar.set_postfix(postfix)
            if callback is not None:
                callback(step, history)
    return history


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def translate(
    model: nn.Module,
    texts: Sequence[str],
    vocab: CharVocab,
    max_len: int = 32,
    batch_size: int = 512,
) -> list[str]:
    """Greedy-decode each text with `model.greedy_decode` and return the output strings."""
    if isinstance(texts, str):
        raise ValueError("translate expects a list of strings; wrap a single text as [text]")
    if not callable(getattr(model, "greedy_decode", None)):
        raise ValueError(
            f"{type(model).__name__} has no greedy_decode(src, max_len, bos_id, eos_id) method, "
            "which the course's seq2seq contract requires"
        )
    if len(texts) == 0:
        return []
    was_training, device = model.training, _model_device(model)
    model.eval()
    outputs: list[str] = []
    try:
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            src = make_batch([(t, "") for t in chunk], vocab).src.to(device)  # (B, L_s)
            ids = model.greedy_decode(src, max_len, vocab.bos_id, vocab.eos_id)  # (B, <= max_len)
            if ids.dim() != 2 or ids.shape[0] != len(chunk) or ids.shape[1] > max_len:
                raise ValueError(
                    f"greedy_decode should return (B, <= max_len) = ({len(chunk)}, <= {max_len}) "
                    f"token ids, got {fmt_shape(ids.shape)}"
                )
            outputs.extend(vocab.decode(row) for row in ids.cpu())
    finally:
        model.train(was_training)
    return outputs


def _matches(
    model: nn.Module,
    pairs: Sequence[Sequence[str]],
    vocab: CharVocab,
    batch_size: int,
    max_len: int | None,
) -> list[bool]:
    """For each pair, whether the greedy translation of its source equals its target."""
    if len(pairs) == 0:
        raise ValueError("need at least one (source, target) pair to evaluate, got none")
    if max_len is None:
        max_len = max(len(p[1]) for p in pairs) + 1  # room for the EOS
    preds = translate(model, [p[0] for p in pairs], vocab, max_len, batch_size)
    return [pred == p[1] for pred, p in zip(preds, pairs, strict=True)]


def exact_match(
    model: nn.Module,
    pairs: Sequence[Sequence[str]],
    vocab: CharVocab,
    batch_size: int = 512,
    max_len: int | None = None,
) -> float:
    """Fraction of pairs whose greedy output string equals the target exactly."""
    ok = _matches(model, pairs, vocab, batch_size, max_len)
    return sum(ok) / len(ok)


def exact_match_by(
    model: nn.Module,
    pairs: Sequence[Sequence[str]],
    vocab: CharVocab,
    key_fn: Callable[[Sequence[str]], Hashable],
    batch_size: int = 512,
    max_len: int | None = None,
) -> dict[Hashable, float]:
    """Exact match per group, e.g. key_fn=lambda p: p[2] (date format) or len(p[0]); sorted keys."""
    ok = _matches(model, pairs, vocab, batch_size, max_len)
    groups: dict[Hashable, list[bool]] = {}
    for p, hit in zip(pairs, ok, strict=True):
        groups.setdefault(key_fn(p), []).append(hit)
    keys = sorted(groups, key=lambda k: (str(type(k)), k))
    return {k: sum(groups[k]) / len(groups[k]) for k in keys}


__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "History",
    "exact_match",
    "exact_match_by",
    "load_checkpoint",
    "load_model_state",
    "save_checkpoint",
    "sequence_loss",
    "train_seq2seq",
    "train_step",
    "translate",
    "warmup_cosine",
]
