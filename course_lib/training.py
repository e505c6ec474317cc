"""One readable training loop for every sequence-to-sequence model in the course.

The contract a model follows (the RNNs of notebooks 01-02 and the Transformer of notebook 09):

    model(src, tgt_in) -> logits                       # (B, L_s), (B, L_t) -> (B, L_t, V)
    model.greedy_decode(src, max_len, bos_id, eos_id)  # -> (B, <= max_len) ids, no BOS,
                                                       #    ending at EOS, PAD after it
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .data import Batch, CharVocab, batch_iterator, make_batch
from .utils import fmt_shape

CHECKPOINT_FORMAT = "attention-course-checkpoint"
CHECKPOINT_VERSION = 1

# ----------------------------------------------------------------------------- loss and schedule


def sequence_loss(
    logits: torch.Tensor, targets: torch.Tensor, pad_id: int, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Mean cross-entropy over the non-PAD target positions (PAD positions contribute nothing)."""
    if logits.dim() != 3 or targets.dim() != 2 or logits.shape[:2] != targets.shape:
        raise ValueError(
            f"sequence_loss expects logits (B, L, V) and targets (B, L), got logits "
            f"{fmt_shape(logits.shape)} and targets {fmt_shape(targets.shape)}; "
            "compare the logits with tgt_out, not with tgt_in or src"
        )
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    V = logits.shape[-1]
    return F.cross_entropy(
        logits.reshape(-1, V),  # (B*L, V)
        targets.reshape(-1),  # (B*L,)
        ignore_index=pad_id,
        label_smoothing=label_smoothing,
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
) -> tuple[float, float]:
    """One optimisation step on one batch; returns (loss, gradient norm before clipping)."""
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
    loss = sequence_loss(logits, batch.tgt_out, pad_id, label_smoothing)
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


# ----------------------------------------------------------------------------- checkpoints

_PLAIN = (str, int, float, bool, type(None), torch.Tensor)


def _check_plain(obj: Any, where: str) -> None:
    """Raise ValueError if `obj` holds anything torch.load(weights_only=True) would refuse."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise ValueError(f"{where} has a key of type {type(k).__name__}; use str keys")
            _check_plain(v, f"{where}[{k!r}]")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
    elif not isinstance(obj, _PLAIN):
        raise ValueError(
            f"{where} has type {type(obj).__name__}; checkpoints hold only str, int, float, bool, "
            "None, lists, tuples, dicts and tensors so that they load with weights_only=True "
            "(convert numpy numbers with float(x), paths with str(p), a History with "
            "dataclasses.asdict(h))"
        )


def save_checkpoint(path: str | Path, model: nn.Module, config: dict, **extra: Any) -> Path:
    """Atomically save {format, version, config, state_dict, **extra} to `path`; return the path."""
    if not isinstance(config, dict):
        raise ValueError(
            f"config must be a dict of the model's constructor arguments, got {type(config).__name__}"
        )
    reserved = {"format", "version", "config", "state_dict"} & extra.keys()
    if reserved:
        raise ValueError(f"extra keys {sorted(reserved)} are reserved by the checkpoint format")
    _check_plain(config, "config")
    _check_plain(extra, "extra")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": config,
        "state_dict": state,
        **extra,
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic: readers see the old file or the new one, never half
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint written by save_checkpoint (safely: weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {path}; train a model and write it with save_checkpoint first"
        )
    expected = (
        f"a course checkpoint (a dict with format={CHECKPOINT_FORMAT!r}) written by save_checkpoint"
    )
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, random bytes, pickled arbitrary objects...
        reason = str(e).split(". ")[0][:120]
        raise ValueError(
            f"could not read {path} as a course checkpoint ({type(e).__name__}: {reason}). "
            f"Expected {expected}; this file is truncated (an interrupted save or copy), not a "
            "PyTorch file, or holds objects other than tensors and plain Python values"
        ) from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        got = (
            f"a dict with keys {sorted(map(str, ckpt))[:8]}"
            if isinstance(ckpt, dict)
            else f"a {type(ckpt).__name__}"
        )
        raise ValueError(f"{path} is not a course checkpoint: expected {expected}, got {got}")
    if ckpt.get("version") != CHECKPOINT_VERSION:
        raise ValueError(
            f"{path} has checkpoint version {ckpt.get('version')!r}, this course_lib reads "
            f"version {CHECKPOINT_VERSION}; update course_lib or re-create the checkpoint"
        )
    if not isinstance(ckpt.get("state_dict"), dict) or not isinstance(ckpt.get("config"), dict):
        raise ValueError(f"{path} is damaged: its 'state_dict' and 'config' must both be dicts")
    return ckpt


def load_model_state(model: nn.Module, ckpt: dict) -> nn.Module:
    """Copy a checkpoint's weights into `model`, naming missing, unexpected and mis-shaped keys."""
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ValueError("load_model_state expects the dict returned by load_checkpoint")
    state, own = ckpt["state_dict"], model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: checkpoint {fmt_shape(state[k].shape)} vs model {fmt_shape(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        problems = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)):
            if items:
                more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
                problems.append(f"{label}: {items[:5]}{more}")
        raise ValueError(
            f"checkpoint does not fit {type(model).__name__}: "
            + "; ".join(problems)
            + f". Was the model built with the checkpoint's config {ckpt.get('config')}?"
        )
    model.load_state_dict(state)
    return model


__all__ = [
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
