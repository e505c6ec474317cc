"""The encoder-decoder Transformer: masking, decoding, and learning a copy task."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from course_lib.blocks import recording_attention
from course_lib.models import Transformer

ATOL = 1e-5
PAD, BOS, EOS = 0, 1, 2
VOCAB = 13  # PAD, BOS, EOS and 10 symbols 3..12
MAX_LEN = 16


def small_model(**overrides) -> Transformer:
    """A tiny randomly initialised model; seeded so every test sees the same weights."""
    torch.manual_seed(0)
    kwargs = dict(d_model=32, num_heads=4, d_ff=64, max_len=MAX_LEN, pad_id=PAD)
    return Transformer(VOCAB, VOCAB, **(kwargs | overrides)).eval()


def copy_batch(n: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Copy task: src = 5..8 random symbols; tgt_in = BOS + src; tgt_out = src + EOS (PAD after)."""
    lengths = torch.randint(5, 9, (n,), generator=gen)
    symbols = torch.randint(3, VOCAB, (n, 8), generator=gen)
    src, tgt_in, tgt_out = (torch.full((n, w), PAD) for w in (8, 9, 9))
    for i, k in enumerate(lengths.tolist()):
        src[i, :k] = tgt_in[i, 1 : k + 1] = tgt_out[i, :k] = symbols[i, :k]
        tgt_in[i, 0], tgt_out[i, k] = BOS, EOS
    return src, tgt_in, tgt_out


def pad_to(tokens: torch.Tensor, width: int) -> torch.Tensor:
    """Right-pad (B, L) ids with PAD to (B, width)."""
    return F.pad(tokens, (0, width - tokens.shape[1]), value=PAD)


