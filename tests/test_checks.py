"""Specifications of course_lib.checks: right answers pass, typical mistakes are named."""

from __future__ import annotations

import math
import sys

import pytest
import torch

import course_lib.attention as ref_attention
import course_lib.masks as ref_masks
from course_lib import checks
from course_lib.attention import scaled_dot_product_attention
from course_lib.checks._machinery import reference_disabled
from course_lib.positional import sinusoidal_encoding

# --- correct answers, written independently of course_lib ---------------------------------


def attention(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return weights @ v, weights


def split_heads(x, num_heads):
    B, L, D = x.shape
    return x.view(B, L, num_heads, D // num_heads).transpose(1, 2)


def merge_heads(x):
    B, H, L, d = x.shape
    return x.transpose(1, 2).reshape(B, L, H * d)


def sinusoid(max_len, d_model, base=10000.0, exponent=2, layout="interleave", first="sin"):
    pos = torch.arange(max_len, dtype=torch.float32)[:, None]
    i = torch.arange(d_model // 2, dtype=torch.float32)
    angles = pos / base ** (exponent * i / d_model)
    a, b = (torch.sin(angles), torch.cos(angles))[:: 1 if first == "sin" else -1]
    if layout == "halves":
        return torch.cat([a, b], dim=-1)
    return torch.stack([a, b], dim=-1).reshape(max_len, d_model)


def causal_mask(L):
    return torch.tril(torch.ones(L, L, dtype=torch.bool))[None, None]


def padding_mask(tokens, pad_id):
    return (tokens != pad_id)[:, None, None, :]


def mha(x, w_q, w_k, w_v, w_o, num_heads, split=split_heads, merge=merge_heads, heads=True):
    if not heads:
        return w_o(attention(w_q(x), w_k(x), w_v(x))[0])
    q, k, v = (split(w(x), num_heads) for w in (w_q, w_k, w_v))
    return w_o(merge(attention(q, k, v)[0]))


def layer_norm(x, gamma, beta, eps=1e-5):
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * gamma + beta


def rnn_cell(x, h, W_ih, W_hh, b_ih, b_hh):
    return torch.tanh(x @ W_ih.T + b_ih + h @ W_hh.T + b_hh)


def pool(scores, keys, mask=None, dim=-1):
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=dim)
    return torch.bmm(weights[:, None, :], keys).squeeze(1), weights


def additive_attention(query, keys, W_q, W_k, v, mask=None, dim=-1, use_tanh=True):
    pre = W_q(query)[:, None, :] + W_k(keys)
    scores = v(torch.tanh(pre) if use_tanh else pre).squeeze(-1)
    return pool(scores, keys, mask, dim)


def dot_attention(query, keys, mask=None, dim=-1):
    return pool(torch.bmm(keys, query[:, :, None]).squeeze(-1), keys, mask, dim)


def online_softmax(m_prev, l_prev, acc_prev, scores, v, rescale_l=True, rescale_acc=True):
    m_new = torch.maximum(m_prev, scores.amax(dim=-1, keepdim=True))
    shift = m_new.masked_fill(m_new.isinf(), 0.0)  # a row that has seen no key yet stays empty
    alpha, p = torch.exp(m_prev - shift), torch.exp(scores - shift)
    l_new = (l_prev * alpha if rescale_l else l_prev) + p.sum(dim=-1, keepdim=True)
    return m_new, l_new, (acc_prev * alpha if rescale_acc else acc_prev) + p @ v


def cached_attention(q, k_new, v_new, cache_k, cache_v, top_left=False, cache=True):
    k_all, v_all = torch.cat([cache_k, k_new], dim=2), torch.cat([cache_v, v_new], dim=2)
    T_new, T_all = q.shape[2], k_all.shape[2]
    rows = torch.arange(T_new)[:, None] + (0 if top_left else T_all - T_new)
    mask = torch.arange(T_all)[None, :] <= rows  # (T_new, T_all): new query i sits at T_past + i
    k, v = (k_all, v_all) if cache else (k_new, v_new)
    mask = mask if cache else mask[:, T_all - T_new :]
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out, k_all, v_all


def self_attention(x, w_q, w_k, w_v, project=(True, True, True), swap=False, scale="d_k"):
    q, k, v = (x @ w if p else x for w, p in zip((w_q, w_k, w_v), project, strict=True))
    q, k = (k, q) if swap else (q, k)
    d = {"d_k": q.shape[-1], "d_model": x.shape[-1]}[scale]
    weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d), dim=-1)
    return weights @ v, weights


# --- wrong answers, one typical mistake each ----------------------------------------------


def attention_with(transpose=None, dim=-1, scale="sqrt", mask_mode="fill", only_out=False):
    def fn(q, k, v, mask=None):
        kt = (
            k.transpose(-2, -1)
            if transpose is None
            else k.T
            if transpose == "T"
            else k.transpose(0, 1)
        )
        d = q.shape[-1]
        scores = q @ kt * {"sqrt": 1 / math.sqrt(d), "none": 1.0, "d": 1 / d}[scale]
        if mask is not None and mask_mode != "ignore":
            hide = mask if mask_mode == "reversed" else ~mask
            fill = 0.0 if mask_mode == "zero" else float("-inf")
            scores = scores if mask_mode == "after" else scores.masked_fill(hide, fill)
        weights = torch.softmax(scores, dim=dim)
        if mask is not None and mask_mode == "after":
            weights = weights * mask
        return weights @ v if only_out else (weights @ v, weights)

    return fn


