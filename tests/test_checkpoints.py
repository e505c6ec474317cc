"""Specifications of course_lib.checkpoints: a checkpoint loads exactly, or fails saying why."""

import re

import pytest
import torch

from course_lib.checkpoints import (
    load_checkpoint,
    load_model_state,
    save_checkpoint,
    state_dict_sha256,
)
from course_lib.gpt import GPT
from course_lib.models import EncoderTagger, Transformer

TINY_GPT = dict(vocab_size=11, d_model=16, num_heads=4, num_layers=1, max_len=8)
TINY_TRANSFORMER = dict(
    src_vocab_size=13, tgt_vocab_size=13, d_model=16, num_heads=4, num_encoder_layers=1,
    num_decoder_layers=1, d_ff=32, max_len=16, pad_id=0,
)  # fmt: skip


def _gpt(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    return GPT(**(TINY_GPT | overrides))


def _transformer(seed: int = 0, **overrides) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(**(TINY_TRANSFORMER | overrides))


def _saved(tmp_path, model, config: dict | None = None) -> dict:
    config = dict(model.config) if config is None else config
    return load_checkpoint(save_checkpoint(tmp_path / "m.pt", model, config))


# ----------------------------------------------------------------------------- round trip


def test_round_trip_rebuilds_an_identical_model_from_the_full_recorded_config(tmp_path):
    model = _transformer(seed=1).eval()
    partial = {k: v for k, v in model.config.items() if k != "positional"}  # a default left out
    ckpt = _saved(tmp_path, model, partial)
    assert ckpt["config"] == model.config  # recorded in full, defaults included
    assert ckpt["sha256"] == state_dict_sha256(model.state_dict())
    fresh = load_model_state(Transformer(**ckpt["config"]), ckpt).eval()
    src, tgt = torch.randint(1, 13, (3, 7)), torch.randint(1, 13, (3, 5))
    with torch.no_grad():
        assert torch.equal(fresh(src, tgt), model(src, tgt))


# ----------------------------------------------------------------------------- config mismatches


def test_a_gpt_saved_with_4_heads_refuses_to_load_into_2_heads(tmp_path):
    ckpt = _saved(tmp_path, _gpt(num_heads=4))
    two_heads = _gpt(num_heads=2)
    assert {k: v.shape for k, v in two_heads.state_dict().items()} == {
        k: v.shape for k, v in ckpt["state_dict"].items()
    }  # every shape fits: only the config can tell the two models apart
    with pytest.raises(ValueError, match=r"config: \['num_heads: checkpoint 4 vs model 2'\]"):
        load_model_state(two_heads, ckpt)


def test_a_transformer_with_another_pad_id_is_refused(tmp_path):
    ckpt = _saved(tmp_path, _transformer(pad_id=0))
    with pytest.raises(ValueError, match=r"pad_id: checkpoint 0 vs model 3"):
        load_model_state(_transformer(pad_id=3), ckpt)


def test_another_width_names_every_differing_key_and_the_mis_shaped_weights(tmp_path):
    ckpt = _saved(tmp_path, _gpt(d_model=16))  # d_ff defaults to 4 * d_model: it differs too
    with pytest.raises(ValueError) as err:
        load_model_state(_gpt(d_model=32, num_heads=4), ckpt)
    message = str(err.value)
    assert "d_model: checkpoint 16 vs model 32" in message
    assert "d_ff: checkpoint 64 vs model 128" in message
    assert "shape: ['tok_embed.weight: checkpoint (11, 16) vs model (11, 32)'" in message


def test_all_differing_settings_are_named_in_one_error(tmp_path):
    ckpt = _saved(tmp_path, _transformer())
    other = _transformer(num_heads=2, pad_id=5, dropout=0.1, positional="learned")
    with pytest.raises(ValueError) as err:
        load_model_state(other, ckpt)
    named = re.findall(r"[\"'](\w+): checkpoint", str(err.value))
    assert named == ["num_heads", "dropout", "pad_id", "positional"]  # in the model's order
    assert "Transformer(**ckpt['config'])" in str(err.value)  # and how to fix it


def test_a_model_without_a_config_dict_is_checked_on_the_settings_it_exposes(tmp_path):
    model = EncoderTagger(vocab_size=9, num_classes=3, d_model=16, num_heads=4, pad_id=0)
    config = dict(vocab_size=9, num_classes=3, d_model=16, num_heads=4, pad_id=0)
    ckpt = _saved(tmp_path, model, config)
    assert ckpt["config"] == config  # nothing to complete it from
    other = EncoderTagger(vocab_size=9, num_classes=3, d_model=16, num_heads=2, pad_id=None)
    with pytest.raises(ValueError, match=r"num_heads: checkpoint 4 vs model 2.*pad_id"):
        load_model_state(other, ckpt)


# ----------------------------------------------------------------------------- missing config


def test_a_checkpoint_without_a_config_is_refused(tmp_path):
    ckpt = _saved(tmp_path, _gpt())
    del ckpt["config"]
    with pytest.raises(ValueError, match="checkpoint has no config.*cannot be checked against"):
        load_model_state(_gpt(), ckpt)


def test_settings_missing_from_an_old_config_are_named_unless_they_are_the_default(tmp_path):
    ckpt = _saved(tmp_path, _transformer())
    ckpt["config"] = {k: v for k, v in ckpt["config"].items() if k != "positional"}
    assert load_model_state(_transformer(), ckpt)  # omitted, but the model uses the default
    with pytest.raises(ValueError, match=r"positional: checkpoint \(default 'sinusoidal', not"):
        load_model_state(_transformer(positional="learned"), ckpt)
    del ckpt["config"]["src_vocab_size"]  # no default: nothing tells what the model had
    with pytest.raises(ValueError, match=r"src_vocab_size: checkpoint \(not recorded\) vs model"):
        load_model_state(_transformer(), ckpt)


def test_save_refuses_a_config_that_contradicts_the_model(tmp_path):
    with pytest.raises(ValueError, match=r"does not describe this GPT.*num_heads: config 2 vs"):
        save_checkpoint(tmp_path / "x.pt", _gpt(num_heads=4), {"num_heads": 2})
    with pytest.raises(ValueError, match=r"n_embd: config 16 vs model \(no such setting\)"):
        save_checkpoint(tmp_path / "x.pt", _gpt(), {"n_embd": 16})
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------- corruption


def test_flipped_bytes_in_the_weights_on_disk_are_detected(tmp_path):
    model = _gpt()
    path = save_checkpoint(tmp_path / "m.pt", model, model.config)
    raw = bytearray(path.read_bytes())
    weights = model.head.weight.detach().numpy().tobytes()
    at = raw.find(weights)
    assert at > 0  # the tensor's bytes lie uncompressed in the file
    raw[at + len(weights) // 2] ^= 0x40  # one bit of one float
    path.write_bytes(raw)
    assert torch.load(path, weights_only=True)["state_dict"]  # torch itself does not notice
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))} is corrupted or was modified"):
        load_checkpoint(path)


