"""EncoderTagger: an encoder-only labeller whose heads can be read (ablation: test_lesson_multi_head_attention)."""

import pytest
import torch

from course_lib.models import EncoderTagger


def _tagger(**kwargs):
    torch.manual_seed(0)
    config = dict(vocab_size=6, num_classes=9, d_model=16, num_heads=4, num_layers=2, max_len=10)
    config.update(kwargs)
    return EncoderTagger(**config)


def test_tagger_gives_one_label_distribution_per_token():
    model = _tagger()
    tokens = torch.randint(0, 6, (3, 7))
    assert model(tokens).shape == (3, 7, 9)


def test_tagger_is_bidirectional_so_the_first_position_sees_the_last_token():
    model = _tagger().eval()
    tokens = torch.randint(0, 6, (1, 7))
    changed = tokens.clone()
    changed[0, -1] = (changed[0, -1] + 1) % 6
    with torch.no_grad():
        assert not torch.allclose(model(tokens)[0, 0], model(changed)[0, 0])


def test_attention_maps_are_per_layer_and_head_rows_sum_to_one_and_mode_is_restored():
    model = _tagger().train()
    maps = model.attention_maps(torch.randint(0, 6, (2, 5)))
    assert maps.shape == (2, 2, 4, 5, 5)  # (layers, B, H, L, L)
    torch.testing.assert_close(maps.sum(-1), torch.ones(2, 2, 4, 5))
    assert model.training and not any(layer.record_attention for layer in model.layers)
    assert not maps.requires_grad


def test_padding_keys_get_no_attention_when_pad_id_is_given():
    model = _tagger(pad_id=0)
    tokens = torch.tensor([[3, 4, 5, 0, 0], [1, 2, 3, 4, 5]])
    maps = model.attention_maps(tokens)
    assert (maps[:, 0, :, :, 3:] == 0).all()
    assert (maps[:, 1] > 0).all()


def test_tagger_rejects_bad_configurations_and_inputs():
    with pytest.raises(ValueError, match="not divisible by num_heads=3"):
        _tagger(num_heads=3)
    with pytest.raises(ValueError, match="positional must be one of"):
        _tagger(positional="rope")
    with pytest.raises(ValueError, match="integer token ids"):
        _tagger()(torch.randn(2, 5))
