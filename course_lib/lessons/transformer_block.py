"""Helpers that keep notebook 08's cells short (the transformer block's experiments).

- `SwitchableLayer`: an encoder layer whose residual connections and LayerNorm can be switched
  off or moved (pre-LN, post-LN, none); with both on it is `course_lib.blocks.EncoderLayer`;
- `depth_profiles`: the scale of the activations, of each layer's gradient and the tokens' mean
  pairwise cosine (`mean_cosine`: rank collapse) at initialisation, layer by layer;
- `Tagger` and `train_tagger`: a small encoder (or, causal, a tiny GPT) trained on random tokens;
- `SeqBatchNorm`, `swap_norms` and `train_eval_gap`: BatchNorm for (B, L, D) sequences, put where
  LayerNorm was, and how far its training-mode output is from its eval-mode output;
- `block_symptoms`: two probes of a block function (future leak, rank collapse), for Exercise 8.3;
- pictures: which numbers each norm averages over, which positions a sublayer mixes, profiles.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..attention import MultiHeadAttention
from ..blocks import FeedForward
from ..fit import FitConfig, fit
from ..masks import causal_mask
from ..plots import OKABE_ITO, plot_curves
from ..positional import SinusoidalPositionalEncoding
from ..utils import evaluating, expect_ndim

NORM_PLACES = ("pre", "post", "none")

# ----------------------------------------------------------------------------- a switchable block


class SwitchableLayer(nn.Module):
    """Self-attention then feed-forward; residual on/off, LayerNorm "pre", "post" or "none".

    Attribute names match `course_lib.blocks.EncoderLayer`, so with residual=True and norm
    "pre" or "post" a state_dict copies across and both compute the same function.
    """

    def __init__(
        self, d_model: int, num_heads: int, d_ff: int, residual: bool = True, norm: str = "pre"
    ):
        super().__init__()
        if norm not in NORM_PLACES:
            raise ValueError(f"norm must be one of {NORM_PLACES}, got {norm!r}")
        self.residual, self.norm = residual, norm
        self.self_attn = MultiHeadAttention(d_model, num_heads)
        self.ff = FeedForward(d_model, d_ff)
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)

    def _sublayer(self, x: torch.Tensor, f: Callable, norm: nn.Module) -> torch.Tensor:
        """pre: x + f(LN(x)); post: LN(x + f(x)); none: x + f(x) (without residual: drop the x +)."""
        y = f(norm(x)) if self.norm == "pre" else f(x)  # (B, L, D)
        y = x + y if self.residual else y
        return norm(y) if self.norm == "post" else y

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, L, D) -> (B, L, D)."""
        expect_ndim("x", x, 3, "(B, L, D)")
        attend = lambda h: self.self_attn(h, h, h, mask, need_weights=False)[0]  # noqa: E731
        x = self._sublayer(x, attend, self.norm1)
        return self._sublayer(x, self.ff, self.norm2)


def make_stack(depth: int, residual: bool, norm: str, d_model: int = 64, num_heads: int = 4,
               d_ff: int = 256, gain: float = 1.0, seed: int = 0) -> nn.ModuleList:  # fmt: skip
    """`depth` SwitchableLayers built from `seed`; every Linear weight multiplied by `gain`."""
    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        stack = nn.ModuleList(
            SwitchableLayer(d_model, num_heads, d_ff, residual, norm) for _ in range(depth)
        )
    with torch.no_grad():
        for m in stack.modules():
            if isinstance(m, nn.Linear):
                m.weight.mul_(gain)
    return stack


# ----------------------------------------------------------------------------- depth profiles


def depth_profile(stack: nn.ModuleList, x: torch.Tensor, seed: int = 0) -> dict[str, list[float]]:
    """Push x (B, L, D) through the stack once, forward and backward, and measure every layer.

    Returns "act": the RMS of each token's vector after each layer (index 0 = the input),
    "cos": the tokens' mean_cosine after each layer, and "grad": the norm of the gradient of a
    fixed random read-out of the output with respect to each layer's parameters (index 0 = the
    first layer).
    """
    expect_ndim("x", x, 3, "(B, L, D)")
    g = torch.Generator().manual_seed(seed)
    probe = torch.randn(x.shape, generator=g, dtype=x.dtype)  # fixed read-out: loss = <out, probe>
    stack.zero_grad(set_to_none=True)
    acts, cos, h = [x.pow(2).mean().sqrt().item()], [mean_cosine(x)], x
    for layer in stack:
        h = layer(h)
        acts.append(h.pow(2).mean().sqrt().item())  # RMS over batch, positions and features
        cos.append(mean_cosine(h))
    loss = (h * probe).sum() / math.sqrt(h.numel())
    loss.backward()
    squares = [[p.grad.double().pow(2).sum().item() for p in layer.parameters() if p.grad is not None]
               for layer in stack]  # fmt: skip
    grads = [math.sqrt(sum(sq)) for sq in squares]
    return {"act": acts, "cos": cos, "grad": grads}