def test_weights_edited_and_resaved_without_updating_the_hash_are_detected(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", _gpt(), TINY_GPT)
    payload = torch.load(path, weights_only=True)
    payload["state_dict"]["head.weight"][0, 0] += 1e-3
    torch.save(payload, path)
    with pytest.raises(ValueError, match="m.pt is corrupted or was modified after it was saved"):
        load_checkpoint(path)


def test_an_old_checkpoint_without_a_hash_loads_with_a_warning(tmp_path):
    model = _gpt().eval()
    path = save_checkpoint(tmp_path / "old.pt", model, TINY_GPT)
    payload = torch.load(path, weights_only=True)
    del payload["sha256"]  # as course_lib wrote checkpoints before the hash existed
    torch.save(payload, path)
    with pytest.warns(UserWarning, match="old.pt has no weights hash"):
        ckpt = load_checkpoint(path)
    fresh = load_model_state(_gpt(seed=1), ckpt).eval()
    tokens = torch.randint(0, 11, (2, 8))
    with torch.no_grad():
        assert torch.equal(fresh(tokens)[0], model(tokens)[0])  # the logits


def test_the_hash_covers_names_dtypes_shapes_and_bytes_in_a_canonical_order():
    a, b = torch.arange(6, dtype=torch.float32), torch.ones(2)
    base = state_dict_sha256({"a": a, "b": b})
    assert state_dict_sha256({"b": b, "a": a}) == base  # insertion order does not matter
    assert state_dict_sha256({"c": a, "b": b}) != base  # a renamed tensor
    assert state_dict_sha256({"a": a.view(2, 3), "b": b}) != base  # same bytes, another shape
    assert state_dict_sha256({"a": a.view(torch.int32), "b": b}) != base  # same bytes, dtype
    assert state_dict_sha256({"a": a.view(3, 2).t(), "b": b}) != base  # a transposed view
