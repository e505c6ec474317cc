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
    t: int = 5, highlight: str | None = "new", lecture: bool | None = None, new: int = 1
) -> Figure:
    """Decoding with a KV cache: only the `new` tokens' q, k, v are computed; their k and v are
    appended to the cache and each new query attends over the cached keys and the new ones up
    to itself (for new > 1, the causal mask is offset by the t - new cached positions)."""
    check_int("t", t, 1, 10, "one cell per cached position must fit")
    check_int("new", new, 1, t, "the new tokens are the last of the t positions")
    if highlight is not None:
        check_choice("highlight", highlight, CACHE_PARTS)
    c = Canvas(8.8, 4.3, lecture)
    past = t - new
    first = past + 1  # 1-based position of the first new token
    c.title(
        f"The KV cache at decoding step t = {t}"
        if new == 1
        else f"The KV cache: {new} new tokens after {past} cached ones"
    )
    cell, x0 = min(0.55, 3.6 / t), 3.3
    rows = {"K": 3.05, "s": 2.0, "V": 0.95}
    tokens = f"$x_{{{t}}}$" if new == 1 else f"$x_{{{first}}} \\ldots x_{{{t}}}$"
    tok = c.box(
        0.65, 2.0, 0.95, 0.55, f"new token{'s' if new > 1 else ''}\n{tokens}", "io", size="label"
    )
    proj = c.box(1.95, 2.0, 0.95, 0.55, "$W_q, W_k, W_v$", "learned", size="label")
    c.arrow(tok.right, proj.left)
    sh = min(cell, 0.75 / new)  # height of one row of the (new, t) score block
    top = rows["s"] + new * sh / 2  # the score block is centred on the scores row
    for j in range(t):
        is_new = j >= past
        for r, name in (("K", "k"), ("V", "v")):
            state = "new" if is_new and highlight == "new" else ("old" if not is_new else "todo")
            if highlight == "cache" and not is_new:
                state = "new"
            _cell(c, x0 + j * cell, rows[r] - cell / 2, cell, cell, f"${name}_{{{j + 1}}}$", state)
        for i in range(new):  # query i sits at position past + i: it sees keys 0..past + i
            hidden = j > past + i
            state = "skip" if hidden else ("new" if highlight == "scores" else "todo")
            label = f"{j + 1}" if new == 1 else ""
            _cell(c, x0 + j * cell, top - (i + 1) * sh, cell, sh, label, state)
    right = x0 + t * cell
    c.text(x0, rows["K"] + cell / 2 + 0.15, "K cache (B, H, t, d_k)", "small", ha="left")
    scores = (
        r"scores $q_t \cdot k_j / \sqrt{d_k}$: (B, H, 1, t)"
        if new == 1
        else f"scores (B, H, {new}, t); hatched: masked (offset causal)"
    )
    c.text(x0, top + 0.15, scores, "small", ha="left")
    c.text(x0, rows["V"] - cell / 2 - 0.17, "V cache (B, H, t, d_k)", "small", ha="left")
    lo, hi = x0 + (past + 0.5) * cell, x0 + (t - 0.5) * cell
    last = (lo + hi) / 2
    what = f"$k_{{{t}}}$" if new == 1 else f"$k_{{{first}..{t}}}$"
    c.path(
        [proj.top, (proj.x, 3.85), (last, 3.85), (last, rows["K"] + cell / 2)],
        f"{what}: appended",
        highlight == "new",
        at=1,
    )
    q = f"$q_{{{t}}}$" if new == 1 else f"$q_{{{first}..{t}}}$"
    c.arrow(proj.right, (x0, rows["s"]), q, highlight == "new", offset=(0, 0.15))
    c.path(
        [proj.bottom, (proj.x, 0.3), (last, 0.3), (last, rows["V"] - cell / 2)],
        f"{what.replace('k', 'v')}: appended",
        highlight == "new",
        at=1,
    )
    mix = c.box(8.05, 1.5, 1.2, 0.62, "softmax,\nthen @ V", "op", size="label")
    c.arrow((right, rows["s"]), (mix.x - 0.3, mix.top[1]))
    c.arrow((right, rows["V"]), (mix.x - 0.3, mix.bottom[1]))
    c.arrow(mix.top, (mix.x, 2.7))
    c.text(mix.x, 2.85, f"(B, H, {new}, d_k)", "small", mono=True)
    c.text(
        0.1,
        0.75,
        "Per step: 1 new q, k, v\ninstead of t; the cache\ngrows by one row."
        if new == 1
        else f"{new} new q, k, v; query i\nsees the {past} cached keys\nand new keys up to i.",
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
