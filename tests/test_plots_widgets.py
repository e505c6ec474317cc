"""The course's figure style, plot helpers and widget explorers (headless, Agg backend)."""

from __future__ import annotations

import ipywidgets
import matplotlib as mpl
import matplotlib.pyplot as plt
import pytest
import torch

from course_lib import plots, widgets
from course_lib.fit import History
from course_lib.lessons.positional_encoding import (
    plot_encoding_curves,
    plot_positional_encoding,
)
from course_lib.live import LivePlot
from course_lib.plots import (
    plot_attention,
    plot_attention_grid,
    plot_curves,
    plot_training_curves,
    use_course_style,
)
from course_lib.positional import sinusoidal_encoding

plt.switch_backend("Agg")  # headless, whatever MPLBACKEND says
TOKENS = ["the", "cat", "sat", "on"]


@pytest.fixture(autouse=True)
def _course_style_and_cleanup():
    """Each test starts from the course style and leaves no figure open."""
    with mpl.rc_context():
        use_course_style(lecture=False)
        yield
        plt.close("all")


def _tick_texts(labels) -> list[str]:
    """The text of each tick label."""
    return [t.get_text() for t in labels]


def _weights(*shape: int) -> torch.Tensor:
    """Random attention weights: rows of the last axis sum to 1."""
    return torch.softmax(torch.randn(*shape), dim=-1)


# ----------------------------------------------------------------------------- style


def test_lecture_mode_uses_larger_fonts_and_thicker_lines():
    use_course_style(lecture=False)
    small, thin = mpl.rcParams["font.size"], mpl.rcParams["lines.linewidth"]
    use_course_style(lecture=True)
    assert mpl.rcParams["font.size"] > small
    assert mpl.rcParams["lines.linewidth"] > thin


def test_lecture_mode_can_be_switched_on_by_environment_variable(monkeypatch):
    monkeypatch.setenv("COURSE_LECTURE", "1")
    use_course_style()
    lecture_size = mpl.rcParams["font.size"]
    monkeypatch.setenv("COURSE_LECTURE", "0")
    use_course_style()
    assert lecture_size > mpl.rcParams["font.size"]


def test_stored_figures_use_a_modest_dpi_and_colour_blind_safe_colours():
    assert mpl.rcParams["figure.dpi"] <= 100
    assert mpl.rcParams["axes.prop_cycle"].by_key()["color"][:3] == list(plots.OKABE_ITO[:3])
    assert plots.ATTN_CMAP in {"viridis", "cividis"}


# ----------------------------------------------------------------------------- attention maps


def test_attention_map_labels_queries_on_rows_and_keys_on_columns():
    keys = ["a", "b", "c", "d", "e"]
    ax = plot_attention(_weights(4, 5), TOKENS, keys, title="demo")
    assert _tick_texts(ax.get_yticklabels()) == TOKENS
    assert _tick_texts(ax.get_xticklabels()) == keys
    assert "query" in ax.get_ylabel() and "key" in ax.get_xlabel()
    assert ax.get_title() == "demo"
    assert len(ax.figure.axes) == 2  # the map and its colour bar


def test_attention_map_annotates_every_cell_when_asked():
    w = _weights(3, 3)
    ax = plot_attention(w, TOKENS[:3], TOKENS[:3], annotate=True)
    texts = [t.get_text() for t in ax.texts]
    assert len(texts) == 9 and texts[0] == f"{w[0, 0]:.2f}"


def test_attention_map_thins_tick_labels_for_long_sequences():
    L = 100
    ax = plot_attention(_weights(L, L), [f"t{i}" for i in range(L)], [f"t{i}" for i in range(L)])
    assert 0 < len(ax.get_xticklabels()) <= plots.MAX_TICK_LABELS


def test_attention_map_shows_blank_tokens_and_keeps_dollar_signs_literal():
    tokens = ["a", " ", "$5$"]  # unescaped, "$5$" would be typeset as math
    ax = plot_attention(_weights(3, 3), tokens, tokens)
    labels = ax.get_xticklabels()
    assert _tick_texts(labels) == ["a", "␣", r"\$5\$"]
    assert not mpl.cbook.is_math_text(labels[2].get_text())


