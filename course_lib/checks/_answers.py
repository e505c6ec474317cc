"""Expected values for `course_lib.checks`, and the outputs of typical wrong answers.

Written with plain torch ops (never course_lib's references) so a check stays independent of
the code it guards. Each function computes the right answer with its default arguments; the
keyword "knobs" reproduce one known mistake each, so a check can recognise it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

NEG_INF = float("-inf")


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    softmax_dim: int = -1,
    scale: float | None = None,
    mask_mode: str = "fill",
    fill: float = NEG_INF,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, weights) of softmax(q kᵀ * scale) v; mask_mode: fill, reversed, after or ignore."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = torch.matmul(q, k.transpose(-2, -1)) * scale  # (..., L_q, L_k)
    if mask is not None and mask_mode in ("fill", "reversed"):
        scores = scores.masked_fill(~mask if mask_mode == "fill" else mask, fill)
    weights = torch.softmax(scores, dim=softmax_dim)
    if mask is not None and mask_mode == "after":
        weights = weights * mask
    return weights @ v, weights


def sdpa_out(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None):
    """The attention output from PyTorch's own fused function, as an independent oracle."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, L, D) -> (B, H, L, d): head h holds the contiguous features h*d .. (h+1)*d - 1."""
    d = x.shape[-1] // num_heads
    return torch.stack([x[..., h * d : (h + 1) * d] for h in range(num_heads)], dim=1)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, H, L, d) -> (B, L, H*d): the heads' features side by side, head 0 first."""
    return torch.cat([x[:, h] for h in range(x.shape[1])], dim=-1)