def shaped_padding_mask(shape):
    def fn(tokens, pad_id):
        B, L = tokens.shape
        return (tokens != pad_id).reshape(shape(B, L))

    return fn


def layer_norm_with(dims=(-1,), unbiased=False, eps_outside=False, affine=True, std=False):
    def fn(x, gamma, beta, eps=1e-5):
        mean = x.mean(dim=dims, keepdim=True)
        if std:
            y = (x - mean) / (x.std(dim=dims, keepdim=True) + eps)
        else:
            var = x.var(dim=dims, keepdim=True, unbiased=unbiased)
            y = (x - mean) / (var.sqrt() + eps if eps_outside else torch.sqrt(var + eps))
        return y * gamma + beta if affine else y

    return fn


def bare_reshape_split(x, num_heads):
    B, L, D = x.shape
    return x.reshape(B, num_heads, L, D // num_heads)


def bare_reshape_merge(x):
    B, H, L, d = x.shape
    return x.reshape(B, L, H * d)


def mha_without_output_projection(x, w_q, w_k, w_v, w_o, num_heads):
    q, k, v = (split_heads(w(x), num_heads) for w in (w_q, w_k, w_v))
    return merge_heads(attention(q, k, v)[0])


MISTAKES = [
    # (check, wrong function, phrase the message must contain)
    ("scaled_dot_product_attention", attention_with(transpose="T"), "transpose"),
    ("scaled_dot_product_attention", attention_with(transpose="01"), "transpose"),
    ("scaled_dot_product_attention", attention_with(dim=-2), "softmax over the wrong axis"),
    ("scaled_dot_product_attention", attention_with(dim=0), "softmax over the wrong axis"),
    ("scaled_dot_product_attention", attention_with(scale="none"), "√d_k"),
    ("scaled_dot_product_attention", attention_with(scale="d"), "instead of √d_k"),
    ("scaled_dot_product_attention", attention_with(mask_mode="after"), "after the softmax"),
    ("scaled_dot_product_attention", attention_with(mask_mode="reversed"), "polarity"),
    ("scaled_dot_product_attention", attention_with(mask_mode="ignore"), "mask was ignored"),
    ("scaled_dot_product_attention", attention_with(mask_mode="zero"), "-inf"),
    ("scaled_dot_product_attention", attention_with(only_out=True), "return both"),
    ("split_heads", bare_reshape_split, "without a transpose"),
    ("split_heads", lambda x, H: x.view(*x.shape[:2], -1, H).permute(0, 3, 1, 2), "wrong axis"),
    ("split_heads", lambda x, H: x.view(*x.shape[:2], H, -1), "head axis must come before"),
    ("merge_heads", bare_reshape_merge, "without transposing"),
    ("merge_heads", lambda x: x.permute(0, 2, 3, 1).flatten(2), "order"),
    ("merge_heads", lambda x: x.transpose(1, 2).view(x.shape[0], x.shape[2], -1), "contiguous"),
    ("sinusoidal_encoding", lambda L, D: sinusoid(L, D, first="cos"), "swapped"),
    ("sinusoidal_encoding", lambda L, D: sinusoid(L, D, base=1000.0), "base"),
    ("sinusoidal_encoding", lambda L, D: sinusoid(L, D, exponent=1), "exponent"),
    ("sinusoidal_encoding", lambda L, D: sinusoid(L, D, layout="halves"), "interleave"),
    ("causal_mask", lambda L: torch.ones(L, L, dtype=torch.bool).tril(1), "off by one"),
    ("causal_mask", lambda L: torch.ones(L, L, dtype=torch.bool).tril(-1), "off by one"),
    ("causal_mask", lambda L: torch.ones(L, L, dtype=torch.bool).triu(1), "polarity"),
    ("causal_mask", lambda L: torch.ones(L, L).tril(), "bool"),
    ("causal_mask", lambda L: torch.full((L, L), float("-inf")).triu(1), "bool"),
    ("causal_mask", lambda L: torch.ones(L * L, dtype=torch.bool), "shape"),
    ("padding_mask", lambda t, p: (t == p)[:, None, None, :], "polarity"),
    ("padding_mask", lambda t, p: ((t != p) * 1.0)[:, None, None, :], "bool"),
    ("padding_mask", shaped_padding_mask(lambda B, L: (B, L)), "(B, 1, 1, L)"),
    ("padding_mask", shaped_padding_mask(lambda B, L: (B, 1, L, 1)), "would mask queries"),
    ("padding_mask", shaped_padding_mask(lambda B, L: (B, L, 1, 1)), "for every head"),
    ("multi_head_attention", mha_without_output_projection, "output projection"),
    ("multi_head_attention", lambda *a: mha(*a, heads=False), "heads not split"),
    ("multi_head_attention", lambda *a: mha(*a, split=bare_reshape_split), "transpose"),
    ("multi_head_attention", lambda *a: mha(*a, merge=bare_reshape_merge), "transpose"),
    ("layer_norm", layer_norm_with(dims=(0, 1)), "BatchNorm"),
    ("layer_norm", layer_norm_with(dims=(0,)), "BatchNorm"),
    ("layer_norm", layer_norm_with(unbiased=True), "unbiased"),
    ("layer_norm", layer_norm_with(eps_outside=True), "eps outside"),
    ("layer_norm", layer_norm_with(std=True), "std"),
    ("layer_norm", layer_norm_with(affine=False), "gamma"),
    ("rnn_cell", lambda x, h, Wi, Wh, bi, bh: x @ Wi.T + bi + h @ Wh.T + bh, "tanh"),
    ("rnn_cell", lambda x, h, Wi, Wh, bi, bh: torch.tanh(x @ Wi + bi + h @ Wh + bh), "transpose"),
    ("rnn_cell", lambda x, h, Wi, Wh, bi, bh: torch.tanh(x @ Wi.T + bi + h @ Wh + bh), "transpose"),
    ("rnn_cell", lambda x, h, Wi, Wh, bi, bh: torch.tanh(x @ Wi.T + bi + bh), "hidden-state"),
    ("additive_attention", lambda *a: additive_attention(*a, dim=0), "softmax over the wrong"),
    ("additive_attention", lambda *a: additive_attention(*a, use_tanh=False), "tanh"),
    (
        "additive_attention",
        lambda q, k, Wq, Wk, v, mask=None: additive_attention(q, k, Wq, Wk, v),
        "mask was ignored",
    ),  # noqa: E501
    ("dot_attention", lambda *a: dot_attention(*a, dim=0), "softmax over the wrong"),
    ("dot_attention", lambda q, k, mask=None: dot_attention(q, k), "mask was ignored"),
    (
        "dot_attention",
        lambda q, k, mask=None: dot_attention(q, k, None if mask is None else ~mask),
        "polarity",
    ),  # noqa: E501
    ("online_softmax", lambda *a: online_softmax(*a, rescale_acc=False), "old accumulator"),
    ("online_softmax", lambda *a: online_softmax(*a, rescale_l=False), "rescale l"),
    ("cached_attention", lambda *a: cached_attention(*a, top_left=True), "aligned top-left"),
    ("cached_attention", lambda *a: cached_attention(*a, cache=False), "cache was ignored"),
    (
        "cached_attention",
        lambda q, k, v, ck, cv: cached_attention(q, ck, cv, k, v),
        "come after the cached",
    ),
    ("self_attention", lambda *a: self_attention(*a, project=(0, 0, 0)), "x itself"),
    ("self_attention", lambda *a: self_attention(*a, project=(1, 1, 0)), "values were not"),
    ("self_attention", lambda *a: self_attention(*a, swap=True), "swapped"),
    ("self_attention", lambda *a: self_attention(*a, scale="d_model"), "√d_model"),
    ("self_attention", lambda *a: self_attention(*a)[0], "return both"),
    (
        "self_attention",
        lambda x, wq, wk, wv: self_attention(x, wq.T, wk.T, wv.T),
        "multiply x by each matrix",
    ),
]

CORRECT = {
    "scaled_dot_product_attention": attention,
    "split_heads": split_heads,
    "merge_heads": merge_heads,
    "sinusoidal_encoding": sinusoid,
    "causal_mask": causal_mask,
    "padding_mask": padding_mask,
    "multi_head_attention": mha,
    "layer_norm": layer_norm,
    "rnn_cell": rnn_cell,
    "additive_attention": additive_attention,
    "dot_attention": dot_attention,
    "online_softmax": online_softmax,
    "cached_attention": cached_attention,
    "self_attention": self_attention,
}


def run_check(exercise, fn):
    return getattr(checks, f"check_{exercise}")(fn)


@pytest.mark.parametrize("exercise", sorted(CORRECT))
def test_a_correct_implementation_passes_with_one_line(exercise, capsys):
    run_check(exercise, CORRECT[exercise])
    out = capsys.readouterr().out.strip()
    assert out.startswith(f"✓ {exercise}: all ") and out.endswith(" cases pass")
    assert "\n" not in out


def test_a_causal_mask_may_be_2d():
    run_check("causal_mask", lambda L: torch.tril(torch.ones(L, L, dtype=torch.bool)))


@pytest.mark.filterwarnings("ignore:The use of `x.T`:UserWarning")
@pytest.mark.parametrize(
    ("exercise", "wrong", "phrase"), MISTAKES, ids=[f"{e}-{p}" for e, _, p in MISTAKES]
)
def test_each_typical_mistake_is_named_in_the_message(exercise, wrong, phrase):
    with pytest.raises(AssertionError) as info:
        run_check(exercise, wrong)
    assert phrase.lower() in str(info.value).lower(), str(info.value)
    assert str(info.value).startswith(exercise) or "raised" in str(info.value)


def test_a_message_names_the_case_and_is_deterministic():
    messages = []
    for _ in range(2):
        with pytest.raises(AssertionError) as info:
            run_check("scaled_dot_product_attention", attention_with(dim=-2))
        messages.append(str(info.value))
    assert messages[0] == messages[1]
    assert messages[0].startswith("scaled_dot_product_attention, case 1/6 (3-D")


CALLS_REFERENCE = [
    (
        "scaled_dot_product_attention",
        lambda q, k, v, mask=None: scaled_dot_product_attention(q, k, v, mask),
    ),  # noqa: E501
    (
        "scaled_dot_product_attention",
        lambda q, k, v, mask=None: ref_attention.scaled_dot_product_attention(q, k, v, mask),
    ),  # noqa: E501
    ("split_heads", lambda x, h: ref_attention.split_heads(x, h)),
    ("merge_heads", lambda x: ref_attention.merge_heads(x)),
    ("causal_mask", lambda L: ref_masks.causal_mask(L)),
    ("padding_mask", lambda t, p: ref_masks.padding_mask(t, p)),
    ("sinusoidal_encoding", lambda L, D: sinusoidal_encoding(L, D)),
]


@pytest.mark.parametrize(("exercise", "fn"), CALLS_REFERENCE)
def test_calling_the_course_lib_reference_is_rejected(exercise, fn):
    with pytest.raises(AssertionError, match="write it yourself"):
        run_check(exercise, fn)
    assert ref_attention.scaled_dot_product_attention is scaled_dot_product_attention


def test_multi_head_attention_may_reuse_the_earlier_building_blocks_but_not_the_module():
    def with_blocks(x, w_q, w_k, w_v, w_o, num_heads):
        q, k, v = (ref_attention.split_heads(w(x), num_heads) for w in (w_q, w_k, w_v))
        out, _ = ref_attention.scaled_dot_product_attention(q, k, v)
        return w_o(ref_attention.merge_heads(out))

    def with_module(x, w_q, w_k, w_v, w_o, num_heads):
        return ref_attention.MultiHeadAttention(x.shape[-1], num_heads)(x, x, x)[0]

    checks.check_multi_head_attention(with_blocks)
    with pytest.raises(AssertionError, match="write it yourself"):
        checks.check_multi_head_attention(with_module)


def test_the_rnn_references_are_switched_off_too():
    rnn = pytest.importorskip("course_lib.rnn")
    with pytest.raises(AssertionError, match="write it yourself"):
        checks.check_rnn_cell(lambda *a: rnn.rnn_cell_step(*a))


def test_reference_disabled_patches_aliases_in_main_and_restores_them(monkeypatch):
    main = sys.modules["__main__"]
    monkeypatch.setattr(main, "my_causal", ref_masks.causal_mask, raising=False)
    original = ref_masks.causal_mask
    with reference_disabled():
        with pytest.raises(AssertionError, match="write it yourself"):
            main.my_causal(3)
        with pytest.raises(AssertionError, match="course_lib.masks.causal_mask"):
            ref_masks.causal_mask(3)
    assert main.my_causal is original and ref_masks.causal_mask is original


@pytest.mark.parametrize("exercise", sorted(CORRECT))
def test_a_blank_exercise_reads_as_not_attempted(exercise):
    def blank(*args, **kwargs):
        raise NotImplementedError

    with pytest.raises(AssertionError, match="Exercise not attempted yet: `blank`"):
        run_check(exercise, blank)


def test_another_exception_becomes_a_short_message_with_a_hint():
    def broken(q, k, v, mask=None):
        raise ValueError("boom")

    with pytest.raises(AssertionError) as info:
        checks.check_scaled_dot_product_attention(broken)
    message = str(info.value)
    assert "raised ValueError: boom" in message and "Hint:" in message
    assert 'raise ValueError("boom")' in message  # the line of the learner's code
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_wrong_type_and_wrong_shape_name_expected_and_actual():
    with pytest.raises(AssertionError, match=r"expected a tuple \(out, weights\), got NoneType"):
        checks.check_scaled_dot_product_attention(lambda q, k, v, mask=None: None)
    with pytest.raises(AssertionError, match=r"one torch.Tensor\), got a list"):
        checks.check_split_heads(lambda x, h: x.tolist())
    with pytest.raises(AssertionError, match=r"shape \(2, 3, 5, 4\), got \(2, 5, 12\)"):
        checks.check_split_heads(lambda x, h: x)


def test_passing_something_other_than_a_function_is_explained():
    with pytest.raises(AssertionError, match="without calling it"):
        checks.check_causal_mask(causal_mask(3))


def test_checks_leave_the_global_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    checks.check_multi_head_attention(mha)
    assert torch.equal(torch.rand(3), expected)


def test_progress_reports_pass_fail_and_not_attempted(capsys):
    def blank(x):
        raise NotImplementedError

    namespace = {
        "attention": attention,
        "split_heads": bare_reshape_split,
        "merge_heads": blank,
        "causal_mask": ref_masks.causal_mask,  # the reference itself is not the learner's work
        "layer_norm": layer_norm,
    }
    results = checks.progress(namespace=namespace)
    table = capsys.readouterr().out
    assert results["scaled_dot_product_attention"] == ("pass", "")
    assert results["layer_norm"] == ("pass", "")
    status, reason = results["split_heads"]
    assert status == "fail" and "without a transpose" in reason
    for exercise in ("merge_heads", "causal_mask", "cached_attention"):
        assert results[exercise] == ("not attempted", "")
    assert set(results) == set(checks.CHECKS)
    assert "✓ pass" in table and "✗ fail" in table and "– not attempted" in table
    assert "✓ scaled_dot_product_attention" not in table  # the checks' own lines are hidden


def test_progress_defaults_to_the_callers_globals(capsys):
    namespace = {"causal_mask": causal_mask}
    exec("from course_lib.checks import progress\nresults = progress()", namespace)
    assert namespace["results"]["causal_mask"] == ("pass", "")


def test_every_public_check_is_in_the_registry():
    public = {n.removeprefix("check_") for n in checks.__all__ if n.startswith("check_")}
    assert public == set(checks.CHECKS) and set(CORRECT) <= public


def test_self_attention_may_reuse_attention_but_not_skip_the_projections():
    def with_reference(x, w_q, w_k, w_v):
        return ref_attention.scaled_dot_product_attention(x @ w_q, x @ w_k, x @ w_v)

    checks.check_self_attention(with_reference)
    with pytest.raises(AssertionError, match="Q = K = V = x"):
        checks.check_self_attention(
            lambda x, w_q, w_k, w_v: with_reference(x, *[torch.eye(x.shape[-1])] * 3)
        )


# --- notebook 09: the label-smoothed loss and greedy decoding --------------------------------


def label_smoothed_loss(logits, targets, pad_id, eps, log_probs=None, spread_all=True):
    logp = torch.log_softmax(logits, dim=-1) if log_probs is None else log_probs(logits)
    nll = -logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (B, L)
    if spread_all:
        smooth = -logp.mean(dim=-1)  # eps / V on every token
    else:
        smooth = (-logp.sum(dim=-1) - nll) / (logp.shape[-1] - 1)  # eps / (V - 1) on wrong ones
    per_position = (1 - eps) * nll + eps * smooth
    real = targets != pad_id
    return (per_position * real).sum() / real.sum()


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        (lambda lo, t, p, e: label_smoothed_loss(lo, t, -1, e), "PAD targets were counted"),
        (
            lambda lo, t, p, e: label_smoothed_loss(lo, t, p, e) * (t != p).sum() / t.numel(),
            "divided by every position",
        ),
        (lambda lo, t, p, e: label_smoothed_loss(lo, t, p, 0.0), "no smoothing"),
        (
            lambda lo, t, p, e: label_smoothed_loss(lo, t, p, e, spread_all=False),
            "V - 1 wrong tokens",
        ),
        (
            lambda lo, t, p, e: label_smoothed_loss(
                lo, t, p, e, log_probs=lambda x: torch.log(torch.softmax(x, dim=-1))
            ),
            "use a stable log-softmax",
        ),
        (
            lambda lo, t, p, e: label_smoothed_loss(lo, t, p, e) * (t != p).sum(),
            "returned the sum over positions",
        ),
        (lambda lo, t, p, e: label_smoothed_loss(lo, t, 0, e), "compare targets with pad_id"),
        (lambda lo, t, p, e: torch.zeros(t.shape), "return one number"),
    ],
)
def test_label_smoothed_loss_mistakes_are_named(wrong, message):
    with pytest.raises(AssertionError, match=message):
        checks.check_label_smoothed_loss(wrong)


