"""One figure style for the whole course: attention maps, positional encodings, training curves.

Call `use_course_style()` once in a notebook's setup cell (`lecture=True`, or the environment
variable `COURSE_LECTURE=1`, switches to large fonts and thick lines for a projector).
Functions that take an `ax` draw on it and return it; those that build a grid return the Figure.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
from cycler import cycler
from matplotlib.axes import Axes
from matplotlib.figure import Figure

ATTN_CMAP = "viridis"  # sequential, for weights in [0, 1]: colour-blind safe, reads in greyscale
# For signed values (positional encodings, differences). cividis is monotonic in lightness, so
# it stays readable in greyscale and for colour-blind readers (red/blue maps do not); plots
# centre it on zero, so the middle of the colour bar is 0.
DIVERGING_CMAP = "cividis"
# Okabe & Ito (2008): eight colours distinguishable under the common colour-vision deficiencies.
# Blue, orange, bluish green, vermillion, reddish purple, sky blue, yellow, black.
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
MAX_TICK_LABELS = 40  # beyond this many tokens an axis labels every k-th one

_BASE_RC: dict[str, Any] = {
    "figure.dpi": 80,  # stored PNGs stay small; notebooks stay diff-able
    "savefig.dpi": "figure",
    "figure.figsize": (6.4, 4.0),
    "figure.constrained_layout.use": True,
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "legend.frameon": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.prop_cycle": cycler(color=OKABE_ITO),
    "lines.linewidth": 1.6,
    "lines.markersize": 5,
    "axes.linewidth": 0.8,
    "image.cmap": ATTN_CMAP,
}
_LECTURE_RC: dict[str, Any] = {
    "figure.figsize": (8.0, 5.0),
    "font.size": 16,
    "axes.titlesize": 18,
    "axes.labelsize": 16,
    "xtick.labelsize": 14,
    "ytick.labelsize": 14,
    "legend.fontsize": 14,
    "lines.linewidth": 3.0,
    "lines.markersize": 8,
    "axes.linewidth": 1.5,
}


def lecture_mode_from_env() -> bool:
    """True when the environment variable COURSE_LECTURE asks for lecture mode (1/true/yes)."""
    return os.environ.get("COURSE_LECTURE", "").strip().lower() in {"1", "true", "yes", "on"}


def use_course_style(lecture: bool | None = None) -> None:
    """Set matplotlib's rcParams to the course style; lecture=None reads COURSE_LECTURE."""
    if lecture is None:
        lecture = lecture_mode_from_env()
    mpl.rcParams.update(_BASE_RC)
    if lecture:
        mpl.rcParams.update(_LECTURE_RC)


def to_numpy(x: Any) -> np.ndarray:
    """A tensor (any device, with or without grad), array or nested list as a float NumPy array."""
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=float)


