"""Where each notebook fits: the course map (00) and the "you are here" architecture map (01-11)."""

from __future__ import annotations

from matplotlib.figure import Figure

from ._draw import GREEN, PURPLE, SKY, Canvas, _tint, check_choice

# (number, title on the map, part of the course)
NOTEBOOKS = (
    (0, "welcome", "start"),
    (1, "RNN\nbottlenecks", "I"),
    (2, "attention\nin RNNs", "I"),
    (3, "self-\nattention", "II"),
    (4, "multi-head\nattention", "II"),
    (5, "positional\nencoding", "II"),
    (6, "masking", "II"),
    (7, "cross-\nattention", "II"),
    (8, "transformer\nblock", "III"),
    (9, "full\ntransformer", "III"),
    (10, "GPT\n(decoder only)", "III"),
    (11, "efficiency", "III"),
)
COURSE_PARTS = {
    "start": ("how to use the course", "#F2F2F2"),
    "I": ("Part I · RNNs and their attention", _tint(GREEN, 0.75)),
    "II": ("Part II · attention, piece by piece", _tint(SKY, 0.7)),
    "III": ("Part III · the transformer and GPT", _tint(PURPLE, 0.7)),
}

# part -> (notebook, its name, one line saying what the highlighted part does)
PARTS = {
    "rnn": (1, "RNNs", "a recurrent network carries one state from token to token"),
    "rnn-attention": (2, "attention in RNNs", "the RNN decoder looks back at every encoder state"),
    "self-attention": (3, "self-attention", "every token queries every token of its own sequence"),
    "multi-head": (4, "multi-head attention", "every attention box runs H heads side by side"),
    "positional": (5, "positional encoding", "order enters as a vector added to each embedding"),
    "masking": (6, "masking", "masks keep padding and the future out of attention"),
    "cross-attention": (7, "cross-attention", "the decoder's queries read the encoder's memory"),
    "block": (8, "the transformer block", "attention + feed-forward with residuals and LayerNorm"),
    "encoder-decoder": (9, "the full transformer", "the whole model, trained end to end"),
    "gpt": (10, "GPT", "keep only the decoder, without cross-attention: a language model"),
    "efficiency": (11, "efficiency", "what attention costs; the KV cache and tiling that cut it"),
}


def course_map(highlight: int | None = None, lecture: bool | None = None) -> Figure:
    """The 12 notebooks as one path from RNNs to GPT, coloured by part; highlight a number."""
    if highlight is not None:
        check_choice("highlight", highlight, [n for n, _, _ in NOTEBOOKS])
    c = Canvas(8.0, 3.5, lecture)
    c.title("The course: from RNNs to GPT in 12 notebooks")
    w, h, dx = 1.1, 0.78, 1.3
    centres = {}
    for i, (num, title, part) in enumerate(NOTEBOOKS):
        row, col = divmod(i, 6)
        x = 0.72 + dx * (col if row == 0 else 5 - col)  # a snake: left to right, then back
        y = 2.42 if row == 0 else 1.12
        centres[num] = (x, y)
        c.box(x, y, w, h, f"{num:02d}\n{title}", "op", highlight=highlight == num, size="label")
        fill = COURSE_PARTS[part][1]
        if highlight != num:  # the part's colour as the fill
            c.ax.patches[-1].set_facecolor(fill)
    for (a, _, _), (b, _, _) in zip(NOTEBOOKS, NOTEBOOKS[1:], strict=False):
        (xa, ya), (xb, yb) = centres[a], centres[b]
        if ya == yb:
            sign = 1 if xb > xa else -1
            c.arrow((xa + sign * w / 2, ya), (xb - sign * w / 2, yb))
        else:
            c.arrow((xa, ya - h / 2), (xb, yb + h / 2))
    x = 0.2
    for key in ("I", "II", "III"):
        label, fill = COURSE_PARTS[key]
        c.box(x + 0.12, 0.3, 0.24, 0.2, "", "op")
        c.ax.patches[-1].set_facecolor(fill)
        c.text(x + 0.32, 0.3, label, "label", ha="left")
        x += 2.6
    return c.done()


