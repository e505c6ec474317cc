"""Specifications of notebook 05's checks: 5.3, RoPE inside multi-head self-attention.

The reference passes; a blank reads as not attempted and fails only its own check; typical
mistakes are each named; the lesson's RotarySelfAttention is refused; no message shows code.
"""

from __future__ import annotations

import math

import pytest
import torch

from course_lib import checks
from course_lib.checks.positional_encoding import LADDERS, ROPE_ATTN_HINTS


def rope(x, base=10000.0):
    """RoPE on (..., L, d), written independently of course_lib: neighbouring pairs turned."""
    L, d = x.shape[-2], x.shape[-1]
    freq = base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    theta = torch.arange(L, dtype=torch.float64)[:, None] * freq  # (L, d/2)
    cos, sin = theta.cos().float(), theta.sin().float()
    xe, xo = x[..., 0::2], x[..., 1::2]
    return torch.stack([xe * cos - xo * sin, xe * sin + xo * cos], dim=-1).flatten(-2)


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
    from course_lib.checks.positional_encoding import rope_attention_oracle
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
