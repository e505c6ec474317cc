"""Helpers that keep notebook 09's cells short: step through decoding, score whole outputs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from ..blocks import recording_attention
from ..data import CharVocab
from ..models import Transformer
from ..plots import to_numpy
from ..utils import evaluating


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
