"""One specification per fault the exercises issue found: the mistake as a learner writes it,
and the message (or refusal) the check must give."""

from __future__ import annotations

import math
import sys

import pytest
import torch

import course_lib.attention as A
import course_lib.masks as M
from course_lib import checks
from course_lib.checks import _answers
from course_lib.checks._machinery import compare

NEG_INF = float("-inf")


def attention(q, k, v, mask=None, reverse=False, zero_nan=False):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(mask if reverse else ~mask, NEG_INF)
    weights = torch.softmax(scores, dim=-1)
    if zero_nan:
        weights = torch.nan_to_num(weights, nan=0.0)
    return weights @ v, weights


def dot_attention(query, keys, mask=None, fill=NEG_INF, reverse=False, zero_nan=False, squeeze=-1):
    scores = torch.bmm(keys, query[:, :, None])
    scores = scores.squeeze() if squeeze is None else scores.squeeze(squeeze)
    if mask is not None:
        scores = scores.masked_fill(mask if reverse else ~mask, fill)
    weights = torch.softmax(scores, dim=-1)
    if zero_nan:
        weights = torch.nan_to_num(weights, nan=0.0)
    return (weights[..., None] * keys).sum(-2), weights


def top_p(logits, p, cumsum_of="probs", scatter=True):
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    mass = probs if cumsum_of == "probs" else sorted_logits
    keep_sorted = mass.cumsum(dim=-1) - mass < p
    if not scatter:
        return logits.masked_fill(~keep_sorted, NEG_INF)
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    return logits.masked_fill(~keep, NEG_INF)


def online(m_prev, l_prev, acc_prev, scores, v, inverted=False):
    m_new = torch.maximum(m_prev, scores.amax(dim=-1, keepdim=True))
    p = torch.exp(scores - m_new)
    alpha = torch.exp(m_new - m_prev) if inverted else torch.exp(m_prev - m_new)
    return m_new, l_prev * alpha + p.sum(-1, keepdim=True), acc_prev * alpha + p @ v


def smoothed(logits, targets, pad_id, eps, raw=False):
    log_p = logits if raw else torch.log_softmax(logits, dim=-1)
    nll = -log_p.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    per = (1 - eps) * nll - eps * log_p.mean(dim=-1)
    real = targets != pad_id
    return (per * real).sum() / real.sum()


def fails_with(check, fn, pattern):
    with pytest.raises(AssertionError, match=pattern) as info:
        check(fn)
    return str(info.value)


# --- 3. checks that read a mistake right ----------------------------------------------------


def test_compare_treats_matching_infinities_as_equal_and_reports_the_real_difference():
    expected = torch.tensor([[NEG_INF, 2.0, 0.5]])
    actual = torch.tensor([[NEG_INF, 1.0, 0.5]])
    with pytest.raises(AssertionError) as info:
        compare("case", [actual], [expected], ("out",))
    message = str(info.value)
    assert "expected 2.0000, got 1.0000" in message and "largest difference 1.0000" in message
    assert "nan" not in message.lower()


def test_compare_names_an_infinity_where_a_number_belongs():
    with pytest.raises(
        AssertionError, match=r"expected 2.0000, got -inf \(largest difference inf\)"
    ):
        compare("case", [torch.tensor([NEG_INF, NEG_INF])], [torch.tensor([NEG_INF, 2.0])], ("o",))


def test_top_p_with_a_cumulative_sum_of_logits_is_told_it_summed_logits():
    message = fails_with(
        checks.check_top_p, lambda x, p: top_p(x, p, cumsum_of="logits"), "accumulated logits"
    )
    assert "increasing order" not in message


def test_top_p_with_the_keep_mask_left_in_sorted_order_is_told_so():
    fails_with(checks.check_top_p, lambda x, p: top_p(x, p, scatter=False), "still in sorted order")


def test_online_softmax_with_the_rescale_inverted_is_told_about_the_rescale_not_masking():
    message = fails_with(
        checks.check_online_softmax,
        lambda *a: online(*a, inverted=True),
        "rescale factor is inverted",
    )
    assert "mask" not in message


