"""Specifications of notebook 11's exercises: the guarded online-softmax update (11.1) and the
cached attention step for several new tokens with the offset causal mask (11.2)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_checks_hints import _normal, solution_lines

from course_lib import checks
from course_lib.lessons import efficiency as lesson


def online(m_prev, l_prev, acc_prev, scores, v, guard=True, inverted=False):
    """A right update (defaults) or one typical mistake."""
    m_new = torch.maximum(m_prev, scores.amax(dim=-1, keepdim=True))
    shift = m_new.masked_fill(m_new.isinf(), 0.0) if guard else m_new
    alpha = torch.exp(shift - m_prev) if inverted else torch.exp(m_prev - shift)
    p = torch.exp(scores - shift)
    return m_new, l_prev * alpha + p.sum(dim=-1, keepdim=True), acc_prev * alpha + p @ v


def cached(q, k_new, v_new, cache_k, cache_v, shift=0, mode="offset", scale=True):
    """A right cached step (defaults) or one typical mistake."""
    k_all, v_all = torch.cat([cache_k, k_new], dim=2), torch.cat([cache_v, v_new], dim=2)
    T_new, T_all = q.shape[2], k_all.shape[2]
    if mode == "is_causal":
        out = F.scaled_dot_product_attention(q, k_all, v_all, is_causal=True)
        return out, k_all, v_all
    first = 0 if mode == "top-left" else T_all - T_new
    mask = torch.arange(T_all)[None, :] <= torch.arange(first, first + T_new)[:, None] + shift
    if mode == "none":
        mask = torch.ones_like(mask)
    s = q @ k_all.transpose(-2, -1) / (q.shape[-1] ** 0.5 if scale else 1.0)
    out = s.masked_fill(~mask, float("-inf")).softmax(dim=-1) @ v_all
    return out, k_all, v_all


def blank(*args):
    raise NotImplementedError


def test_the_references_pass_with_one_line(capsys):
    checks.check_online_softmax(online)
    checks.check_cached_attention(cached)
    checks.check_cached_attention(lambda *a: cached(*a))  # any callable
    out = capsys.readouterr().out
    assert (
        out == "✓ online_softmax: all 6 cases pass\n" + "✓ cached_attention: all 4 cases pass\n" * 2
    )


def test_the_course_reference_equals_the_loop_answer_and_is_refused_in_the_check():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 3, 4, generator=g) for _ in range(3))
    ck, cv = torch.randn(2, 2, 5, 4, generator=g), torch.randn(2, 2, 5, 4, generator=g)
    for a, b in zip(lesson.cached_attention(q, k, v, ck, cv), cached(q, k, v, ck, cv), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    with pytest.raises(AssertionError, match="lessons.efficiency.cached_attention"):
        checks.check_cached_attention(lambda *a: lesson.cached_attention(*a))


def test_a_blank_fails_only_its_own_exercise():
    results = checks.progress(
        "11", namespace={"online_softmax_update": online, "cached_attention": blank}
    )
    assert results == {"online_softmax": ("pass", ""), "cached_attention": ("not attempted", "")}
    results = checks.progress(
        "11", namespace={"online_softmax_update": blank, "cached_attention": cached}
    )
    assert results == {"online_softmax": ("not attempted", ""), "cached_attention": ("pass", "")}


def test_progress_lists_this_notebooks_exercises_in_order(capsys):
    checks.progress("11", namespace={})
    rows = capsys.readouterr().out.splitlines()
    assert [r.split()[0] for r in rows[1:]] == ["online_softmax", "cached_attention"]


@pytest.mark.parametrize(
    ("wrong", "phrase"),
    [
        (lambda *a: online(*a, guard=False), "hides every key"),
        (lambda *a: online(*a, guard=False), "notebook 06"),
        (lambda *a: online(*a, inverted=True), "rescale factor is inverted"),
        (lambda m, den, a, s, v: online(m, den * 0, a, s, v), "rescale"),
    ],
)
def test_online_softmax_mistakes_are_named(wrong, phrase):
    with pytest.raises(AssertionError) as info:
        checks.check_online_softmax(wrong)
    assert phrase in str(info.value), str(info.value)


def test_the_unguarded_update_fails_only_on_the_masked_block():
    with pytest.raises(AssertionError, match="case 5/6"):
        checks.check_online_softmax(lambda *a: online(*a, guard=False))


@pytest.mark.parametrize(
    ("wrong", "phrase"),
    [
        (lambda *a: cached(*a, mode="is_causal"), "aligned top-left"),
        (lambda *a: cached(*a, mode="top-left"), "is_causal switch"),
        (lambda *a: cached(*a, mode="none"), "nothing is masked"),
        (lambda *a: cached(*a, shift=-1), "hid the diagonal"),
        (lambda *a: cached(*a, shift=1), "one step into the future"),
        (lambda *a: cached(*a, scale=False), "not scaled"),
        (lambda q, k, v, ck, cv: cached(q, ck, cv, k, v), "come after the cached"),
        (
            lambda q, k, v, ck, cv: cached(q, v, k, cv, ck)[::-1] and cached(q, k, v, ck, cv)[0],
            "three tensors",
        ),
        (lambda q, k, v, ck, cv: cached(q, k, v, ck, cv)[:2], "three tensors"),
    ],
)
def test_cached_attention_mistakes_are_named(wrong, phrase):
    with pytest.raises(AssertionError) as info:
        checks.check_cached_attention(wrong)
    assert phrase in str(info.value), str(info.value)


def test_a_single_new_token_cannot_tell_the_masks_apart_but_the_check_can():
    """With T_new = 1 every mask but 'none' and the top-left one agree: the check needs T_new > 1."""
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 1, 1, 4, generator=g) for _ in range(3))
    ck, cv = torch.randn(1, 1, 3, 4, generator=g), torch.randn(1, 1, 3, 4, generator=g)
    assert torch.allclose(cached(q, k, v, ck, cv)[0], cached(q, k, v, ck, cv, mode="none")[0])
    with pytest.raises(AssertionError, match="case 2/4"):  # is_causal fails on the first cache
        checks.check_cached_attention(lambda *a: cached(*a, mode="is_causal"))


def test_messages_hold_no_solution_line():
    lines = solution_lines()
    wrongs = [
        (checks.check_online_softmax, lambda *a: online(*a, guard=False)),
        (checks.check_cached_attention, lambda *a: cached(*a, mode="is_causal")),
        (checks.check_cached_attention, lambda *a: cached(*a, shift=-1)),
        (checks.check_cached_attention, lambda q, k, v, ck, cv: cached(q, k, v, ck, cv)[0]),
    ]
    for check, wrong in wrongs:
        with pytest.raises(AssertionError) as info:
            check(wrong)
        text = _normal(str(info.value).split("(at line")[0])
        assert not [line for line in lines if line in text], str(info.value)


def test_logits_after_a_cache_need_the_offset_mask():
    from course_lib.gpt import GPT

    torch.manual_seed(0)
    model = GPT(vocab_size=11, d_model=16, num_heads=2, num_layers=2, max_len=16).eval()
    idx = torch.randint(0, 11, (2, 12))
    with torch.no_grad():
        full = model(idx)[0][:, 7:]
    assert torch.allclose(lesson.logits_after_cache(model, idx, 7), full, atol=1e-5)
    assert (lesson.logits_after_cache(model, idx, 7, "is_causal") - full).abs().max() > 1e-3


@pytest.mark.parametrize(
    ("exercise", "signature", "check"),
    [
        ("ex11_1", "(m_prev, l_prev, acc_prev, scores_block, v_block)", "check_online_softmax"),
        ("ex11_2", "(q_new, k_new, v_new, cache_k, cache_v)", "check_cached_attention"),
    ],
)
def test_the_last_hint_level_is_a_working_answer(exercise, signature, check):
    """11.1's code includes the guard for a hidden block: without it case 5 fails."""
    from test_checks_full_transformer import from_ladder

    getattr(checks, check)(from_ladder(exercise, signature))


def test_the_messages_of_typical_mistakes_show_no_code():
    from test_feedback_shows_no_code import code_fragments

    wrongs = [
        (checks.check_online_softmax, lambda *a: online(*a, guard=False)),
        (checks.check_online_softmax, lambda *a: online(*a, inverted=True)),
        (checks.check_online_softmax, lambda m, den, a, s, v: online(m, den * 0, a, s, v)),
        (checks.check_cached_attention, lambda *a: cached(*a, mode="is_causal")),
        (checks.check_cached_attention, lambda *a: cached(*a, scale=False)),
    ]
    for check, wrong in wrongs:
        with pytest.raises(AssertionError) as info:
            check(wrong)
        message = str(info.value).split("(at line")[0]  # the learner's own line may show
        assert not code_fragments(message), message


def test_the_notebooks_markdown_holds_no_solution_line():
    from test_feedback_shows_no_code import markdown_leaks

    assert not markdown_leaks("11"), markdown_leaks("11")
