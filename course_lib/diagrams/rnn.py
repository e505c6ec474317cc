"""Part I: the unrolled RNN against attention's one hop (01), one attention decoder step (02)."""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.figure import Figure

from ._draw import Canvas, check_choice, check_int

SCORES = {
    "additive": r"$e_{tj} = v^\top \tanh(W_q s_{t-1} + W_k h_j)$",
    "dot": r"$e_{tj} = s_{t-1}^\top h_j$",
    "general": r"$e_{tj} = s_{t-1}^\top W h_j$",
}
STEP_PARTS = ("query", "weights", "context")


def rnn_vs_attention(L: int = 5, lecture: bool | None = None) -> Figure:
    """Left: an RNN unrolled over L tokens, the L-step path from x_1 to h_L highlighted.
    Right: self-attention over the same tokens, where x_1 reaches y_L in one hop."""
    check_int("L", L, 2, 8, "one box per token must fit")
    c = Canvas(8.6, 3.2, lecture)
    c.title("What must happen one after another")
    span = 3.3
    xs = [0.55 + span * i / (L - 1) for i in range(L)]
    # The RNN: each state needs the one before it.
    c.text(0.1, 2.7, "RNN, unrolled: states in sequence", "label", ha="left", weight="bold")
    hs = [
        c.box(x, 2.05, 0.5, 0.42, f"$h_{{{i + 1}}}$", "rnn", size="box") for i, x in enumerate(xs)
    ]
    for i, x in enumerate(xs):
        tok = c.box(x, 0.95, 0.5, 0.36, f"$x_{{{i + 1}}}$", "io", size="box")
        c.arrow(tok.top, hs[i].bottom, highlight=i == 0)
    for a, b in zip(hs, hs[1:], strict=False):
        c.arrow(a.right, b.left, highlight=True)
    c.text(
        0.1,
        0.4,
        f"$x_1$ reaches $h_{{{L}}}$ after {L} steps, one after another",
        "label",
        ha="left",
    )
    # Attention: every output reads every input directly.
    x0 = 4.6
    c.text(x0 - 0.1, 2.7, "self-attention: one hop", "label", ha="left", weight="bold")
    xa = [x0 + 0.25 + span * i / (L - 1) for i in range(L)]
    ins = [
        c.box(x, 0.95, 0.5, 0.36, f"$x_{{{i + 1}}}$", "io", size="box") for i, x in enumerate(xa)
    ]
    outs = [
        c.box(x, 2.05, 0.5, 0.42, f"$y_{{{i + 1}}}$", "op", size="box") for i, x in enumerate(xa)
    ]
    for j, src in enumerate(ins):
        for i, dst in enumerate(outs):
            if not (j == 0 and i == L - 1):
                c.arrow(src.top, dst.bottom, head=False, colour="#BBBBBB")
    c.arrow(ins[0].top, outs[-1].bottom, highlight=True)
    c.text(
        x0 - 0.1,
        0.4,
        f"$x_1$ reaches $y_{{{L}}}$ in 1 step; grey: all {L * L} weights, computed at once",
        "label",
        ha="left",
    )
    return c.done()


def rnn_attention_step(
    L: int = 4,
    score: str = "additive",
    highlight: Sequence[str] = ("query", "context"),
    lecture: bool | None = None,
) -> Figure:
    """One decoder step of an attention RNN seq2seq (Bahdanau's order, as Seq2SeqRNN): the
    previous state queries the L encoder states, the context enters the GRU cell and the output."""
    check_int("L", L, 2, 6, "one box per encoder state must fit")
    check_choice("score", score, list(SCORES))
    if isinstance(highlight, str):
        raise TypeError(f"highlight must be a sequence of parts, e.g. ({highlight!r},)")
    for part in highlight:
        check_choice("highlight", part, STEP_PARTS)
    lit = set(highlight)
    c = Canvas(8.4, 4.4, lecture)
    c.title("One decoder step t with attention")
    xs = [0.65 + 3.2 * j / (L - 1) for j in range(L)]
    hs = [
        c.box(x, 0.75, 0.55, 0.42, f"$h_{{{j + 1}}}$", "rnn", size="box") for j, x in enumerate(xs)
    ]
    c.text(2.25, 0.25, "encoder states, one per source token   (B, L_s, K)", "small", mono=False)
    sc = c.box(2.25, 1.85, 3.9, 0.5, SCORES[score] + "   softmax over j", "op", "weights" in lit)
    for h in hs:
        c.arrow(h.top, (h.x, sc.bottom[1]))
    mix = c.box(
        2.25, 3.05, 3.9, 0.5, r"context $c_t = \sum_j \alpha_{tj}\, h_j$", "op", "context" in lit
    )
    c.arrow(sc.top, mix.bottom, r"$\alpha_t$  (B, L_s)", "weights" in lit)
    c.path([(0.2, 0.75), (0.12, 0.75), (0.12, 3.05), (mix.left[0], 3.05)], dashed=True)
    c.text(0.22, 2.45, "values: the\nsame $h_j$", "small", ha="left")
    # The decoder side.
    prev = c.box(6.0, 1.85, 0.8, 0.45, "$s_{t-1}$", "rnn", size="box")
    c.text(6.0, 1.42, "previous decoder state", "small")
    c.arrow(prev.left, sc.right, "query (B, H)", "query" in lit, offset=(0.0, 0.17))
    gru = c.box(6.4, 3.05, 0.95, 0.5, "GRU cell", "rnn")
    c.arrow(prev.top, (6.15, gru.bottom[1]))
    emb = c.box(7.6, 1.85, 0.95, 0.5, "embed\n$y_{t-1}$", "learned", size="label")
    c.arrow(emb.top, (6.7, gru.bottom[1]), "(B, E)", at=0.45, offset=(0.32, 0.0))
    c.arrow(mix.right, gru.left, "$c_t$  (B, K)", "context" in lit, offset=(0.0, 0.17))
    out = c.box(6.4, 4.0, 1.9, 0.42, "linear on $[s_t; c_t]$", "learned", size="label")
    c.arrow(gru.top, out.bottom, "$s_t$", at=0.5, offset=(0.18, 0.0))
    c.path(
        [(mix.top[0] + 1.2, mix.top[1]), (mix.top[0] + 1.2, 4.0), out.left],
        "$c_t$",
        "context" in lit,
        at=0,
        offset=(-0.2, 0.0),
    )
    c.arrow(out.right, (8.3, 4.0), "$y_t$", offset=(0.0, 0.14))
    return c.done()