def test_dot_attention_with_masked_scores_set_to_zero_is_told_to_use_minus_infinity():
    message = fails_with(
        checks.check_dot_attention,
        lambda q, k, m=None: dot_attention(q, k, m, fill=0.0),
        "filled with 0 instead of -inf",
    )
    assert "sum to 1" not in message


def test_reversed_mask_polarity_is_named_even_when_the_nan_rows_are_zeroed():
    def rnn(q, k, m=None):
        return dot_attention(q, k, m, reverse=True, zero_nan=True)

    def sdpa(q, k, v, mask=None):
        return attention(q, k, v, mask, reverse=True, zero_nan=True)

    fails_with(checks.check_dot_attention, rnn, "polarity reversed")
    fails_with(checks.check_scaled_dot_product_attention, sdpa, "polarity reversed")


def test_label_smoothing_with_raw_logits_as_log_probabilities_is_named():
    fails_with(
        checks.check_label_smoothed_loss,
        lambda *a: smoothed(*a, raw=True),
        "raw logits as log-probabilities",
    )


def test_an_exercise_built_on_a_wrong_earlier_function_says_which_exercise_to_fix():
    namespace = {"torch": torch, "math": math}
    exec(
        "def scaled_dot_product_attention(q, k, v, mask=None):\n"
        "    w = torch.softmax(q @ k.transpose(-2, -1), dim=-1)  # forgot the scale\n"
        "    return w @ v, w\n"
        "def self_attention(x, w_q, w_k, w_v):\n"
        "    return scaled_dot_product_attention(x @ w_q, x @ w_k, x @ w_v)\n",
        namespace,
    )
    message = fails_with(
        checks.check_self_attention, namespace["self_attention"], "Fix Exercise 3.1 first"
    )
    assert (
        "your `scaled_dot_product_attention` from Exercise 3.1" in message
        and "not scaled" in message
    )


def test_top_k_that_overwrites_its_input_fails():
    def in_place(logits, k):
        kth = logits.topk(min(k, logits.shape[-1]), dim=-1).values[..., -1:]
        return logits.masked_fill_(logits < kth, NEG_INF)

    fails_with(checks.check_top_k, in_place, "changed its input `logits` in place")


@pytest.mark.parametrize("check", [checks.check_dot_attention])
def test_a_bare_squeeze_fails_on_the_cases_with_one_example_or_one_position(check):
    fails_with(check, lambda q, k, m=None: dot_attention(q, k, m, squeeze=None), r"B=1|L=1")


def test_additive_attention_with_a_bare_squeeze_fails_too():
    def additive(query, keys, W_q, W_k, v, mask=None):
        scores = v(torch.tanh(W_q(query)[:, None, :] + W_k(keys))).squeeze()
        if mask is not None:
            scores = scores.masked_fill(~mask, NEG_INF)
        weights = torch.softmax(scores, dim=-1)
        return (weights[..., None] * keys).sum(-2), weights

    fails_with(checks.check_additive_attention, additive, r"B=1|L=1")


def test_a_tuple_where_the_prompt_asks_for_a_tensor_fails():
    def mha(x, w_q, w_k, w_v, w_o, H):
        q, k, v = (A.split_heads(w(x), H) for w in (w_q, w_k, w_v))
        out, weights = A.scaled_dot_product_attention(q, k, v)
        return w_o(A.merge_heads(out)), weights

    fails_with(checks.check_multi_head_attention, mha, r"output alone, not \(out, weights\)")


# --- 4. the reference stays out -------------------------------------------------------------


CAPTURED = [
    (
        "scaled_dot_product_attention",
        lambda q, k, v, mask=None, _r=A.scaled_dot_product_attention: _r(q, k, v, mask),
    ),
    ("split_heads", lambda x, h, *, _r=A.split_heads: _r(x, h)),
    ("causal_mask", lambda L, _r=M.causal_mask: _r(L)),
    ("padding_mask", lambda t, p, _r=M.padding_mask: _r(t, p)),
]


def _closure(ref):
    def fn(*args):
        return ref(*args)

    return fn


