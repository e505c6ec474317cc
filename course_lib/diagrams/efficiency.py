"""Part III, 11: the KV cache at one decoding step, and tiled attention with the online softmax."""

from __future__ import annotations

from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ._draw import HIGHLIGHT_EDGE, HIGHLIGHT_FILL, Canvas, check_choice, check_int

CACHE_PARTS = ("new", "cache", "scores")


def _cell(c: Canvas, x: float, y: float, w: float, h: float, label: str, state: str) -> None:
    """One square of a cache or score row: 'new' (lit), 'old' (grey), 'todo' or 'skip'."""
    fill, edge, lw = {
        "new": (HIGHLIGHT_FILL, HIGHLIGHT_EDGE, 2.2),
        "old": ("#D9D9D9", "#777777", 0.8),
        "todo": ("white", "#999999", 0.8),
        "skip": ("#F2F2F2", "#CCCCCC", 0.6),
    }[state]
    c.ax.add_patch(
        Rectangle(
            (x, y),
            w,
            h,
            fc=fill,
            ec=edge,
            lw=c.lw(lw),
            zorder=3 if state == "new" else 2,
            hatch="//" if state == "skip" else None,
        )
    )
    if label:
        c.text(x + w / 2, y + h / 2, label, "small", highlight=state == "new")


def kv_cache_diagram(
    t: int = 5, highlight: str | None = "new", lecture: bool | None = None
) -> Figure:
    """Decoding step t with a KV cache: only the new token's q, k, v are computed; k and v are
    appended to the cache and q attends over all t cached keys."""
    check_int("t", t, 1, 10, "one cell per cached position must fit")
    if highlight is not None:
        check_choice("highlight", highlight, CACHE_PARTS)
    c = Canvas(8.8, 4.3, lecture)
    c.title(f"The KV cache at decoding step t = {t}")
    cell, x0 = min(0.55, 3.6 / t), 3.3
    rows = {"K": 3.05, "s": 2.0, "V": 0.95}
    tok = c.box(0.65, 2.0, 0.95, 0.55, f"new token\n$x_{{{t}}}$", "io", size="label")
    proj = c.box(1.95, 2.0, 0.95, 0.55, "$W_q, W_k, W_v$", "learned", size="label")
    c.arrow(tok.right, proj.left)
    for j in range(t):
        new = j == t - 1
        for r, name in (("K", "k"), ("V", "v")):
            state = "new" if new and highlight == "new" else ("old" if not new else "todo")
            if highlight == "cache" and not new:
                state = "new"
            _cell(c, x0 + j * cell, rows[r] - cell / 2, cell, cell, f"${name}_{{{j + 1}}}$", state)
        _cell(
            c,
            x0 + j * cell,
            rows["s"] - cell / 2,
            cell,
            cell,
            f"{j + 1}",
            "new" if highlight == "scores" else "todo",
        )
    right = x0 + t * cell
    c.text(
        x0,
        rows["K"] + cell / 2 + 0.15,
        "K cache (B, H, t, d_k): one key per position so far",
        "small",
        ha="left",
        mono=False,
    )
    c.text(
        x0,
        rows["s"] + cell / 2 + 0.15,
        r"scores $q_t \cdot k_j / \sqrt{d_k}$: (B, H, 1, t)",
        "small",
        ha="left",
    )
    c.text(x0, rows["V"] - cell / 2 - 0.17, "V cache (B, H, t, d_k)", "small", ha="left")
    last = x0 + (t - 0.5) * cell
    c.path(
        [proj.top, (proj.x, 3.85), (last, 3.85), (last, rows["K"] + cell / 2)],
        f"$k_{{{t}}}$: appended",
        highlight == "new",
        at=1,
    )
    c.arrow(proj.right, (x0, rows["s"]), f"$q_{{{t}}}$", highlight == "new", offset=(0, 0.15))
    c.path(
        [proj.bottom, (proj.x, 0.3), (last, 0.3), (last, rows["V"] - cell / 2)],
        f"$v_{{{t}}}$: appended",
        highlight == "new",
        at=1,
    )
    mix = c.box(8.05, 1.5, 1.2, 0.62, "softmax,\nthen @ V", "op", size="label")
    c.arrow((right, rows["s"]), (mix.x - 0.3, mix.top[1]))
    c.arrow((right, rows["V"]), (mix.x - 0.3, mix.bottom[1]))
    c.arrow(mix.top, (mix.x, 2.7))
    c.text(mix.x, 2.85, "(B, H, 1, d_k)", "small", mono=True)
    c.text(
        0.1,
        0.75,
        "Per step: 1 new q, k, v\ninstead of t; the cache\ngrows by one row.",
        "small",
        ha="left",
        va="top",
    )
    return c.done()


