"""The checks for notebook 09: the label-smoothed sequence loss and the greedy decoding loop.

Public through `course_lib.checks`; see that module for how a check works.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F

from . import _answers
from ._machinery import (
    as_tensors,
    call_learner,
    case_label,
    compare,
    isolated,
    passed,
    randn,
    reference_objects,
    require_callable,
)
from ._replay import observed

DECODING_HINTS = {
    # label-smoothed loss
    "ls_error": "logits are (B, L, V) and targets (B, L): the vocabulary is the last axis of the logits, and each target picks one entry of its position's row; a cross-entropy-style function wants (N, V) scores with (N,) targets, so flatten the positions first, or work along the last axis directly",
    "ls_scalar": "return one number, the mean over the non-PAD positions (a 0-d tensor), not one loss per position",
    "ls_raw_logits": "you used the raw logits as log-probabilities: logits are unnormalised scores; turn them into log-probabilities over the vocabulary first (a log-softmax over the last axis), then pick and average",
    "ls_pad": "PAD targets were counted: positions whose target is pad_id must contribute nothing, and the mean is over the real (non-PAD) positions only",
    "ls_pad_mean": "PAD positions were zeroed but you divided by every position: divide by the number of non-PAD targets instead",
    "ls_pad_zero": "pad_id is an argument: compare targets with pad_id, not with 0",
    "ls_no_smoothing": "no smoothing: with eps > 0 the target distribution is (1 - eps) on the right token plus eps / V spread over all V tokens",
    "ls_v_minus_1": "eps was spread over the V - 1 wrong tokens only; this exercise uses PyTorch's convention: (1 - eps) * one_hot + eps / V over all V tokens (the right one included)",
    "ls_v_minus_2": "eps was spread over V - 2 tokens (leaving out the right one and PAD, as the Annotated Transformer does); this exercise uses (1 - eps) * one_hot + eps / V over all V",
    "ls_sum_not_mean": "the smoothing term should be eps times the *mean* of -log p over the V tokens (eps / V per token), not eps times their sum",
    "ls_sum": "you returned the sum over positions; return the mean over non-PAD positions",
    "ls_per_sequence": "you averaged per sequence, then over the batch; average over all non-PAD positions at once, so long sequences count in proportion to their length",
    "ls_unstable": "the loss is inf or NaN for large logits: the log of a softmax underflows to log(0) = -inf for an unlikely token of a confident model; use a stable log-softmax, which computes the log-probabilities directly (subtracting the row's max inside the log)",
    "ls_steps": "loss at a position = (1 - eps) * (-log p[target]) + eps * mean over v of (-log p[v]), with log p the log-softmax of the logits over the vocabulary (the last axis); then average over non-PAD positions.",
    # greedy decoding
    "gd_error": "model.encode gives the memory (B, L_s, D) of src; model.decode takes the decoder input ys, a (B, t) tensor of token ids (torch.long) that starts with a column of bos_id, with the memory and src, and gives logits (B, t, V); each step adds one id per row, (B,), to ys along the time axis (axis 1)",
    "gd_reference": "your function called course_lib's reference `Transformer.{name}`; write the loop yourself with model.encode and model.decode",
    "gd_tensor": "return a (B, T) tensor of token ids (torch.long), T <= max_len",
    "gd_bos": "the output starts with BOS: BOS is only the decoder's first input; drop it from what you return (the first column)",
    "gd_no_feedback": "every step predicted the same token, as if the decoder saw only BOS: append each prediction to the decoder input and read the newest position's logits (the last position along the time axis, not the first)",
    "gd_no_eos": "EOS is missing: keep the EOS token in the output (it tells where the translation ends); write PAD only after it",
    "gd_after_eos": "tokens after EOS: once a row has produced EOS it is finished, so every later position of that row must be PAD (model.pad_id); remember, row by row, which rows have finished",
    "gd_any_done": "you stopped when the first row produced EOS; stop only when every row has, and write PAD for the rows that are already finished",
    "gd_too_long": "more than max_len tokens: generate at most max_len tokens (BOS not counted)",
    "gd_no_early_stop": "the output has {T} positions, but every row had produced EOS after {n}: the prompt asks the loop to stop as soon as every row is finished (the extra steps only append PAD and cost a decoder pass each)",
    "gd_encode_once": "model.encode ran {n} times: the encoder output (memory) does not change while the target grows, so encode the source once, before the loop",
    "gd_steps": "Greedy decoding: encode once; ys = BOS; repeat up to max_len times: decode ys, take the argmax of the last position, write PAD for finished rows, append; stop when every row has produced EOS; return ys without BOS.",
    # beam search
    "bs_error": "step_fn takes the live prefixes as one (k, t) tensor of token ids and returns (k, V) log-probabilities; the search starts from one empty prefix, a (1, 0) tensor, whose summed log-probability is 0",
    "bs_tensor": "return the best hypothesis's tokens as a 1-D tensor of token ids (torch.long), with its EOS when it finished",
    "bs_after_eos": "tokens after EOS: a candidate that ends in EOS is finished; set it aside instead of extending it",
    "bs_no_eos": "EOS is missing: a finished hypothesis keeps its EOS token (it marks the end, and it counts in the length |y|)",
    "bs_greedy": "only one prefix was kept per step, which is greedy decoding: keep the best beam_size candidates over every live prefix and every next token",
    "bs_no_shrink": "the beam did not shrink: every finished hypothesis keeps one of the beam_size places, so each step keeps beam_size minus the number finished so far",
    "bs_stop_first": "the search stopped at the first finished hypothesis: go on until no prefix is live (or max_len steps), since a longer hypothesis can score higher once the length penalty is applied",
    "bs_no_penalty": "the finished hypotheses were ranked by summed log-probability alone (or with the penalty multiplied): divide each one's log p by ((5 + |y|) / 6) ** alpha, then take the largest",
    "bs_mean": "log p was divided by the length |y| itself: this exercise uses GNMT's gentler penalty ((5 + |y|) / 6) ** alpha",
    "bs_len_no_eos": "the length |y| in the penalty counts every token of the hypothesis, its EOS included",
    "bs_steps": "Beam search: live = one empty prefix with score 0; each step score every (live prefix, next token) by summed log p, keep the best beam_size - (number finished), move those ending in EOS to the finished list, stop when none is live; answer: the finished one with the largest log p / ((5 + |y|) / 6) ** alpha, or the best live prefix if none finished.",
}
H = DECODING_HINTS

# ----------------------------------------------------------------------------- label smoothing


# Hint ladders, one per exercise: the idea, then the operations and axes, then code.
# `hint("exN_k")` in course_lib.checks walks up them; only the last level shows code.
LADDERS: dict[str, tuple[str, ...]] = {
    "ex9_1": (
        "Label smoothing trains against a softened target: (1 - eps) on the right token and eps spread evenly over all V tokens; PAD positions do not count, and the mean runs over the real positions. The usual traps: the log of a softmax (it underflows to -inf for a confident model), the *sum* instead of the *mean* over the V tokens, and dividing by every position instead of the real ones.",
        "Take log-probabilities over the vocabulary (a log-softmax over the last axis, stable for large logits); the loss per position is (1 - eps) times minus the target's log-probability plus eps times minus the mean log-probability over V; mask out PAD and divide by the number of real targets.",
        "log_p = torch.log_softmax(logits, dim=-1)\nnll = -log_p.gather(-1, targets.unsqueeze(-1)).squeeze(-1)\nper_pos = (1 - eps) * nll - eps * log_p.mean(dim=-1)\nreal = targets != pad_id\nreturn (per_pos * real).sum() / real.sum()",
    ),
    "ex9_2": (
        "Greedy decoding feeds the decoder its own predictions one token at a time, always taking the most likely next token; the source is encoded once, and the loop ends when every row has said EOS (or after max_len tokens). The decoder gives one row of logits per input position: only the newest position's row is the guess for the next token. Rows finish at different steps, so remember which ones have.",
        "Keep ys (B, t), starting with BOS, and a (B,) 'done' flag. Each step: decode ys against the memory, take the argmax of the newest position, write PAD where the row is done, append, update done, stop when all are done. Return ys without the BOS column.",
        "B = src.shape[0]; memory = model.encode(src)\nys = torch.full((B, 1), bos_id, dtype=torch.long); done = torch.zeros(B, dtype=torch.bool)\nfor _ in range(max_len):\n    nxt = model.decode(ys, memory, src)[:, -1].argmax(-1).masked_fill(done, model.pad_id)\n    ys = torch.cat([ys, nxt[:, None]], 1); done |= nxt == eos_id\n    if done.all(): break\nreturn ys[:, 1:]",
    ),
    "ex9_3": (
        "Beam search keeps the beam_size likeliest partial outputs instead of one. A partial output that ends in EOS is finished and leaves the beam, which shrinks by one; when no prefix is live (or after max_len steps) the finished hypotheses are compared by log p divided by the length penalty ((5 + |y|) / 6) ** alpha.",
        "Keep two lists of (tokens, summed log p): live, starting as [([], 0.0)], and finished. Each step: stack the live prefixes into one (k, t) long tensor, call step_fn once, add each prefix's score to its row of log-probs, flatten the (k, V) candidates and take the best beam_size - len(finished) (topk; token = index % V, prefix = index // V); move those ending in EOS to finished. At the end take the finished hypothesis with the largest penalised score, or the best live prefix if none finished.",
        "live, finished = [([], 0.0)], []\nfor _ in range(max_len):\n    prefixes = torch.tensor([t for t, _ in live], dtype=torch.long).view(len(live), -1)\n    log_p = step_fn(prefixes); V = log_p.shape[1]\n    scores = torch.tensor([s for _, s in live])[:, None] + log_p\n    best = scores.flatten().topk(beam_size - len(finished))\n    new = [(live[i // V][0] + [i % V], s) for s, i in zip(best.values.tolist(), best.indices.tolist())]\n    finished += [h for h in new if h[0][-1] == eos_id]; live = [h for h in new if h[0][-1] != eos_id]\n    if not live: break\nkey = lambda h: h[1] / ((5 + len(h[0])) / 6) ** alpha\nreturn torch.tensor(max(finished, key=key)[0] if finished else max(live, key=lambda h: h[1])[0])",
    ),
}


@isolated
def check_label_smoothed_loss(fn: Callable[..., torch.Tensor]) -> None:
    """Check fn(logits (B, L, V), targets (B, L), pad_id, eps) -> scalar mean loss.

    The target distribution is (1 - eps) * one_hot + eps / V (PyTorch's convention) and the
    mean runs over the positions whose target is not pad_id; compared with F.cross_entropy.
    """
    name = "label_smoothed_loss"
    require_callable(fn, name)
    g = torch.Generator().manual_seed(11)
    cases = [  # (description, (B, L, V), lengths, pad_id, eps, logit scale)
        ("eps=0.1, PAD at the end of shorter rows", (2, 5, 7), (5, 3), 0, 0.1, 1.0),
        ("eps=0: plain cross-entropy", (3, 4, 9), (4, 2, 3), 0, 0.0, 2.0),
        ("pad_id=1, eps=0.2", (3, 6, 6), (6, 4, 1), 1, 0.2, 1.0),
        ("large logits (confident model), eps=0.1", (2, 4, 8), (4, 3), 0, 0.1, 60.0),
        ("B=1, eps=0.1", (1, 5, 6), (4,), 0, 0.1, 1.0),
    ]
    for i, (desc, (B, L, V), lengths, pad, eps, scale) in enumerate(cases, 1):
        logits = randn(g, B, L, V) * scale
        targets = torch.randint(0, V, (B, L), generator=g)
        targets = torch.where(targets == pad, (pad + 1) % V, targets)  # no PAD among real tokens
        for b, n in enumerate(lengths):
            targets[b, n:] = pad
        label = case_label(name, i, len(cases), desc)
        _smoothed_case(fn, label, logits, targets, pad, eps)
    passed(name, len(cases))


def _smoothed_case(fn, label: str, logits, targets, pad: int, eps: float) -> None:
    """One loss case: call, check it is a finite scalar, compare, diagnose."""
    V = logits.shape[-1]
    expected = F.cross_entropy(  # before the learner's code runs
        logits.double().reshape(-1, V),
        targets.reshape(-1),
        ignore_index=pad,
        label_smoothing=eps,
    ).float()
    result = call_learner(fn, label, (logits, targets, pad, eps), H["ls_error"])
    (loss,) = as_tensors(result, label, ("the loss",), H["ls_scalar"])
    if loss.numel() != 1:
        raise AssertionError(f"{label}: the loss has shape {tuple(loss.shape)}; {H['ls_scalar']}")
    loss = loss.reshape(())
    if loss.is_floating_point() and not torch.isfinite(loss):
        raise AssertionError(f"{label}: the loss is {loss.item()}; {H['ls_unstable']}")

    def wrong(**knobs: Any) -> Callable[[], torch.Tensor]:
        return lambda: _answers.smoothed_loss(logits, targets, pad, eps, **knobs)

    mistakes = [
        (H["ls_raw_logits"], wrong(raw=True)),
        (H["ls_pad"], wrong(ignore_pad=False)),
        (H["ls_pad_mean"], wrong(denominator="all")),
        (H["ls_sum"], wrong(reduce="sum")),
        (H["ls_per_sequence"], wrong(reduce="per_sequence")),
    ]
    if pad != 0:
        mistakes.append((H["ls_pad_zero"], lambda: _answers.smoothed_loss(logits, targets, 0, eps)))
    if eps > 0:
        mistakes += [
            (H["ls_no_smoothing"], lambda: _answers.smoothed_loss(logits, targets, pad, 0.0)),
            (H["ls_v_minus_1"], wrong(spread="v-1")),
            (H["ls_v_minus_2"], wrong(spread="v-2")),
            (H["ls_sum_not_mean"], wrong(uniform="sum")),
        ]
    compare(label, [loss], [expected], ("the loss",), mistakes, H["ls_scalar"], H["ls_steps"])


# ----------------------------------------------------------------------------- greedy decoding

GD_PAD, GD_BOS, GD_EOS = 0, 1, 2
GD_VOCAB = 9  # PAD, BOS, EOS and six symbols 3..8


def _decoding_model(seed: int, eos_bias: float) -> torch.nn.Module:
    """A small random Transformer whose EOS logit is shifted so rows end at different steps."""
    from ..models import Transformer

    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = Transformer(
            GD_VOCAB, GD_VOCAB, d_model=16, num_heads=2, num_encoder_layers=1,
            num_decoder_layers=1, d_ff=32, max_len=16, pad_id=GD_PAD,
        )  # fmt: skip
    finally:
        torch.random.set_rng_state(gen_state)
    with torch.no_grad():  # larger source and output weights: rows differ more from each other
        for lin in (model.decoder[0].cross_attn.w_v, model.decoder[0].cross_attn.w_o, model.head):
            lin.weight.mul_(2.0)
        model.head.bias[GD_EOS] += eos_bias
        model.head.bias[GD_BOS] -= 10.0  # a real model never predicts BOS
        model.head.bias[GD_PAD] -= 10.0
    return model.eval()


@torch.no_grad()
def _greedy_rows(model, src: torch.Tensor, max_len: int, feed_back: bool = True) -> list[list[int]]:
    """Greedy decoding one row at a time with model.encode/decode; rows end with their EOS."""
    rows = []
    for b in range(src.shape[0]):
        s = src[b : b + 1]  # (1, L_s), PAD kept: the model masks it
        memory = model.encode(s)  # (1, L_s, D)
        ys, out = [GD_BOS], []
        for _ in range(max_len):
            inp = torch.tensor([ys if feed_back else [GD_BOS]])  # (1, t)
            token = int(model.decode(inp, memory, s)[0, -1].argmax())
            out.append(token)
            ys.append(token)
            if token == GD_EOS:
                break
        rows.append(out)
    return rows


def _cut(rows: Sequence[Sequence[int]]) -> list[list[int]]:
    """Each row up to and including its first EOS (trailing PAD dropped when there is none)."""
    cut = []
    for row in rows:
        row = list(row)
        if GD_EOS in row:
            cut.append(row[: row.index(GD_EOS) + 1])
        else:
            while row and row[-1] == GD_PAD:
                row.pop()
            cut.append(row)
    return cut


def _count_encodes(model: torch.nn.Module, counter: list[int]) -> torch.nn.Module:
    """The model with its encode calls counted in counter[0] (an instance attribute shadows it)."""
    encode = model.encode
    model.encode = lambda *a, **kw: (counter.__setitem__(0, counter[0] + 1), encode(*a, **kw))[1]
    return model


@contextmanager
def _methods_disabled(cls: type, names: Sequence[str]) -> Iterator[None]:
    """Make the reference decoding methods of `cls` raise while the block runs."""
    saved = {n: cls.__dict__[n] for n in names if n in cls.__dict__}

    def stub(name: str) -> Callable[..., Any]:
        def disabled(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError(H["gd_reference"].format(name=name))

        return disabled

    try:
        for n in saved:
            setattr(cls, n, stub(n))
        yield
    finally:
        for n, method in saved.items():
            setattr(cls, n, method)


@isolated
def check_greedy_decode(fn: Callable[..., torch.Tensor]) -> None:
    """Check fn(model, src (B, L_s), max_len, bos_id, eos_id) -> (B, T <= max_len) token ids.

    Rows exclude BOS, include EOS when it is produced, and hold PAD (model.pad_id) after it;
    the loop stops once every row has produced EOS and encodes the source once, as the prompt
    asks. The model is a small random course Transformer; the expected answer is decoded one
    row at a time.
    """
    name = "greedy_decode"
    require_callable(fn, name)
    cases = [  # (description, model seed, EOS bias, source seed, B, L_s, source lengths, max_len)
        ("B=3, rows end at different steps", 5, 0.5, 0, 3, 5, (5, 5, 5), 8),
        ("B=4, padded sources, one row reaches max_len", 2, 1.0, 12, 4, 6, (6, 3, 4, 2), 7),
        ("B=2, max_len=3", 5, 0.0, 2, 2, 4, (4, 2), 3),
        ("B=3, every row ends before max_len=9", 3, 1.0, 4, 3, 5, (5, 5, 3), 9),
    ]
    for i, (desc, seed, bias, src_seed, B, L_s, lengths, max_len) in enumerate(cases, 1):
        model = _decoding_model(seed, bias)
        g = torch.Generator().manual_seed(src_seed)
        src = torch.randint(3, GD_VOCAB, (B, L_s), generator=g)
        for b, n in enumerate(lengths):
            src[b, n:] = GD_PAD
        _greedy_case(fn, case_label(name, i, len(cases), desc), model, src, max_len)
    passed(name, len(cases))


def _greedy_case(fn, label: str, model, src: torch.Tensor, max_len: int) -> None:
    """One decoding case: call, check the structure, compare rows, diagnose."""
    from ..models import Transformer

    expected = _greedy_rows(model, src, max_len)  # before the learner's code runs
    counter = [0]
    args = (_count_encodes(copy.deepcopy(model), counter), src, max_len, GD_BOS, GD_EOS)
    allow = [  # the model's own building blocks, not the answer key
        qualname
        for _, qualname in reference_objects().values()
        if qualname.split(".")[1] in ("attention", "masks", "positional")
    ]
    with _methods_disabled(Transformer, ("greedy_decode", "beam_search")):
        result = call_learner(fn, label, args, H["gd_error"], allow=allow)
    encodes = observed("encodes", counter[0])  # the judge replays what the run recorded
    (out,) = as_tensors(result, label, ("the output",), H["gd_tensor"])
    B = src.shape[0]
    if out.dim() != 2 or out.shape[0] != B:
        raise AssertionError(
            f"{label}: the output has shape {tuple(out.shape)}; expected ({B}, T) with "
            f"T <= max_len = {max_len}. {H['gd_tensor']}"
        )
    if out.is_floating_point() or out.dtype == torch.bool:
        raise AssertionError(f"{label}: the output has dtype {out.dtype}; {H['gd_tensor']}")
    rows = out.tolist()
    mine = _cut(rows)
    tails_ok = all(
        all(t == GD_PAD for t in row[len(c) :]) for row, c in zip(rows, mine, strict=True)
    )
    if mine == expected:
        if not tails_ok:
            raise AssertionError(f"{label}: {H['gd_after_eos']}")
        if out.shape[1] > max_len:
            raise AssertionError(f"{label}: output shape {tuple(out.shape)}; {H['gd_too_long']}")
        longest = max(len(e) for e in expected)
        if out.shape[1] > longest:
            raise AssertionError(
                f"{label}: {H['gd_no_early_stop'].format(T=out.shape[1], n=longest)}"
            )
        if encodes != 1:
            raise AssertionError(f"{label}: {H['gd_encode_once'].format(n=encodes)}")
        return
    ended = [len(e) for e in expected if e[-1] == GD_EOS]
    first_done = min(ended) if ended else max_len
    variants = [
        (
            H["gd_bos"],
            all(r[:1] == [GD_BOS] for r in rows) and _cut([r[1:] for r in rows]) == expected,
        ),
        (H["gd_no_feedback"], mine == _greedy_rows(model, src, max_len, feed_back=False)),
        (H["gd_no_eos"], mine == [[t for t in e if t != GD_EOS] for e in expected]),
        (H["gd_any_done"], mine == _cut([e[:first_done] for e in expected])),
        (H["gd_too_long"], out.shape[1] > max_len),
    ]
    for hint, matched in variants:
        if matched:
            raise AssertionError(f"{label}: {hint}")
    b, got, want = next(
        (b, x, y) for b, (x, y) in enumerate(zip(mine, expected, strict=True)) if x != y
    )
    raise AssertionError(
        f"{label}: row {b} differs from the expected greedy output: expected {want}, got {got} "
        f"(rows cut after their first EOS; 2 = EOS, 0 = PAD). {H['gd_steps']}"
    )


# ----------------------------------------------------------------------------- beam search

BS_EOS = 0
BS_CASES = [  # (description, MarkovLM seed, EOS bias, beam_size, alpha, max_len)
    ("beam_size=4, alpha=1", 60, 0.0, 4, 1.0, 7),
    ("beam_size=4, alpha=1, a long winner", 4, 0.0, 4, 1.0, 7),
    ("beam_size=3, alpha=0.6", 6, 0.0, 3, 0.6, 6),
    ("beam_size=3, alpha=0.6, EOS less likely", 0, -1.0, 3, 0.6, 6),
    ("beam_size=3, nothing finishes within max_len=4", 1, -8.0, 3, 0.6, 4),
]


@isolated
def check_beam_decode(fn: Callable[..., torch.Tensor]) -> None:
    """Check fn(step_fn, max_len, eos_id, beam_size, alpha) -> (T,) ids of the best hypothesis.

    step_fn(prefixes (k, t)) -> log-probs (k, V). The beam keeps beam_size minus the finished
    count, sets EOS-ended candidates aside, and ranks the finished by log p / ((5+|y|)/6)^alpha.
    """
    name = "beam_decode"
    require_callable(fn, name)
    for i, (desc, seed, bias, k, alpha, max_len) in enumerate(BS_CASES, 1):
        lm = _answers.MarkovLM(seed, bias)
        expected = _answers.beam(lm, max_len, BS_EOS, k, alpha)  # before the learner's code runs
        label = case_label(name, i, len(BS_CASES), desc)
        result = call_learner(fn, label, (lm, max_len, BS_EOS, k, alpha), H["bs_error"])
        (out,) = as_tensors(result, label, ("the tokens",), H["bs_tensor"])
        if out.dim() != 1 or out.is_floating_point() or out.dtype == torch.bool:
            raise AssertionError(
                f"{label}: got a {out.dtype} tensor of shape {tuple(out.shape)}; {H['bs_tensor']}"
            )
        mine = out.tolist()
        if mine != expected:
            raise AssertionError(f"{label}: {_beam_mistake(mine, expected, lm, max_len, k, alpha)}")
    passed(name, len(BS_CASES))


def _beam_mistake(mine: list[int], expected: list[int], lm, max_len: int, k: int, alpha: float):
    """The hint naming a wrong beam-search answer."""
    if BS_EOS in mine[:-1]:
        return H["bs_after_eos"]
    if expected[-1] == BS_EOS and mine == expected[:-1]:
        return H["bs_no_eos"]
    variants = [("bs_greedy", dict(width=1)), ("bs_no_shrink", dict(shrink=False)),
                ("bs_stop_first", dict(stop_first=True)), ("bs_no_penalty", dict(penalty="none")),
                ("bs_len_no_eos", dict(count_eos=False)), ("bs_mean", dict(penalty="mean"))]  # fmt: skip
    for key, knobs in variants:
        if mine == _answers.beam(lm, max_len, BS_EOS, k, alpha, **knobs):
            return H[key]
    return f"expected the tokens {expected}, got {mine} ({BS_EOS} = EOS). {H['bs_steps']}"


__all__ = ["DECODING_HINTS", "check_beam_decode", "check_greedy_decode", "check_label_smoothed_loss"]  # fmt: skip