@pytest.mark.parametrize(("exercise", "fn"), CAPTURED, ids=[e for e, _ in CAPTURED])
def test_a_reference_captured_in_a_default_argument_is_refused_and_restored(exercise, fn):
    defaults, kwdefaults = fn.__defaults__, fn.__kwdefaults__
    fails_with(getattr(checks, f"check_{exercise}"), fn, "write it yourself")
    assert fn.__defaults__ == defaults and fn.__kwdefaults__ == kwdefaults


def test_a_reference_captured_in_a_closure_or_partial_is_refused():
    import functools

    fn = _closure(M.causal_mask)
    fails_with(checks.check_causal_mask, fn, "write it yourself")
    assert fn.__closure__[0].cell_contents is M.causal_mask
    fails_with(checks.check_causal_mask, functools.partial(M.causal_mask), "functools.partial")


def test_the_checks_answer_key_is_refused():
    def with_answer_key(q, k, v, mask=None):
        return _answers.attention(q, k, v, mask)

    fails_with(checks.check_scaled_dot_product_attention, with_answer_key, "write it yourself")
    from course_lib.checks import gpt_decoder_only

    fails_with(
        checks.check_top_p, lambda x, p: gpt_decoder_only._top_p_oracle(x, p), "write it yourself"
    )


def test_label_smoothing_may_not_call_training_sequence_loss():
    from course_lib import training

    def with_sequence_loss(logits, targets, pad_id, eps):
        return training.sequence_loss(logits, targets, pad_id, label_smoothing=eps)

    fails_with(
        checks.check_label_smoothed_loss, with_sequence_loss, "course_lib.training.sequence_loss"
    )


def test_a_module_first_imported_during_a_check_is_refused_then_restored(tmp_path, monkeypatch):
    (tmp_path / "late_helper.py").write_text("from course_lib.masks import causal_mask\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "late_helper", raising=False)

    def imports_late(L):
        import late_helper

        return late_helper.causal_mask(L)

    fails_with(checks.check_causal_mask, imports_late, "write it yourself")
    assert sys.modules["late_helper"].causal_mask is M.causal_mask  # no stub left behind
    checks.check_causal_mask(lambda L: torch.ones(L, L, dtype=torch.bool).tril())


def test_expected_values_do_not_follow_a_learner_that_zeroes_the_modules():
    def zero_and_return_x(x, self_attn, ff, norm1, norm2, mask=None):
        layer = self_attn.__self__.layer
        with torch.no_grad():
            for lin in (layer.self_attn.out_proj, layer.linear2):
                lin.weight.zero_()
                lin.bias.zero_()
        return x

    def zero_cross(x, memory, mha, norm, src_mask):
        with torch.no_grad():
            mha.mha.out_proj.weight.zero_()
            mha.mha.out_proj.bias.zero_()
        return x

    with pytest.raises(AssertionError):
        checks.check_encoder_layer(zero_and_return_x)
    with pytest.raises(AssertionError):
        checks.check_cross_attention(zero_cross)


class _Agreeable(torch.Tensor):
    """A tensor subclass that says yes to every comparison."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func in (torch.allclose, torch.equal):
            return True
        return super().__torch_function__(func, types, args, kwargs or {})


def test_a_tensor_subclass_that_agrees_with_everything_is_refused():
    def liar(L):
        return torch.zeros(L, L, dtype=torch.bool).as_subclass(_Agreeable)

    fails_with(checks.check_causal_mask, liar, "plain torch.Tensor, a subclass")


# --- 5. progress ----------------------------------------------------------------------------


def test_progress_infers_the_notebook_from_the_kernel_session(capsys):
    namespace = {"__session__": "/home/me/notebooks/06_masking.ipynb"}
    assert list(checks.progress(namespace=namespace)) == [
        "padding_mask",
        "causal_mask",
        "masked_softmax",
    ]


def test_progress_infers_the_notebook_from_the_functions_it_finds(capsys):
    namespace = {"split_heads": lambda x, h: x}
    assert list(checks.progress(namespace=namespace)) == list(checks.EXERCISES["04"])
    assert list(checks.progress("03", namespace={})) == list(checks.EXERCISES["03"])