def test_label_smoothed_loss_accepts_a_right_answer_and_pytorchs_own():
    checks.check_label_smoothed_loss(label_smoothed_loss)

    def with_pytorch(logits, targets, pad_id, eps):
        V = logits.shape[-1]
        return torch.nn.functional.cross_entropy(
            logits.reshape(-1, V), targets.reshape(-1), ignore_index=pad_id, label_smoothing=eps
        )

    checks.check_label_smoothed_loss(with_pytorch)


def greedy_decode(model, src, max_len, bos_id, eos_id, *, bos=False, feed=True, pos=-1,
                  pad_after_eos=True, stop="all", keep_eos=True, early_exit=True):  # fmt: skip
    memory = model.encode(src)  # (B, L_s, D)
    ys = torch.full((src.shape[0], 1), bos_id, dtype=torch.long)
    done = torch.zeros(src.shape[0], dtype=torch.bool)
    for _ in range(max_len):
        logits = model.decode(ys if feed else ys[:, :1], memory, src)[:, pos]  # (B, V)
        next_id = logits.argmax(dim=-1)
        if pad_after_eos:
            next_id = next_id.masked_fill(done, model.pad_id)
        ys = torch.cat([ys, next_id[:, None]], dim=1)
        done |= next_id == eos_id
        if early_exit and (done.all() if stop == "all" else done.any()):
            break
    out = ys if bos else ys[:, 1:]
    return out if keep_eos else out.masked_fill(out == eos_id, model.pad_id)


