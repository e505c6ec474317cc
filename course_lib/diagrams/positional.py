"""Part II, 05: positions added to embeddings, and RoPE's rotation of feature pairs."""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Arc, Rectangle

from ..positional import sinusoidal_encoding
from ._draw import ARROW, BLUE, PATH, Canvas, check_choice, check_dim, check_int, shape

POSITION_KINDS = ("sinusoidal", "learned")
POSITION_PARTS = ("embedding", "positional", "add")


def positional_diagram(
    kind: str = "sinusoidal",
    L: int | str = "L",
    d_model: int | str = "D",
    highlight: str | None = "positional",
    lecture: bool | None = None,
) -> Figure:
    """Token embeddings (scaled by sqrt(D)) plus a position vector per position, summed."""
    check_choice("kind", kind, POSITION_KINDS)
    L, D = check_dim("L", L), check_dim("d_model", d_model)
    if highlight is not None:
        check_choice("highlight", highlight, POSITION_PARTS)
    c = Canvas(8.4, 3.6, lecture)
    c.title("Position enters by addition: each token's vector + its position's vector")
    y, yp = 2.45, 1.0
    tok = c.box(0.7, y, 1.05, 0.5, "token ids", "io", size="label")
    c.text(0.7, y - 0.42, shape("B", L), "small", mono=True)
    emb = c.box(
        2.35, y, 1.3, 0.6, "embedding\ntable (V, D)", "learned", highlight == "embedding", "label"
    )
    c.arrow(tok.right, emb.left)
    scale = c.circle(3.7, y, "×")
    c.text(3.7, y + 0.3, "√D", "small")
    c.arrow(emb.right, scale.left, highlight=highlight == "embedding")
    add = c.circle(5.2, y, "+", highlight == "add")
    c.arrow(scale.right, add.left, shape("B", L, D), offset=(0.0, 0.2))
    nxt = c.box(7.3, y, 1.4, 0.5, "first layer", "io", size="label")
    c.arrow(add.right, nxt.left, shape("B", L, D), highlight == "add", offset=(0.0, 0.2))
    c.text(7.3, y - 0.5, "still D wide: added,\nnot concatenated", "small")
    pos = c.box(
        0.7,
        yp,
        1.05,
        0.5,
        f"0, 1, …, {L}−1" if L == "L" else f"0, 1, …, {int(L) - 1}",
        "io",
        size="small",
    )
    c.text(0.7, yp - 0.42, "positions", "small")
    label = "sinusoids,\nfixed" if kind == "sinusoidal" else "learned table\n(max_len, D)"
    pe = c.box(
        3.1, yp, 2.6, 1.15, "", "learned" if kind == "learned" else "op", highlight == "positional"
    )
    c.text(2.45, yp, label, "label", highlight=highlight == "positional")
    c.arrow(pos.right, pe.left)
    c.path(
        [pe.right, (5.2, yp), add.bottom],
        f"PE[:{L}] {shape(L, D)}",
        highlight == "positional",
        at=1,
        offset=(-0.6, 0.0),
    )
    c.text(5.75, 1.45, "same for every\nsentence: broadcast\nover the batch B", "small", ha="left")
    # A small picture of the table itself: positions down, dimensions across.
    w, h = c.width, c.height
    inset = c.fig.add_axes((3.1 / w, (yp - 0.42) / h, 1.2 / w, 0.84 / h))
    table = sinusoidal_encoding(16, 16).numpy() if kind == "sinusoidal" else _learned_like()
    inset.imshow(table, cmap="cividis", aspect="auto", interpolation="nearest")
    inset.set_xticks([])
    inset.set_yticks([])
    inset.set_xlabel("dimension →", fontsize=c.pt("small"), labelpad=1)
    inset.set_ylabel("position ↓", fontsize=c.pt("small"), labelpad=1)
    return c.done()


def _learned_like() -> np.ndarray:
    """A fixed random (16, 16) table standing for learned position vectors."""
    return np.random.default_rng(0).normal(size=(16, 16))


