"""Specifications of course_lib.masks: True means "may attend"."""

import pytest
import torch

from course_lib.masks import causal_mask, combine_masks, decoder_mask, padding_mask


def test_causal_mask_lets_each_position_see_itself_and_the_past_only():
    m = causal_mask(4)
    assert m.shape == (1, 1, 4, 4) and m.dtype == torch.bool
    for i in range(4):
        for j in range(4):
            assert bool(m[0, 0, i, j]) == (j <= i)


def test_padding_mask_hides_pad_keys_and_broadcasts_over_heads_and_queries():
    tokens = torch.tensor([[7, 8, 0], [7, 0, 0]])
    m = padding_mask(tokens, pad_id=0)
    assert m.shape == (2, 1, 1, 3)
    assert m[:, 0, 0].tolist() == [[True, True, False], [True, False, False]]


def test_padding_mask_rejects_embeddings_with_a_hint():
    with pytest.raises(ValueError, match="pass the integer tokens"):
        padding_mask(torch.randn(2, 3, 8), pad_id=0)


def test_decoder_mask_is_causal_and_padding_together():
    tokens = torch.tensor([[5, 6, 0]])
    m = decoder_mask(tokens, pad_id=0)
    assert m.shape == (1, 1, 3, 3)
    assert m[0, 0].tolist() == [[True, False, False], [True, True, False], [True, True, False]]


def test_combine_masks_skips_none_and_rejects_float_masks():
    a = causal_mask(3)
    assert combine_masks(None, a) is a
    assert combine_masks(None, None) is None
    with pytest.raises(ValueError, match="boolean"):
        combine_masks(a, torch.zeros(1, 1, 3, 3))


def test_causal_mask_rejects_nonpositive_length():
    with pytest.raises(ValueError):
        causal_mask(0)