def test_greedy_decode_accepts_a_right_answer():
    checks.check_greedy_decode(greedy_decode)


def test_greedy_decode_that_never_stops_early_is_told_the_prompt_asks_it_to():
    with pytest.raises(AssertionError, match="stop as soon as every row is finished"):
        checks.check_greedy_decode(lambda *a: greedy_decode(*a, early_exit=False))


def test_greedy_decode_that_re_encodes_the_source_every_step_is_told_to_encode_once():
    def re_encoding(model, src, max_len, bos_id, eos_id):
        ys = torch.full((src.shape[0], 1), bos_id, dtype=torch.long)
        done = torch.zeros(src.shape[0], dtype=torch.bool)
        for _ in range(max_len):
            logits = model.decode(ys, model.encode(src), src)[:, -1]
            next_id = logits.argmax(dim=-1).masked_fill(done, model.pad_id)
            ys = torch.cat([ys, next_id[:, None]], dim=1)
            done |= next_id == eos_id
            if done.all():
                break
        return ys[:, 1:]

    with pytest.raises(AssertionError, match=r"model.encode ran \d+ times.*encode the source once"):
        checks.check_greedy_decode(re_encoding)


@pytest.mark.parametrize(
    ("knobs", "message"),
    [
        ({"bos": True}, "drop it from what you return"),
        ({"feed": False}, "as if the decoder saw only BOS"),
        ({"pos": 0}, "the last position along the time axis, not the first"),
        ({"pad_after_eos": False, "early_exit": False}, "must be PAD"),
        ({"stop": "any"}, "stopped when the first row produced EOS"),
        ({"keep_eos": False}, "EOS is missing"),
    ],
)
def test_greedy_decode_mistakes_are_named(knobs, message):
    with pytest.raises(AssertionError, match=message):
        checks.check_greedy_decode(lambda *a: greedy_decode(*a, **knobs))


