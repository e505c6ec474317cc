"""Part III: the block, pre-LN and post-LN (08), the encoder-decoder (09), GPT and sampling (10)."""

from __future__ import annotations

from matplotlib.figure import Figure

from ._draw import Canvas, check_choice, check_dim, check_int, shape

BLOCK_VARIANTS = ("both", "pre", "post")
BLOCK_PARTS = ("attention", "feed-forward", "norm", "residual")
MODEL_PARTS = (
    "embedding",
    "encoder",
    "decoder",
    "self-attention",
    "masked-self-attention",
    "cross-attention",
    "feed-forward",
    "memory",
    "output",
)
GPT_PARTS = ("embedding", "blocks", "head", "sampling", "loop")


def _block_column(
    c: Canvas, cx: float, pre: bool, lit: str | None, L: str, D: str, d_ff: str
) -> None:
    """One encoder block, bottom to top: two sublayers, each with its residual and LayerNorm."""
    bw, side = 1.75, cx + 1.2
    sub_y = (0.95, 3.3)  # where each sublayer's residual branches off
    names = (
        ("multi-head\nself-attention", "attention", "learned"),
        (f"feed-forward\n{D} → {d_ff} → {D}", "feed-forward", "learned"),
    )
    c.text(cx, 0.3, f"x  {shape('B', L, D)}", "small", mono=True)
    prev = (cx, 0.45)
    for (name, part, kind), y in zip(names, sub_y, strict=False):
        if pre:
            ln = c.box(cx, y + 0.55, bw, 0.4, "LayerNorm", "norm", lit == "norm", "label")
            f = c.box(cx, y + 1.3, bw, 0.6, name, kind, lit == part, "label")
            add = c.circle(cx, y + 2.05, "+", lit == "residual")
            c.arrow(prev, ln.bottom)
            c.arrow(ln.top, f.bottom)
            c.arrow(f.top, add.bottom)
            prev = add.top
        else:
            f = c.box(cx, y + 0.75, bw, 0.6, name, kind, lit == part, "label")
            add = c.circle(cx, y + 1.45, "+", lit == "residual")
            ln = c.box(cx, y + 2.0, bw, 0.4, "LayerNorm", "norm", lit == "norm", "label")
            c.arrow(prev, f.bottom)
            c.arrow(f.top, add.bottom)
            c.arrow(add.top, ln.bottom)
            prev = ln.top
        c.path([(cx, y), (side, y), (side, add.y), add.right], highlight=lit == "residual")
        if y == sub_y[0]:  # name the bypass once: it is the residual (skip) connection
            c.text(side + 0.08, (y + add.y) / 2, "residual", "small", ha="left", rotation=90)
    c.arrow(prev, (cx, prev[1] + 0.35))
    c.text(cx, prev[1] + 0.5, f"out  {shape('B', L, D)}", "small", mono=True)


def block_diagram(
    variant: str = "both",
    highlight: str | None = None,
    L: int | str = "L",
    d_model: int | str = "D",
    d_ff: int | str = "4D",
    lecture: bool | None = None,
) -> Figure:
    """The encoder block: self-attention and feed-forward, each wrapped in a residual and a
    LayerNorm, either before the sublayer (pre-LN) or after the sum (post-LN)."""
    check_choice("variant", variant, BLOCK_VARIANTS)
    if highlight is not None:
        check_choice("highlight", highlight, BLOCK_PARTS)
    L, D, F = check_dim("L", L), check_dim("d_model", d_model), check_dim("d_ff", d_ff)
    cols = ["pre", "post"] if variant == "both" else [variant]
    c = Canvas(3.7 * len(cols) + 0.2, 7.2, lecture)
    c.title("The transformer block" if len(cols) == 2 else f"The transformer block, {variant}-LN")
    heads = {
        "pre": ("pre-LN: x + f(LayerNorm(x))", "this course, GPT-2"),
        "post": ("post-LN: LayerNorm(x + f(x))", "the 2017 paper"),
    }
    for i, kind in enumerate(cols):
        cx = 1.75 + 3.7 * i
        c.text(cx + 0.2, 6.7, heads[kind][0], "label", weight="bold")
        c.text(cx + 0.2, 6.45, heads[kind][1], "small", style="italic")
        _block_column(c, cx, kind == "pre", highlight, L, D, F)
    return c.done()


