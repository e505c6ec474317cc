"""Helpers that keep notebook 09's cells short: step through decoding, score whole outputs,
short runs of the date recipe, attention by head and by date field."""

from __future__ import annotations

import datetime as dt
import string
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from ..blocks import recording_attention
from ..data import DATE_FORMATS, CharVocab, _parts, batch_iterator
from ..date_recipe import DATE_TRAINING, build_date_model
from ..fit import FitConfig, History, fit
from ..models import Transformer
from ..plots import plot_attention, to_numpy
from ..sampling import Hypothesis, beam_search, gnmt_length_penalty
from ..training import seq2seq_loss
from ..utils import evaluating
from ..widgets import Explorer, dropdown, slider


class DecodingStep(NamedTuple):
    """What the decoder saw and predicted at one greedy step."""

    step: int  # 0 for the first output token
    prefix: list[str]  # the decoder input so far: <bos> + earlier outputs
    top_tokens: list[str]  # the k most likely next tokens, best first
    top_probs: list[float]  # their probabilities
    chosen: str  # the greedy choice (top_tokens[0])
    cross: torch.Tensor  # (layers, H, L_s): the newest position's cross-attention


@torch.no_grad()
def decoding_steps(
    model: Transformer, vocab: CharVocab, source: str, max_len: int = 32, top_k: int = 5
) -> list[DecodingStep]:
    """Greedy-decode one source step by step, keeping each step's top-k and cross-attention."""
    if not source:
        raise ValueError("source must be a non-empty string")
    src = torch.tensor([vocab.encode(source)])  # (1, L_s)
    ys = [vocab.bos_id]
    steps: list[DecodingStep] = []
    with evaluating(model):
        memory = model.encode(src)  # (1, L_s, D)
        with recording_attention(model):
            for step in range(max_len):
                logits = model.decode(torch.tensor([ys]), memory, src)[0, -1]  # (V,)
                probs, ids = logits.softmax(-1).topk(min(top_k, logits.shape[-1]))
                cross = torch.stack([layer.cross_attn_weights[0, :, -1] for layer in model.decoder])
                tokens = vocab.ids_to_tokens(ids)
                steps.append(
                    DecodingStep(
                        step, vocab.ids_to_tokens(ys), tokens, probs.tolist(), tokens[0], cross
                    )
                )
                ys.append(int(ids[0]))
                if ys[-1] == vocab.eos_id:
                    break
    return steps


def display_tokens(tokens: Sequence[str]) -> list[str]:
    """Token labels for plots: a space becomes '␣' so that it stays visible on an axis."""
    return ["␣" if t == " " else t for t in tokens]


def plot_decoding_step(step: DecodingStep, src_tokens: Sequence[str], layer: int = -1) -> Figure:
    """One greedy step: where the newest position reads the source, and its top-k next tokens."""
    weights = to_numpy(step.cross[layer].mean(dim=0))  # (L_s,): the heads averaged
    if weights.shape[0] != len(src_tokens):
        raise ValueError(
            f"{len(src_tokens)} source tokens for cross-attention over {weights.shape[0]} keys"
        )
    fig, (ax_src, ax_top) = plt.subplots(1, 2, figsize=(10.0, 3.2), width_ratios=(2.4, 1.0))
    x = np.arange(len(src_tokens))
    ax_src.bar(x, weights, color="C0")
    ax_src.set_xticks(x, display_tokens(src_tokens))
    ax_src.set_ylim(0.0, 1.0)
    ax_src.set_xlabel("source character (key)")
    ax_src.set_ylabel("cross-attention weight")
    n_layers = step.cross.shape[0]
    written = "".join(step.prefix[1:])
    ax_src.set_title(
        f"Step {step.step}: after {written!r}, the decoder reads "
        f"(layer {layer % n_layers}, mean of heads)"
    )
    y = np.arange(len(step.top_tokens))[::-1]  # best on top
    ax_top.barh(y, step.top_probs, color="C1")
    ax_top.set_yticks(y, display_tokens(step.top_tokens))
    ax_top.set_xlim(0.0, 1.0)
    ax_top.set_xlabel("probability")
    ax_top.set_ylabel("next token")
    ax_top.set_title(f"Top {len(step.top_tokens)} next tokens")
    return fig