def test_attention_map_rejects_tokens_that_do_not_match_the_shape():
    with pytest.raises(ValueError, match="3 query tokens"):
        plot_attention(_weights(4, 4), TOKENS[:3], TOKENS)
    with pytest.raises(ValueError, match=r"\(L_q, L_k\)"):
        plot_attention(_weights(2, 4, 4), TOKENS, TOKENS)


def test_attention_grid_has_one_panel_per_layer_and_head_with_labels():
    fig = plot_attention_grid(_weights(2, 3, 4, 4), TOKENS, TOKENS, title="grid")
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(panels) == 6 and len(fig.axes) == 7  # 2 x 3 maps and one shared colour bar
    assert [ax.get_title() for ax in panels[:3]] == ["head 0", "head 1", "head 2"]
    assert panels[0].get_ylabel().startswith("layer 0") and panels[3].get_ylabel().startswith(
        "layer 1"
    )
    assert _tick_texts(panels[3].get_xticklabels()) == TOKENS
    assert fig.get_suptitle() == "grid"


def test_attention_grid_accepts_a_list_of_per_layer_head_stacks():
    fig = plot_attention_grid([_weights(2, 4, 4), _weights(2, 4, 4)], TOKENS, TOKENS)
    assert len(fig.axes) == 5


# ----------------------------------------------------------------------------- positions


def test_positional_encoding_heatmap_is_centred_on_zero():
    ax = plot_positional_encoding(sinusoidal_encoding(50, 16), "PE")
    vmin, vmax = ax.images[0].get_clim()
    assert vmin == pytest.approx(-vmax)
    assert ax.get_xlabel() == "dimension" and ax.get_ylabel() == "position"
    assert ax.images[0].get_array().shape == (50, 16)


def test_encoding_curves_draw_one_labelled_line_per_dimension():
    ax = plot_encoding_curves(sinusoidal_encoding(50, 16), dims=[0, 1, 6])
    assert [line.get_label() for line in ax.get_lines()] == ["dim 0", "dim 1", "dim 6"]
    assert ax.get_xlabel() == "position"
    with pytest.raises(ValueError, match="out of range"):
        plot_encoding_curves(sinusoidal_encoding(10, 4), dims=[4])


# ----------------------------------------------------------------------------- curves


def test_training_curves_read_a_dict_of_lists_and_put_accuracy_on_a_second_axis():
    hist = {"step": [0, 1, 2, 3], "loss": [2.0, 1.0, 0.5, 0.2], "accuracy": [0.1, 0.5, 0.7, 0.9]}
    ax = plot_training_curves(hist, logy=True)
    assert ax.get_yscale() == "log"
    assert len(ax.figure.axes) == 2
    assert ax.figure.axes[1].get_ylabel() == "accuracy"
    assert ax.get_xlabel() == "step" and ax.get_ylabel() == "loss"


def test_training_curves_plot_evaluations_of_a_history_against_eval_step():
    hist = History(step=list(range(10)), loss=[1.0 / (s + 1) for s in range(10)])
    hist.eval_step, hist.eval_acc = [4, 9], [0.5, 0.75]
    ax = plot_training_curves(hist)
    acc_line = ax.figure.axes[1].get_lines()[0]
    assert list(acc_line.get_xdata()) == [4, 9]


def test_training_curves_without_any_requested_series_say_so():
    with pytest.raises(ValueError, match="none of the series"):
        plot_training_curves({"step": [0]}, keys=("loss",))


def test_generic_curves_label_every_series_and_both_axes():
    ax = plot_curves(
        [8, 16, 32],
        {"rnn": [1.0, 0.8, 0.3], "attention": [1.0, 1.0, 0.95]},
        "length",
        "accuracy",
        "Accuracy vs length",
        logx=True,
    )
    assert [line.get_label() for line in ax.get_lines()] == ["rnn", "attention"]
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == (
        "length",
        "accuracy",
        "Accuracy vs length",
    )
    assert ax.get_xscale() == "log" and ax.get_legend() is not None
    with pytest.raises(ValueError, match="one value per x"):
        plot_curves([1, 2], {"a": [1.0]}, "x", "y", "t")


def test_live_plot_outside_a_notebook_draws_only_when_finished():
    live = LivePlot(every=5)
    hist = History()
    for step in range(20):
        hist.step.append(step)
        hist.loss.append(1.0 / (step + 1))
        live(step, hist)
    assert not live.live and live.draws == 0
    fig = live.finish()
    assert live.draws == 1
    assert "step 19" in fig.axes[0].get_title()


