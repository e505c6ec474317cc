"""Specifications of the decoder-only GPT, its KV cache, beam search, sampling and LM training."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from course_lib.blocks import recording_attention
from course_lib.corpora import encode_text, grammar_corpus
from course_lib.data import CharVocab
from course_lib.gpt import GPT
from course_lib.lessons.gpt_decoder_only import CharNGram
from course_lib.lm import evaluate_lm, lm_batch, train_lm
from course_lib.sampling import (
    entropy,
    filter_logits,
    next_token_probs,
    sample_next,
    top_k_filter,
    top_p_filter,
)


def tiny_gpt(seed: int = 0, positional: str = "learned", max_len: int = 16, vocab: int = 11) -> GPT:
    torch.manual_seed(seed)
    model = GPT(
        vocab, d_model=32, num_heads=4, num_layers=2, max_len=max_len, positional=positional
    )
    return model.eval()


# ----------------------------------------------------------------------------- the model


@pytest.mark.parametrize("positional", ["learned", "sinusoidal"])
def test_changing_a_future_token_leaves_earlier_logits_unchanged(positional):
    model = tiny_gpt(positional=positional)
    idx = torch.randint(0, 11, (2, 10), generator=torch.Generator().manual_seed(1))
    changed = idx.clone()
    changed[:, 6] = (changed[:, 6] + 1) % 11
    with torch.no_grad():
        a, _ = model(idx)
        b, _ = model(changed)
    assert torch.equal(a[:, :6], b[:, :6]), "positions before 6 must not see token 6"
    assert not torch.allclose(a[:, 6:], b[:, 6:]), "positions from 6 on do see it"


def test_the_head_is_tied_to_the_token_embedding():
    model = tiny_gpt()
    assert model.head.weight is model.tok_embed.weight
    assert model.head.weight.data_ptr() == model.tok_embed.weight.data_ptr()
    names = [n for n, _ in model.named_parameters()]
    assert "tok_embed.weight" in names and "head.weight" not in names  # counted once
    x = torch.randint(0, 11, (2, 8))
    _, loss = model.train()(x, torch.roll(x, -1, dims=1))
    loss.backward()
    grad = model.tok_embed.weight.grad
    assert grad is not None and grad[x.unique()].abs().sum() > 0


def test_loss_is_the_mean_cross_entropy_of_the_targets():
    model = tiny_gpt()
    x, y = torch.randint(0, 11, (3, 7)), torch.randint(0, 11, (3, 7))
    logits, loss = model(x, y)
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, 11), y.reshape(-1))
    assert logits.shape == (3, 7, 11) and torch.allclose(loss, expected)
    assert model(x)[1] is None


def test_an_untrained_model_predicts_nearly_uniformly():
    model = tiny_gpt(vocab=50)
    x, y = torch.randint(0, 50, (4, 16)), torch.randint(0, 50, (4, 16))
    _, loss = model(x, y)
    assert abs(loss.item() - math.log(50)) < 0.1  # GPT-2 init: small logits, loss near ln V


def test_inputs_longer_than_max_len_and_bad_shapes_are_explained():
    model = tiny_gpt(max_len=8)
    with pytest.raises(ValueError, match="exceed max_len=8"):
        model(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="integer token ids"):
        model(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="one next token per input position"):
        model(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="layers"):
        model(torch.zeros(1, 1, dtype=torch.long), past_kv=(), use_cache=True)


def test_recorded_attention_never_looks_ahead():
    model = tiny_gpt()
    with recording_attention(model), torch.no_grad():
        model(torch.randint(0, 11, (2, 9)))
    for block in model.blocks:
        w = block.attn.attn_weights  # (B, H, T, T)
        assert w.shape == (2, 4, 9, 9)
        assert torch.all(w.triu(diagonal=1) == 0) and torch.allclose(w.sum(-1), torch.ones(2, 4, 9))


def test_residual_stream_ends_where_the_logits_start():
    model = tiny_gpt()
    x = torch.randint(0, 11, (2, 5))
    states = model.residual_stream(x)
    assert len(states) == 3 and all(s.shape == (2, 5, 32) for s in states)
    assert torch.allclose(model.head(model.norm(states[-1])), model(x)[0], atol=1e-6)
    fine = model.residual_stream(x, sublayers=True)
    assert (
        len(fine) == 5 and torch.allclose(fine[2], states[1]) and torch.allclose(fine[4], states[2])
    )


# ----------------------------------------------------------------------------- the KV cache


@pytest.mark.parametrize("positional", ["learned", "sinusoidal"])
def test_cached_logits_equal_recomputed_ones(positional):
    model = tiny_gpt(positional=positional)
    x = torch.randint(0, 11, (3, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full, _ = model(x)
        pieces, past = [], None
        for a, b in [(0, 5), (5, 6), (6, 9), (9, 10), (10, 12)]:  # prefill, then 1 or more
            logits, _, past = model(x[:, a:b], past_kv=past, use_cache=True)
            pieces.append(logits)
    assert torch.allclose(torch.cat(pieces, dim=1), full, atol=1e-5)
    assert len(past) == 2 and past[0][0].shape == (3, 4, 12, 8)  # (B, H, T, d_k) per layer


@pytest.mark.parametrize("new_tokens", [5, 30])  # 30 runs past max_len: the window slides
def test_greedy_generation_with_and_without_cache_gives_the_same_tokens(new_tokens):
    model = tiny_gpt()
    prompt = torch.randint(0, 11, (4, 3), generator=torch.Generator().manual_seed(3))
    slow = model.generate(prompt, new_tokens, temperature=0)
    fast = model.generate(prompt, new_tokens, temperature=0, use_cache=True)
    assert slow.shape == (4, 3 + new_tokens) and torch.equal(slow, fast)
    assert torch.equal(slow[:, :3], prompt)


def test_sampling_is_reproducible_with_a_generator():
    model = tiny_gpt()
    prompt = torch.zeros(2, 1, dtype=torch.long)

    def draw(cache):
        g = torch.Generator().manual_seed(7)
        return model.generate(prompt, 12, 1.0, top_k=5, generator=g, use_cache=cache)

    assert torch.equal(draw(False), draw(False)) and torch.equal(draw(False), draw(True))


def test_generate_leaves_the_training_mode_alone():
    model = tiny_gpt().train()
    model.generate(torch.zeros(1, 1, dtype=torch.long), 2)
    assert model.training


# ----------------------------------------------------------------------------- beam search


def _all_continuations(model, prompt, eos, max_new, V):
    """Every finished continuation (ending in EOS, up to max_new tokens) with its log p."""
    best = []
    for n in range(1, max_new + 1):
        for seq in itertools.product(range(V), repeat=n):
            if eos in seq[:-1] or seq[-1] != eos:
                continue
            idx = torch.tensor([prompt + list(seq)])
            best.append((model.log_prob(idx, len(prompt)).item(), list(seq)))
    return best


def test_a_wide_beam_finds_the_most_likely_continuation():
    V, eos = 4, 3
    model = tiny_gpt(vocab=V, seed=4)
    with torch.no_grad():
        model.head.weight.mul_(40.0)  # sharper, more varied distributions
    prompt = [0, 1]
    hyps = model.beam_search(torch.tensor(prompt), 3, eos, beam_size=V**3, length_penalty=0.0)
    truth = max(_all_continuations(model, prompt, eos, 3, V))
    assert hyps[0].finished and hyps[0].tokens == truth[1]
    assert math.isclose(hyps[0].log_prob, truth[0], abs_tol=1e-4)
    unfinished = [h for h in hyps if not h.finished]
    assert unfinished and all(len(h.tokens) == 3 for h in unfinished)  # ranked after the rest
    assert hyps.index(unfinished[0]) == sum(h.finished for h in hyps)


def test_beam_hypotheses_are_scored_sorted_and_stop_at_eos():
    model = tiny_gpt(seed=5)
    with torch.no_grad():
        model.head.weight[3] += 0.05  # make EOS (id 3) likely enough to appear
    hyps = model.beam_search(torch.tensor([1, 2]), 8, eos_id=3, beam_size=4, length_penalty=0.6)
    assert len(hyps) == 4 and [h.score for h in hyps] == sorted(
        (h.score for h in hyps), reverse=True
    )
    for h in hyps:
        assert (h.tokens[-1] == 3) == h.finished and 3 not in h.tokens[:-1]
        idx = torch.tensor([[1, 2] + h.tokens])
        assert math.isclose(h.log_prob, model.log_prob(idx, 2).item(), abs_tol=1e-4)
        assert math.isclose(h.score, h.log_prob / ((5 + len(h.tokens)) / 6) ** 0.6, rel_tol=1e-6)


def test_a_beam_of_one_is_greedy_decoding():
    model = tiny_gpt(seed=6)
    prompt = torch.tensor([[4, 5, 6]])
    greedy = model.generate(prompt, 6, temperature=0)[0, 3:].tolist()
    (hyp,) = model.beam_search(prompt, 6, eos_id=99, beam_size=1)
    assert hyp.tokens == greedy and not hyp.finished


def test_beam_search_must_fit_the_context():
    with pytest.raises(ValueError, match="must fit max_len"):
        tiny_gpt(max_len=8).beam_search(torch.tensor([1, 2, 3]), 6, eos_id=0)


# ----------------------------------------------------------------------------- sampling helpers


def test_top_k_keeps_exactly_k_tokens_even_with_ties():
    logits = torch.randn(5, 20, generator=torch.Generator().manual_seed(0))
    logits[0] = 1.0  # every logit tied
    for k in (1, 3, 7, 20, 25):
        probs = top_k_filter(logits, k).softmax(dim=-1)
        assert torch.all((probs > 0).sum(dim=-1) == min(k, 20))
    kept = top_k_filter(logits, 3)[1:]
    assert torch.equal(kept.isfinite(), logits[1:] >= logits[1:].topk(3).values[:, -1:])


def test_top_p_keeps_the_smallest_set_with_mass_at_least_p():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(50, 12, generator=g) * 2
    for p in (0.1, 0.5, 0.9, 0.99, 1.0):
        keep = top_p_filter(logits, p).isfinite()
        probs = logits.softmax(dim=-1)
        for row, kept in zip(probs, keep, strict=True):
            n = int(kept.sum())
            top = row.sort(descending=True).values
            assert torch.equal(kept, row >= top[n - 1])  # the n most likely tokens
            assert top[:n].sum() >= p - 1e-6  # enough mass
            assert n == 1 or top[: n - 1].sum() < p  # and no smaller set has it


def test_temperature_towards_zero_approaches_greedy():
    logits = torch.randn(4, 30, generator=torch.Generator().manual_seed(2))
    argmax = logits.argmax(dim=-1)
    ents = [entropy(next_token_probs(logits, t)).mean().item() for t in (2.0, 1.0, 0.5, 0.1)]
    assert ents == sorted(ents, reverse=True)
    p_top = [next_token_probs(logits, t).gather(-1, argmax[:, None]) for t in (1.0, 0.1, 1e-4)]
    assert torch.all(p_top[0] < p_top[1]) and torch.all(p_top[2] > 0.99)
    assert torch.equal(sample_next(logits, 0.0), argmax)
    g = torch.Generator().manual_seed(3)
    assert all(torch.equal(sample_next(logits, 1e-3, generator=g), argmax) for _ in range(20))


def test_filters_compose_in_the_documented_order():
    logits = torch.randn(3, 16, generator=torch.Generator().manual_seed(4))
    out = filter_logits(logits, temperature=0.7, top_k=5, top_p=0.8)
    assert torch.equal(out, top_p_filter(top_k_filter(logits / 0.7, 5), 0.8))
    with pytest.raises(ValueError, match="temperature 0 means greedy"):
        filter_logits(logits, temperature=0.0)
    with pytest.raises(ValueError, match="take logits"):
        sample_next(logits[None])


# ----------------------------------------------------------------------------- training


def test_lm_batches_are_windows_and_their_shift_by_one():
    data = torch.arange(100)
    x, y = lm_batch(data, 4, 10, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, 10) and torch.equal(y, x + 1)


def test_loss_decreases_on_a_tiny_corpus():
    text = grammar_corpus(400, seed=0)
    vocab = CharVocab(set(text))
    data = encode_text(text, vocab)
    torch.manual_seed(0)
    model = GPT(len(vocab), d_model=32, num_heads=2, num_layers=1, max_len=32)
    before = evaluate_lm(model, data[:2000], 32)
    history = train_lm(model, data, steps=60, batch_size=16, lr=3e-3, warmup=10, progress=False)
    after = evaluate_lm(model, data[:2000], 32)
    unigram = CharNGram(data, len(vocab), n=1).loss(data[:2000])
    assert before > 2.5 and after < before - 1.0 and after < unigram, (before, after, unigram)
    assert len(history.loss) == 60 and history.loss[-1] < history.loss[0] - 1.0


def test_training_is_repeatable_and_records_validation_loss():
    data = encode_text(grammar_corpus(100, seed=1), CharVocab("abcdefghiklmnoprstuvwy .\n"))

    def run():
        torch.manual_seed(0)
        model = GPT(30, d_model=16, num_heads=2, num_layers=1, max_len=16)
        return train_lm(model, data, 12, 4, val_data=data[:500], eval_every=5, progress=False)

    a, b = run(), run()
    assert a.loss == b.loss and a.eval_step == [4, 9, 11] and len(a.val_loss) == 3


def test_ngram_models_are_normalised_and_bigram_beats_unigram_on_text():
    text = grammar_corpus(300, seed=2)
    vocab = CharVocab(set(text))
    data = encode_text(text, vocab)
    uni, bi = CharNGram(data, len(vocab), n=1), CharNGram(data, len(vocab), n=2)
    for m in (uni, bi):
        assert torch.allclose(m.log_probs.exp().sum(dim=1), torch.ones(len(vocab)), atol=1e-5)
    assert bi.loss(data) < uni.loss(data) - 0.5
    counts = torch.bincount(data[1:], minlength=len(vocab)).double()
    p = counts / counts.sum()
    exact = -(p[p > 0] * p[p > 0].log()).sum().item()  # unigram entropy of the targets
    assert abs(CharNGram(data, len(vocab), 1, alpha=1e-9).loss(data) - exact) < 1e-3
    out = bi.generate(torch.tensor([0, 1]), 5, torch.Generator().manual_seed(0))
    assert out.shape == (2, 6)
