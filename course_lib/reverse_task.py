"""The reverse task of notebooks 01-02: a GRU encoder-decoder learns to reverse strings.

Reversal needs every input letter, in order, so it shows the last-state bottleneck cleanly:
`reverse_experiment` trains `Seq2SeqRNN` with or without attention and scores it by length;
the other helpers score output positions and read the alignments attention learned.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .data import CharVocab, make_batch, reverse_pairs
from .rnn import Seq2SeqRNN
from .training import exact_match_by, train_seq2seq, translate

REVERSE_ALPHABET = "abcdefghij"


def reverse_vocab() -> CharVocab:
    """The vocabulary of the reverse task: PAD, BOS, EOS, UNK and the letters a-j."""
    return CharVocab(REVERSE_ALPHABET)


def reverse_test_pairs(lengths: Sequence[int], n_per_length: int = 100, seed: int = 10_000):
    """n_per_length fresh (source, reversed) pairs at each length, for accuracy by length."""
    pairs = []
    for length in lengths:
        pairs += reverse_pairs(n_per_length, length, length, seed=seed + length)
    return pairs


def reverse_experiment(
    attention: str | None = None,
    bidirectional: bool = False,
    steps: int = 400,
    max_len: int = 16,
    hidden: int = 64,
    batch_size: int = 64,
    lr: float = 3e-3,
    n_train: int = 20_000,
    seed: int = 0,
    eval_lengths: Sequence[int] | None = None,
    progress: bool = False,
):
    """Train Seq2SeqRNN on reversing strings of length 1..max_len; -> (model, history, acc).

    acc maps each length in eval_lengths (default 2, 4, ..., max_len) to exact-match accuracy
    on 100 unseen strings. The same arguments give the same numbers (notebooks 01 and 02 share it).
    """
    vocab = reverse_vocab()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Seq2SeqRNN(
            len(vocab), emb=32, hidden=hidden, attention=attention,
            bidirectional_encoder=bidirectional, pad_id=vocab.pad_id,
        )  # fmt: skip
    train = reverse_pairs(n_train, 1, max_len, seed=seed)
    history = train_seq2seq(
        model, train, vocab, steps, batch_size=batch_size, lr=lr, seed=seed, progress=progress
    )
    lengths = list(eval_lengths) if eval_lengths is not None else list(range(2, max_len + 1, 2))
    acc = exact_match_by(model, reverse_test_pairs(lengths), vocab, key_fn=lambda p: len(p[0]))
    return model, history, acc


def accuracy_by_position(
    model: nn.Module, pairs: Sequence[Sequence[str]], vocab: CharVocab
) -> list[float]:
    """For each output position i, the fraction of pairs whose greedy output has the right
    character there (pairs of one target length; a too-short output counts as wrong)."""
    n = len(pairs[0][1])
    if any(len(p[1]) != n for p in pairs):
        raise ValueError("accuracy_by_position needs targets of one length; group pairs first")
    outs = translate(model, [p[0] for p in pairs], vocab, max_len=n + 4)
    hits = [0] * n
    for out, (_, target) in zip(outs, pairs, strict=True):
        for i in range(min(n, len(out))):
            hits[i] += out[i] == target[i]
    return [h / len(pairs) for h in hits]


@torch.no_grad()
def reverse_alignment_accuracy(
    model: Seq2SeqRNN, pairs: Sequence[Sequence[str]], vocab: CharVocab
) -> float:
    """Fraction of output letters t whose largest attention weight is on source position L-1-t,
    the letter a reversal copies (over the first L output steps of every pair)."""
    was_training = model.training
    model.eval()
    try:
        src = make_batch(pairs, vocab).src  # (B, L_s)
        L_max = max(len(p[0]) for p in pairs)
        _, weights = model.greedy_decode(src, L_max + 1, vocab.bos_id, vocab.eos_id, True)
    finally:
        model.train(was_training)
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


__all__ = [
    "REVERSE_ALPHABET",
    "accuracy_by_position",
    "reverse_alignment_accuracy",
    "reverse_experiment",
    "reverse_test_pairs",
    "reverse_vocab",
]