def test_greedy_decode_may_not_call_the_reference_method():
    from course_lib.models import Transformer

    with pytest.raises(AssertionError, match="write the loop yourself"):
        checks.check_greedy_decode(lambda model, src, n, b, e: model.greedy_decode(src, n, b, e))
    # the method is restored afterwards
    assert "disabled" not in Transformer.greedy_decode.__name__


def test_greedy_decode_check_cases_cover_early_ends_and_max_len():
    from course_lib.checks.full_transformer import _decoding_model, _greedy_rows

    model = _decoding_model(2, 1.0)
    src = torch.randint(3, 9, (4, 6), generator=torch.Generator().manual_seed(12))
    src[1, 3:], src[2, 4:], src[3, 2:] = 0, 0, 0
    rows = _greedy_rows(model, src, 7)
    assert len({len(r) for r in rows}) >= 3, rows  # rows end at different steps
    assert any(r[-1] != 2 and len(r) == 7 for r in rows), rows  # one reaches max_len


def test_blank_decoding_exercises_report_not_attempted():
    def blank(*args):
        raise NotImplementedError

    for check in (checks.check_greedy_decode, checks.check_label_smoothed_loss):
        with pytest.raises(AssertionError, match="not attempted"):
            check(blank)


# --- notebook 05: rotary position embedding (RoPE) -----------------------------------------