def figure_to_png(fig: Figure) -> bytes:
    """Render a figure to PNG bytes (works whatever the matplotlib backend is)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def token_label(token: Any) -> str:
    """A token as tick text: a visible mark for blanks, and `$` kept literal (not mathtext)."""
    text = str(token)
    return "␣" * len(text) if text.isspace() else text.replace("$", r"\$")


def _labels(tokens: Sequence[Any] | None, n: int, axis: str) -> list[str]:
    """Token labels as strings, or positions 0..n-1 when no tokens are given."""
    if tokens is None:
        return [str(i) for i in range(n)]
    labels = [token_label(t) for t in tokens]
    if len(labels) != n:
        raise ValueError(
            f"{len(labels)} {axis} tokens for a weight matrix with {n} {axis}s; "
            "pass one token per row (queries) and one per column (keys)"
        )
    return labels


def _set_token_ticks(ax: Axes, labels: list[str], axis: str) -> None:
    """Put one tick per token on `axis` ("x" or "y"), thinning them out past MAX_TICK_LABELS."""
    n = len(labels)
    step = max(1, int(np.ceil(n / MAX_TICK_LABELS)))
    idx = np.arange(0, n, step)
    shown = [labels[i] for i in idx]
    if axis == "x":
        rotate = len(shown) * max(len(s) for s in shown) > 24  # would the labels collide?
        ax.set_xticks(idx, shown, rotation=90 if rotate else 0)
    else:
        ax.set_yticks(idx, shown)


def heatmap(
    ax: Axes,
    w: np.ndarray,
    x_labels: list[str] | None,
    y_labels: list[str] | None,
    cmap: str,
    vmin: float,
    vmax: float,
) -> Any:
    """imshow a matrix with one cell per entry and (optionally) token tick labels."""
    im = ax.imshow(w, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest")
    ax.grid(False)
    if x_labels is not None:
        _set_token_ticks(ax, x_labels, "x")
    if y_labels is not None:
        _set_token_ticks(ax, y_labels, "y")
    return im


def as_matrix(weights: Any, name: str = "weights") -> np.ndarray:
    """A 2-D float array, or a ValueError naming the shape that was passed."""
    w = to_numpy(weights)
    if w.ndim != 2:
        raise ValueError(
            f"{name} should be a (L_q, L_k) matrix, got shape {tuple(w.shape)}; "
            "pick one example and one head first, e.g. weights[0, h]"
        )
    return w


def plot_attention(
    weights: Any,
    query_tokens: Sequence[Any] | None = None,
    key_tokens: Sequence[Any] | None = None,
    title: str | None = None,
    ax: Axes | None = None,
    annotate: bool = False,
    vmin: float = 0.0,
    vmax: float | None = None,
    colorbar: bool = True,
) -> Axes:
    """Heatmap of one (L_q, L_k) attention matrix: queries on rows, keys on columns."""
    w = as_matrix(weights)
    L_q, L_k = w.shape
    q_labels = _labels(query_tokens, L_q, "query")
    k_labels = _labels(key_tokens, L_k, "key")
    if ax is None:
        side = float(np.clip(0.35 * max(L_q, L_k) + 2.0, 3.5, 8.0))
        _, ax = plt.subplots(figsize=(side + 1.0, side))
    vmax = float(np.nanmax(w)) if vmax is None else vmax
    vmax = vmax if vmax > vmin else vmin + 1.0
    im = heatmap(ax, w, k_labels, q_labels, ATTN_CMAP, vmin, vmax)
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query (attending)")
    ax.set_title(title if title is not None else "Attention weights")
    if annotate:
        mid = (vmin + vmax) / 2
        for i in range(L_q):
            for j in range(L_k):
                colour = "black" if w[i, j] > mid else "white"  # viridis is light at the top
                ax.text(
                    j, i, f"{w[i, j]:.2f}", ha="center", va="center", color=colour, fontsize="small"
                )
    if colorbar:
        ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="weight")
    return ax


def _as_layers_heads(weights: Any) -> np.ndarray:
    """(layers, heads, L_q, L_k) array from a 4-D tensor, a 3-D (heads, ...) one, or a list."""
    if isinstance(weights, (list, tuple)):
        layers = [to_numpy(w) for w in weights]
        shapes = {w.shape for w in layers}
        if len(shapes) != 1 or layers[0].ndim != 3:
            raise ValueError(
                f"a list of attention maps needs one (H, L_q, L_k) array per layer, all the "
                f"same shape; got shapes {[tuple(w.shape) for w in layers]}"
            )
        return np.stack(layers)
    w = to_numpy(weights)
    if w.ndim == 3:
        return w[None]
    if w.ndim != 4:
        raise ValueError(
            f"weights should be (layers, heads, L_q, L_k) or (heads, L_q, L_k), got shape "
            f"{tuple(w.shape)}; drop the batch axis first, e.g. weights[0]"
        )
    return w


def plot_attention_grid(
    weights: Any,
    query_tokens: Sequence[Any] | None = None,
    key_tokens: Sequence[Any] | None = None,
    title: str | None = None,
    cell_size: float = 2.2,
) -> Figure:
    """Attention maps on a layers x heads grid, one shared colour scale and colour bar."""
    w = _as_layers_heads(weights)  # (layers, heads, L_q, L_k)
    n_layers, n_heads, L_q, L_k = w.shape
    q_labels = _labels(query_tokens, L_q, "query")
    k_labels = _labels(key_tokens, L_k, "key")
    fig, axes = plt.subplots(
        n_layers,
        n_heads,
        squeeze=False,
        sharex=True,
        sharey=True,
        figsize=(cell_size * n_heads + 1.2, cell_size * n_layers + 0.6),
    )
    vmax = max(float(np.nanmax(w)), 1e-12)
    for layer in range(n_layers):
        for head in range(n_heads):
            ax = axes[layer, head]
            im = heatmap(ax, w[layer, head], k_labels, q_labels, ATTN_CMAP, 0.0, vmax)
            ax.tick_params(labelbottom=layer == n_layers - 1, labelleft=head == 0)
            if layer == 0:
                ax.set_title(f"head {head}")
            if head == 0:
                ax.set_ylabel(f"layer {layer}\nquery")
            if layer == n_layers - 1:
                ax.set_xlabel("key")
    fig.colorbar(im, ax=axes, fraction=0.03, pad=0.02, label="weight")
    fig.suptitle(title if title is not None else "Attention weights by layer and head")
    return fig


def series(history: Any, key: str) -> list[float] | None:
    """history[key] (dict) or history.key (object) as floats; None when absent or empty."""
    if isinstance(history, Mapping):
        values = history.get(key)
    else:
        values = getattr(history, key, None)
    if values is None or len(values) == 0:
        return None
    return [float(v) for v in values]


def _x_for(
    history: Any, values: list[float], x_key: str, is_eval: bool = False
) -> tuple[list[float], str]:
    """The x values matching a series: training steps, evaluation steps, or 0..n-1."""
    for key in ("eval_step", x_key) if is_eval else (x_key, "eval_step"):
        xs = series(history, key)
        if xs is not None and len(xs) == len(values):
            return xs, "step"
    return list(range(len(values))), "entry"


def plot_training_curves(
    history: Any,
    keys: Sequence[str] = ("loss",),
    acc_keys: Sequence[str] = ("accuracy", "eval_acc"),
    logy: bool = False,
    title: str = "Training curves",
    x_key: str = "step",
    ax: Axes | None = None,
) -> Axes:
    """Loss-like `keys` against step; accuracy-like `acc_keys`, if present, on a right-hand axis.

    `history` is a dict of lists or an object with list attributes, such as
    `course_lib.fit.History` (step, loss, eval_step, eval_acc). A series named eval_*,
    or as long as `eval_step` but not `step`, is plotted against `eval_step`.
    """
    if ax is None:
        _, ax = plt.subplots()
    colours = iter(mpl.rcParams["axes.prop_cycle"].by_key()["color"] * 4)
    lines, xlabel = [], "step"
    for key in keys:
        ys = series(history, key)
        if ys is None:
            continue
        xs, xlabel = _x_for(history, ys, x_key, is_eval=key.startswith("eval"))
        lines += ax.plot(xs, ys, label=key, color=next(colours))
    if not lines:
        raise ValueError(f"history has none of the series {list(keys)} (or they are empty)")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(", ".join(k for k in keys if series(history, k) is not None))
    acc = [(k, series(history, k)) for k in acc_keys]
    acc = [(k, ys) for k, ys in acc if ys is not None]
    if acc:
        ax2 = ax.twinx()
        ax2.grid(False)
        ax2.spines["right"].set_visible(True)
        top = max(max(ys) for _, ys in acc)
        for key, ys in acc:
            xs, _ = _x_for(history, ys, x_key, is_eval=key.startswith("eval"))
            lines += ax2.plot(
                xs,
                ys,
                label=key,
                color=next(colours),
                linestyle="--",
                marker="o" if len(ys) <= 30 else None,
            )
        ax2.set_ylim(0.0, 1.02 if top <= 1.0 else top * 1.02)
        ax2.set_ylabel(", ".join(k for k, _ in acc))
    ax.legend(lines, [ln.get_label() for ln in lines], loc="center right")
    ax.set_title(title)
    return ax


def plot_curves(
    x: Sequence[float],
    ys: Mapping[str, Sequence[float]],
    xlabel: str,
    ylabel: str,
    title: str,
    logy: bool = False,
    logx: bool = False,
    ax: Axes | None = None,
) -> Axes:
    """A labelled line per entry of `ys` (name -> values at `x`), for experiment results."""
    xs = to_numpy(x)
    if ax is None:
        _, ax = plt.subplots()
    for name, values in ys.items():
        v = to_numpy(values)
        if v.shape != xs.shape:
            raise ValueError(
                f"series {name!r} has {v.shape[0] if v.ndim else 0} values but x has "
                f"{xs.shape[0]}; give one value per x"
            )
        ax.plot(xs, v, marker="o" if len(xs) <= 30 else None, label=str(name))
    if logy:
        ax.set_yscale("log")
    if logx:
        ax.set_xscale("log")
        if len(xs) <= 12:  # label the measured x values plainly, not as powers of ten
            ax.set_xticks(xs, [f"{v:g}" for v in xs])
            ax.minorticks_off()
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if len(ys) > 1:
        ax.legend()
    return ax


def smooth(values: Sequence[float], window: int = 10) -> list[float]:
    """Trailing moving average (the first points average what exists so far), for noisy curves."""
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v - (values[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out


def plot_dependence(dep: Any, tokens: Sequence[str], title: str, ax: Axes) -> Axes:
    """Heatmap of an (L, L) dependence matrix, e.g. lessons' position_dependence: [i, j] = how
    much output position i depends on input position j (rows: outputs, columns: inputs)."""
    d = to_numpy(dep)
    im = ax.imshow(d / max(float(d.max()), 1e-12), cmap="viridis", vmin=0, vmax=1)
    ax.grid(False)
    ax.set_xticks(range(len(tokens)), [str(t) for t in tokens])
    ax.set_yticks(range(len(tokens)), [str(t) for t in tokens])
    ax.set_xlabel("input position j")
    ax.set_ylabel("output position i")
    ax.set_title(title)
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="|∂out_i / ∂x_j| (scaled)")
    return ax
