"""Specifications of course_lib.tiled_attention and course_lib.lessons.efficiency: tiled attention is exact, the memory counters count."""

from __future__ import annotations

import gc
import math

import pytest
import torch
import torch.nn.functional as F

from course_lib import checks
from course_lib.lessons.efficiency import (
    ATTENTION_IMPLS,
    MemoryTracker,
    measure_attention,
    median_time,
    saved_tensor_bytes,
)
from course_lib.tiled_attention import (
    online_softmax_attention,
    online_softmax_forward,
    online_softmax_step,
)


def reference(q, k, v, causal=False):
    """Plain softmax attention in float64, written out here as the oracle."""
    s = q.double() @ k.double().transpose(-2, -1) / math.sqrt(q.shape[-1])
    if causal:
        L_q, L_k = s.shape[-2:]
        s = s.masked_fill(torch.ones(L_q, L_k, dtype=torch.bool).triu(1), float("-inf"))
    return torch.softmax(s, dim=-1) @ v.double()


def qkv(*shape, L_k=None, d_v=None, dtype=torch.float32, seed=0, grad=False):
    g = torch.Generator().manual_seed(seed)
    *lead, L_q, d = shape
    L_k = L_q if L_k is None else L_k
    q = torch.randn(*lead, L_q, d, generator=g, dtype=dtype)
    k = torch.randn(*lead, L_k, d, generator=g, dtype=dtype)
    v = torch.randn(*lead, L_k, d if d_v is None else d_v, generator=g, dtype=dtype)
    return tuple(t.requires_grad_(grad) for t in (q, k, v))


def test_folding_the_step_over_blocks_gives_the_full_softmax():
    q, k, v = qkv(2, 5, 8, L_k=12)
    s = q @ k.transpose(-2, -1) / math.sqrt(8)  # (2, 5, 12)
    state = (torch.full((2, 5, 1), float("-inf")), torch.zeros(2, 5, 1), torch.zeros(2, 5, 8))
    for j in range(0, 12, 4):
        state = online_softmax_step(*state, s[..., j : j + 4], v[..., j : j + 4, :])
    m, l_sum, acc = state
    assert torch.allclose(m, s.amax(-1, keepdim=True))
    assert torch.allclose(acc / l_sum, torch.softmax(s, -1) @ v, atol=1e-6)


def test_the_step_passes_the_course_check():
    checks.check_online_softmax(online_softmax_step)


def test_a_learner_step_may_not_call_the_reference():
    def lazy(m, l_prev, acc, s, v):
        return online_softmax_step(m, l_prev, acc, s, v)

    with pytest.raises(AssertionError, match="reference"):
        checks.check_online_softmax(lazy)


@pytest.mark.parametrize("block_size", [1, 7, 16, 64, 1000])
@pytest.mark.parametrize("causal", [False, True])
def test_online_attention_equals_standard_attention(block_size, causal):
    q, k, v = qkv(2, 3, 50, 16, d_v=8)
    out = online_softmax_attention(q, k, v, block_size=block_size, causal=causal)
    assert out.shape == (2, 3, 50, 8)
    assert torch.allclose(out.double(), reference(q, k, v, causal), atol=1e-5)


def test_online_attention_handles_more_keys_than_queries():
    q, k, v = qkv(4, 6, 16, L_k=37)
    out = online_softmax_attention(q, k, v, block_size=8)
    assert torch.allclose(out, F.scaled_dot_product_attention(q, k, v), atol=1e-5)


def test_online_attention_is_stable_for_huge_scores():
    q, k, v = qkv(1, 9, 8, L_k=20)
    out = online_softmax_attention(q * 300, k * 300, v, block_size=6)
    assert torch.isfinite(out).all()
    assert torch.allclose(out.double(), reference(q * 300, k * 300, v), atol=1e-5)


def test_logsumexp_is_returned_for_the_backward_pass():
    q, k, v = qkv(2, 10, 4)
    _, lse = online_softmax_forward(q, k, v, block_size=3)
    s = q @ k.transpose(-2, -1) / 2.0
    assert torch.allclose(lse, torch.logsumexp(s, dim=-1, keepdim=True), atol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_recomputing_backward_matches_autograd(causal):
    q, k, v = qkv(1, 2, 9, 4, L_k=9, dtype=torch.float64, grad=True)
    assert torch.autograd.gradcheck(
        lambda a, b, c: online_softmax_attention(a, b, c, block_size=4, causal=causal), (q, k, v)
    )


def test_gradients_equal_those_of_sdpa():
    q, k, v = qkv(2, 2, 33, 8, grad=True)
    grads = []
    for fn in (lambda: online_softmax_attention(q, k, v, block_size=10),
               lambda: F.scaled_dot_product_attention(q, k, v)):  # fmt: skip
        fn().pow(2).sum().backward()
        grads.append([t.grad.clone() for t in (q, k, v)])
        q.grad = k.grad = v.grad = None
    for a, b in zip(*grads, strict=True):
        assert torch.allclose(a, b, atol=1e-4)


def test_bad_shapes_and_block_sizes_raise():
    q, k, v = qkv(2, 5, 8)
    with pytest.raises(ValueError, match="block_size"):
        online_softmax_attention(q, k, v, block_size=0)
    with pytest.raises(ValueError, match="d_k"):
        online_softmax_attention(q, k[..., :4], v)


def test_tiled_attention_never_materialises_the_score_matrix():
    B, H, L, d, blk = 2, 2, 256, 16, 32
    q, k, v = qkv(B, H, L, d)
    with torch.no_grad(), MemoryTracker() as tiled:
        online_softmax_attention(q, k, v, block_size=blk)
    with torch.no_grad(), MemoryTracker() as full:
        ATTENTION_IMPLS["naive"](q, k, v)
    assert full.largest == B * H * L * L * 4  # the (L, L) scores
    assert tiled.largest == B * H * L * blk * 4  # one (L, block) slice of them


def test_memory_tracker_counts_new_tensors_not_views_and_sees_frees():
    with MemoryTracker() as mem:
        a = torch.zeros(1000)  # 4000 bytes
        view = a.view(10, 100)  # no new memory
        a.add_(1.0)  # in place: no new memory
        b = a * 2  # 4000 more
        del b
        gc.collect()
    assert (mem.peak, mem.largest, mem.current) == (8000, 4000, 4000)
    del a, view
    gc.collect()
    assert mem.current == 0


def test_saved_bytes_grow_quadratically_for_naive_and_linearly_for_sdpa():
    def saved(impl, L):
        q, k, v = qkv(2, 2, L, 16, grad=True)
        return saved_tensor_bytes(ATTENTION_IMPLS[impl], q, k, v)

    assert saved("naive", 128) >= 2 * 2 * 128 * 128 * 4  # at least the (L, L) softmax output
    assert saved("naive", 256) / saved("naive", 128) > 3.5
    for impl in ("sdpa", "online"):
        assert saved(impl, 256) / saved(impl, 128) == pytest.approx(2.0)
        assert saved(impl, 256) < saved("naive", 256) / 4


def test_measure_attention_reports_time_and_memory():
    r = measure_attention("online", 64, batch=1, heads=2, d_head=8, repeats=1)
    assert set(r) == {"seconds", "peak_bytes", "largest_bytes", "saved_bytes"}
    assert r["seconds"] > 0 and r["peak_bytes"] >= r["largest_bytes"] > 0
    with pytest.raises(ValueError, match="impl"):
        measure_attention("flash", 64)


def test_median_time_runs_warmup_plus_repeats():
    calls = []
    assert median_time(lambda: calls.append(1), repeats=3, warmup=2) >= 0
    assert len(calls) == 5