def rope(x, base=10000.0, sign=1.0, exponent=2.0, start=0, halves=False, mix=True):
    """RoPE written out with cos and sin (independent of course_lib and of the check's oracle)."""
    L, d = x.shape[-2], x.shape[-1]
    pos = torch.arange(start, start + L, dtype=torch.float32)[:, None]  # (L, 1)
    angle = sign * pos / base ** (exponent * torch.arange(d // 2, dtype=torch.float32) / d)
    c, s = angle.cos(), angle.sin() if mix else torch.zeros_like(angle)  # (L, d/2)
    if halves:
        a, b = x[..., : d // 2], x[..., d // 2 :]
        return torch.cat([a * c - b * s, a * s + b * c], dim=-1)
    a, b = x[..., 0::2], x[..., 1::2]
    return torch.stack([a * c - b * s, a * s + b * c], dim=-1).flatten(-2).to(x.dtype)


def test_rope_accepts_a_right_answer_with_one_line(capsys):
    checks.check_rope(rope)
    assert capsys.readouterr().out.strip() == "✓ rope: all 4 cases pass"


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        (lambda x: rope(x, sign=-1.0), "wrong way"),
        (lambda x: rope(x, halves=True), "rotate_half"),
        (lambda x: rope(x, exponent=1.0), "wrong frequencies"),
        (lambda x: rope(x, start=1), "positions start at 0"),
        (lambda x: rope(x, mix=False), "sin terms are missing"),
        (lambda x: rope(x, exponent=0.0), "same speed"),
        (lambda x: rope(x, base=1000.0), "base 1000"),
        (lambda x: x, "unchanged"),
        (lambda x: rope(x.transpose(0, -2)).transpose(0, -2) if x.dim() > 2 else rope(x), "axis"),
    ],
)
def test_rope_mistakes_are_named(wrong, message):
    with pytest.raises(AssertionError, match=message):
        checks.check_rope(wrong)


def test_rope_may_not_call_the_course_lib_reference():
    from course_lib import positional  # looked up at call time, as a notebook's globals are

    def with_apply_rope(x):
        cos, sin = positional.rope_angles(x.shape[-2], x.shape[-1])
        return positional.apply_rope(x, cos, sin)

    def with_module(x):
        return positional.RotaryEmbedding(x.shape[-1])(x, x)[0]

    for cheat in (with_apply_rope, with_module):
        with pytest.raises(AssertionError, match="course_lib.positional"):
            checks.check_rope(cheat)


def test_a_blank_rope_exercise_reads_as_not_attempted():
    def blank(x):
        raise NotImplementedError

    with pytest.raises(AssertionError, match="Exercise not attempted yet"):
        checks.check_rope(blank)


# --- notebook 07: the cross-attention sublayer (field_attention: test_checks_cross_attention) -


def cross_attention_step(x, memory, mha, norm, src_mask, **knobs):
    residual, post = knobs.get("residual", True), knobs.get("post", False)
    mask = {"pass": src_mask, "ignore": None}[knobs.get("mask", "pass")]
    if post:
        return norm(x + mha(x, memory, memory, mask)[0])
    h = norm(x)
    kv = {"memory": memory, "self": h, "normed": norm(memory)}[knobs.get("kv", "memory")]
    out = mha(h, kv, kv, mask)[0]
    return x + out if residual else out


def test_cross_attention_accepts_a_right_answer_with_one_line(capsys):
    checks.check_cross_attention(cross_attention_step)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == ["✓ cross_attention: all 3 cases pass"]


def test_the_cross_attention_oracle_matches_the_course_decoder_layer():
    from course_lib.blocks import DecoderLayer
    from course_lib.masks import padding_mask

    torch.manual_seed(0)
    layer = DecoderLayer(16, 4, 32).eval()
    x, memory = torch.randn(2, 3, 16), torch.randn(2, 5, 16)
    src_mask = padding_mask(torch.tensor([[4, 5, 6, 7, 8], [4, 5, 0, 0, 0]]), 0)
    ours = cross_attention_step(x, memory, layer.cross_attn, layer.norm2, src_mask)
    expected = x + layer._cross_attention(layer.norm2(x), memory, src_mask)
    assert torch.allclose(ours, expected, atol=1e-6)


@pytest.mark.parametrize(
    ("knobs", "message"),
    [
        ({"residual": False}, "residual is missing"),
        ({"post": True}, "post-LN"),
        ({"kv": "self"}, "self-attention"),
        ({"kv": "normed"}, "memory was normalised"),
        ({"mask": "ignore"}, "padding mask was ignored"),
    ],
)
def test_cross_attention_mistakes_are_named(knobs, message):
    def wrong(x, memory, mha, norm, src_mask):
        return cross_attention_step(x, memory, mha, norm, src_mask, **knobs)

    with pytest.raises(AssertionError, match=message):
        checks.check_cross_attention(wrong)


def test_cross_attention_explains_a_returned_tuple_and_a_wrong_length():
    with pytest.raises(AssertionError, match="you returned a tuple"):
        checks.check_cross_attention(lambda x, m, mha, norm, s: mha(norm(x), m, m, s))
    with pytest.raises(AssertionError, match="one row per target position"):
        checks.check_cross_attention(lambda x, m, mha, norm, s: m + mha(norm(m), x, x)[0])


def test_blank_cross_attention_exercises_report_not_attempted():
    def blank(*args):
        raise NotImplementedError

    for check in (checks.check_cross_attention, checks.check_field_attention):
        with pytest.raises(AssertionError, match="Exercise not attempted yet"):
            check(blank)


# ----------------------------------------------------------------------------- rnn_step_jacobian
# (notebook 01, Exercise 1.2; the check lives in course_lib/_checks_rnn.py)


def _rnn_step_jacobian(h_new, W_hh):
    return (1 - h_new**2)[:, :, None] * W_hh


def test_rnn_step_jacobian_check_accepts_a_correct_answer(capsys):
    checks.check_rnn_step_jacobian(_rnn_step_jacobian)
    assert "rnn_step_jacobian" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong, words",
    [
        (lambda h, W: W.expand(h.shape[0], *W.shape), "tanh'"),
        (lambda h, W: (1 - h)[:, :, None] * W, "not 1 - h_new"),
        (lambda h, W: (1 - h**2)[:, None, :] * W, "rows"),
        (lambda h, W: (1 - h**2)[:, :, None] * W.T, "transposed"),
        (lambda h, W: (1 - torch.tanh(h) ** 2)[:, :, None] * W, "do not apply tanh again"),
    ],
)
def test_rnn_step_jacobian_check_names_the_mistake(wrong, words):
    with pytest.raises(AssertionError, match=words):
        checks.check_rnn_step_jacobian(wrong)


