"""Specifications of course_lib.positional."""

import math

import pytest
import torch

from course_lib.positional import (
    LearnedPositionalEmbedding,
    RotaryEmbedding,
    SinusoidalPositionalEncoding,
    sinusoidal_encoding,
)


def test_sinusoidal_encoding_equals_the_papers_formula_entry_by_entry():
    L, d = 20, 16
    pe = sinusoidal_encoding(L, d)
    for pos in range(L):
        for i in range(d // 2):
            angle = pos / (10000 ** (2 * i / d))
            assert math.isclose(pe[pos, 2 * i].item(), math.sin(angle), abs_tol=1e-5)
            assert math.isclose(pe[pos, 2 * i + 1].item(), math.cos(angle), abs_tol=1e-5)


def test_sinusoidal_encoding_is_bounded_and_distinct_for_every_position():
    pe = sinusoidal_encoding(1000, 64)
    assert pe.abs().max() <= 1.0
    dists = torch.cdist(pe, pe) + torch.eye(1000) * 10
    assert dists.min() > 1e-3


def test_a_fixed_offset_is_a_rotation_of_the_encoding():
    d, k = 16, 5
    pe = sinusoidal_encoding(50, d)
    freq = 1 / 10000 ** (torch.arange(0, d, 2) / d)
    for pos in (0, 7, 30):
        for i in range(d // 2):
            c, s = math.cos(k * freq[i]), math.sin(k * freq[i])
            sin_p, cos_p = pe[pos, 2 * i], pe[pos, 2 * i + 1]
            assert math.isclose(
                pe[pos + k, 2 * i].item(), (s * cos_p + c * sin_p).item(), abs_tol=1e-5
            )
            assert math.isclose(
                pe[pos + k, 2 * i + 1].item(), (c * cos_p - s * sin_p).item(), abs_tol=1e-5
            )


def test_odd_width_is_rejected():
    with pytest.raises(ValueError, match="must be even"):
        sinusoidal_encoding(10, 7)


def test_sinusoidal_module_adds_the_table_and_has_no_parameters():
    mod = SinusoidalPositionalEncoding(8, max_len=10)
    x = torch.zeros(2, 6, 8)
    torch.testing.assert_close(mod(x)[1], sinusoidal_encoding(10, 8)[:6])
    assert len(list(mod.parameters())) == 0


def test_learned_positions_refuse_lengths_they_never_saw():
    mod = LearnedPositionalEmbedding(8, max_len=10)
    assert mod(torch.zeros(1, 10, 8)).shape == (1, 10, 8)
    with pytest.raises(ValueError, match="exceeds max_len=10"):
        mod(torch.zeros(1, 11, 8))


def test_rope_makes_query_key_scores_depend_only_on_relative_offset():
    torch.manual_seed(0)
    rope = RotaryEmbedding(head_dim=8, max_len=64)
    q_vec, k_vec = torch.randn(8), torch.randn(8)
    L = 40
    q = q_vec.expand(1, 1, L, 8).contiguous()  # the same query content at every position
    k = k_vec.expand(1, 1, L, 8).contiguous()
    rq, rk = rope(q, k)
    scores = (rq @ rk.transpose(-2, -1))[0, 0]  # (L, L)
    for offset in (0, 3, 11):
        diag = torch.diagonal(scores, offset=-offset)  # pairs (i, i - offset)
        torch.testing.assert_close(diag, diag[0].expand_as(diag), atol=1e-4, rtol=1e-5)


def test_rope_preserves_vector_norms():
    rope = RotaryEmbedding(head_dim=8)
    q = torch.randn(2, 2, 10, 8)
    rq, _ = rope(q, q)
    torch.testing.assert_close(rq.norm(dim=-1), q.norm(dim=-1), atol=1e-5, rtol=1e-5)