def you_are_here(part: str, lecture: bool | None = None) -> Figure:
    """The architecture map (RNN roots, the encoder-decoder transformer, GPT) with `part` lit.

    part: one of PARTS ("rnn", "rnn-attention", "self-attention", "multi-head", "positional",
    "masking", "cross-attention", "block", "encoder-decoder", "gpt", "efficiency").
    """
    check_choice("part", part, list(PARTS))
    number, name, what = PARTS[part]
    lit = _lit_boxes(part)
    c = Canvas(7.4, 3.0, lecture)
    c.title(f"You are here: {number:02d} · {name}")
    bw, bh, grey = 0.76, 0.52, "#444444"
    # Where it came from.
    c.text(0.1, 2.55, "where it came from", "small", ha="left", style="italic", color=grey)
    rnn = c.box(0.6, 2.0, 0.92, 0.5, "RNN", "rnn", "rnn" in lit, "label")
    rnn_att = c.box(
        0.6, 1.0, 0.92, 0.56, "RNN +\nattention", "rnn", "rnn-attention" in lit, "label"
    )
    c.arrow(rnn.bottom, rnn_att.top)
    c.arrow((1.08, 1.5), (1.38, 1.5))
    # The transformer: an encoder row over a decoder row, each layer repeated N times.
    c.frame(1.4, 0.42, 6.02, 2.66, "transformer (encoder-decoder)", "frame" in lit)
    enc_y, dec_y = 1.98, 0.92
    c.frame(2.47, enc_y - 0.36, 4.2, enc_y + 0.47, "N× encoder layer", "layers" in lit)
    c.frame(2.47, dec_y - 0.36, 5.12, dec_y + 0.47, "N× decoder layer", "layers" in lit)
    for y, side in ((enc_y, "source"), (dec_y, "target")):
        emb = c.box(1.92, y, 0.8, bh, "embed +\nposition", "learned", "position" in lit, "label")
        c.text(1.92, y - 0.38, side, "small", color=grey)
        c.arrow(emb.right, (2.52, y))
    sa = c.box(2.9, enc_y, bw, bh, "self-\nattention", "learned", "self" in lit, "label")
    ff1 = c.box(3.78, enc_y, bw, bh, "feed-\nforward", "learned", False, "label")
    c.arrow(sa.right, ff1.left)
    ma = c.box(2.9, dec_y, bw, bh, "masked\nself-attn", "learned", "masked" in lit, "label")
    ca = c.box(3.78, dec_y, bw, bh, "cross-\nattention", "learned", "cross" in lit, "label")
    ff2 = c.box(4.66, dec_y, bw, bh, "feed-\nforward", "learned", False, "label")
    out = c.box(5.6, dec_y, 0.72, bh, "linear +\nsoftmax", "learned", False, "label")
    for a, b in ((ma, ca), (ca, ff2), (ff2, out)):
        c.arrow(a.right, b.left)
    c.arrow((3.78, enc_y - 0.36), ca.top, "memory", "cross" in lit, at=0.25, offset=(0.3, 0.0))
    # What came next.
    c.text(6.25, 2.55, "what came next", "small", ha="left", style="italic", color=grey)
    gpt = c.box(6.72, 2.0, 0.95, 0.56, "GPT\n(decoder\nonly)", "learned", "gpt" in lit, "small")
    eff = c.box(6.72, 1.0, 0.95, 0.56, "KV cache,\ntiling", "op", "efficiency" in lit, "small")
    c.arrow((6.02, 1.6), gpt.left)
    c.arrow(gpt.bottom, eff.top)
    c.text(0.1, 0.18, f"Highlighted: {what}.", "label", ha="left", style="italic")
    return c.done()


def _lit_boxes(part: str) -> set[str]:
    """Which elements of the map light up for a part."""
    return {
        "rnn": {"rnn"},
        "rnn-attention": {"rnn-attention"},
        "self-attention": {"self"},
        "multi-head": {"self", "masked", "cross"},
        "positional": {"position"},
        "masking": {"masked"},
        "cross-attention": {"cross"},
        "block": {"layers"},
        "encoder-decoder": {"frame"},
        "gpt": {"gpt"},
        "efficiency": {"efficiency"},
    }[part]
