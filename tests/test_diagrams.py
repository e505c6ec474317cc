"""The schematic diagrams render, label what they claim, light up the part asked for, grow in
lecture mode, and reject bad arguments with a message naming the valid choices."""

from __future__ import annotations

import matplotlib

matplotlib.use("agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from course_lib import diagrams as D  # noqa: E402

ALL = {
    "rnn_vs_attention": (D.rnn_vs_attention, "self-attention: one hop"),
    "rnn_attention_step": (D.rnn_attention_step, "GRU cell"),
    "qkv": (D.qkv_diagram, "$W_q$"),
    "multi_head": (D.multi_head_diagram, "merge heads\ntranspose, view"),
    "positional": (D.positional_diagram, "first layer"),
    "rope": (D.rope_diagram, "$q_{0}$"),
    "masks": (D.mask_diagram, "−∞"),
    "cross": (D.cross_attention_diagram, "$W_k$"),
    "block": (D.block_diagram, "LayerNorm"),
    "encoder_decoder": (D.encoder_decoder_diagram, "cross-attention"),
    "gpt": (D.gpt_diagram, "LayerNorm +\nlinear head"),
    "kv_cache": (D.kv_cache_diagram, "softmax,\nthen @ V"),
    "tiled": (D.tiled_attention_diagram, "now"),
    "course_map": (D.course_map, "03\nself-\nattention"),
}


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


@pytest.mark.parametrize("name", list(ALL))
def test_each_diagram_renders_and_shows_its_labels(name):
    make, label = ALL[name]
    fig = make(lecture=False)
    fig.canvas.draw()
    assert label in D.texts(fig)


@pytest.mark.parametrize("name", list(ALL))
def test_lecture_mode_enlarges_the_fonts(name):
    make, _ = ALL[name]
    small = max(t.get_fontsize() for t in make(lecture=False).findobj(Text) if t.get_text())
    large = max(t.get_fontsize() for t in make(lecture=True).findobj(Text) if t.get_text())
    assert large > 1.5 * small


@pytest.mark.parametrize("part", list(D.PARTS))
def test_you_are_here_highlights_the_part_it_is_given(part):
    fig = D.you_are_here(part)
    lit = D.highlighted(fig)
    assert lit, f"nothing is highlighted for {part!r}"
    others = [D.highlighted(D.you_are_here(p)) for p in D.PARTS if p != part]
    assert lit not in others


def test_you_are_here_is_compact():
    w, h = D.you_are_here("rnn", lecture=False).get_size_inches()
    assert w <= 7.5 and h <= 3.1


def test_highlight_follows_the_argument():
    assert D.highlighted(D.qkv_diagram(highlight="scores")) != D.highlighted(
        D.qkv_diagram(highlight="mix")
    )
    assert "LayerNorm" in D.highlighted(D.block_diagram(highlight="norm"))
    assert "LayerNorm" not in D.highlighted(D.block_diagram(highlight="attention"))


def test_shapes_use_the_numbers_given():
    labels = " ".join(D.texts(D.multi_head_diagram(heads=4, L=6, d_model=16)))
    assert "(B, H, 6, 4)" in labels


def test_kv_cache_with_several_new_tokens_hatches_the_offset_causal_mask():
    fig = D.kv_cache_diagram(t=6, new=3)
    labels = " ".join(D.texts(fig))
    assert "3 new tokens after 3 cached ones" in labels and "(B, H, 3, t)" in labels
    hatched = [p for p in fig.axes[0].patches if p.get_hatch() == "//"]
    assert len(hatched) == 2 + 1  # query 1 misses keys 5 and 6, query 2 misses key 6
    with pytest.raises(ValueError, match="new"):
        D.kv_cache_diagram(t=4, new=5)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: D.you_are_here("transformers"), "self-attention"),
        (lambda: D.qkv_diagram(highlight="keys"), "projections"),
        (lambda: D.multi_head_diagram(heads=3, d_model=16), "divisible"),
        (lambda: D.rnn_vs_attention(L=50), "between 2 and 8"),
        (lambda: D.rope_diagram(d_k=7), "even"),
        (lambda: D.block_diagram(variant="sandwich"), "pre"),
        (lambda: D.mask_diagram(kinds=("future",)), "causal"),
        (lambda: D.course_map(highlight=12), "11"),
    ],
)
def test_bad_arguments_raise_value_errors_naming_the_choices(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_wrong_types_raise_type_errors():
    with pytest.raises(TypeError, match="layers"):
        D.gpt_diagram(layers=2.5)
