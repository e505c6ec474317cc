"""Helpers that keep notebook 07's cells short: read the attention maps of a trained translator."""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..blocks import recording_attention
from ..data import CharVocab, make_batch
from ..models import Transformer
from ..training import translate
from ..utils import evaluating


class AttentionMaps(NamedTuple):
    """Every attention map of one (source, output) pair, stacked over layers."""

    src_tokens: list[str]  # the source characters (keys of encoder and cross-attention)
    tgt_tokens: list[str]  # what the decoder reads: <bos> + output characters (queries)
    out_tokens: list[str]  # what each decoder position predicts: output characters + <eos>
    encoder: torch.Tensor  # (layers, H, L_s, L_s)
    decoder: torch.Tensor  # (layers, H, L_t, L_t)
    cross: torch.Tensor  # (layers, H, L_t, L_s): decoder queries, encoder keys


@torch.no_grad()
def attention_maps(
    model: Transformer, vocab: CharVocab, source: str, target: str | None = None
) -> AttentionMaps:
    """Teacher-force `target` (default: the model's own greedy translation) and keep the maps."""
    if not source:
        raise ValueError("source must be a non-empty string")
    if target is None:
        target = translate(model, [source], vocab)[0]
    batch = make_batch([(source, target)], vocab)
    with evaluating(model), recording_attention(model):
        model(batch.src, batch.tgt_in)
    return AttentionMaps(
        src_tokens=vocab.ids_to_tokens(batch.src[0]),
        tgt_tokens=vocab.ids_to_tokens(batch.tgt_in[0]),
        out_tokens=vocab.ids_to_tokens(batch.tgt_out[0]),
        encoder=torch.stack([layer.self_attn_weights[0] for layer in model.encoder]),
        decoder=torch.stack([layer.self_attn_weights[0] for layer in model.decoder]),
        cross=torch.stack([layer.cross_attn_weights[0] for layer in model.decoder]),
    )
