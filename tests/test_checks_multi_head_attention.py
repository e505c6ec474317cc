"""Specifications of notebook 04's checks (4.1 split_heads, 4.2 merge_heads, 4.3 the whole
multi-head attention layer): the reference passes, a blank fails only its own check, typical
mistakes are named, and neither the messages nor the early hints show a solution line."""

from __future__ import annotations

import math

import pytest
import torch

from course_lib import checks
from course_lib.checks.multi_head_attention import LADDERS


def split_heads(x, num_heads):
    B, L, D = x.shape
    return x.view(B, L, num_heads, D // num_heads).transpose(1, 2)


def merge_heads(x):
    B, H, L, d = x.shape
    return x.transpose(1, 2).reshape(B, L, H * d)


def mha(x, w_q, w_k, w_v, w_o, num_heads, split=split_heads, merge=merge_heads, scale="d_k"):
    q, k, v = (split(w(x), num_heads) for w in (w_q, w_k, w_v))
    d = {"d_k": q.shape[-1], "d_model": x.shape[-1]}[scale]
    weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d), dim=-1)
    return w_o(merge(weights @ v))


def test_the_references_pass(capsys):
    checks.check_split_heads(split_heads)
    checks.check_merge_heads(merge_heads)
    checks.check_multi_head_attention(mha)
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "✓ split_heads",
        "✓ merge_heads",
        "✓ multi_head_attention",
    ]


def bare_reshape_split(x, H):
    B, L, D = x.shape
    return x.reshape(B, H, L, D // H)


MISTAKES = [
    ("split_heads", bare_reshape_split, "without a transpose"),
    ("split_heads", lambda x, H: x.reshape(*x.shape[:2], H, -1), "(B, L, H, d_k)"),
    ("merge_heads", lambda x: x.reshape(x.shape[0], x.shape[2], -1), "without transposing back"),
    ("merge_heads", lambda x: x.transpose(1, 2), "did not reshape"),
    ("multi_head_attention", lambda *a: mha(*a, split=bare_reshape_split), "transpose"),
    ("multi_head_attention", lambda *a: mha(*a, scale="d_model"), "d_model"),
    ("multi_head_attention", lambda x, q, k, v, o, H: mha(x, q, k, v, lambda t: t, H), "w_o"),
    ("multi_head_attention", lambda *a: (mha(*a), None), "not (out, weights)"),
]


@pytest.mark.parametrize(("exercise", "wrong", "phrase"), MISTAKES, ids=[p for *_, p in MISTAKES])
def test_each_typical_mistake_is_named(exercise, wrong, phrase):
    with pytest.raises(AssertionError) as info:
        getattr(checks, f"check_{exercise}")(wrong)
    assert phrase in str(info.value), str(info.value)


def test_a_blank_exercise_fails_only_its_own_check():
    def blank(*args):
        raise NotImplementedError

    results = checks.progress(
        "04", {"split_heads": split_heads, "merge_heads": blank, "multi_head_attention": mha}
    )
    assert {name: status for name, (status, _) in results.items()} == {
        "split_heads": "pass",
        "merge_heads": "not attempted",
        "multi_head_attention": "pass",
    }


def test_the_whole_layer_may_not_call_multi_head_attention():
    from course_lib import attention

    def with_module(x, w_q, w_k, w_v, w_o, num_heads):
        return attention.MultiHeadAttention(x.shape[-1], num_heads)(x, x, x)[0]

    with pytest.raises(AssertionError, match="MultiHeadAttention"):
        checks.check_multi_head_attention(with_module)


def test_only_the_last_ladder_level_shows_code():
    solution_bits = ("x.view(B, L, num_heads", ".transpose(1, 2).reshape(", "ref_split_heads(w(x)")
    for key in ("ex4_1", "ex4_2", "ex4_3"):
        ladder = LADDERS[key]
        assert len(ladder) >= 3
        for text in ladder[:-1]:
            assert not any(bit in text for bit in solution_bits), (key, text)