def mean_cosine(h: torch.Tensor) -> float:
    """Mean cosine similarity over all pairs of different positions of h (B, L, D), batch-averaged.

    1 means every token vector points the same way: the sequence has collapsed to rank 1.
    """
    u = F.normalize(h.detach(), dim=-1)
    sims = u @ u.transpose(1, 2)  # (B, L, L), ones on the diagonal
    L = h.shape[1]
    return float(((sims.sum((1, 2)) - L) / (L * (L - 1))).mean())


def depth_profiles(configs: dict[str, tuple[bool, str]], depth: int = 24, gain: float = 1.0,
                   batch: int = 4, length: int = 16, d_model: int = 32,
                   seed: int = 0) -> dict[str, dict[str, list[float]]]:  # fmt: skip
    """depth_profile for each named (residual, norm) configuration: same input, same seed.

    Runs in float64, so exploding or vanishing scales are measured instead of overflowing.
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, length, d_model, generator=g, dtype=torch.float64)  # unit scale
    profiles = {}
    for name, (residual, norm) in configs.items():
        stack = make_stack(depth, residual, norm, d_model, 4, 4 * d_model, gain, seed).double()
        profiles[name] = depth_profile(stack, x, seed)
    return profiles


def plot_profiles(profiles: dict[str, dict[str, list[float]]], quantity: str = "act",
                  title: str | None = None, ax: plt.Axes | None = None,
                  mark_layer: int | None = None) -> plt.Axes:  # fmt: skip
    """Activation RMS ("act", after each layer) or gradient norm ("grad", per layer) vs depth."""
    if quantity not in ("act", "grad"):
        raise ValueError(f"quantity must be 'act' or 'grad', got {quantity!r}")
    ys = {name: p[quantity] for name, p in profiles.items()}
    n = len(next(iter(ys.values())))
    first = 0 if quantity == "act" else 1  # activations start with the input (layer 0)
    labels = {
        "act": ("layer (0 = the input)", "RMS of the token vectors", "Activation scale"),
        "grad": ("layer", "gradient norm of the layer's weights", "Gradient reaching each layer"),
    }[quantity]
    ax = plot_curves(range(first, first + n), ys, labels[0], labels[1], title or labels[2],
                     logy=True, ax=ax)  # fmt: skip
    if mark_layer is not None:
        ax.axvline(mark_layer, color="0.5", linestyle=":", linewidth=1.2)
    return ax


# ----------------------------------------------------------------------------- a tagger and two tasks


class Tagger(nn.Module):
    """Embedding + sinusoidal positions + SwitchableLayers + a linear read-out per position.

    Like `course_lib.models.EncoderTagger`, but its layers can drop the residual or move or
    remove the LayerNorm, and with causal=True each position sees only itself and earlier ones
    (a tiny GPT).
    """

    def __init__(self, vocab_size: int, d_model: int = 32, num_heads: int = 2, d_ff: int = 64,
                 num_layers: int = 8, residual: bool = True, norm: str = "pre",
                 causal: bool = False, max_len: int = 64):  # fmt: skip
        super().__init__()
        self.d_model, self.causal = d_model, causal
        self.embed = nn.Embedding(vocab_size, d_model)
        nn.init.normal_(self.embed.weight, std=d_model**-0.5)  # unit scale after * sqrt(D)
        self.pos = SinusoidalPositionalEncoding(d_model, max_len)
        self.layers = nn.ModuleList(
            SwitchableLayer(d_model, num_heads, d_ff, residual, norm) for _ in range(num_layers)
        )
        # pre-LN leaves the residual stream un-normalised: normalise once before the read-out
        self.final_norm = nn.LayerNorm(d_model) if norm == "pre" else nn.Identity()
        self.head = nn.Linear(d_model, vocab_size)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, L) -> logits (B, L, V)."""
        expect_ndim("tokens", tokens, 2, "(B, L) of token ids")
        mask = causal_mask(tokens.shape[1], tokens.device) if self.causal else None
        x = self.pos(self.embed(tokens) * math.sqrt(self.d_model))  # (B, L, D)
        for layer in self.layers:
            x = layer(x, mask)
        return self.head(self.final_norm(x))  # (B, L, V)


TASKS = ("reverse", "next")


