"""Helpers that keep notebook 07's cells short: the attention maps of a trained translator, and
the same maps summed over the fields of a date (day, month, year)."""

from __future__ import annotations

import datetime as dt
import string
from typing import NamedTuple

import torch

from ..blocks import recording_attention
from ..data import DATE_FORMATS, CharVocab, _parts, format_date, make_batch
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


# The field each piece of a date template belongs to (see data.DATE_FORMATS).
_FIELD_OF = {
    "D": "day", "DD": "day", "Dth": "day",
    "M": "month", "MM": "month", "month": "month", "Month": "month", "MONTH": "month",
    "mon": "month", "Mon": "month", "MON": "month",
    "YYYY": "year", "YY": "year",
    "weekday": "weekday", "Weekday": "weekday", "Wkd": "weekday",
}  # fmt: skip
ISO_FIELDS = {
    "year": (0, 4),
    "month": (5, 7),
    "day": (8, 10),
}  # rows of 'YYYY-MM-DD' that write them


def date_field_spans(d: dt.date, fmt: str) -> tuple[str, dict[str, tuple[int, int]]]:
    """(the source text, {field: (start, end)}) for date `d` written in format `fmt`.

    Fields are 'weekday', 'day', 'month', 'year', in the order they appear in the text; end is
    exclusive, so text[start:end] is the field.
    """
    template, parts = DATE_FORMATS[fmt], _parts(d)
    text, spans = "", {}
    for literal, name, _, _ in string.Formatter().parse(template):
        text += literal
        if name:
            spans[_FIELD_OF[name]] = (len(text), len(text) + len(parts[name]))
            text += parts[name]
    if text != format_date(d, fmt):
        raise AssertionError(f"{fmt!r}: spans rebuilt {text!r}, expected {format_date(d, fmt)!r}")
    return text, spans


def field_attention(
    weights: torch.Tensor,
    out_fields: dict[str, tuple[int, int]],
    src_fields: dict[str, tuple[int, int]],
) -> torch.Tensor:
    """weights (L_t, L_s) -> (len(out_fields), len(src_fields)): the mean over a field's output
    rows of the total weight they put on each source field's characters."""
    rows = []
    for a, b in out_fields.values():
        per_row = torch.stack([weights[a:b, c:d].sum(-1) for c, d in src_fields.values()], -1)
        rows.append(per_row.mean(0))  # (F_src,)
    return torch.stack(rows)  # (F_out, F_src)


def weight_on_part(maps: AttentionMaps, rows: tuple[int, int], source: str, part: str) -> float:
    """The share of cross-attention weight that decoder rows [start, end) put on the characters
    of `part` (a substring of `source`), averaged over layers, heads and rows."""
    if part not in source:
        raise ValueError(f"{part!r} is not a part of the source {source!r}")
    start = source.index(part)
    mean_map = maps.cross.mean(dim=(0, 1))  # (L_t, L_s): the average over layers and heads
    return field_attention(mean_map, {"rows": rows}, {part: (start, start + len(part))}).item()
