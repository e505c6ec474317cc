"""Notebook 07's helpers: how much weight decoder rows put on a part of the source."""

import pytest
import torch

from course_lib.lessons.cross_attention import AttentionMaps, weight_on_part


def _maps(cross: torch.Tensor) -> AttentionMaps:
    return AttentionMaps([], [], [], torch.empty(0), torch.empty(0), cross)


def test_weight_on_part_is_the_mean_share_over_layers_heads_and_rows():
    cross = torch.zeros(2, 2, 3, 5)  # (layers, H, L_t, L_s)
    cross[..., 1:3] = 0.5  # every row: all weight on source characters 1 and 2
    cross[1, 1, 0] = torch.tensor([1.0, 0, 0, 0, 0])  # one row of one head looks elsewhere
    share = weight_on_part(_maps(cross), (0, 2), "abcde", "bc")
    assert share == pytest.approx((7 * 1.0 + 0.0) / 8)


def test_a_part_missing_from_the_source_is_refused():
    with pytest.raises(ValueError, match="not a part of the source"):
        weight_on_part(_maps(torch.ones(1, 1, 2, 3) / 3), (0, 1), "abc", "xy")