def task_batch(
    task: str, batch: int, length: int, vocab_size: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs (B, L), targets (B, L)) of uniformly random tokens.

    "reverse": position i must output input token L-1-i (solvable exactly);
    "next": position i must output the *next* random token, which nothing in the input (at
    positions <= i) predicts, so the best honest loss is ln(vocab_size).
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if task == "reverse":
        x = torch.randint(0, vocab_size, (batch, length), generator=gen)
        return x, x.flip(1)
    x = torch.randint(0, vocab_size, (batch, length + 1), generator=gen)
    return x[:, :-1], x[:, 1:]


def _mean_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    """Cross-entropy over (x, y) fed to the model in chunks of batch_size, without gradients."""
    with torch.no_grad():
        losses = [
            F.cross_entropy(
                model(x[i : i + batch_size]).flatten(0, 1), y[i : i + batch_size].flatten()
            )
            for i in range(0, len(x), batch_size)
        ]
    return float(torch.stack(losses).mean())


def train_tagger(model: nn.Module, steps: int, task: str = "reverse", batch_size: int = 64,
                 length: int = 8, vocab_size: int = 10, lr: float = 1e-3, warmup: int = 0,
                 clip: float | None = 1.0, seed: int = 0,
                 eval_size: int = 512) -> dict[str, list[float] | float]:  # fmt: skip
    """fit with Adam (AdamW, no decay): linear warm-up over `warmup` steps, then a constant LR,
    clipping at `clip`, on fresh batches of `task`. The model is left in eval mode.

    Returns "loss" (one per step) and, on eval_size held-out sequences: "acc" and "eval_loss"
    in eval mode, and "train_mode_loss" in training mode with batches of batch_size (these
    differ only for a model whose output depends on the batch, such as one with BatchNorm).
    """
    config = FitConfig(steps, lr, weight_decay=0.0, warmup=warmup, schedule="constant", clip=clip,
                       seed=None, progress=False)  # fmt: skip
    gen = torch.Generator().manual_seed(seed)
    held_out = torch.Generator().manual_seed(10_000 + seed)
    x_eval, y_eval = task_batch(task, eval_size, length, vocab_size, held_out)
    batches = iter(lambda: task_batch(task, batch_size, length, vocab_size, gen), None)
    loss_fn = lambda m, xy: F.cross_entropy(m(xy[0]).flatten(0, 1), xy[1].flatten())  # noqa: E731
    losses = fit(model, batches, loss_fn, config).loss
    with evaluating(model):
        acc = (model(x_eval).argmax(-1) == y_eval).float().mean().item()
        eval_loss = _mean_loss(model, x_eval, y_eval, eval_size)
    # batch statistics, as during training (this also moves BatchNorm's running averages)
    train_mode_loss = _mean_loss(model.train(), x_eval, y_eval, batch_size)
    model.eval()
    return {"loss": losses, "acc": acc, "eval_loss": eval_loss, "train_mode_loss": train_mode_loss}


# ----------------------------------------------------------------------------- BatchNorm for sequences