@torch.no_grad()
def sequence_log_prob(model: Transformer, src: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """(B,) log p(out | src) summed over the decoded tokens (EOS included, PAD after it not)."""
    tgt_in = torch.cat([torch.full_like(out[:, :1], BOS), out[:, :-1]], dim=1)
    log_probs = model(src, tgt_in).log_softmax(-1).gather(-1, out[..., None])[..., 0]
    return (log_probs * (out != PAD)).sum(dim=1)


@pytest.fixture(scope="module")
def copy_model() -> Transformer:
    """A small Transformer trained for a few hundred steps on the copy task."""
    torch.manual_seed(0)
    model = Transformer(VOCAB, VOCAB, d_model=32, num_heads=4, num_encoder_layers=1,
                        num_decoder_layers=1, d_ff=64, max_len=MAX_LEN)  # fmt: skip
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(300):
        src, tgt_in, tgt_out = copy_batch(64, gen)
        logits = model(src, tgt_in)  # (B, L_t, V)
        loss = F.cross_entropy(logits.flatten(0, 1), tgt_out.flatten(), ignore_index=PAD)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


# ----------------------------------------------------------------------------- masking


def test_decoder_is_causal_a_future_target_token_does_not_change_earlier_logits():
    model = small_model()
    src = torch.randint(3, VOCAB, (2, 6))
    tgt_in = torch.randint(3, VOCAB, (2, 7))
    changed = tgt_in.clone()
    changed[:, 4] = (changed[:, 4] - 3 + 1) % 10 + 3  # a different symbol at position 4
    before, after = model(src, tgt_in), model(src, changed)
    torch.testing.assert_close(before[:, :4], after[:, :4], atol=ATOL, rtol=0)
    assert not torch.allclose(before[:, 4:], after[:, 4:], atol=1e-3)  # the test can fail


@pytest.mark.parametrize("norm_first", [True, False], ids=["pre_ln", "post_ln"])
def test_source_padding_does_not_leak_into_real_positions(norm_first):
    model = small_model(norm_first=norm_first)
    src = torch.tensor([[5, 6, 7, 8, 9, 10, 11, 12], [3, 4, 5, PAD, PAD, PAD, PAD, PAD]])
    tgt_in = torch.tensor([[BOS, 5, 6, 7], [BOS, 3, 4, PAD]])
    longer = pad_to(src, 12)  # the same sentences padded to 12 instead of 8
    torch.testing.assert_close(
        model.encode(longer)[0, :8], model.encode(src)[0, :8], atol=ATOL, rtol=0
    )
    torch.testing.assert_close(model(longer, tgt_in), model(src, tgt_in), atol=ATOL, rtol=0)


def test_the_pad_embedding_has_no_influence_on_the_output():
    model = small_model()
    src = torch.tensor([[5, 6, 7, PAD, PAD], [3, 4, 5, 6, PAD]])
    tgt_in = torch.tensor([[BOS, 5, 6], [BOS, 3, 4]])
    before = model(src, tgt_in)
    with torch.no_grad():
        model.src_embed.weight[PAD] = 100 * torch.randn(model.d_model)
    torch.testing.assert_close(model(src, tgt_in), before, atol=ATOL, rtol=0)


def test_an_all_pad_source_gives_finite_logits_and_gradients():
    model = small_model().train()
    src = torch.tensor([[5, 6, 7], [PAD, PAD, PAD]])
    tgt_in = torch.tensor([[BOS, 5, 6], [BOS, 3, 4]])
    logits = model(src, tgt_in)
    assert torch.isfinite(logits).all()
    logits.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


# ----------------------------------------------------------------------------- construction


@pytest.mark.parametrize("positional", ["sinusoidal", "learned"])
@pytest.mark.parametrize("norm_first", [True, False], ids=["pre_ln", "post_ln"])
def test_forward_returns_logits_over_the_target_vocabulary(positional, norm_first):
    model = Transformer(VOCAB, 7, d_model=16, num_heads=2, d_ff=32, max_len=MAX_LEN,
                        norm_first=norm_first, positional=positional)  # fmt: skip
    logits = model(torch.randint(3, VOCAB, (2, 9)), torch.randint(1, 7, (2, 4)))
    assert logits.shape == (2, 4, 7)


def test_config_rebuilds_an_identical_model():
    model = small_model(positional="learned", norm_first=False)
    clone = Transformer(**model.config)
    clone.load_state_dict(model.state_dict())
    src, tgt_in = torch.randint(3, VOCAB, (2, 5)), torch.randint(3, VOCAB, (2, 4))
    torch.testing.assert_close(clone.eval()(src, tgt_in), model(src, tgt_in), atol=0, rtol=0)


def test_recording_attention_reaches_every_layer_of_the_model():
    model = small_model()
    with recording_attention(model):
        model(torch.randint(3, VOCAB, (2, 5)), torch.randint(3, VOCAB, (2, 4)))
    assert [layer.self_attn_weights.shape for layer in model.encoder] == [(2, 4, 5, 5)] * 2
    assert [layer.cross_attn_weights.shape for layer in model.decoder] == [(2, 4, 4, 5)] * 2
    assert not any(layer.record_attention for layer in [*model.encoder, *model.decoder])


# ----------------------------------------------------------------------------- decoding


def test_greedy_decode_drops_bos_keeps_eos_and_pads_after_it(monkeypatch):
    model = small_model()

    def fake_decode(tgt_in, memory, src):  # sentence i says EOS after src[i, 0] symbols
        step = tgt_in.shape[1]
        next_id = torch.where(step > src[:, 0], EOS, 3 + step)  # (B,)
        return 10 * F.one_hot(next_id, VOCAB).float()[:, None].expand(-1, step, -1)  # (B, t, V)

    monkeypatch.setattr(model, "decode", fake_decode)
    src = torch.tensor([[1, 3], [3, 3]])  # 1 symbol then EOS; 3 symbols then EOS
    expected = torch.tensor([[4, EOS, PAD, PAD], [4, 5, 6, EOS]])
    assert torch.equal(model.greedy_decode(src, 10, BOS, EOS), expected)
    assert torch.equal(model.beam_search(src, 10, BOS, EOS, beam_size=3), expected)
    assert model.greedy_decode(src, 2, BOS, EOS).shape == (2, 2)  # cut off at max_len, no EOS


def test_beam_search_finds_the_likelier_sentence_that_greedy_misses(monkeypatch):
    model = small_model()
    A, Bt = 3, 4  # p(A)=0.6, p(B)=0.4; after A every token is unlikely, after B EOS is sure

    def fake_decode(tgt_in, memory, src):
        last = tgt_in[:, -1]  # (k,)
        probs = torch.full((len(last), VOCAB), 0.01)
        probs[last == BOS, A], probs[last == BOS, Bt] = 0.6, 0.4
        probs[last == A] = 1 / VOCAB  # p(EOS | A) = 1/13
        probs[last == Bt, EOS] = 0.9
        return probs.log()[:, None].expand(-1, tgt_in.shape[1], -1)  # (k, t, V)

    monkeypatch.setattr(model, "decode", fake_decode)
    src = torch.tensor([[5, 6]])
    assert model.greedy_decode(src, 2, BOS, EOS)[0, 0] == A
    assert model.beam_search(src, 2, BOS, EOS, beam_size=2).tolist() == [[Bt, EOS]]


def test_a_small_transformer_learns_the_copy_task_exactly(copy_model):
    src, _, tgt_out = copy_batch(200, torch.Generator().manual_seed(1))
    out = copy_model.greedy_decode(src, 9, BOS, EOS)
    exact = (pad_to(out, 9) == tgt_out).all(dim=1)
    assert exact.float().mean().item() == 1.0


@pytest.mark.parametrize("trained", [True, False], ids=["trained", "untrained"])
def test_beam_size_one_equals_greedy(copy_model, trained):
    model = copy_model if trained else small_model()
    src, _, _ = copy_batch(50, torch.Generator().manual_seed(2))
    greedy = model.greedy_decode(src, 9, BOS, EOS)
    for alpha in (0.0, 0.6):
        beam = model.beam_search(src, 9, BOS, EOS, beam_size=1, length_penalty=alpha)
        assert torch.equal(beam, greedy)


def test_beam_search_never_scores_below_greedy_on_the_copy_model(copy_model):
    src, _, _ = copy_batch(50, torch.Generator().manual_seed(3))
    greedy = copy_model.greedy_decode(src, 9, BOS, EOS)
    beam = copy_model.beam_search(src, 9, BOS, EOS, beam_size=4, length_penalty=0.0)
    gap = sequence_log_prob(copy_model, src, beam) - sequence_log_prob(copy_model, src, greedy)
    assert (gap >= -ATOL).all()


# ----------------------------------------------------------------------------- bad input


def test_d_model_not_divisible_by_heads_raises_naming_both_numbers():
    with pytest.raises(ValueError, match=r"d_model=30.*num_heads=4"):
        Transformer(VOCAB, VOCAB, d_model=30, num_heads=4)


def test_source_of_the_wrong_rank_raises_naming_B_L():
    model = small_model()
    with pytest.raises(ValueError, match=r"\(B, L\)"):
        model.encode(torch.randint(3, VOCAB, (5,)))
    with pytest.raises(ValueError, match=r"\(B, L\)"):
        model(torch.randn(2, 5, 32), torch.randint(3, VOCAB, (2, 4)))  # embeddings, not ids
    with pytest.raises(ValueError, match="integer token ids"):
        model.encode(torch.randn(2, 5))


def test_other_bad_arguments_raise_value_errors():
    model = small_model()
    src = torch.randint(3, VOCAB, (2, 5))
    with pytest.raises(ValueError, match="positional"):
        Transformer(VOCAB, VOCAB, positional="rope")
    with pytest.raises(ValueError, match="max_len"):
        model.greedy_decode(src, MAX_LEN + 1, BOS, EOS)
    with pytest.raises(ValueError, match="beam_size"):
        model.beam_search(src, 5, BOS, EOS, beam_size=0)
    with pytest.raises(ValueError, match="memory"):
        model.decode(torch.randint(3, VOCAB, (2, 3)), model.encode(src[:1]), src)
