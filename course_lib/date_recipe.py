"""The date-translator recipe: one architecture and one training schedule, shared by all users.

Notebook 09 trains it and inspects the result, notebook 07 trains a short run of it for its
alignment heatmaps, and `python -m course_lib.train` (torchrun, DDP) trains it on several
processes. Nothing here draws: plotting lives in `course_lib.plots` and the lessons.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .data import CharVocab, date_pairs, date_vocab
from .fit import History
from .models import Transformer
from .training import train_seq2seq

# The architecture of notebook 09: pre-LN, 2 + 2 layers, 4 heads, about 246k parameters.
DATE_MODEL: dict = dict(
    d_model=64,
    num_heads=4,
    num_encoder_layers=2,
    num_decoder_layers=2,
    d_ff=256,
    dropout=0.0,
    max_len=64,
    norm_first=True,
)
# How notebook 09 trains it: AdamW, 100 warm-up steps then cosine decay, on 50,000 pairs.
DATE_TRAINING: dict = dict(batch_size=128, lr=3e-3, warmup=100, weight_decay=0.01, clip=1.0)
DATE_TRAIN_PAIRS = 50_000


def build_date_model(vocab: CharVocab | None = None, seed: int = 0, **overrides) -> Transformer:
    """A fresh Transformer with the DATE_MODEL architecture, initialised from `seed`.

    The global random state is left untouched, so the weights depend on `seed` alone.
    """
    vocab = date_vocab() if vocab is None else vocab
    config = DATE_MODEL | overrides
    config |= dict(src_vocab_size=len(vocab), tgt_vocab_size=len(vocab), pad_id=vocab.pad_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Transformer(**config)


def train_date_model(
    steps: int = 800,
    seed: int = 0,
    progress: bool = True,
    callback: Callable[[int, History], None] | None = None,
    eval_pairs: list | None = None,
    eval_every: int = 0,
    n_train: int = DATE_TRAIN_PAIRS,
) -> tuple[Transformer, CharVocab, History]:
    """Train notebook 09's date translator for `steps` steps; return (model, vocab, history).

    Deterministic for a given (steps, seed) on a given machine and thread count. About 99.9%
    exact match on held-out calendar days after 800 steps; 300-400 steps already give a model
    whose cross-attention alignments are clear. The model is returned in eval mode.
    """
    vocab = date_vocab()
    model = build_date_model(vocab, seed)
    pairs = date_pairs(n_train, seed=seed, split="train")
    history = train_seq2seq(
        model,
        pairs,
        vocab,
        steps,
        seed=seed,
        eval_pairs=eval_pairs,
        eval_every=eval_every,
        progress=progress,
        callback=callback,
        **DATE_TRAINING,
    )
    return model.eval(), vocab, history


# ----------------------------------------------------------------------------- inspection