def test_rnn_step_jacobian_reference_is_switched_off_while_checking():
    rnn = pytest.importorskip("course_lib.rnn")
    with pytest.raises(AssertionError, match="reference"):
        checks.check_rnn_step_jacobian(lambda h, W: rnn.rnn_step_jacobian(h, W))


# ----------------------------------------------------------------------------- encoder_layer
# (notebook 08, Exercise 8.1; the check lives in course_lib/_checks_blocks.py)


def _encoder_layer(x, self_attn, ff, norm1, norm2, mask=None):
    h = norm1(x)
    x = x + self_attn(h, h, h, mask)
    return x + ff(norm2(x))


def _post_ln_encoder_layer(x, self_attn, ff, norm1, norm2, mask=None):
    x = norm1(x + self_attn(x, x, x, mask))
    return norm2(x + ff(x))


def _encoder_layer_without(part):
    def fn(x, self_attn, ff, norm1, norm2, mask=None):
        h = norm1(x)
        if part == "mask":
            mask = None
        a = self_attn(h, h, h, mask)
        x = a if part in ("residuals", "attn_residual") else (h if part == "normed" else x) + a
        f = ff(norm2(x))
        return f if part in ("residuals", "ff_residual") else x + f

    return fn


def test_encoder_layer_check_accepts_a_correct_answer(capsys):
    checks.check_encoder_layer(_encoder_layer)
    assert capsys.readouterr().out.strip() == "✓ encoder_layer: all 3 cases pass"


@pytest.mark.parametrize(
    "wrong, words",
    [
        (_encoder_layer_without("residuals"), "no residual connections"),
        (_encoder_layer_without("attn_residual"), "attention sublayer has no residual"),
        (_encoder_layer_without("ff_residual"), "feed-forward sublayer has no residual"),
        (_encoder_layer_without("normed"), "residual adds the normalised vector"),
        (_encoder_layer_without("mask"), "mask was not passed"),
        (_post_ln_encoder_layer, "post-LN"),
        (lambda x, a, f, n1, n2, mask=None: _encoder_layer(x, a, f, n2, n1, mask), "swapped"),
        (lambda x, a, f, n1, n2, mask=None: _encoder_layer(x, a, f, n1, n1, mask), "used twice"),
    ],
)
def test_encoder_layer_check_names_the_mistake(wrong, words):
    with pytest.raises(AssertionError, match=words):
        checks.check_encoder_layer(wrong)


def test_encoder_layer_check_reads_a_blank_exercise_as_not_attempted():
    def encoder_layer(x, self_attn, ff, norm1, norm2, mask=None):
        raise NotImplementedError

    with pytest.raises(AssertionError, match="Exercise not attempted yet"):
        checks.check_encoder_layer(encoder_layer)
    assert (
        checks.progress(namespace={"encoder_layer": encoder_layer})["encoder_layer"][0]
        == "not attempted"
    )
    assert checks.progress(namespace={"encoder_layer": _encoder_layer})["encoder_layer"] == (
        "pass",
        "",
    )