def sinusoid_loop(max_len: int, d_model: int) -> torch.Tensor:
    """The paper's table, one entry at a time in float64: sin on even, cos on odd dims."""
    pe = torch.zeros(max_len, d_model, dtype=torch.float64)
    for pos in range(max_len):
        for i in range(d_model // 2):
            angle = pos / 10000 ** (2 * i / d_model)
            pe[pos, 2 * i], pe[pos, 2 * i + 1] = math.sin(angle), math.cos(angle)
    return pe


def sinusoid(
    max_len: int,
    d_model: int,
    base: float = 10000.0,
    exponent: str = "2i",
    layout: str = "interleave",
    first: str = "sin",
    divide: bool = True,
) -> torch.Tensor:
    """Vectorised table with knobs: exponent 2i, i or j (dim index); layout interleave or halves."""
    pos = torch.arange(max_len, dtype=torch.float64)[:, None]  # (L, 1)
    sign = -1.0 if divide else 1.0
    if exponent == "j":  # every dimension j uses its own index: pos / base^(j/d)
        j = torch.arange(d_model, dtype=torch.float64)
        angles = pos * base ** (sign * j / d_model)
        return torch.where((j % 2 == 0) == (first == "sin"), torch.sin(angles), torch.cos(angles))
    i = torch.arange(d_model // 2, dtype=torch.float64)  # pair index
    power = 2 * i if exponent == "2i" else i
    angles = pos * base ** (sign * power / d_model)  # (L, d/2)
    a, b = torch.sin(angles), torch.cos(angles)
    if first == "cos":
        a, b = b, a
    if layout == "halves":
        return torch.cat([a, b], dim=-1)
    return torch.stack([a, b], dim=-1).reshape(max_len, d_model)  # interleave


def random_linear(gen: torch.Generator, n_in: int, n_out: int, bias: bool = True) -> nn.Linear:
    """An nn.Linear whose weights come from the check's generator (global RNG untouched)."""
    lin = nn.Linear(n_in, n_out, bias=bias)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(n_out, n_in, generator=gen) / math.sqrt(n_in))
        if bias:
            lin.bias.copy_(torch.randn(n_out, generator=gen) * 0.1)
    return lin


def torch_mha(x: torch.Tensor, lins: list[nn.Linear], num_heads: int) -> torch.Tensor:
    """Self-attention through nn.MultiheadAttention with the four projections copied in."""
    w_q, w_k, w_v, w_o = lins
    D = x.shape[-1]
    mha = nn.MultiheadAttention(D, num_heads, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([w_q.weight, w_k.weight, w_v.weight]))
        mha.in_proj_bias.copy_(torch.cat([w_q.bias, w_k.bias, w_v.bias]))
        mha.out_proj.weight.copy_(w_o.weight)
        mha.out_proj.bias.copy_(w_o.bias)
    mha.eval()
    return mha(x, x, x, need_weights=False)[0]


def mha(
    x: torch.Tensor,
    lins: list[nn.Linear],
    num_heads: int,
    split_ok: bool = True,
    merge_ok: bool = True,
    project: bool = True,
    scale: str = "d_k",
    softmax_dim: int = -1,
) -> torch.Tensor:
    """Multi-head self-attention with knobs: un-transposed split/merge, no w_o, wrong scale."""
    w_q, w_k, w_v, w_o = lins
    B, L, D = x.shape
    H, d = num_heads, D // num_heads

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.view(B, L, H, d).transpose(1, 2) if split_ok else t.reshape(B, H, L, d)

    q, k, v = split(w_q(x)), split(w_k(x)), split(w_v(x))  # (B, H, L, d)
    s = {"d_k": 1 / math.sqrt(d), "d_model": 1 / math.sqrt(D), "none": 1.0}[scale]
    out, _ = attention(q, k, v, scale=s, softmax_dim=softmax_dim)
    out = out.transpose(1, 2).reshape(B, L, D) if merge_ok else out.reshape(B, L, D)
    return w_o(out) if project else out


def single_head(x: torch.Tensor, lins: list[nn.Linear], scale_dim: int) -> torch.Tensor:
    """Heads never split: one attention over all D features, scaled by sqrt(scale_dim)."""
    w_q, w_k, w_v, w_o = lins
    out, _ = attention(w_q(x), w_k(x), w_v(x), scale=1 / math.sqrt(scale_dim))
    return w_o(out)


def layer_norm(
    x: torch.Tensor,
    gamma: torch.Tensor | None,
    beta: torch.Tensor | None,
    eps: float,
    dims: tuple[int, ...] = (-1,),
    unbiased: bool = False,
    eps_where: str = "inside",
) -> torch.Tensor:
    """LayerNorm with knobs: other axes, unbiased variance, eps outside the sqrt or missing."""
    mean = x.mean(dim=dims, keepdim=True)
    var = x.var(dim=dims, keepdim=True, unbiased=unbiased)
    denom = {"inside": torch.sqrt(var + eps), "outside": var.sqrt() + eps, "none": var.sqrt()}
    y = (x - mean) / denom[eps_where]
    y = y * gamma if gamma is not None else y
    return y + beta if beta is not None else y


def rnn_cell_torch(x, h, w_ih, w_hh, b_ih, b_hh) -> torch.Tensor:
    """One tanh RNN step through nn.RNNCell with the weights copied in."""
    cell = nn.RNNCell(w_ih.shape[1], w_ih.shape[0])
    with torch.no_grad():
        for p, w in zip(cell.parameters(), (w_ih, w_hh, b_ih, b_hh), strict=True):
            p.copy_(w)
    return cell(x, h)


def rnn_cell(
    x, h, w_ih, w_hh, b_ih, b_hh, act=torch.tanh, t_ih=True, t_hh=True, hidden=True, bias=(1, 1)
) -> torch.Tensor:
    """act(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh) with knobs for each term."""
    z = x @ (w_ih.T if t_ih else w_ih) + bias[0] * b_ih + bias[1] * b_hh
    if hidden:
        z = z + h @ (w_hh.T if t_hh else w_hh)
    return act(z)


def pool(
    scores: torch.Tensor,
    keys: torch.Tensor,
    mask: torch.Tensor | None,
    softmax_dim: int = -1,
    mask_mode: str = "fill",
    fill: float = NEG_INF,
) -> tuple[torch.Tensor, torch.Tensor]:
    """scores (B, L) -> (context (B, H), weights (B, L)); mask (B, L), True = valid."""
    if mask is not None and mask_mode in ("fill", "reversed"):
        scores = scores.masked_fill(~mask if mask_mode == "fill" else mask, fill)
    weights = torch.softmax(scores, dim=softmax_dim)
    if mask is not None and mask_mode == "after":
        weights = weights * mask
    return torch.einsum("bl,blh->bh", weights, keys), weights


def additive_scores(query, keys, w_q, w_k, v, use_tanh: bool = True) -> torch.Tensor:
    """Bahdanau scores vᵀ tanh(W_q q + W_k k_j): (B, L)."""
    pre = (query @ w_q.weight.T)[:, None, :] + keys @ w_k.weight.T  # (B, L, A)
    return (torch.tanh(pre) if use_tanh else pre) @ v.weight[0]


def dot_scores(query: torch.Tensor, keys: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Luong dot scores k_j · q: (B, L)."""
    return torch.einsum("blh,bh->bl", keys, query) * scale


def online_step(
    m_prev,
    l_prev,
    acc_prev,
    scores,
    v,
    rescale_acc: bool = True,
    rescale_l: bool = True,
    keep_max: bool = True,
    stable: bool = True,
    normalise: str = "",
    inverted: bool = False,
    guard: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One online-softmax update for a key block, with a knob per typical mistake.

    guard: a row whose max is still -inf (no visible key yet) shifts by 0, not by -inf, so a
    fully masked block leaves the empty state empty instead of making exp(-inf + inf) = NaN.
    """
    block_max = scores.amax(dim=-1, keepdim=True)  # (..., L_q, 1)
    m_new = torch.maximum(m_prev, block_max) if keep_max else block_max
    if not stable:
        p = torch.exp(scores)
        l_new, acc_new = l_prev + p.sum(-1, keepdim=True), acc_prev + p @ v
        return m_new, l_new, acc_new
    shift = m_new.masked_fill(torch.isinf(m_new), 0.0) if guard else m_new
    p = torch.exp(scores - shift)  # (..., L_q, B_k)
    alpha = torch.exp(shift - m_prev if inverted else m_prev - shift)  # old max -> new max
    l_new = (l_prev * alpha if rescale_l else l_prev) + p.sum(-1, keepdim=True)
    acc_new = (acc_prev * alpha if rescale_acc else acc_prev) + p @ v
    if normalise == "simple":  # divided by l inside the update
        acc_new = acc_new / l_new
    elif normalise == "weighted":  # kept a normalised running output
        acc_new = (acc_prev * l_prev * alpha + p @ v) / l_new
    return m_new, l_new, acc_new


def smoothed_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    pad_id: int,
    eps: float,
    spread: str = "all",
    ignore_pad: bool = True,
    denominator: str = "real",
    reduce: str = "mean",
    uniform: str = "mean",
    raw: bool = False,
) -> torch.Tensor:
    """The smoothed loss in float64, with knobs that reproduce typical mistakes."""
    logp = logits.double() if raw else logits.double().log_softmax(dim=-1)  # (B, L, V)
    nll = -logp.gather(-1, targets[..., None])[..., 0]  # (B, L)
    if spread == "all":  # q = (1 - eps) one_hot + eps / V
        smooth = -logp.mean(dim=-1) if uniform == "mean" else -logp.sum(dim=-1)
        per_pos = (1 - eps) * nll + eps * smooth
    else:  # eps spread over the wrong tokens only (and not PAD for "v-2")
        wrong = torch.ones_like(logp).scatter(-1, targets[..., None], 0.0)
        if spread == "v-2":
            wrong[..., pad_id] = 0.0
        q = wrong * eps / wrong.sum(dim=-1, keepdim=True)
        per_pos = (1 - eps) * nll - (q * logp).sum(dim=-1)
    real = targets != pad_id if ignore_pad else torch.ones_like(targets, dtype=torch.bool)
    per_pos = per_pos * real
    if reduce == "sum":
        return per_pos.sum().float()
    if reduce == "per_sequence":
        return (per_pos.sum(dim=1) / real.sum(dim=1)).mean().float()
    count = real.sum() if denominator == "real" else torch.tensor(targets.numel())
    return (per_pos.sum() / count).float()


class MarkovLM:
    """A seeded random step function for beam search: log p(next | position, last token).

    Called with prefixes (k, t) of token ids, it returns log-probs (k, V); row i depends only on
    t and prefixes[i, -1] (a start row when t = 0). `eos_bias` shifts every EOS (id 0) logit.
    """

    def __init__(self, seed: int, eos_bias: float, vocab: int = 6, max_t: int = 8) -> None:
        g = torch.Generator().manual_seed(seed)
        self.table = torch.randn(max_t + 1, vocab + 1, vocab, generator=g) * 2.0  # (t, last, V)
        self.table[:, :, 0] += eos_bias
        self.vocab = vocab

    def __call__(self, prefixes: torch.Tensor) -> torch.Tensor:
        ok = isinstance(prefixes, torch.Tensor) and prefixes.dim() == 2
        if not ok or prefixes.is_floating_point():
            raise ValueError(
                "step_fn takes the live prefixes as one (k, t) tensor of token ids (k prefixes "
                f"of t tokens each; (1, 0) at the start), got {prefixes!r:.80}"
            )
        k, t = prefixes.shape
        last = prefixes[:, -1] if t else torch.full((k,), self.vocab)
        return self.table[min(t, len(self.table) - 1), last].log_softmax(dim=-1)  # (k, V)


def beam(
    step_fn: Callable[[torch.Tensor], torch.Tensor],
    max_len: int,
    eos_id: int,
    beam_size: int,
    alpha: float,
    width: int | None = None,
    shrink: bool = True,
    stop_first: bool = False,
    penalty: str = "gnmt",
    count_eos: bool = True,
) -> list[int]:
    """The best hypothesis of beam search with EOS set aside and GNMT's length penalty.

    Plain lists, one candidate at a time. Knobs: width (1 = greedy), shrink=False (the beam
    does not shrink as hypotheses finish), stop_first (stop at the first EOS), penalty
    ("none", "mean": log p / |y|), count_eos=False (|y| without EOS).
    """
    width = beam_size if width is None else width
    live: list[tuple[list[int], float]] = [([], 0.0)]
    done: list[tuple[list[int], float]] = []
    for _ in range(max_len):
        prefixes = torch.tensor([p for p, _ in live], dtype=torch.long).reshape(len(live), -1)
        logp = step_fn(prefixes).double()  # (k, V)
        cands = [(s + logp[i, v].item(), p + [v]) for i, (p, s) in enumerate(live)
                 for v in range(logp.shape[1])]  # fmt: skip
        cands.sort(key=lambda c: -c[0])
        kept = cands[: max(width - len(done), 0) if shrink else width]
        live = [(p, s) for s, p in kept if p[-1] != eos_id]
        done += [(p, s) for s, p in kept if p[-1] == eos_id]
        if not live or (stop_first and done):
            break

    def score(hyp: tuple[list[int], float]) -> float:
        n = len(hyp[0]) - (0 if count_eos else 1)
        if penalty == "none":
            return hyp[1]
        return hyp[1] / n if penalty == "mean" else hyp[1] / ((5 + n) / 6) ** alpha

    return max(done, key=score)[0] if done else max(live, key=lambda h: h[1])[0]