def encoder_decoder_diagram(
    layers: int = 6,
    highlight: str | None = None,
    lecture: bool | None = None,
) -> Figure:
    """The encoder-decoder transformer: N encoder layers build the memory that every decoder
    layer's cross-attention reads; the decoder predicts the next target token."""
    check_int("layers", layers, 1, 48)
    if highlight is not None:
        check_choice("highlight", highlight, MODEL_PARTS)
    lit = highlight
    c = Canvas(7.4, 6.9, lecture)
    c.title(f"The encoder-decoder transformer, N = {layers} layers each")
    ex, dx, bw = 1.8, 5.4, 1.7
    # Encoder.
    c.text(ex, 0.3, f"source tokens {shape('B', 'S')}", "small", mono=True)
    e_emb = c.box(
        ex, 1.0, bw, 0.55, "embedding × √D\n+ position", "learned", lit == "embedding", "label"
    )
    c.arrow((ex, 0.42), e_emb.bottom)
    c.frame(ex - 1.05, 1.55, ex + 1.05, 3.75, f"encoder, × {layers}", lit == "encoder", "top left")
    e_sa = c.box(ex, 2.2, bw, 0.55, "self-attention", "learned", lit == "self-attention", "label")
    e_ff = c.box(ex, 3.1, bw, 0.55, "feed-forward", "learned", lit == "feed-forward", "label")
    c.arrow(e_emb.top, e_sa.bottom, shape("B", "S", "D"), at=0.2, offset=(0.55, 0.0))
    c.arrow(e_sa.top, e_ff.bottom)
    # Decoder.
    c.text(dx, 0.3, f"target, shifted right {shape('B', 'T')}", "small", mono=True)
    d_emb = c.box(
        dx, 1.0, bw, 0.55, "embedding × √D\n+ position", "learned", lit == "embedding", "label"
    )
    c.arrow((dx, 0.42), d_emb.bottom)
    c.frame(dx - 1.05, 1.55, dx + 1.05, 4.65, f"decoder, × {layers}", lit == "decoder", "top left")
    d_sa = c.box(
        dx,
        2.2,
        bw,
        0.55,
        "masked\nself-attention",
        "learned",
        lit == "masked-self-attention",
        "label",
    )
    d_ca = c.box(dx, 3.1, bw, 0.55, "cross-attention", "learned", lit == "cross-attention", "label")
    d_ff = c.box(dx, 4.0, bw, 0.55, "feed-forward", "learned", lit == "feed-forward", "label")
    c.arrow(d_emb.top, d_sa.bottom, shape("B", "T", "D"), at=0.2, offset=(0.55, 0.0))
    c.arrow(d_sa.top, d_ca.bottom, "queries", at=0.5, offset=(0.45, 0.0))
    c.arrow(d_ca.top, d_ff.bottom)
    out = c.box(dx, 5.3, bw, 0.55, "linear + softmax", "learned", lit == "output", "label")
    c.arrow((dx, 4.65), out.bottom)
    c.arrow(out.top, (dx, 6.05))
    c.text(dx, 6.25, f"next-token probabilities {shape('B', 'T', 'V')}", "small", mono=True)
    # The memory: the encoder's last output, read by every decoder layer.
    c.path(
        [(ex, 3.75), (ex, 4.1), (3.75, 4.1), (3.75, 3.1), d_ca.left],
        f"memory {shape('B', 'S', 'D')}",
        lit == "memory",
        at=1,
        offset=(0.0, 0.17),
    )
    c.text(3.75, 2.6, "keys and values\nof every decoder\nlayer's cross-\nattention", "small")
    c.text(
        0.1,
        5.55,
        "Every sublayer sits in a residual\nwith a LayerNorm (notebook 08).\n"
        "The encoder runs once;\nthe decoder once per output token.",
        "small",
        ha="left",
        va="top",
    )
    return c.done()


def gpt_diagram(
    layers: int = 6,
    highlight: str | None = None,
    lecture: bool | None = None,
) -> Figure:
    """The decoder-only GPT and its sampling loop: predict, sample the next token, append, repeat."""
    check_int("layers", layers, 1, 96)
    if highlight is not None:
        check_choice("highlight", highlight, GPT_PARTS)
    lit = highlight
    c = Canvas(9.2, 3.3, lecture)
    c.title("GPT: a decoder-only transformer, generating one token at a time")
    y = 2.0
    tok = c.box(0.65, y, 1.0, 0.6, "tokens\nso far", "io", lit == "loop", "label")
    emb = c.box(2.25, y, 1.2, 0.6, "token +\nposition emb.", "learned", lit == "embedding", "label")
    blocks = c.box(
        4.1,
        y,
        1.5,
        0.7,
        f"{layers}× block:\nmasked self-attn\n+ feed-forward",
        "op",
        lit == "blocks",
        "small",
    )
    head = c.box(5.95, y, 1.2, 0.6, "LayerNorm +\nlinear head", "learned", lit == "head", "label")
    samp = c.box(7.55, y, 1.05, 0.6, "sample at\nlast position", "op", lit == "sampling", "small")
    nxt = c.box(8.65, y, 0.75, 0.6, "next\ntoken", "io", lit == "loop", "label")
    for a, b, s in (
        (tok, emb, ("B", "T")),
        (emb, blocks, ("B", "T", "D")),
        (blocks, head, ("B", "T", "D")),
        (head, samp, ("B", "T", "V")),
    ):
        c.arrow(a.right, b.left)
        c.text((a.right[0] + b.left[0]) / 2, y + 0.48, shape(*s), "small", mono=True)
    c.arrow(samp.right, nxt.left)
    c.text(7.55, y - 0.48, "temperature, top-k, top-p", "small")
    c.text(5.95, y - 0.48, "logits over V", "small")
    c.path(
        [nxt.bottom, (nxt.x, 0.75), (tok.x, 0.75), tok.bottom],
        "append it and run again: (B, T) → (B, T+1)",
        lit == "loop",
        at=1,
        offset=(0.0, 0.0),
    )
    c.text(
        0.1,
        0.25,
        "No encoder and no cross-attention: the causal mask alone makes it a language model.",
        "small",
        ha="left",
        style="italic",
    )
    return c.done()