# --- notebook 10: the causal LM loss, top-k and top-p filters --------------------------------


def causal_lm_loss(logits, tokens):
    V = logits.shape[-1]
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, V), tokens[:, 1:].reshape(-1)
    )


def top_k_filter(logits, k):  # exactly k survive, also when logits tie at the k-th value
    idx = logits.topk(min(k, logits.shape[-1]), dim=-1).indices
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, idx, True)
    return logits.masked_fill(~keep, float("-inf"))


def top_p_filter(logits, p, inclusive=True, keep_top=True, sort=True, scatter=True):
    values, order = logits.sort(dim=-1, descending=True)
    if not sort:
        values, order = logits, torch.arange(logits.shape[-1]).expand_as(logits)
    probs = values.softmax(dim=-1)
    keep = (probs.cumsum(-1) - probs < p) if inclusive else (probs.cumsum(-1) <= p)
    if keep_top:
        keep[..., 0] = True
    if not scatter:
        return values.masked_fill(~keep, float("-inf"))
    keep = torch.zeros_like(keep).scatter(-1, order, keep)
    return logits.masked_fill(~keep, float("-inf"))


@pytest.mark.parametrize(
    ("check", "fn", "name"),
    [
        ("check_causal_lm_loss", causal_lm_loss, "causal_lm_loss"),
        ("check_top_k", top_k_filter, "top_k"),
        ("check_top_p", top_p_filter, "top_p"),
    ],
)
def test_sampling_checks_accept_a_right_answer_with_one_line(check, fn, name, capsys):
    getattr(checks, check)(fn)
    out = capsys.readouterr().out.strip()
    assert out.startswith(f"✓ {name}: all ") and "\n" not in out


def _ce(logits, tokens, **kw):
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), tokens.reshape(-1), **kw
    )


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        (lambda x, t: _ce(x, t), "no shift"),
        (lambda x, t: _ce(x[:, 1:], t[:, :-1]), "the wrong way"),
        (lambda x, t: _ce(x[:, :-2], t[:, 2:]), "off by two"),
        (lambda x, t: _ce(x[:, :-1], t[:, 1:], reduction="sum"), "the sum"),
        (lambda x, t: torch.nn.functional.cross_entropy(x[:, :-1], t[:, 1:]), "flatten them"),
        (lambda x, t: _ce(x[:, :-1], t[:, 1:]).reshape(1, 1).expand(2, 1), "one number"),
    ],
)
def test_causal_lm_loss_mistakes_are_named(wrong, message):
    with pytest.raises(AssertionError, match=message):
        checks.check_causal_lm_loss(wrong)


def _keep_k(x, k, op):
    return x.masked_fill(op(x, x.topk(min(k, x.shape[-1]), dim=-1).values[..., -1:]), float("-inf"))


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        (lambda x, k: torch.where(_keep_k(-x, k, torch.lt).isinf(), float("-inf"), x), "smallest"),
        (lambda x, k: torch.where(top_k_filter(x, k).isinf(), 0.0, x), "set them to float"),
        (lambda x, k: top_k_filter(x, k).softmax(dim=-1), "returned probabilities"),
        (lambda x, k: _keep_k(x, k, torch.le), "k - 1"),
        (lambda x, k: top_k_filter(x, k + 1), "k \\+ 1"),
        (
            lambda x, k: x.masked_fill(x < x.topk(k, dim=-1).values[..., -1:], float("-inf")),
            "k > V",
        ),
        (lambda x, k: top_k_filter(x.log_softmax(dim=-1), k), "unchanged"),
    ],
)
def test_top_k_mistakes_are_named(wrong, message):
    with pytest.raises(AssertionError, match=message):
        checks.check_top_k(wrong)


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        (lambda x, p: top_p_filter(x, p, inclusive=False), "pushes the mass past p"),
        (lambda x, p: top_p_filter(x, p, inclusive=False, keep_top=False), "past p|keep the top"),
        (lambda x, p: top_p_filter(x, p, sort=False), "vocabulary order: sort"),
        (lambda x, p: top_p_filter(x, p, scatter=False), "in sorted order"),
        (lambda x, p: torch.where(top_p_filter(x, p).isinf(), 0.0, x), "set them to float"),
        (lambda x, p: top_p_filter(x, p).softmax(dim=-1), "returned probabilities"),
    ],
)
def test_top_p_mistakes_are_named(wrong, message):
    with pytest.raises(AssertionError, match=message):
        checks.check_top_p(wrong)


def test_sampling_checks_refuse_the_course_lib_filters_and_read_blanks_as_not_attempted():
    from course_lib import sampling  # looked up at call time, as a notebook's globals are

    with pytest.raises(AssertionError, match="course_lib.sampling.top_k_filter"):
        checks.check_top_k(lambda x, k: sampling.top_k_filter(x, k))
    with pytest.raises(AssertionError, match="course_lib.sampling.filter_logits"):
        checks.check_top_p(lambda x, p: sampling.filter_logits(x, top_p=p))

    def blank(*args):
        raise NotImplementedError

    for check in (checks.check_causal_lm_loss, checks.check_top_k, checks.check_top_p):
        with pytest.raises(AssertionError, match="Exercise not attempted yet"):
            check(blank)