@torch.no_grad()
def sequence_log_prob(
    model: Transformer, src: torch.Tensor, out: torch.Tensor, bos_id: int, eos_id: int
) -> torch.Tensor:
    """(B,) log p(out | src): summed over each row's tokens up to and including its first EOS.

    `out` (B, L) is what greedy_decode or beam_search return (no BOS, PAD after EOS).
    """
    if out.dim() != 2 or src.dim() != 2 or out.shape[0] != src.shape[0]:
        raise ValueError(
            f"src and out must be (B, L_s) and (B, L) with the same B, got {tuple(src.shape)} "
            f"and {tuple(out.shape)}"
        )
    with evaluating(model):
        tgt_in = torch.cat([torch.full_like(out[:, :1], bos_id), out[:, :-1]], dim=1)  # (B, L)
        log_probs = model(src, tgt_in).log_softmax(-1)  # (B, L, V)
    picked = log_probs.gather(-1, out[..., None])[..., 0]  # (B, L)
    is_eos = (out == eos_id).long()
    before_end = (is_eos.cumsum(dim=1) - is_eos) == 0  # no EOS earlier in the row
    keep = before_end & (out != model.pad_id)  # (B, L)
    return (picked * keep).sum(dim=1)  # (B,)


# ----------------------------------------------------------------------------- beam search


def next_token_log_probs(
    model: Transformer, src: torch.Tensor, bos_id: int
) -> Callable[[torch.Tensor], torch.Tensor]:
    """step_fn(prefixes (k, t)) -> (k, V) log-probs of the next token, for one source (1, L_s).

    The source is encoded once; each call re-reads BOS + every prefix (no cache).
    """
    with torch.no_grad(), evaluating(model):
        memory = model.encode(src)  # (1, L_s, D)

    @torch.no_grad()
    def step_fn(prefixes: torch.Tensor) -> torch.Tensor:
        k = prefixes.shape[0]
        tgt_in = torch.cat([torch.full((k, 1), bos_id, dtype=torch.long), prefixes], dim=1)
        with evaluating(model):
            logits = model.decode(tgt_in, memory.expand(k, -1, -1), src.expand(k, -1))
        return logits[:, -1].log_softmax(dim=-1)  # (k, V)

    return step_fn


def beam_hypotheses(
    model: Transformer, src: torch.Tensor, max_len: int, bos_id: int, eos_id: int, beam_size: int
) -> list[list[Hypothesis]]:
    """Every hypothesis `sampling.beam_search` keeps, for each source row of src (B, L_s).

    The length penalty plays no part in which hypotheses are kept, only in how they are
    ranked, so best_hypotheses can rank one search under any alpha.
    """
    found = []
    for i in range(src.shape[0]):
        step_fn = next_token_log_probs(model, src[i : i + 1], bos_id)
        found.append(beam_search(lambda p, parents, f=step_fn: f(p), max_len, eos_id, beam_size))
    return found