class SeqBatchNorm(nn.Module):
    """BatchNorm for (B, L, D): one mean and variance per feature, over all B * L positions.

    In training mode it uses the statistics of the current batch (PAD positions and the other
    sequences included) and updates running averages; in eval mode it uses those averages.
    """

    def __init__(self, d_model: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.bn = nn.BatchNorm1d(d_model, eps=eps, momentum=momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, L, D) -> (B, L, D)."""
        expect_ndim("x", x, 3, "(B, L, D)")
        return self.bn(x.transpose(1, 2)).transpose(1, 2)  # BatchNorm1d wants (B, D, L)


def swap_norms(model: nn.Module, make: Callable[[int], nn.Module] = SeqBatchNorm) -> int:
    """Replace every nn.LayerNorm inside `model` by make(d_model), in place; return how many."""
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.LayerNorm):
                setattr(parent, name, make(child.normalized_shape[-1]))
                swapped += 1
    return swapped


def train_eval_gap(norm: nn.Module, make_input: Callable[[list[str]], torch.Tensor],
                   texts: Sequence[str], batch_size: int, warm_steps: int = 100, probes: int = 20,
                   seed: int = 0) -> float:  # fmt: skip
    """How differently `norm` treats the same batch in training mode and in eval mode.

    Runs `warm_steps` training-mode passes over random batches of `batch_size` texts (which sets
    BatchNorm's running averages), then returns the mean over `probes` fresh batches of
    ||train-mode output - eval-mode output|| / ||eval-mode output||. make_input(texts) -> (B, L, D).
    """
    gen = torch.Generator().manual_seed(seed)

    def sample() -> torch.Tensor:
        idx = torch.randint(0, len(texts), (batch_size,), generator=gen).tolist()
        return make_input([texts[i] for i in idx])  # (B, L, D)

    gaps = []
    with torch.no_grad():
        norm.train()
        for _ in range(warm_steps):
            norm(sample())
        for _ in range(probes):
            x = sample()
            norm.eval()
            reference = norm(x)  # running averages
            norm.train()
            gaps.append(float((norm(x) - reference).norm() / reference.norm()))
    norm.eval()
    return sum(gaps) / len(gaps)


def block_symptoms(block: Callable[..., torch.Tensor], depth: int = 12, seed: int = 0):
    """Two probes of block(x, attn, ff, g1, b1, g2, b2, mask) -> (B, L, D), a causal block.

    "leak": how far one block's outputs at positions 0..L-2 move when only the last input
    changes (0 for a causal block); "cosine": mean_cosine of the tokens after a stack of
    `depth` such blocks at initialisation (near 1: every token points the same way).
    """
    D, L = 16, 6
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        parts = [(MultiHeadAttention(D, 2), FeedForward(D, 4 * D)) for _ in range(depth)]
        x = torch.randn(2, L, D)  # (B, L, D)
    ones, zeros, mask = torch.ones(D), torch.zeros(D), causal_mask(L)

    def run(h: torch.Tensor, n: int) -> torch.Tensor:
        for mha, ff in parts[:n]:
            attn = lambda q, k, v, m, mha=mha: mha(q, k, v, m, need_weights=False)[0]  # noqa: E731
            h = block(h, attn, ff, ones, zeros, ones, zeros, mask)
        return h

    changed = x.clone()
    changed[:, -1] += 1.0  # only the last position differs
    with torch.no_grad():
        leak = (run(x, 1) - run(changed, 1))[:, :-1].abs().max().item()
        return {"leak": leak, "cosine": mean_cosine(run(x, depth))}


# ----------------------------------------------------------------------------- pictures


def position_dependence(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """(L, L) matrix: entry [i, j] = ||d f(x)[i] / d x[j]||, for x (L, D) and f (L, D) -> (L, D)."""
    expect_ndim("x", x, 2, "(L, D)")
    jac = torch.autograd.functional.jacobian(f, x)  # (L, D, L, D)
    return jac.pow(2).sum(dim=(1, 3)).sqrt()  # (L, L)


def plot_norm_axes(
    lengths: Sequence[int] = (5, 3, 4), d_model: int = 6, token: int = 1, feature: int = 2
):
    """Which numbers of a padded batch each norm averages over: LayerNorm vs BatchNorm.

    Rows are the B * L positions (sentence by sentence, PAD rows included), columns the features.
    """
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    B, L = len(lengths), max(lengths)
    pad = np.zeros((B * L, d_model))  # 1 where the row is a PAD position
    for b, n in enumerate(lengths):
        pad[b * L + n : (b + 1) * L] = 1
    colours = ["#DDDDDD", "#888888", OKABE_ITO[0], OKABE_ITO[1]]  # real, PAD, group, PAD in group
    fig, axes = plt.subplots(1, 2, figsize=(8.0, 4.2), sharey=True, layout="constrained")
    for ax, name in zip(axes, ("LayerNorm", "BatchNorm"), strict=True):
        group = np.zeros_like(pad)
        if name == "LayerNorm":
            group[token, :] = 1  # one token's own feature vector
        else:
            group[:, feature] = 1  # one feature, over every position of every sentence
        ax.imshow(pad + 2 * group, cmap=ListedColormap(colours), vmin=-0.5, vmax=3.5, aspect="auto")
        ax.grid(False)
        for b in range(1, B):
            ax.axhline(b * L - 0.5, color="black", linewidth=1.5)
        ax.set_xticks(range(d_model))
        ax.set_yticks(
            [b * L + (L - 1) / 2 for b in range(B)], [f"sentence {b + 1}" for b in range(B)]
        )
        ax.set_xlabel("feature (d_model axis)")
        what = (
            "one token, all its features" if name == "LayerNorm" else "one feature, all positions"
        )
        ax.set_title(f"{name}: mean and variance over\n{what}")
    axes[0].set_ylabel("position in the batch (B × L rows)")
    labels = ["real token", "PAD", "averaged together", "PAD, averaged in"]
    handles = [Patch(color=c, label=lab) for c, lab in zip(colours, labels, strict=True)]
    fig.legend(handles=handles, loc="lower center", ncols=4)
    fig.get_layout_engine().set(rect=(0, 0.08, 1, 0.92))
    return fig
