"""The checks for notebook 10: the causal language-model loss, top-k and top-p (nucleus) filters.

Public through `course_lib.checks`; see that module for how a check works. The expected values
are computed here with plain loops and `F.cross_entropy`, never with `course_lib.sampling`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from ._machinery import (
    as_tensors,
    call_learner,
    case_label,
    compare,
    isolated,
    passed,
    randn,
    require_callable,
)

NEG_INF = float("-inf")

SAMPLING_HINTS = {
    # the causal LM loss
    "lm_error": "logits are (B, T, V) and tokens (B, T). Position t predicts token t + 1, so the last position and the first token have no partner; PyTorch's cross-entropy wants the classes on axis 1, so line the positions up and flatten them to (N, V) logits and (N,) targets (a 3-D (B, T, V) input fails)",
    "lm_scalar": "return one number, the mean over all predicted positions (a 0-d tensor)",
    "lm_no_shift": "no shift: you scored position t against token t itself. The logits at position t are the model's guess for the *next* token, t + 1. (Without the shift the model only learns to copy its input.)",
    "lm_wrong_way": "shifted the wrong way: each position was scored against the token *before* it; the logits at position t must be scored against token t + 1",
    "lm_two": "off by two: position t predicts token t + 1, not t + 2; line them up by dropping one position from each side, not two",
    "lm_sum": "you returned the sum over positions; return the mean",
    "lm_softmax_axis": "log-softmax over the wrong axis: the probabilities are over the vocabulary, the last axis",
    "lm_steps": "loss = mean over b and t < T-1 of -log softmax(logits[b, t])[tokens[b, t + 1]]: position t is scored against the token after it.",
    # top-k
    "k_error": "work along the last axis (the vocabulary): find *where* each row's k largest logits are, keep those positions unchanged and set every other one to -inf (minus infinity); the result has the shape of the logits",
    "k_smallest": "you kept the k *smallest* logits: keep the k largest",
    "k_zero": "removed tokens were set to 0, but a logit of 0 still has probability exp(0) > 0 after the softmax: set them to floating-point minus infinity, -inf",
    "k_probs": "you returned probabilities; return *logits* (same shape), with the removed ones set to -inf, so the softmax can be taken afterwards",
    "k_plus_one": "off by one: you kept k + 1 tokens in a row; exactly k must survive",
    "k_minus_one": "off by one: you kept k - 1 tokens in a row; exactly k must survive (the k-th largest itself is kept)",
    "k_ties_all": "ties at the border: several logits equal the k-th largest and you kept all of them, so more than k tokens survive. The exercise (like course_lib and Hugging Face) keeps exactly k: choose k *positions*, the ones a k-largest search returns, instead of keeping every logit above a threshold value",
    "k_ties_none": "ties at the border: several logits equal the k-th largest and you dropped all of them (a strict comparison with the threshold), so fewer than k tokens survive; exactly k must survive",
    "k_count": "each row must keep exactly k finite logits (every row of the vocabulary axis, whatever the leading axes are)",
    "k_order": "a removed logit is larger than a kept one: keep the k *largest* of each row",
    "k_shape": "return a tensor of the logits' own shape",
    "k_axis": "top-k over the wrong axis: each row (the last axis, the vocabulary) keeps its own k largest logits",
    "k_all": "k may be >= V, the vocabulary size: then every token is kept. With k > V a k-largest search asked for more than V values fails, so never ask for more than V",
    "k_changed": "the kept logits must be unchanged (no softmax, no shift, no temperature): only the removed ones become -inf",
    "k_steps": "Keep logits[..., v] if it is among the k largest of its row, else -inf.",
    # top-p
    "p_error": "logits are (..., V) and so is the answer: sort each row from most to least likely, keeping where each sorted token came from, add up the probabilities in that order, decide which sorted positions to keep, then put each decision back at its token's own position in vocabulary order",
    "p_exclusive": "you dropped the token that pushes the mass past p: the nucleus is the *smallest set whose mass is >= p*, so it includes that token. Decide with the mass of the tokens *before* each one, not the mass including it",
    "p_empty": "a row lost every token: when the most likely token alone has probability >= p, the nucleus is that one token; always keep the top token",
    "p_unsorted": "you took the cumulative sum in vocabulary order: sort the probabilities in decreasing order first (the nucleus is the most likely tokens)",
    "p_ascending": "sorted in increasing order: the nucleus holds the most likely tokens, so sort from the most likely token to the least likely",
    "p_not_scattered": "you returned the logits in sorted order: the result must stay in vocabulary order (position v is token v), so the keep/remove decision made on the sorted tokens has to be put back at each token's own position",
    "p_mask_sorted": "the keep/remove decision is still in sorted order but you applied it to the logits in vocabulary order: entry j of the sorted decision belongs to the j-th most likely token, not to token j; move each decision back to its token's position first",
    "p_gather": "the decision was moved back the wrong way: you fetched each token's decision from the sorted position that the sort order names (a gather), but the sort order says where each sorted token *came from*, so entry j of the sorted decision must be *sent* to token order[j] (a scatter: the inverse permutation)",
    "p_logits_cumsum": "you accumulated logits, not probabilities: the threshold p is a probability mass, so turn the sorted logits into probabilities (a softmax) before the running sum. Sorting by logits is fine: the order is the same as by probability",
    "p_zero": "removed tokens were set to 0, but a logit of 0 still has probability exp(0) > 0: set them to floating-point minus infinity, -inf",
    "p_probs": "you returned probabilities; return *logits* (same shape), the removed ones set to -inf",
    "p_steps": "Keep the most likely tokens, in order, until their total probability reaches p (the token that reaches it included); set every other logit to -inf.",
}
H = SAMPLING_HINTS

# ----------------------------------------------------------------------------- the causal LM loss


# Hint ladders, one per exercise: the idea, then the operations and axes, then code.
# `hint("exN_k")` in course_lib.checks walks up them; only the last level shows code.
LADDERS: dict[str, tuple[str, ...]] = {
    "ex10_1": (
        "A language model's logits at position t are its guess for the *next* token, t + 1; the last position has nothing to predict and the first token is never predicted, so each side loses one position, at opposite ends. Off by one here is the classic language-model bug.",
        "Drop the last position of the logits and the first token of the sequence so they line up, flatten both (cross-entropy wants (N, V) and (N,)), and take the mean cross-entropy.",
        "V = logits.shape[-1]\nreturn F.cross_entropy(logits[:, :-1].reshape(-1, V), tokens[:, 1:].reshape(-1))",
    ),
    "ex10_2": (
        "Top-k keeps each row's k largest logits untouched and removes the rest by making their logit -inf (probability 0 after the softmax); exactly k survive, even when several logits tie at the k-th value; with k >= V nothing is removed. Decide which *positions* survive, not which values: a threshold on the k-th value keeps every tied logit.",
        "Ask for the *indices* of each row's k largest logits along the last axis (never more than V of them), mark those positions True in a boolean tensor of the logits' shape, and fill every unmarked position with -inf in a new tensor. Comparing with the k-th largest value instead keeps every tied logit, more than k.",
        "k = min(k, logits.shape[-1])\nidx = torch.topk(logits, k, dim=-1).indices\nkeep = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, idx, True)\nreturn logits.masked_fill(~keep, float('-inf'))",
    ),
    "ex10_3": (
        "Top-p keeps the smallest set of most likely tokens whose probability reaches p, including the token that reaches it; the most likely token always survives. The decision is easy in sorted order (a token is kept while the mass of the tokens before it is below p), but the answer is in vocabulary order, and the mass is a sum of probabilities, not of logits.",
        "Sort the logits in decreasing order (remember the order), turn them into probabilities, and keep a sorted token while the probability mass *before* it is still below p. Put each decision back at its token's own position, then set the removed logits to -inf.",
        "sorted_logits, order = logits.sort(dim=-1, descending=True)\nprobs = sorted_logits.softmax(-1)\nkeep_sorted = probs.cumsum(-1) - probs < p\nkeep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)\nreturn logits.masked_fill(~keep, float('-inf'))",
    ),
}


def _lm_loss(logits, tokens, shift: int = 1, reduce: str = "mean", dim: int = -1):
    """The shifted cross-entropy in float64; `shift` -1 is the wrong way, 0 none, 2 two."""
    x, t = logits.double(), tokens
    if shift == 0:
        pass
    elif shift > 0:
        x, t = x[:, :-shift], t[:, shift:]
    else:
        x, t = x[:, -shift:], t[:, :shift]
    logp = x.log_softmax(dim=dim)
    nll = -logp.gather(-1, t[..., None])[..., 0]  # (B, T')
    return (nll.sum() if reduce == "sum" else nll.mean()).float()


@isolated
def check_causal_lm_loss(fn: Callable[..., torch.Tensor]) -> None:
    """Check fn(logits (B, T, V), tokens (B, T)) -> the mean next-token cross-entropy.

    The logits come from running the model on `tokens`, so logits[:, t] predicts tokens[:, t+1];
    the last position has nothing to predict. Compared with F.cross_entropy on shifted copies.
    """
    name = "causal_lm_loss"
    require_callable(fn, name)
    g = torch.Generator().manual_seed(21)
    cases = [("B=2, T=6, V=7", 2, 6, 7), ("B=3, T=4, V=11", 3, 4, 11), ("B=1, T=9, V=5", 1, 9, 5)]
    for i, (desc, B, T, V) in enumerate(cases, 1):
        logits = randn(g, B, T, V) * 2.0
        tokens = torch.randint(0, V, (B, T), generator=g)
        _lm_case(fn, case_label(name, i, len(cases), desc), logits, tokens)
    passed(name, len(cases))


def _lm_case(fn, label: str, logits: torch.Tensor, tokens: torch.Tensor) -> None:
    """One loss case: call, check it is a scalar, compare, diagnose."""
    V = logits.shape[-1]
    expected = F.cross_entropy(  # before the learner's code runs
        logits[:, :-1].double().reshape(-1, V), tokens[:, 1:].reshape(-1)
    ).float()
    result = call_learner(fn, label, (logits, tokens), H["lm_error"])
    (loss,) = as_tensors(result, label, ("the loss",), H["lm_scalar"])
    if loss.numel() != 1:
        raise AssertionError(f"{label}: the loss has shape {tuple(loss.shape)}; {H['lm_scalar']}")

    def wrong(**knobs: Any) -> Callable[[], torch.Tensor]:
        return lambda: _lm_loss(logits, tokens, **knobs)

    mistakes = [
        (H["lm_no_shift"], wrong(shift=0)),
        (H["lm_wrong_way"], wrong(shift=-1)),
        (H["lm_two"], wrong(shift=2)),
        (H["lm_sum"], wrong(reduce="sum")),
        (H["lm_softmax_axis"], wrong(dim=1)),
        (H["lm_softmax_axis"], wrong(dim=0)),
        (H["lm_no_shift"] + " (and the sum, not the mean)", wrong(shift=0, reduce="sum")),
    ]
    compare(label, [loss.reshape(())], [expected], ("the loss",), mistakes, "", H["lm_steps"])


# ----------------------------------------------------------------------------- top-k


def _keep(logits: torch.Tensor, keep: torch.Tensor, fill: float = NEG_INF) -> torch.Tensor:
    """logits where keep is True, `fill` elsewhere."""
    return torch.where(keep, logits, torch.full_like(logits, fill))


def _top_k_oracle(
    logits: torch.Tensor, k: int, largest: bool = True, extra: int = 0
) -> torch.Tensor:
    """Row by row: keep the k (+ extra) largest (or smallest) entries, -inf elsewhere."""
    flat = logits.reshape(-1, logits.shape[-1])
    keep = torch.zeros_like(flat, dtype=torch.bool)
    n = min(max(k + extra, 0), flat.shape[-1])
    for r, row in enumerate(flat.tolist()):
        ranked = sorted(range(len(row)), key=lambda j: row[j], reverse=largest)
        for j in ranked[:n]:
            keep[r, j] = True
    return _keep(flat, keep).reshape(logits.shape), keep.reshape(logits.shape)


def _random_rows(g: torch.Generator, *shape: int) -> torch.Tensor:
    """Distinct random logits (no ties, so the kept set is unambiguous)."""
    return randn(g, *shape) * 2.0


@isolated
def check_top_k(fn: Callable[[torch.Tensor, int], torch.Tensor]) -> None:
    """Check fn(logits (..., V), k) -> logits with all but the k largest of each row set to -inf."""
    name = "top_k"
    require_callable(fn, name)
    g = torch.Generator().manual_seed(22)
    cases = [
        ("logits (3, 10), k=3", (3, 10), 3),
        ("logits (2, 4, 12), k=5: any leading axes", (2, 4, 12), 5),
        ("logits (2, 8), k=1: greedy", (2, 8), 1),
        ("logits (2, 6), k=6 = V: keep all", (2, 6), 6),
        ("logits (1, 5), k=9 > V: keep all", (1, 5), 9),
    ]
    ties = [
        (
            "ties at the border: [3 1 1 1 0] and [2 2 2 5 -1], k=2",
            [[3, 1, 1, 1, 0], [2, 2, 2, 5, -1]],
            2,
        ),
        ("all logits equal, k=3", [[0.5] * 6], 3),
    ]
    n = len(cases) + len(ties)
    for i, (desc, shape, k) in enumerate(cases, 1):
        _top_k_case(fn, case_label(name, i, n, desc), _random_rows(g, *shape), k)
    for i, (desc, rows, k) in enumerate(ties, len(cases) + 1):
        _top_k_tie_case(fn, case_label(name, i, n, desc), torch.tensor(rows, dtype=torch.float), k)
    passed(name, n)


def _top_k_tie_case(fn, label: str, logits: torch.Tensor, k: int) -> None:
    """Logits with ties at the k-th value: any k of the tied tokens may survive, but exactly k."""
    kth = logits.topk(k, dim=-1).values[..., -1:]  # (..., 1), before the learner's code runs
    (out,) = as_tensors(call_learner(fn, label, (logits, k), H["k_error"]), label, ("the output",))
    if out.shape != logits.shape:
        raise AssertionError(f"{label}: the output has shape {tuple(out.shape)}; {H['k_shape']}")
    kept = out.isfinite()
    if not torch.equal(out[kept], logits[kept]):
        if torch.allclose(out.sum(dim=-1), torch.ones(())) and bool((out >= 0).all()):
            raise AssertionError(f"{label}: {H['k_probs']}")
        zeroed = bool((out[kept & (out != logits)] == 0).all())
        raise AssertionError(f"{label}: {H['k_zero'] if zeroed else H['k_changed']}")
    if not bool((out[~kept] == NEG_INF).all()):
        raise AssertionError(f"{label}: {H['k_changed']} (removed logits must be -inf)")
    count = kept.sum(dim=-1)
    if bool((count == k).all()):
        lowest_kept = torch.where(kept, logits, torch.inf).amin(dim=-1)
        highest_removed = torch.where(kept, -torch.inf, logits).amax(dim=-1)
        if bool((lowest_kept >= highest_removed).all()):
            return
        raise AssertionError(f"{label}: {H['k_order']}")
    if torch.equal(kept, logits >= kth):
        raise AssertionError(f"{label}: {H['k_ties_all']}")
    if torch.equal(kept, logits > kth):
        raise AssertionError(f"{label}: {H['k_ties_none']}")
    rows = ", ".join(str(int(c)) for c in count.reshape(-1))
    raise AssertionError(f"{label}: you kept {rows} tokens per row for k = {k}; {H['k_count']}")


def _top_k_case(fn, label: str, logits: torch.Tensor, k: int) -> None:
    """One top-k case."""
    V = logits.shape[-1]
    hint = H["k_all"] if k > V else H["k_error"]
    expected, keep = _top_k_oracle(logits, k)  # before the learner's code runs
    (out,) = as_tensors(call_learner(fn, label, (logits, k), hint), label, ("the output",))
    mistakes = [
        (H["k_smallest"], lambda: _top_k_oracle(logits, k, largest=False)[0]),
        (H["k_zero"], lambda: _keep(logits, keep, 0.0)),
        (H["k_probs"], lambda: expected.softmax(dim=-1)),
        (H["k_plus_one"], lambda: _top_k_oracle(logits, k, extra=1)[0]),
        (H["k_minus_one"], lambda: _top_k_oracle(logits, k, extra=-1)[0]),
        (H["k_changed"], lambda: _keep(logits.log_softmax(dim=-1), keep)),
        (H["k_changed"], lambda: _keep(logits - logits.amax(dim=-1, keepdim=True), keep)),
    ]
    if logits.dim() == 2 and k <= logits.shape[0]:  # top-k down the batch axis instead
        t = _top_k_oracle(logits.T.contiguous(), k)[0].T
        mistakes.append((H["k_axis"], lambda: t))
    compare(
        label,
        [out],
        [expected],
        ("the output",),
        mistakes,
        "The output has the shape of the logits.",
        H["k_steps"],
    )


# ----------------------------------------------------------------------------- top-p


def _top_p_oracle(
    logits: torch.Tensor,
    p: float,
    inclusive: bool = True,
    keep_top: bool = True,
    order: str = "desc",
    on: str = "probs",
    scatter: bool | str = True,
    fill: float = NEG_INF,
) -> torch.Tensor:
    """Row by row in float64: walk the tokens from most to least likely until the mass is >= p."""
    flat = logits.reshape(-1, logits.shape[-1]).double()
    out = []
    for row in flat:
        probs = row.softmax(dim=-1)
        values = probs if on == "probs" else row
        if order == "vocab":
            ranked = list(range(len(row)))
        else:
            ranked = sorted(
                range(len(row)), key=lambda j: values[j].item(), reverse=order == "desc"
            )
        keep = torch.zeros(len(row), dtype=torch.bool)
        mass = 0.0
        for n, j in enumerate(ranked):
            before = mass
            mass += values[j].item()
            if (before < p) if inclusive else (mass <= p):
                keep[j] = True
            elif n == 0 and keep_top:
                keep[j] = True
        result = _keep(row.float(), keep, fill)
        if scatter is False:  # sorted logits returned, with the decision in sorted order
            result = _keep(row[ranked].float(), keep[ranked], fill)
        elif scatter == "mask":  # the sorted-order decision applied to vocabulary-order logits
            result = _keep(row.float(), keep[ranked], fill)
        elif scatter == "gather":  # moved back with the sort order itself, not its inverse
            result = _keep(row.float(), keep[ranked][ranked], fill)
        out.append(result)
    return torch.stack(out).reshape(logits.shape)


@isolated
def check_top_p(fn: Callable[[torch.Tensor, float], torch.Tensor]) -> None:
    """Check fn(logits (..., V), p) -> logits outside the nucleus set to -inf.

    The nucleus is the smallest set of most likely tokens whose probability is >= p.
    """
    name = "top_p"
    require_callable(fn, name)
    g = torch.Generator().manual_seed(23)
    probs = torch.tensor([[0.05, 0.5, 0.15, 0.3], [0.25, 0.25, 0.4, 0.1]])
    cases = [
        ("probabilities [.05 .5 .15 .3] and [.25 .25 .4 .1], p=0.7", probs.log(), 0.7),
        ("logits (3, 10), p=0.9", _random_rows(g, 3, 10), 0.9),
        ("logits (2, 3, 8), p=0.5: any leading axes", _random_rows(g, 2, 3, 8), 0.5),
        ("a confident row, p=0.3: only the top token", torch.tensor([[4.0, 1.0, 0.5, 0.0]]), 0.3),
        ("logits (2, 6), p=1.0: keep all", _random_rows(g, 2, 6), 1.0),
    ]
    for i, (desc, logits, p) in enumerate(cases, 1):
        _top_p_case(fn, case_label(name, i, len(cases), desc), logits, p)
    passed(name, len(cases))


def _top_p_case(fn, label: str, logits: torch.Tensor, p: float) -> None:
    """One top-p case."""
    expected = _top_p_oracle(logits, p)  # before the learner's code runs
    (out,) = as_tensors(call_learner(fn, label, (logits, p), H["p_error"]), label, ("the output",))

    def wrong(**knobs: Any) -> Callable[[], torch.Tensor]:
        return lambda: _top_p_oracle(logits, p, **knobs)

    mistakes = [
        (H["p_exclusive"], wrong(inclusive=False)),
        (H["p_empty"], wrong(inclusive=False, keep_top=False)),
        (H["p_logits_cumsum"], wrong(on="logits")),
        (H["p_logits_cumsum"], wrong(on="logits", inclusive=False)),
        (H["p_unsorted"], wrong(order="vocab")),
        (H["p_not_scattered"], wrong(scatter=False)),
        (H["p_mask_sorted"], wrong(scatter="mask")),
        (H["p_gather"], wrong(scatter="gather")),
        (H["p_ascending"], wrong(order="asc")),
        (H["p_zero"], wrong(fill=0.0)),
        (H["p_probs"], lambda: expected.softmax(dim=-1)),
    ]
    compare(
        label,
        [out],
        [expected],
        ("the output",),
        mistakes,
        "The output has the shape of the logits.",
        H["p_steps"],
    )


__all__ = ["SAMPLING_HINTS", "check_causal_lm_loss", "check_top_k", "check_top_p"]
