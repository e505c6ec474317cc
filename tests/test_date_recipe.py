"""Specifications of course_lib.date_recipe and the inspection helpers of lessons 07 and 09."""

from __future__ import annotations

import pytest
import torch

from course_lib.data import date_vocab
from course_lib.date_recipe import DATE_MODEL, build_date_model, train_date_model
from course_lib.lessons.cross_attention import attention_maps
from course_lib.lessons.full_transformer import decoding_steps, sequence_log_prob
from course_lib.training import translate

VOCAB = date_vocab()


@pytest.fixture(scope="module")
def model():
    """An untrained date model: the helpers must work on any weights."""
    return build_date_model(VOCAB, seed=0).eval()


def test_build_date_model_depends_only_on_the_seed_and_leaves_global_rng_alone():
    torch.manual_seed(5)
    expected_draw = torch.rand(2)
    torch.manual_seed(5)
    a = build_date_model(VOCAB, seed=3)
    assert torch.equal(torch.rand(2), expected_draw)
    b = build_date_model(VOCAB, seed=3)
    c = build_date_model(VOCAB, seed=4)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(a.head.weight, c.head.weight)
    assert a.config["d_model"] == DATE_MODEL["d_model"] and a.config["src_vocab_size"] == len(VOCAB)


def test_train_date_model_is_deterministic_and_returns_the_recipe_in_eval_mode():
    runs = [train_date_model(steps=3, seed=1, progress=False, n_train=256) for _ in range(2)]
    (m1, v1, h1), (m2, _, h2) = runs
    assert v1 == VOCAB and not m1.training
    assert h1.step == [0, 1, 2] and h1.loss == h2.loss
    assert all(torch.equal(x, y) for x, y in zip(m1.parameters(), m2.parameters(), strict=True))


def test_train_date_model_evaluates_and_calls_back():
    seen = []
    _, _, history = train_date_model(
        steps=2,
        progress=False,
        n_train=128,
        callback=lambda step, h: seen.append(step),
        eval_pairs=[("3 march 2001", "2001-03-03")],
    )
    assert seen == [0, 1] and history.eval_step == [1] and len(history.eval_acc) == 1


def test_attention_maps_have_one_row_per_query_summing_to_one(model):
    maps = attention_maps(model, VOCAB, "3 march 2001", "2001-03-03")
    L_s, L_t = len("3 march 2001"), len("2001-03-03") + 1
    assert maps.src_tokens == list("3 march 2001")
    assert maps.tgt_tokens == ["<bos>", *"2001-03-03"]
    assert maps.out_tokens == [*"2001-03-03", "<eos>"]
    assert maps.encoder.shape == (2, 4, L_s, L_s)
    assert maps.decoder.shape == (2, 4, L_t, L_t)
    assert maps.cross.shape == (2, 4, L_t, L_s)
    for w in maps:
        if isinstance(w, torch.Tensor):
            torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:-1]))
    assert torch.all(maps.decoder.triu(1) == 0)  # causal: no weight on future positions


def test_attention_maps_default_to_the_models_own_translation(model):
    maps = attention_maps(model, VOCAB, "1/2/03")
    output = translate(model, ["1/2/03"], VOCAB)[0]
    assert maps.tgt_tokens == ["<bos>", *output]


def test_decoding_steps_follow_greedy_decoding(model):
    steps = decoding_steps(model, VOCAB, "14 May 1999", max_len=6, top_k=3)
    src = torch.tensor([VOCAB.encode("14 May 1999")])
    greedy = model.greedy_decode(src, 6, VOCAB.bos_id, VOCAB.eos_id)[0]
    assert [s.chosen for s in steps] == VOCAB.ids_to_tokens(greedy[: len(steps)])
    for i, s in enumerate(steps):
        assert s.step == i and len(s.prefix) == i + 1 and s.prefix[0] == "<bos>"
        assert len(s.top_tokens) == 3 and s.top_tokens[0] == s.chosen
        assert s.top_probs == sorted(s.top_probs, reverse=True) and 0 < sum(s.top_probs) <= 1 + 1e-6
        assert s.cross.shape == (2, 4, len("14 May 1999"))
        torch.testing.assert_close(s.cross.sum(-1), torch.ones(2, 4))


def test_sequence_log_prob_sums_up_to_the_first_eos(model):
    src = torch.tensor([VOCAB.encode("3 march 2001")] * 2)
    eos, pad = VOCAB.eos_id, VOCAB.pad_id
    a = VOCAB.encode("2001")
    out = torch.tensor([a + [eos, pad], a + [eos, a[0]]])  # the second row has junk after EOS
    scores = sequence_log_prob(model, src, out, VOCAB.bos_id, eos)
    tgt_in = torch.tensor([[VOCAB.bos_id] + a])
    log_probs = model(src[:1], tgt_in).log_softmax(-1)[0]
    manual = sum(log_probs[t, tok].item() for t, tok in enumerate(a + [eos]))
    torch.testing.assert_close(scores, torch.tensor([manual, manual]))
    with pytest.raises(ValueError, match="same B"):
        sequence_log_prob(model, src, out[:1], VOCAB.bos_id, eos)
