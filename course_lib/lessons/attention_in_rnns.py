"""Helpers that keep notebook 02's cells short: how well attention aligns on the reversal task."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..data import CharVocab, make_batch
from ..rnn import DotAttention, Seq2SeqRNN
from ..utils import evaluating


@torch.no_grad()
def reverse_alignment_accuracy(
    model: Seq2SeqRNN, pairs: Sequence[Sequence[str]], vocab: CharVocab
) -> float:
    """Fraction of output letters t whose largest attention weight is on source position L-1-t,
    the letter a reversal copies (over the first L output steps of every pair)."""
    with evaluating(model):
        src = make_batch(pairs, vocab).src  # (B, L_s)
        L_max = max(len(p[0]) for p in pairs)
        _, weights = model.greedy_decode(src, L_max + 1, vocab.bos_id, vocab.eos_id, True)
    if weights is None:
        raise ValueError("the model has no attention to read alignments from")
    hits = total = 0
    for b, (text, _) in enumerate(pairs):
        L = len(text)
        steps = min(L, weights.shape[1])
        looked = weights[b, :steps].argmax(-1)  # (steps,)
        hits += int((looked == torch.arange(L - 1, L - 1 - steps, -1)).sum())
        total += L
    return hits / total


class LuongDecoderStep(nn.Module):
    """One decoder step in Luong's order (no input feeding): the GRU steps first, the new state
    queries the encoder states ("general" score), and tanh(W_c [c_t; s_t]) feeds the output."""

    def __init__(self, vocab_size: int, emb: int, hidden: int, key_dim: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, emb)
        self.cell = nn.GRUCell(emb, hidden)  # the input is the letter alone: no context
        self.attn = DotAttention(hidden, key_dim, "general")
        self.W_c = nn.Linear(key_dim + hidden, hidden, bias=False)
        self.out = nn.Linear(hidden, vocab_size)

    def forward(self, y_prev, s_prev, states, mask=None):
        """y_prev (B,), s_prev (B, H), states (B, L, K) -> (logits (B, V), s_t (B, H), weights (B, L))."""
        s = self.cell(self.embed(y_prev), s_prev)  # (B, H): step first ...
        context, weights = self.attn(s, states, mask)  # ... then attend with the *new* state
        h_tilde = torch.tanh(self.W_c(torch.cat([context, s], dim=-1)))  # (B, H)
        return self.out(h_tilde), s, weights


@torch.no_grad()
def what_changes(
    step: Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    y_prev: torch.Tensor,
    y_other: torch.Tensor,
    s_prev: torch.Tensor,
    states: torch.Tensor,
    mask: torch.Tensor | None = None,
) -> dict[tuple[str, str], bool]:
    """Which outputs of one decoder step move when the last letter or the encoder states change.

    `step(y_prev, s_prev, states, mask) -> (logits, new state, weights)`; `y_other` (B,) holds
    other letters than y_prev. Returns
    {(changed input, output): moved?} for inputs "last letter" and "encoder states" and outputs
    "weights" and "new state".
    """
    _, s0, w0 = step(y_prev, s_prev, states, mask)
    g = torch.Generator().manual_seed(0)
    moved_states = states + torch.randn(states.shape, generator=g)
    result = {}
    for name, args in [
        ("last letter", (y_other, s_prev, states, mask)),
        ("encoder states", (y_prev, s_prev, moved_states, mask)),
    ]:
        _, s1, w1 = step(*args)
        result[name, "weights"] = not torch.allclose(w0, w1, atol=1e-6)
        result[name, "new state"] = not torch.allclose(s0, s1, atol=1e-6)
    return result
