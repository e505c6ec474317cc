"""Specifications of notebook 05's checks: 5.3, RoPE inside multi-head self-attention.

The reference passes; a blank reads as not attempted and fails only its own check; typical
mistakes are each named; the lesson's RotarySelfAttention is refused; no message shows code.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from course_lib import checks
from course_lib.checks._rope_attention import ROPE_ATTN_HINTS
from course_lib.checks.positional_encoding import LADDERS

ROOT = Path(__file__).resolve().parents[1]


def rope(x, base=10000.0):
    """RoPE on (..., L, d), written independently of course_lib: neighbouring pairs turned."""
    L, d = x.shape[-2], x.shape[-1]
    freq = base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    theta = torch.arange(L, dtype=torch.float64)[:, None] * freq  # (L, d/2)
    cos, sin = theta.cos().float(), theta.sin().float()
    xe, xo = x[..., 0::2], x[..., 1::2]
    out = torch.stack([xe * cos - xo * sin, xe * sin + xo * cos], dim=-1).flatten(-2)
    return out.to(x.dtype)  # float32 arithmetic, x's dtype back


def split(t, H):
    B, L, D = t.shape
    return t.view(B, L, H, D // H).transpose(1, 2)


def merge(t):
    B, H, L, d = t.shape
    return t.transpose(1, 2).reshape(B, L, H * d)


def attend(q, k, v, scale=True):
    s = q @ k.transpose(-2, -1) / (math.sqrt(q.shape[-1]) if scale else 1.0)
    return torch.softmax(s, dim=-1) @ v


def rope_attention(x, w_q, w_k, w_v, w_o, num_heads, turn="qk", where="heads", scale=True):
    """The right answer with defaults; each knob is one typical mistake."""
    H = num_heads
    if where == "x":
        x = rope(x)
    q, k, v = w_q(x), w_k(x), w_v(x)
    if where == "before_split":
        q, k = rope(q), rope(k)
    q, k, v = split(q, H), split(k, H), split(v, H)
    if where == "heads":
        q = rope(q) if "q" in turn else q
        k = rope(k) if "k" in turn else k
        v = rope(v) if "v" in turn else v
    return w_o(merge(attend(q, k, v, scale)))


def test_the_reference_passes_with_one_line(capsys):
    checks.check_rope_self_attention(rope_attention)
    assert capsys.readouterr().out == "✓ rope_self_attention: all 3 cases pass\n"


def test_the_course_rotary_embedding_may_be_used_for_the_rotation():
    from course_lib import attention, positional

    def with_course_pieces(x, w_q, w_k, w_v, w_o, num_heads):
        q, k, v = (attention.split_heads(w(x), num_heads) for w in (w_q, w_k, w_v))
        q, k = positional.RotaryEmbedding(q.shape[-1], 64)(q, k)
        out, _ = attention.scaled_dot_product_attention(q, k, v)
        return w_o(attention.merge_heads(out))

    checks.check_rope_self_attention(with_course_pieces)


MISTAKES = [
    (lambda *a: rope_attention(*a, turn=""), "those of plain multi-head attention"),
    (lambda *a: rope_attention(*a, turn="qkv"), "values were rotated too"),
    (lambda *a: rope_attention(*a, turn="q"), "only one of queries and keys"),
    (lambda *a: rope_attention(*a, turn="k"), "only one of queries and keys"),
    (lambda *a: rope_attention(*a, where="before_split"), "before splitting them into heads"),
    (lambda *a: rope_attention(*a, where="x"), "rotated x before the projections"),
    (lambda *a: rope_attention(*a, scale=False), "sqrt(d_k)"),
    (lambda x, wq, wk, wv, wo, H: rope_attention(x, wq, wk, wv, lambda t: t, H), "w_o"),
    (lambda *a: (rope_attention(*a), None), "output tensor alone"),
]


@pytest.mark.parametrize(("wrong", "phrase"), MISTAKES, ids=[p for _, p in MISTAKES])
def test_each_typical_mistake_is_named(wrong, phrase):
    with pytest.raises(AssertionError) as info:
        checks.check_rope_self_attention(wrong)
    assert phrase in str(info.value), str(info.value)
    assert str(info.value).startswith("rope_self_attention")


def test_positions_along_the_head_axis_are_named():
    def head_axis(x, w_q, w_k, w_v, w_o, num_heads):
        B, L, D = x.shape
        H, d = num_heads, D // num_heads
        q, k, v = (w(x).view(B, L, H, d) for w in (w_q, w_k, w_v))
        q, k = rope(q), rope(k)  # (B, L, H, d): the rotation counts heads as positions
        return w_o(merge(attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))))

    with pytest.raises(AssertionError, match="the same angle .positions counted along the head"):
        checks.check_rope_self_attention(head_axis)


def test_a_blank_reads_as_not_attempted_and_fails_only_its_own_check():
    def blank(x, w_q, w_k, w_v, w_o, num_heads):
        raise NotImplementedError

    with pytest.raises(AssertionError, match="not attempted"):
        checks.check_rope_self_attention(blank)
    results = checks.progress("05", {"rope_self_attention": blank, "rope": rope})
    assert results["rope_self_attention"][0] == "not attempted"
    assert results["rope"][0] == "pass"


def test_the_lesson_module_and_multi_head_attention_are_refused():
    from course_lib import attention
    from course_lib.lessons import positional_encoding as lesson

    def with_lesson(x, w_q, w_k, w_v, w_o, num_heads):
        m = lesson.RotarySelfAttention(x.shape[-1], num_heads)
        return m(x, x, x)[0]

    def with_mha(x, w_q, w_k, w_v, w_o, num_heads):
        return attention.MultiHeadAttention(x.shape[-1], num_heads)(x, x, x)[0]

    with pytest.raises(AssertionError, match="RotarySelfAttention"):
        checks.check_rope_self_attention(with_lesson)
    with pytest.raises(AssertionError, match="MultiHeadAttention"):
        checks.check_rope_self_attention(with_mha)


def test_no_hint_or_early_ladder_level_holds_code():
    code_bits = ("rope(q)", "ref_split_heads(", "w_o(ref_merge_heads", "= (")
    for text in [*ROPE_ATTN_HINTS.values(), *LADDERS["ex5_3"][:-1]]:
        assert not any(bit in text for bit in code_bits), text
    assert "rope(q), rope(k)" in LADDERS["ex5_3"][-1]  # only the last level shows code


def test_the_lesson_rotary_attention_matches_the_check_answer():
    from course_lib.checks._answers import random_linear
    from course_lib.checks._rope_attention import rope_attention_oracle
    from course_lib.lessons.positional_encoding import RotarySelfAttention

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, 16, generator=g)
    lins = [random_linear(g, 16, 16) for _ in range(4)]
    m = RotarySelfAttention(16, 2, max_len=8)
    with torch.no_grad():
        for name, lin in zip(("w_q", "w_k", "w_v", "w_o"), lins, strict=True):
            getattr(m, name).load_state_dict(lin.state_dict())
        torch.testing.assert_close(
            m(x, x, x)[0], rope_attention_oracle(x, lins, 2), atol=1e-5, rtol=0
        )


# --- 5.1 and 5.2: the sinusoidal table and RoPE (issue #14: requirements, named mistakes) ----


def sinusoid(max_len, d_model, start=0, int_div=False):
    """The paper's table, written independently of course_lib; knobs for two mistakes."""
    pos = torch.arange(start, start + max_len, dtype=torch.float32)[:, None]
    two_i = torch.arange(0, d_model, 2)
    exponent = (two_i // d_model).float() if int_div else two_i.float() / d_model
    angle = pos * 10000.0**-exponent  # (max_len, d_model / 2)
    return torch.stack([angle.sin(), angle.cos()], dim=-1).flatten(-2)


def test_the_sinusoidal_reference_passes():
    checks.check_sinusoidal_encoding(sinusoid)


@pytest.mark.parametrize(
    ("wrong", "phrase"),
    [
        (lambda L, D: sinusoid(L, D, int_div=True), "same speed, one radian per position"),
        (lambda L, D: sinusoid(L, D, start=1), "positions start at 0"),
        (lambda L, D: sinusoid(L, D).view(L, D // 2, 2).flip(-1).flatten(-2), "swapped"),
    ],
)
def test_sinusoidal_mistakes_are_named(wrong, phrase):
    with pytest.raises(AssertionError) as info:
        checks.check_sinusoidal_encoding(wrong)
    assert phrase in str(info.value), str(info.value)


def rope_cases(x, sequential=False, angle_dtype=torch.float32, keep_dtype=True):
    """RoPE into a new tensor; knobs for the sequential update, float16 angles, lost dtype."""
    L, d = x.shape[-2], x.shape[-1]
    pos = torch.arange(L, dtype=angle_dtype)[:, None]
    theta = pos * 10000.0 ** (-torch.arange(0, d, 2, dtype=angle_dtype) / d)
    cos, sin = theta.cos(), theta.sin()
    out = torch.empty_like(x) if keep_dtype else torch.empty(x.shape)
    out[..., 0::2] = x[..., 0::2] * cos - x[..., 1::2] * sin
    odd_from = out[..., 0::2] if sequential else x[..., 0::2]
    out[..., 1::2] = odd_from * sin + x[..., 1::2] * cos
    return out


def test_the_rope_reference_passes_float32_and_float16(capsys):
    checks.check_rope(rope_cases)
    assert capsys.readouterr().out == "✓ rope: all 4 cases pass\n"
    checks.check_rope(rope)  # float32 arithmetic, cast at the end


@pytest.mark.parametrize(
    ("wrong", "phrase"),
    [
        (lambda x: rope_cases(x, sequential=True), "already-rotated even member"),
        (lambda x: rope(x).float(), "must have x's dtype (torch.float16), got torch.float32"),
        (lambda x: rope_cases(x, keep_dtype=False), "must have x's dtype"),
        (lambda x: rope_cases(x, angle_dtype=x.dtype), "angles lose precision"),
    ],
)
def test_rope_mistakes_of_issue_14_are_named(wrong, phrase):
    with pytest.raises(AssertionError) as info:
        checks.check_rope(wrong)
    assert phrase in str(info.value), str(info.value)
    assert str(info.value).startswith("rope, case")


def test_rope_that_changes_x_in_place_is_refused():
    def in_place(x):
        x.copy_(rope_cases(x))
        return x

    with pytest.raises(AssertionError, match="changed its input `x` in place"):
        checks.check_rope(in_place)


def test_no_message_of_notebook_05_shows_code():
    from test_feedback_shows_no_code import code_fragments

    from course_lib.checks.positional_encoding import PE_HINTS, ROPE_HINTS

    texts = [*PE_HINTS.values(), *ROPE_HINTS.values(), *ROPE_ATTN_HINTS.values()]
    texts += [text for k in ("ex5_1", "ex5_2", "ex5_3") for text in LADDERS[k][:-1]]
    assert not [(t, hits) for t in texts if (hits := code_fragments(t))]


def test_the_prompts_of_notebook_05_state_requirements_not_the_traps():
    import nbformat

    nb = nbformat.read(ROOT / "notebooks" / "05_positional_encoding.ipynb", as_version=4)
    prompts = [c.source for c in nb.cells if c.source.startswith("### Exercise 5.")]
    assert len(prompts) == 3
    text = "\n".join(prompts)
    for trap in (
        "Ask yourself",
        "Mind what",
        "before or after splitting",
        "which of queries",
        "Position 0 is not turned",
        "interleaved places",
        "along which axis",
    ):
        assert trap not in text, trap
    assert "float16" in prompts[1] and "dtype" in prompts[1]  # 5.2's added requirement
    assert "1/10000^{2i/d_k}" in prompts[2]  # 5.3 defines the per-head convention