def test_live_plot_in_live_mode_redraws_every_n_steps(monkeypatch):
    shown = []
    live = LivePlot(every=5, live=True)
    monkeypatch.setattr(live, "_show", lambda fig=None: shown.append(fig))
    hist = {"step": [], "loss": []}
    for step in range(20):
        hist["step"].append(step)
        hist["loss"].append(1.0)
        live(step, hist)
    assert len(shown) == 4  # steps 0, 5, 10, 15


# ----------------------------------------------------------------------------- widgets


def test_explorer_renders_once_on_construction_and_again_on_every_change():
    calls = []
    ex = widgets.explorer(
        {"d_k": widgets.slider("d_k", 1, 64, 1, 4), "mode": widgets.dropdown("mode", ["a", "b"])},
        lambda **values: calls.append(values),
        title="demo",
    )
    assert calls == [{"d_k": 4, "mode": "a"}]
    ex.controls["d_k"].value = 32
    ex.controls["mode"].value = "b"
    assert calls[-2:] == [{"d_k": 32, "mode": "a"}, {"d_k": 32, "mode": "b"}]
    assert ex.renders == 3
    assert "d_k=32" in ex._repr_mimebundle_()["text/plain"]


def test_explorer_construction_prints_nothing_and_leaves_no_figure_open(capsys):
    def render(scale: float) -> None:
        _, ax = plt.subplots()
        ax.plot([0, scale])

    ex = widgets.explorer({"scale": widgets.slider("scale", 0.0, 2.0, 0.1, 1.0)}, render)
    ex.controls["scale"].value = 1.5
    assert capsys.readouterr().out == ""
    assert plt.get_fignums() == []


def test_slider_builders_choose_int_or_float_and_update_on_release():
    assert isinstance(widgets.slider("n", 1, 8), ipywidgets.IntSlider)
    s = widgets.slider("t", 0.1, 2.0, 0.1, 1.0)
    assert isinstance(s, ipywidgets.FloatSlider) and not s.continuous_update
    assert widgets.log_slider("temperature", -1, 1, 1.0).value == pytest.approx(1.0)


def test_attention_row_explorer_switches_query_and_head():
    ex = widgets.attention_row_explorer(TOKENS, _weights(2, 4, 4), values=torch.randn(4, 6))
    ex.controls["query"].value = 2
    ex.controls["head"].value = 1
    assert ex.values == {"query": 2, "head": 1} and ex.renders == 3
    with pytest.raises(ValueError, match="L=4"):
        widgets.attention_row_explorer(TOKENS, _weights(3, 3))


def test_mask_editor_toggling_a_cell_renormalises_the_row():
    scores = torch.randn(4, 4)
    ed = widgets.mask_editor(TOKENS, scores)
    before = ed.weights()
    torch.testing.assert_close(before, torch.softmax(scores, dim=-1))
    ed.buttons[1][3].value = False  # "cat" may no longer attend to "on"
    after = ed.weights()
    assert after[1, 3] == 0 and not torch.allclose(after[1], before[1])
    torch.testing.assert_close(after.sum(-1), torch.ones(4))
    torch.testing.assert_close(after[1, :3], torch.softmax(scores[1, :3], dim=-1))
    assert ed.renders == 2


def test_mask_editor_gives_an_empty_row_zero_weights_not_nan():
    ed = widgets.mask_editor(TOKENS, torch.randn(4, 4))
    for button in ed.buttons[0]:
        button.value = False
    w = ed.weights()
    assert torch.equal(w[0], torch.zeros(4))
    torch.testing.assert_close(w[1:].sum(-1), torch.ones(3))


def test_mask_editor_presets_set_the_whole_mask_with_one_redraw():
    ed = widgets.mask_editor(TOKENS, torch.randn(4, 4))
    renders = ed.renders
    ed.set_mask(torch.ones(4, 4, dtype=torch.bool).tril())
    assert ed.renders == renders + 1
    assert torch.equal(ed.mask, torch.ones(4, 4, dtype=torch.bool).tril())
    assert torch.equal(ed.weights().triu(1), torch.zeros(4, 4))
    assert "10 of 16" in ed._repr_mimebundle_()["text/plain"]