def rope_diagram(
    m: int = 2,
    n: int = 1,
    pair: int = 0,
    d_k: int = 8,
    lecture: bool | None = None,
) -> Figure:
    """RoPE: the features come in pairs; pair i of a query at position m turns by m·θ_i, of a
    key at position n by n·θ_i, so their angle, and q·k, depends only on m − n."""
    check_int("d_k", d_k, 2, 16, "one cell per feature must fit")
    if d_k % 2:
        raise ValueError(f"d_k must be even: RoPE rotates features in pairs, got d_k={d_k}")
    check_int("pair", pair, 0, d_k // 2 - 1, f"d_k={d_k} has {d_k // 2} pairs")
    check_int("m", m, 0, 50)
    check_int("n", n, 0, 50)
    theta = 10000.0 ** (-2 * pair / d_k)
    c = Canvas(8.6, 3.8, lecture)
    c.title("RoPE: rotate each feature pair by position × its frequency")
    cell = min(0.42, 4.0 / d_k)
    x0, y0 = 0.4, 2.3
    c.text(
        x0,
        y0 + cell + 0.3,
        f"a query q, d_k = {d_k} features in {d_k // 2} pairs",
        "label",
        ha="left",
    )
    for j in range(d_k):
        lit = j // 2 == pair
        c.ax.add_patch(
            Rectangle(
                (x0 + j * cell, y0),
                cell,
                cell,
                fc="#F2C46B" if lit else "white",
                ec="black" if lit else "#888888",
                lw=c.lw(2.0 if lit else 0.8),
                zorder=2,
            )
        )
        c.text(x0 + (j + 0.5) * cell, y0 + cell / 2, f"$q_{{{j}}}$", "small", highlight=lit)
    for i in range(d_k // 2):
        xa, xb = x0 + 2 * i * cell + 0.04, x0 + (2 * i + 2) * cell - 0.04
        c.ax.plot(
            [xa, xa, xb, xb],
            [y0 - 0.05, y0 - 0.12, y0 - 0.12, y0 - 0.05],
            color="#555555",
            lw=c.lw(1.0),
        )
        c.text((xa + xb) / 2, y0 - 0.3, f"$\\theta_{{{i}}}$", "small", highlight=i == pair)
    c.text(
        x0,
        1.35,
        r"$\theta_i = 10000^{-2i/d_k}$: the first pairs turn fast, the last slowly",
        "label",
        ha="left",
    )
    c.text(x0, 0.85, f"pair {pair}: θ = {theta:.3g} rad per position", "label", ha="left")
    c.text(
        x0,
        0.4,
        f"query at m = {m} turns {m}θ, key at n = {n} turns {n}θ:\n"
        f"the angle between them is (m − n)θ = {(m - n) * theta:.3g} rad",
        "label",
        ha="left",
        va="center",
    )
    # The plane of the highlighted pair.
    w, h = c.width, c.height
    ax = c.fig.add_axes((5.3 / w, 0.3 / h, 3.1 / w, 3.1 / h))
    ax.set_xlim(-1.25, 1.25)
    ax.set_ylim(-1.25, 1.25)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.add_patch(Arc((0, 0), 2, 2, color="#CCCCCC", lw=c.lw(0.8)))
    ax.plot([-1.15, 1.15], [0, 0], color="#CCCCCC", lw=c.lw(0.8))
    ax.plot([0, 0], [-1.15, 1.15], color="#CCCCCC", lw=c.lw(0.8))
    font = c.pt("label")
    ax.annotate(
        "",
        (1.0, 0.0),
        (0, 0),
        arrowprops=dict(arrowstyle="-|>", color=ARROW, lw=c.lw(1.2), ls="--"),
    )
    ax.text(1.02, -0.12, "before\nrotation", fontsize=c.pt("small"), ha="center", va="top")
    for pos, colour, name, r, f in ((m, PATH, "q", 0.35, 0.75), (n, BLUE, "k", 0.55, 0.5)):
        a = pos * theta
        tip = (math.cos(a), math.sin(a))
        ax.annotate("", tip, (0, 0), arrowprops=dict(arrowstyle="-|>", color=colour, lw=c.lw(2.4)))
        ax.text(
            1.13 * tip[0],
            1.13 * tip[1],
            f"${name}$ at {pos}",
            fontsize=font,
            color=colour,
            ha="center",
            va="center",
            weight="bold",
        )
        ax.add_patch(
            Arc((0, 0), 2 * r, 2 * r, theta1=0, theta2=math.degrees(a), color=colour, lw=c.lw(1.2))
        )
        ax.text(
            r * 1.1 * math.cos(f * a),
            r * 1.1 * math.sin(f * a),
            f"{pos}θ",
            fontsize=c.pt("small"),
            color=colour,
            ha="left",
            va="bottom",
        )
    lo, hi = sorted((n * theta, m * theta))
    ax.add_patch(
        Arc(
            (0, 0),
            1.7,
            1.7,
            theta1=math.degrees(lo),
            theta2=math.degrees(hi),
            color="black",
            lw=c.lw(1.2),
            ls="--",
        )
    )
    mid = (lo + hi) / 2
    ax.text(
        0.98 * math.cos(mid),
        0.98 * math.sin(mid),
        "(m−n)θ",
        fontsize=c.pt("small"),
        ha="center",
        va="bottom",
        weight="bold",
    )
    ax.set_title(  # below the circle: above it, it would collide with the figure's title
        f"pair {pair}: the plane $(q_{{{2 * pair}}}, q_{{{2 * pair + 1}}})$",
        fontsize=font,
        y=-0.02,
        va="top",
    )
    return c.done()
