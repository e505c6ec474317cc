"""Specifications of notebook 09's lesson helpers: beam hypotheses, short recipe runs, fields."""

from __future__ import annotations

import pytest
import torch

from course_lib.data import DATE_FORMATS, date_pairs, date_vocab, make_batch
from course_lib.date_recipe import build_date_model
from course_lib.lessons.full_transformer import (
    beam_hypotheses,
    best_hypotheses,
    field_attention,
    most_focused_head,
    next_token_log_probs,
    output_fields,
    recipe_start,
    smoothed_targets,
    source_fields,
)
from course_lib.training import train_seq2seq


@pytest.fixture(scope="module")
def vocab():
    return date_vocab()


def test_best_hypotheses_rank_like_transformer_beam_search(vocab):
    model = build_date_model(vocab, seed=3).eval()
    src = make_batch(date_pairs(3, seed=1, split="test"), vocab).src
    found = beam_hypotheses(model, src, 6, vocab.bos_id, vocab.eos_id, beam_size=3)
    for alpha in (0.0, 0.6):
        ours = best_hypotheses(found, alpha, vocab.pad_id)
        theirs = model.beam_search(src, 6, vocab.bos_id, vocab.eos_id, 3, length_penalty=alpha)
        assert torch.equal(ours, theirs)


def test_next_token_log_probs_match_the_teacher_forced_logits(vocab):
    model = build_date_model(vocab, seed=4).eval()
    batch = make_batch(date_pairs(1, seed=2, split="test"), vocab)
    step_fn = next_token_log_probs(model, batch.src, vocab.bos_id)
    prefixes = batch.tgt_out[:, :3]  # (1, 3): the first three target characters
    with torch.no_grad():
        full = model(batch.src, batch.tgt_in).log_softmax(-1)  # (1, L_t, V)
    assert torch.allclose(step_fn(prefixes)[0], full[0, 3], atol=1e-5)
    assert step_fn(torch.zeros(2, 0, dtype=torch.long)).shape == (2, len(vocab))


def test_recipe_start_repeats_the_first_steps_of_train_seq2seq(vocab):
    pairs = date_pairs(512, seed=0, split="train")
    short = recipe_start(pairs, vocab, 3, seed=1, warmup=2, total=6)
    model = build_date_model(vocab, seed=1)
    full = train_seq2seq(model, pairs, vocab, 6, warmup=2, seed=1, progress=False)
    assert len(short) == 3 and short == pytest.approx(full.loss[:3], abs=1e-6)


def test_source_fields_cover_every_format_and_name_the_digits():
    for source, target, fmt in date_pairs(200, seed=3, split="test", with_format=True):
        fields = source_fields(source, target, fmt)
        year = "".join(c for c, f in zip(source, fields, strict=True) if f == "year")
        assert year in (target[:4], target[2:4]), (source, fmt)
    assert source_fields("March 3, 2001", "2001-03-03", "Month D, YYYY")[:7] == ["month"] * 5 + [
        "other",
        "day",
    ]
    assert len(DATE_FORMATS) == 18
    with pytest.raises(ValueError, match="not 2001-03-04"):
        source_fields("March 3, 2001", "2001-03-04", "Month D, YYYY")


def test_field_attention_sums_each_output_field_to_one():
    cross = torch.softmax(torch.randn(11, 13), dim=-1)  # rows sum to 1
    src = source_fields("March 3, 2001", "2001-03-03", "Month D, YYYY")
    table = field_attention(cross, output_fields(11), src)
    assert table.shape == (3, 4) and torch.allclose(table.sum(dim=1), torch.ones(3), atol=1e-6)
    perfect = torch.zeros(11, 13)
    for t, f in enumerate(output_fields(11)):
        perfect[t, src.index(f) if f != "other" else 5] = 1.0
    assert torch.equal(field_attention(perfect, output_fields(11), src)[:, :3], torch.eye(3))


def test_most_focused_head_is_the_one_with_the_lowest_row_entropy():
    weights = torch.full((2, 3, 4, 4), 0.25)
    weights[1, 2] = torch.eye(4)
    assert most_focused_head(weights) == (1, 2)


def test_smoothed_targets_are_distributions_with_the_right_peak():
    q = smoothed_targets(torch.tensor([2, 5]), 7, 0.1)
    assert torch.allclose(q.sum(dim=1), torch.ones(2, dtype=torch.float64))
    assert q[0, 2].item() == pytest.approx(0.9 + 0.1 / 7) and q[1, 0].item() == pytest.approx(
        0.1 / 7
    )
