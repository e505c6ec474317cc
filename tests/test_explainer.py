"""The transformer explainer: one forward pass of a GPT, shown stage by stage."""

from __future__ import annotations

import matplotlib

matplotlib.use("agg")

import matplotlib.pyplot as plt
import pytest
import torch

from course_lib.data import CharVocab
from course_lib.explainer import (
    draw_stage,
    explainer_frames,
    stage_name,
    stages,
    trace,
    transformer_explainer,
)
from course_lib.gpt import GPT


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    vocab = CharVocab("abcdefgh ")
    return GPT(len(vocab), d_model=16, num_heads=2, num_layers=2, max_len=16), vocab


def test_stages_follow_the_data_embedding_then_each_block_then_the_head():
    names = [stage_name(k, i) for k, i in stages(2)]
    assert names == [
        "embedding",
        "block 1: attention",
        "block 1: feed-forward",
        "block 2: attention",
        "block 2: feed-forward",
        "logits",
        "next token",
    ]


def test_trace_keeps_what_the_model_computed(tiny):
    model, vocab = tiny
    t = trace(model, vocab, "abc de")
    assert t.tokens == list("abc de")
    assert [a.shape for a in t.attention] == [(2, 6, 6)] * 2
    # the final guess read off the stream is the model's own prediction
    with torch.no_grad():
        logits, _ = model(torch.tensor([vocab.encode("abc de")]))
    torch.testing.assert_close(t.probs, logits[0, -1].softmax(-1))
    torch.testing.assert_close(t.guesses[-1], t.probs)
    # causal: the last position is the only one that may look at every character
    assert torch.all(t.attention[0][:, 0, 1:] == 0)


def test_the_top_choices_are_sorted_and_name_characters(tiny):
    model, vocab = tiny
    top = trace(model, vocab, "ab").top(trace(model, vocab, "ab").probs, k=3)
    assert len(top) == 3 and top[0][1] >= top[1][1] >= top[2][1]
    assert all(c in vocab.itos for c, _ in top)


def test_frames_give_a_diagram_and_a_picture_for_every_stage(tiny):
    model, vocab = tiny
    figures = list(explainer_frames(model, vocab, "abc"))
    assert len(figures) == 2 * len(stages(2))
    titles = [fig.axes[0].get_title() for fig in figures[1::2]]
    assert titles[0].startswith("Stage 1/7 · embedding")
    assert "greedy choice" in titles[-1]
    for fig in figures:
        plt.close(fig)


def test_the_live_explainer_redraws_on_a_new_stage_or_prompt(tiny):
    model, vocab = tiny
    w = transformer_explainer(model, vocab, "abc")
    first = w.renders
    w.controls["stage"].value = 3
    w.controls["prompt"].value = "hgf"
    assert w.renders == first + 2


@pytest.mark.parametrize("prompt", ["", None])
def test_an_empty_prompt_is_refused_with_a_message(tiny, prompt):
    model, vocab = tiny
    with pytest.raises(ValueError, match="non-empty string"):
        trace(model, vocab, prompt)


def test_a_vocabulary_of_another_size_is_refused(tiny):
    model, _ = tiny
    with pytest.raises(ValueError, match="vocabulary has 6 tokens but the model predicts"):
        trace(model, CharVocab("ab"), "ab")


def test_every_stage_draws_under_the_course_style(tiny):
    """The notebooks call use_course_style(), whose constrained layout refuses tight_layout."""
    model, vocab = tiny
    with plt.rc_context({"figure.constrained_layout.use": True}):
        t = trace(model, vocab, "ab")
        for index in range(len(stages(t.layers))):
            plt.close(draw_stage(t, index))  # before the fix: RuntimeError from tight_layout