def best_hypotheses(found: list[list[Hypothesis]], alpha: float, pad_id: int) -> torch.Tensor:
    """(B, T) ids of each row's winner under length penalty alpha, PAD after it (the format of
    Transformer.beam_search): finished hypotheses first, by log p / ((5 + |y|) / 6) ** alpha."""

    def rank(h: Hypothesis) -> tuple[bool, float]:
        return h.finished, h.log_prob / gnmt_length_penalty(len(h.tokens), alpha)

    best = [max(hyps, key=rank).tokens for hyps in found]
    out = torch.full((len(best), max(map(len, best))), pad_id, dtype=torch.long)
    for i, tokens in enumerate(best):
        out[i, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
    return out


# ----------------------------------------------------------------------------- short runs


class _Stop(Exception):
    """Raised by recipe_start's callback to end fit early."""


def recipe_start(
    pairs: Sequence[Sequence[str]],
    vocab: CharVocab,
    steps: int,
    seed: int,
    warmup: int = DATE_TRAINING["warmup"],
    total: int = 800,
    **model_overrides: Any,
) -> list[float]:
    """The training losses of the first `steps` steps of the `total`-step date recipe.

    train_seq2seq's AdamW, clipping and schedule (warm-up over `warmup` steps, cosine decay to 0
    at `total`), stopped after `steps`; the model is DATE_MODEL | model_overrides initialised
    from `seed`, and the batches are drawn with `seed` (seed 0 repeats notebook 09's run).
    """
    model = build_date_model(vocab, seed, **model_overrides)
    lr, decay, clip = (DATE_TRAINING[k] for k in ("lr", "weight_decay", "clip"))
    config = FitConfig(total, lr, decay, warmup=warmup, clip=clip, seed=seed, progress=False)
    batches = batch_iterator(pairs, vocab, DATE_TRAINING["batch_size"], seed=seed)
    losses: list[float] = []

    def stop_after(step: int, history: History) -> None:
        losses.append(history.loss[-1])
        if step + 1 == steps:
            raise _Stop

    try:
        fit(model, batches, lambda m, b: seq2seq_loss(m, b, vocab.pad_id), config, None, stop_after)
    except _Stop:
        pass
    return losses


# ----------------------------------------------------------------------------- attention views


def most_focused_head(weights: torch.Tensor) -> tuple[int, int]:
    """(layer, head) whose rows have the lowest mean entropy: weights (layers, H, L_q, L_k)."""
    entropy = -(weights * weights.clamp_min(1e-12).log()).sum(dim=-1).mean(dim=-1)  # (layers, H)
    flat = int(entropy.argmin())
    return flat // weights.shape[1], flat % weights.shape[1]


def head_explorer(
    weights: torch.Tensor, q_labels: list[str], k_labels: list[str], title: str
) -> Explorer:
    """One full-size attention panel with a layer slider and a head menu ("mean" averages the
    heads); it opens on the most focused head, the picture a static export keeps."""
    layer0, head0 = most_focused_head(weights)
    n_layers, n_heads = weights.shape[:2]

    def render(layer: int, head: Any) -> None:
        w = weights[layer].mean(dim=0) if head == "mean" else weights[layer, head]
        side = 0.28 * max(len(q_labels), len(k_labels)) + 1.5
        _, ax = plt.subplots(figsize=(side + 1.2, side * len(q_labels) / len(k_labels) + 0.6))
        plot_attention(w, q_labels, k_labels, f"{title}: layer {layer}, head {head}", ax=ax)
        plt.show()

    controls = {
        "layer": slider("layer", 0, n_layers - 1, 1, layer0),
        "head": dropdown("head", ["mean", *range(n_heads)], head0),
    }
    return Explorer(controls, render, title)


FIELDS = ("year", "month", "day")
_FIELD_OF = {
    **dict.fromkeys(("D", "DD", "Dth"), "day"),
    **dict.fromkeys(("M", "MM", "month", "Month", "MONTH", "mon", "Mon", "MON"), "month"),
    **dict.fromkeys(("YYYY", "YY"), "year"),
}


def source_fields(source: str, target: str, fmt: str) -> list[str]:
    """The field of every source character: 'year', 'month', 'day' or 'other' (weekday, words,
    separators), read off the format's template for the date `target` (ISO)."""
    if fmt not in DATE_FORMATS:
        raise ValueError(f"unknown date format {fmt!r}; choose one of {list(DATE_FORMATS)}")
    parts = _parts(dt.date.fromisoformat(target))
    labels, text = [], ""
    for literal, name, _, _ in string.Formatter().parse(DATE_FORMATS[fmt]):
        value = parts[name] if name is not None else ""
        labels += ["other"] * len(literal) + [_FIELD_OF.get(name or "", "other")] * len(value)
        text += literal + value
    if text != source:
        raise ValueError(f"{source!r} is not {target} written as {fmt!r}")
    return labels


def output_fields(n: int) -> list[str]:
    """The field each of the first n ISO output positions writes: YYYY-MM-DD, then EOS."""
    return (["year"] * 4 + ["other"] + ["month"] * 2 + ["other"] + ["day"] * 2 + ["other"])[:n]


def field_attention(
    cross: torch.Tensor, out_fields: list[str], src_fields: list[str]
) -> torch.Tensor:
    """(3, 4): for each output field (year, month, day), the cross-attention weight on each
    source field (year, month, day, other), summed over the field's characters and averaged
    over the output positions that write it. cross: (L_t, L_s), one layer, heads averaged."""
    cols = [*FIELDS, "other"]
    out = torch.zeros(len(FIELDS), len(cols))
    for i, f in enumerate(FIELDS):
        rows = [t for t, x in enumerate(out_fields) if x == f]
        for j, g in enumerate(cols):
            keys = [s for s, x in enumerate(src_fields) if x == g]
            if rows and keys:
                out[i, j] = cross[rows][:, keys].sum(dim=-1).mean()
    return out


def smoothed_targets(targets: torch.Tensor, V: int, eps: float) -> torch.Tensor:
    """(L, V) label-smoothed target distributions q = (1 - eps) one_hot + eps / V for ids (L,)."""
    return (1 - eps) * torch.nn.functional.one_hot(targets, V).double() + eps / V
