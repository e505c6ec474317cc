"""Helpers that keep notebook 02's cells short: how well attention aligns on the reversal task."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..data import CharVocab, make_batch
from ..rnn import Seq2SeqRNN
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