def tiled_attention_diagram(
    blocks: int = 4, row: int = 1, col: int = 2, causal: bool = False, lecture: bool | None = None
) -> Figure:
    """Tiled (FlashAttention-style) attention: one query block walks the key blocks left to
    right, keeping a running max, sum and output, so the L x L score matrix never exists."""
    check_int("blocks", blocks, 2, 8)
    check_int("row", row, 0, blocks - 1, "a query block")
    check_int("col", col, 0, blocks - 1, "a key block")
    if causal and col > row:
        raise ValueError(
            f"with causal=True, key block col={col} > row={row} is skipped; pick col <= row"
        )
    c = Canvas(8.8, 4.5, lecture)
    c.title("Tiled attention: the scores one tile at a time, softmax online")
    size, x0, y0 = 3.2, 0.95, 0.45
    t = size / blocks
    for i in range(blocks):
        for j in range(blocks):
            if causal and j > i:
                state = "skip"
            elif i == row:
                state = "new" if j == col else ("old" if j < col else "todo")
            else:
                state = "todo"
            label = "now" if state == "new" else ("done" if state == "old" else "")
            _cell(c, x0 + j * t, y0 + (blocks - 1 - i) * t, t, t, label, state)
        c.text(
            x0 - 0.08,
            y0 + (blocks - 0.5 - i) * t,
            f"$Q_{{{i}}}$",
            "label",
            ha="right",
            highlight=i == row,
        )
        c.text(
            x0 + (i + 0.5) * t,
            y0 + size + 0.12,
            f"$K_{{{i}}}, V_{{{i}}}$",
            "small",
            va="bottom",
            highlight=i == col,
        )
    c.text(x0 + size / 2, y0 + size + 0.45, "key blocks →", "small", style="italic")
    c.text(0.2, y0 + size / 2, "query\nblocks", "small", style="italic", rotation=90)
    xs = 4.75
    c.text(
        xs,
        3.75,
        f"for query block $Q_{{{row}}}$, tile $S = Q_{{{row}}} K_{{{col}}}^\\top / \\sqrt{{d_k}}$:",
        "label",
        ha="left",
    )
    lines = [
        (r"running max:", r"$m' = \max(m,\ \mathrm{rowmax}(S))$"),
        (r"running sum:", r"$\ell' = e^{m - m'} \ell + \mathrm{rowsum}(e^{S - m'})$"),
        ("output so far:", rf"$O' = e^{{m - m'}} O + e^{{S - m'}} V_{{{col}}}$"),
    ]
    for k, (name, formula) in enumerate(lines):
        y = 3.1 - 0.62 * k
        c.box(xs + 0.7, y, 1.3, 0.45, name, "op", size="small")
        c.text(xs + 1.45, y, formula, "label", ha="left")
    c.text(
        xs,
        1.2,
        r"after the last tile: output $= O / \ell$, exactly softmax(S) V",
        "label",
        ha="left",
    )
    c.text(
        xs,
        0.65,
        f"scores in memory: one tile of (L/{blocks})², never all L × L",
        "small",
        ha="left",
        style="italic",
    )
    return c.done()
