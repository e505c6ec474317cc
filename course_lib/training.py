"""Training and evaluating sequence-to-sequence models: the loss, `fit`'s adapter, exact match.

The contract a model follows (the RNNs of notebooks 01-02 and the Transformer of notebook 09):

    model(src, tgt_in) -> logits                       # (B, L_s), (B, L_t) -> (B, L_t, V)
    model.greedy_decode(src, max_len, bos_id, eos_id)  # -> (B, <= max_len) ids, no BOS,
                                                       #    ending at EOS, PAD after it
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .data import Batch, CharVocab, batch_iterator, make_batch
from .fit import FitConfig, History, fit, model_device, step_update
from .utils import evaluating, fmt_shape

# ----------------------------------------------------------------------------- loss


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


# ----------------------------------------------------------------------------- seq2seq adapter


def seq2seq_loss(
    model: nn.Module,
    batch: Batch,
    pad_id: int = CharVocab.pad_id,
    label_smoothing: float = 0.0,
    loss_tokens: float | None = None,
) -> torch.Tensor:
    """model(src, tgt_in) against tgt_out: the mean over non-PAD tokens, or sum / loss_tokens."""
    batch = batch.to(model_device(model))
    logits = model(batch.src, batch.tgt_in)  # (B, L_t, V)
    B, L_t = batch.tgt_out.shape
    if not isinstance(logits, torch.Tensor) or logits.dim() != 3 or logits.shape[:2] != (B, L_t):
        got = fmt_shape(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(
            f"model(src, tgt_in) should return logits of shape (B, L_t, V) = ({B}, {L_t}, V), "
            f"got {got}; one prediction per decoder input position is expected"
        )
    if loss_tokens is None:
        return sequence_loss(logits, batch.tgt_out, pad_id, label_smoothing)
    return sequence_loss(logits, batch.tgt_out, pad_id, label_smoothing, "sum") / loss_tokens


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
    optimizer.zero_grad(set_to_none=True)
    loss = seq2seq_loss(model, batch, pad_id, label_smoothing, loss_tokens)
    return loss.item(), step_update(model, loss, optimizer, scheduler, clip)


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
    """fit with AdamW, warm-up + cosine LR, gradient clipping and PAD-masked cross-entropy.

    Batches come from `batch_iterator(pairs, vocab, batch_size, seed)`; dropout is seeded with
    `seed` inside a forked RNG, so two runs from the same initial weights give identical losses
    and the caller's global random state is left untouched. `warmup` is capped at steps // 2.
    Exact match on `eval_pairs` is measured every `eval_every` steps and after the last step
    (only after the last step if eval_every is 0). `callback(step, history)` runs after each step.
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if eval_every > 0 and eval_pairs is None:
        raise ValueError(f"eval_every={eval_every} needs eval_pairs to evaluate on")
    if not callable(getattr(model, "greedy_decode", None)) and eval_pairs is not None:
        raise ValueError("evaluation needs model.greedy_decode(src, max_len, bos_id, eos_id)")
    config = FitConfig(
        steps, lr, weight_decay, warmup=min(warmup, steps // 2), clip=clip,
        eval_every=eval_every, seed=seed, progress=progress,
    )  # fmt: skip
    evaluate = None
    if eval_pairs is not None:
        evaluate = lambda m: {"eval_acc": exact_match(m, eval_pairs, vocab)}  # noqa: E731
    loss_fn = lambda m, b: seq2seq_loss(m, b, vocab.pad_id, label_smoothing)  # noqa: E731
    batches = batch_iterator(pairs, vocab, batch_size, seed=seed)
    return fit(model, batches, loss_fn, config, evaluate, callback)


# ----------------------------------------------------------------------------- evaluation


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
    device = model_device(model)
    outputs: list[str] = []
    with evaluating(model):
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
    return outputs


def exact_match(
    model: nn.Module,
    pairs: Sequence[Sequence[str]],
    vocab: CharVocab,
    batch_size: int = 512,
    max_len: int | None = None,
) -> float:
    """Fraction of pairs whose greedy output string equals the target exactly."""
    return exact_match_by(model, pairs, vocab, lambda p: "all", batch_size, max_len)["all"]


def exact_match_by(
    model: nn.Module,
    pairs: Sequence[Sequence[str]],
    vocab: CharVocab,
    key_fn: Callable[[Sequence[str]], Hashable],
    batch_size: int = 512,
    max_len: int | None = None,
) -> dict[Hashable, float]:
    """Exact match per group, e.g. key_fn=lambda p: p[2] (date format) or len(p[0]); sorted keys."""
    if len(pairs) == 0:
        raise ValueError("need at least one (source, target) pair to evaluate, got none")
    if max_len is None:
        max_len = max(len(p[1]) for p in pairs) + 1  # room for the EOS
    preds = translate(model, [p[0] for p in pairs], vocab, max_len, batch_size)
    groups: dict[Hashable, list[bool]] = {}
    for p, pred in zip(pairs, preds, strict=True):
        groups.setdefault(key_fn(p), []).append(pred == p[1])
    keys = sorted(groups, key=lambda k: (str(type(k)), k))
    return {k: sum(groups[k]) / len(groups[k]) for k in keys}


__all__ = [
    "exact_match",
    "exact_match_by",
    "sequence_loss",
    "seq2seq_loss",
    "train_seq2seq",
    "train_step",
    "translate",
]
