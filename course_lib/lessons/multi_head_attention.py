"""Helpers that keep notebook 04's cells short (what trained heads learn, and how to test it).

- `first_and_previous`: the tagging task of section 7 (label = first letter and previous letter);
- `train_tagger` and `tagger_accuracy`: a thin adapter over `fit` for an `EncoderTagger` on that
  task, and its accuracy on each half of the label (notebook 05 reuses both);
- `ablated_heads` and `head_means`: switch heads off, by zeroing their output (zero-ablation) or
  by replacing it with its mean over a reference batch (mean-ablation).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from ..fit import FitConfig, History, fit
from ..utils import evaluating


def first_and_previous(
    n: int, gen: torch.Generator, seq_len: int = 8, num_letters: int = 4
) -> tuple[torch.Tensor, torch.Tensor]:
    """n sequences of letter ids (n, seq_len) and labels (n, seq_len): first * K + previous.

    Position 0 has no previous letter; its label is -100, which `F.cross_entropy` ignores.
    """
    if seq_len < 2 or num_letters < 2:
        raise ValueError(f"need seq_len >= 2 and num_letters >= 2, got {seq_len}, {num_letters}")
    x = torch.randint(0, num_letters, (n, seq_len), generator=gen)  # (n, L) letter ids
    y = x[:, :1] * num_letters + torch.roll(x, 1, dims=1)  # class = first * K + previous
    y[:, 0] = -100
    return x, y


def train_tagger(
    model: nn.Module,
    steps: int,
    data_seed: int = 0,
    lr: float = 3e-3,
    batch_size: int = 64,
    seq_len: int = 8,
    num_letters: int = 4,
    eval_data: tuple[torch.Tensor, torch.Tensor] | None = None,
    eval_every: int = 0,
    progress: bool = False,
) -> History:
    """Adam (AdamW without weight decay), constant LR, no clipping, no warm-up: `steps` fresh
    batches of `first_and_previous` drawn from a generator seeded with `data_seed`.

    With `eval_data` (x, y), the accuracy on both halves of the label is recorded in
    `history.eval_acc` every `eval_every` steps (0: after the last step only).
    """
    gen = torch.Generator().manual_seed(data_seed)
    batches = iter(lambda: first_and_previous(batch_size, gen, seq_len, num_letters), None)

    def loss_fn(m: nn.Module, xy: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(m(xy[0]).flatten(0, 1), xy[1].flatten())

    config = FitConfig(steps, lr, weight_decay=0.0, schedule="constant", eval_every=eval_every,
                       seed=None, progress=progress)  # fmt: skip
    evaluate = None
    if eval_data is not None:
        evaluate = lambda m: {"eval_acc": tagger_accuracy(m, *eval_data, num_letters)[0]}  # noqa: E731
    return fit(model, batches, loss_fn, config, evaluate)


def tagger_accuracy(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, num_letters: int = 4
) -> tuple[float, float, float]:
    """(both halves, first letter, previous letter) accuracy over positions 1 .. L-1."""
    with evaluating(model), torch.no_grad():
        pred, true = model(x).argmax(-1)[:, 1:], y[:, 1:]
    K = num_letters
    both = (pred == true).float().mean().item()
    first = (pred // K == true // K).float().mean().item()
    prev = (pred % K == true % K).float().mean().item()
    return both, first, prev


def _check_head(attn: nn.Module, head: int) -> None:
    if not 0 <= head < attn.num_heads:
        raise ValueError(f"head {head} does not exist: this layer has {attn.num_heads}")


@torch.no_grad()
def head_means(attn: nn.Module, run: Callable[[], object]) -> torch.Tensor:
    """The mean over the batch of what `attn` hands to w_o while `run()` runs: (L, D).

    `run` calls the model on a reference batch; the heads' outputs, side by side before the
    output projection, are averaged over that batch, position by position.
    """
    seen: list[torch.Tensor] = []
    hook = attn.w_o.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    try:
        run()
    finally:
        hook.remove()
    if not seen:
        raise ValueError("run() never called this attention module")
    return torch.cat(seen).mean(dim=0)  # (L, D)


@contextmanager
def ablated_heads(
    heads: list[tuple[nn.Module, int]], means: dict[int, torch.Tensor] | None = None
) -> Iterator[None]:
    """Within the block, each (attention module, head) pair is switched off.

    Zero-ablation (default): the head's d_k outputs are set to 0 just before the output
    projection w_o, so the other heads (and the w_o bias) are untouched. Mean-ablation: with
    `means` mapping id(attention module) to its `head_means` (L, D), the head's outputs are
    replaced by their mean over a reference batch instead — the head then carries no
    information about *this* input but keeps its typical size. Works for
    `course_lib.attention.MultiHeadAttention`.
    """
    hooks = []
    try:
        for attn, head in heads:
            _check_head(attn, head)
            cols = slice(head * attn.d_k, (head + 1) * attn.d_k)
            mean = None if means is None else means[id(attn)]

            def switch_off(module: nn.Module, args: tuple, cols=cols, mean=mean) -> tuple:
                merged = args[0].clone()  # (B, L, D): the heads side by side, before w_o
                L = merged.shape[1]
                merged[..., cols] = 0.0 if mean is None else mean[:L, cols]
                return (merged, *args[1:])

            hooks.append(attn.w_o.register_forward_pre_hook(switch_off))
        yield
    finally:
        for hook in hooks:
            hook.remove()
