"""Part II: Q/K/V for one head (03), split -> heads -> merge (04), masks (06), cross-attention (07)."""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ._draw import Canvas, check_choice, check_dim, check_int, shape

QKV_PARTS = ("projections", "scores", "softmax", "mix")
HEAD_PARTS = ("projections", "split", "heads", "merge", "output")
MASK_KINDS = ("padding", "causal", "both")
CROSS_PARTS = ("queries", "keys-values", "weights")


def _head_dim(d_model: int | str, heads: int) -> str:
    """d_k as a label: D // H when both are numbers (checked to divide), else 'd_k'."""
    if isinstance(d_model, int):
        if d_model % heads:
            raise ValueError(
                f"d_model={d_model} is not divisible by heads={heads}: each head gets "
                f"d_model / heads features, so pick heads that divide d_model"
            )
        return str(d_model // heads)
    return "d_k"


def qkv_diagram(
    L: int | str = "L",
    d_model: int | str = "D",
    d_k: int | str = "d_k",
    highlight: str | None = None,
    masked: bool = False,
    lecture: bool | None = None,
    d_v: int | str = "d_v",
) -> Figure:
    """Scaled dot-product self-attention for one head, every tensor labelled with its shape."""
    L, D, dk = check_dim("L", L), check_dim("d_model", d_model), check_dim("d_k", d_k)
    dv = check_dim("d_v", d_v)
    if highlight is not None:
        check_choice("highlight", highlight, QKV_PARTS)
    c = Canvas(8.6, 4.0, lecture)
    c.title("Self-attention, one head: every shape")
    x = c.box(0.5, 2.0, 0.6, 0.5, "X", "io")
    c.text(0.5, 1.55, shape("B", L, D), "small", mono=True)
    proj = "projections" == highlight
    ws = [
        c.box(1.75, y, 0.72, 0.46, f"$W_{n}$", "learned", proj)
        for y, n in ((3.1, "q"), (2.0, "k"), (0.9, "v"))
    ]
    for w in ws:
        c.arrow(x.right, w.left)
    qk = c.box(3.95, 2.55, 1.25, 0.56, r"$Q K^\top / \sqrt{d_k}$", "op", highlight == "scores")
    c.arrow(
        ws[0].right, (qk.left[0], 2.72), f"Q {shape('B', L, dk)}", proj, at=0.55, offset=(0.0, 0.2)
    )
    c.arrow(
        ws[1].right, (qk.left[0], 2.38), f"K {shape('B', L, dk)}", proj, at=0.55, offset=(0.0, -0.2)
    )
    soft_label = "mask, then\nsoftmax over keys" if masked else "softmax\nover keys"
    sm = c.box(6.0, 2.55, 1.2, 0.56, soft_label, "op", highlight == "softmax", "label")
    c.arrow(qk.right, sm.left, shape("B", L, L), highlight == "scores", offset=(0.0, 0.22))
    mix = c.box(7.0, 1.5, 1.0, 0.56, "weights\n@ V", "op", highlight == "mix", "label")
    c.arrow(
        sm.right,
        (mix.x, mix.top[1]),
        f"weights {shape('B', L, L)}",
        highlight == "softmax",
        at=0.35,
        offset=(0.55, 0.12),
    )
    c.path(
        [ws[2].right, (mix.x, 0.9), mix.bottom], f"V {shape('B', L, dv)}", proj, offset=(0.0, 0.16)
    )
    c.arrow(mix.right, (8.55, 1.5))
    c.text(8.5, 1.15, f"out {shape('B', L, dv)}", "small", mono=True, ha="right")
    c.text(
        0.1,
        0.25,
        "Row i of the weights: how much query i takes from each key; every row sums to 1.",
        "label",
        ha="left",
        style="italic",
    )
    return c.done()


def multi_head_diagram(
    heads: int = 4,
    L: int | str = "L",
    d_model: int | str = "D",
    highlight: str | None = None,
    lecture: bool | None = None,
) -> Figure:
    """Multi-head attention: project, split D into H heads of d_k = D / H, attend, merge, W_o."""
    check_int("heads", heads, 1, 16)
    L, D = check_dim("L", L), check_dim("d_model", d_model)
    dk = _head_dim(d_model, heads)
    if highlight is not None:
        check_choice("highlight", highlight, HEAD_PARTS)
    c = Canvas(9.6, 4.4, lecture)
    size = f"d_k = {dk}" if dk != "d_k" else "d_k = D / H"
    c.title(f"Multi-head attention: H = {heads} heads, each with {size} features")
    y = 2.0
    x = c.box(0.45, y, 0.55, 0.5, "X", "io")
    proj = c.box(
        1.55,
        y,
        1.05,
        0.7,
        "$W_q, W_k, W_v$\n(3 linears)",
        "learned",
        highlight == "projections",
        "label",
    )
    c.arrow(x.right, proj.left)
    c.text(0.45, 1.55, shape("B", L, D), "small", mono=True)
    split = c.box(
        3.3, y, 1.35, 0.7, "split heads\nview, transpose", "op", highlight == "split", "label"
    )
    c.arrow(proj.right, split.left, "Q, K, V", highlight == "projections", offset=(0.0, 0.2))
    c.text(2.6, 1.55, f"each {shape('B', L, D)}", "small", mono=True)
    shown = list(range(heads)) if heads <= 5 else [0, 1, 2, None, heads - 1]
    top, bottom = 3.45, 0.75
    ys = [top - (top - bottom) * i / max(len(shown) - 1, 1) for i in range(len(shown))]
    if len(shown) == 1:
        ys = [y]
    merge = c.box(
        6.8, y, 1.35, 0.7, "merge heads\ntranspose, view", "op", highlight == "merge", "label"
    )
    for h, hy in zip(shown, ys, strict=False):
        if h is None:
            c.text(5.0, hy, "⋮", "box")
            continue
        hb = c.box(
            5.05, hy, 1.45, 0.46, f"head {h}: attention", "op", highlight == "heads", "label"
        )
        c.arrow(split.right, hb.left, highlight=highlight == "split")
        c.arrow(hb.right, merge.left, highlight=highlight == "heads")
    c.text(5.0, 4.02, f"each head: Q, K, V of {shape('B', L, dk)}", "small", mono=True)
    c.text(4.0, 0.3, f"stacked: {shape('B', 'H', L, dk)}", "small", mono=True)
    out = c.box(8.2, y, 0.65, 0.5, "$W_o$", "learned", highlight == "output")
    c.arrow(merge.right, out.left)
    c.text(7.5, 1.5, shape("B", L, D), "small", mono=True)
    c.arrow(out.right, (9.55, y), highlight=highlight == "output")
    c.text(9.2, 1.55, shape("B", L, D), "small", mono=True)
    return c.done()


def mask_diagram(
    tokens: Sequence[str] = ("the", "cat", "sat", "PAD", "PAD"),
    pad: str = "PAD",
    kinds: Sequence[str] = MASK_KINDS,
    lecture: bool | None = None,
) -> Figure:
    """The score matrix (queries on rows, keys on columns) under the padding mask, the causal
    mask and both; a blocked cell is set to -inf, so its softmax weight is 0."""
    tokens = [str(t) for t in tokens]
    check_int("len(tokens)", len(tokens), 2, 10, "one cell per token must fit")
    if isinstance(kinds, str):
        kinds = (kinds,)
    if not kinds:
        raise ValueError(f"kinds is empty; pass some of {MASK_KINDS}")
    for k in kinds:
        check_choice("kinds", k, MASK_KINDS)
    L = len(tokens)
    cell = min(0.42, 2.2 / L)
    panel = cell * L + 1.0
    c = Canvas(0.3 + panel * len(kinds), cell * L + 1.55, lecture)
    titles = {
        "padding": "padding mask: keys that are PAD",
        "causal": "causal mask: keys in the future",
        "both": "both: the decoder's self-attention",
    }
    for p, kind in enumerate(kinds):
        x0, y0 = 0.95 + p * panel, 0.55
        c.text(x0 - 0.65, y0 + cell * L + 0.78, titles[kind], "label", ha="left", weight="bold")
        for i in range(L):  # query rows, top to bottom
            for j in range(L):
                blocked = (kind != "causal" and tokens[j] == pad) or (kind != "padding" and j > i)
                x, y = x0 + j * cell, y0 + (L - 1 - i) * cell
                c.ax.add_patch(
                    Rectangle(
                        (x, y),
                        cell,
                        cell,
                        fc="#4D4D4D" if blocked else "white",
                        ec="#999999",
                        lw=c.lw(0.6),
                        zorder=2,
                    )
                )
                c.text(
                    x + cell / 2,
                    y + cell / 2,
                    "−∞" if blocked else "s",
                    "small",
                    color="white" if blocked else "#777777",
                )
        for k, t in enumerate(tokens):
            c.text(
                x0 + (k + 0.5) * cell,
                y0 + L * cell + 0.08,
                t,
                "small",
                rotation=90 if L > 6 else 0,
                va="bottom",
            )
            c.text(x0 - 0.06, y0 + (L - 0.5 - k) * cell, t, "small", ha="right")
        c.text(
            x0 + L * cell / 2,
            y0 + L * cell + 0.45 + (0.15 if L > 6 else 0),
            "key",
            "small",
            style="italic",
        )
    c.text(
        0.1,
        0.22,
        "s: the score q·k/√d_k is kept, the key may be attended (True); dark: the score is "
        "set to −∞ before the softmax, so its weight is 0 (False). Rows are queries.",
        "small",
        ha="left",
    )
    return c.done()


def cross_attention_diagram(
    S: int | str = "S",
    T: int | str = "T",
    d_model: int | str = "D",
    highlight: str | None = None,
    lecture: bool | None = None,
) -> Figure:
    """Cross-attention: queries from the decoder, keys and values from the encoder's memory."""
    S, T, D = check_dim("S", S), check_dim("T", T), check_dim("d_model", d_model)
    if highlight is not None:
        check_choice("highlight", highlight, CROSS_PARTS)
    q_lit, kv_lit = highlight == "queries", highlight == "keys-values"
    c = Canvas(8.8, 4.2, lecture)
    c.title("Cross-attention: the decoder asks, the encoder's memory answers")
    dec = c.box(0.95, 3.0, 1.5, 0.62, "decoder state\nafter masked self-attn", "io", q_lit, "small")
    enc = c.box(0.95, 1.0, 1.5, 0.62, "encoder output\n(the memory)", "io", kv_lit, "small")
    wq = c.box(2.75, 3.0, 0.7, 0.46, "$W_q$", "learned", q_lit)
    wk = c.box(2.75, 1.45, 0.7, 0.42, "$W_k$", "learned", kv_lit)
    wv = c.box(2.75, 0.6, 0.7, 0.42, "$W_v$", "learned", kv_lit)
    c.arrow(dec.right, wq.left, shape("B", T, D), q_lit, offset=(0.0, 0.18))
    c.arrow(enc.right, wk.left, shape("B", S, D), kv_lit, at=0.4, offset=(0.0, 0.2))
    c.arrow(enc.right, wv.left, highlight=kv_lit)
    sc = c.box(4.6, 2.2, 1.2, 0.56, r"$Q K^\top / \sqrt{d_k}$", "op")
    c.arrow(
        wq.right,
        (sc.left[0], 2.35),
        f"Q {shape('B', T, 'd_k')}",
        q_lit,
        at=0.55,
        offset=(0.1, 0.22),
    )
    c.arrow(
        wk.right,
        (sc.left[0], 2.05),
        f"K {shape('B', S, 'd_k')}",
        kv_lit,
        at=0.5,
        offset=(0.25, -0.05),
    )
    sm = c.box(
        6.2,
        2.2,
        1.3,
        0.56,
        "softmax over\nsource (pad mask)",
        "op",
        highlight == "weights",
        "small",
    )
    c.arrow(sc.right, sm.left)
    c.text(5.4, 2.58, shape("B", T, S), "small", mono=True)
    mix = c.box(7.55, 1.3, 0.95, 0.5, "weights\n@ V", "op", highlight == "weights", "small")
    c.arrow(
        sm.right,
        (7.55, mix.top[1]),
        "weights",
        highlight == "weights",
        at=0.5,
        offset=(-0.4, -0.12),
    )
    c.path(
        [wv.right, (7.55, 0.6), mix.bottom], f"V {shape('B', S, 'd_k')}", kv_lit, offset=(0.0, 0.16)
    )
    add = c.circle(7.55, 3.0)
    c.arrow(mix.top, add.bottom, f"{shape('B', T, D)}", at=0.5, offset=(0.45, 0.0))
    c.path([dec.top, (dec.x, 3.65), (7.55, 3.65), add.top], "residual", at=1)
    c.arrow(add.right, (8.75, 3.0))
    c.text(
        0.1,
        0.15,
        f"Each of the {T} target positions mixes the {S} source positions; "
        "the weights have shape (B, T, S), not square.",
        "small",
        ha="left",
    )
    return c.done()
