"""Bad input at the core's public doors gets a clear error that names the argument."""

from __future__ import annotations

import pytest
import torch

from course_lib.attention import MultiHeadAttention, scaled_dot_product_attention, split_heads
from course_lib.blocks import FeedForward
from course_lib.gpt import GPT
from course_lib.models import EncoderTagger, Transformer
from course_lib.positional import (
    LearnedPositionalEmbedding,
    RotaryEmbedding,
    SinusoidalPositionalEncoding,
    apply_rope,
    rope_angles,
)
from course_lib.rnn import AdditiveAttention, DotAttention, Seq2SeqRNN
from course_lib.sampling import beam_search
from course_lib.training import sequence_loss

V = 13  # vocabulary size of every small model below
BOS, EOS = 1, 2


def transformer() -> Transformer:
    torch.manual_seed(0)
    return Transformer(V, V, d_model=16, num_heads=2, num_encoder_layers=1,
                       num_decoder_layers=1, d_ff=32, max_len=16).eval()  # fmt: skip


def gpt() -> GPT:
    torch.manual_seed(0)
    return GPT(V, d_model=16, num_heads=2, num_layers=1, max_len=16).eval()


def rnn() -> Seq2SeqRNN:
    torch.manual_seed(0)
    return Seq2SeqRNN(V, emb=8, hidden=8, attention="dot")


def ids(*shape: int) -> torch.Tensor:
    return torch.randint(3, V, shape, generator=torch.Generator().manual_seed(0))


OUT_OF_VOCAB = ids(2, 5).index_put((torch.tensor([1]), torch.tensor([3])), torch.tensor(V + 4))


# ----------------------------------------------------------------------------- token ids


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: transformer().encode(OUT_OF_VOCAB), "src"),
        (lambda: transformer()(ids(2, 5), OUT_OF_VOCAB), "tgt_in"),
        (lambda: transformer().greedy_decode(OUT_OF_VOCAB, 5, BOS, EOS), "src"),
        (lambda: transformer().beam_search(OUT_OF_VOCAB, 5, BOS, EOS), "src"),
        (lambda: EncoderTagger(V, 3, d_model=16, num_heads=2)(OUT_OF_VOCAB), "tokens"),
        (lambda: gpt()(OUT_OF_VOCAB), "idx"),
        (lambda: gpt().generate(OUT_OF_VOCAB, 3), "idx"),
        (lambda: gpt().beam_search(OUT_OF_VOCAB[1], 3, EOS), "prompt"),
        (lambda: rnn()(OUT_OF_VOCAB, ids(2, 4)), "src"),
        (lambda: rnn().greedy_decode(OUT_OF_VOCAB, 5, BOS, EOS), "src"),
    ],
)
def test_a_token_id_outside_the_vocabulary_is_named_with_the_vocabulary_size(call, name):
    with pytest.raises(
        ValueError, match=rf"{name} contains the token id {V + 4}.*{V} ids.*vocabulary"
    ):
        call()


def test_a_negative_token_id_is_named_and_not_mistaken_for_an_input():
    with pytest.raises(ValueError, match=r"idx contains the token id -100.*negative"):
        gpt()(torch.tensor([[3, -100, 4]]))


def test_gpt_targets_outside_the_vocabulary_are_named():
    with pytest.raises(ValueError, match=rf"targets contains the token id {V}"):
        gpt()(ids(1, 4), targets=torch.tensor([[3, 4, V, -100]]))


# ----------------------------------------------------------------------------- empty input


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: transformer().greedy_decode(ids(0, 5), 5, BOS, EOS), "src"),
        (lambda: transformer().beam_search(ids(0, 5), 5, BOS, EOS), "src"),
        (lambda: gpt().generate(ids(2, 0), 3), "idx"),
        (lambda: gpt().generate(ids(0, 3), 3), "idx"),
        (lambda: gpt().beam_search(torch.zeros(0, dtype=torch.long), 3, EOS), "prompt"),
        (lambda: rnn().greedy_decode(ids(0, 4), 5, BOS, EOS), "src"),
    ],
)
def test_an_empty_prompt_or_batch_is_refused(call, name):
    with pytest.raises(ValueError, match=rf"{name} is empty"):
        call()


def test_gpt_beam_search_refuses_a_batch_of_prompts_instead_of_merging_them():
    with pytest.raises(ValueError, match=r"beam_search continues one prompt.*batch of 2.*per row"):
        gpt().beam_search(ids(2, 3), 3, EOS)


def test_seq2seq_rnn_greedy_decode_refuses_a_non_positive_max_len():
    with pytest.raises(ValueError, match=r"max_len must be a positive integer, got 0"):
        rnn().greedy_decode(ids(2, 4), 0, BOS, EOS)


def test_core_beam_search_refuses_a_zero_beam_and_zero_steps():
    def step(prefixes, parents):
        return torch.zeros(len(prefixes), 4).log_softmax(-1)

    with pytest.raises(ValueError, match=r"beam_size must be a positive integer, got 0"):
        beam_search(step, 3, eos_id=0, beam_size=0)
    with pytest.raises(ValueError, match=r"steps must be a positive integer, got 0"):
        beam_search(step, 0, eos_id=0)


# ----------------------------------------------------------------------------- attention


def test_integer_tensors_into_attention_are_refused_naming_q():
    q = torch.randint(0, 5, (1, 3, 4))
    with pytest.raises(ValueError, match=r"q must be floating point.*int64"):
        scaled_dot_product_attention(q, q.float(), q.float())


def test_mixed_precision_q_k_v_are_refused_naming_every_dtype():
    q = torch.randn(1, 3, 4)
    with pytest.raises(ValueError, match=r"q, k and v must share one dtype.*float16"):
        scaled_dot_product_attention(q, q.half(), q)


def test_mismatched_batch_sizes_of_q_and_k_are_refused():
    q, k = torch.randn(2, 3, 4), torch.randn(3, 5, 4)
    with pytest.raises(ValueError, match=r"q \(2, 3, 4\), k \(3, 5, 4\).*batch"):
        scaled_dot_product_attention(q, k, k)


def test_keys_and_values_of_different_lengths_are_refused():
    q = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match=r"k and v must have the same number of positions"):
        scaled_dot_product_attention(q, torch.randn(2, 5, 4), torch.randn(2, 6, 4))


def test_a_mask_of_the_wrong_length_is_refused():
    q = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match=r"mask of shape \(2, 1, 4\) cannot broadcast"):
        scaled_dot_product_attention(q, q, q, torch.ones(2, 1, 4, dtype=torch.bool))


def test_multi_head_attention_refuses_different_batch_sizes_of_query_and_key():
    mha = MultiHeadAttention(8, 2)
    with pytest.raises(ValueError, match=r"query \(2, 3, 8\), key \(1, 3, 8\).*same batch size"):
        mha(torch.randn(2, 3, 8), torch.randn(1, 3, 8), torch.randn(1, 3, 8))


def test_multi_head_attention_refuses_an_input_in_another_dtype_than_its_weights():
    x = torch.randn(1, 3, 8, dtype=torch.float64)
    with pytest.raises(
        ValueError, match=r"query has dtype torch.float64.*weights are torch.float32"
    ):
        MultiHeadAttention(8, 2)(x, x, x)


def test_split_heads_with_zero_heads_says_heads_must_be_positive():
    with pytest.raises(ValueError, match=r"num_heads must be a positive integer, got 0"):
        split_heads(torch.randn(1, 3, 8), 0)


# ----------------------------------------------------------------------------- widths


def test_feed_forward_refuses_the_wrong_model_width():
    with pytest.raises(ValueError, match=r"x must end in d_model=8 features, got \(1, 3, 6\)"):
        FeedForward(8, 16)(torch.randn(1, 3, 6))


@pytest.mark.parametrize("layer", [SinusoidalPositionalEncoding, LearnedPositionalEmbedding])
def test_positional_layers_refuse_the_wrong_model_width(layer):
    with pytest.raises(ValueError, match=r"x has 6 features.*d_model=8"):
        layer(8, max_len=10)(torch.randn(1, 3, 6))


@pytest.mark.parametrize("layer", [SinusoidalPositionalEncoding, LearnedPositionalEmbedding])
def test_positional_layers_refuse_an_unbatched_sequence_and_say_how_to_add_the_batch_axis(layer):
    with pytest.raises(ValueError, match=r"x should have 3 dimensions \(B, L, D\).*x\[None\]"):
        layer(8, max_len=10)(torch.randn(5, 8))


def test_rope_with_an_odd_width_says_the_width_must_be_even():
    with pytest.raises(ValueError, match=r"width must be even; got d=5"):
        RotaryEmbedding(head_dim=5)
    with pytest.raises(ValueError, match=r"width must be even; got d=7"):
        rope_angles(16, 7)
    cos, sin = rope_angles(16, 6)
    with pytest.raises(ValueError, match=r"x has an odd width d=5.*must be even"):
        apply_rope(torch.randn(1, 3, 5), cos, sin)


# ----------------------------------------------------------------------------- masks and losses


@pytest.mark.parametrize("attn", [AdditiveAttention(4, 4, 5), DotAttention(4, 4, "dot")])
def test_rnn_attention_gives_zero_weights_to_a_row_with_nothing_to_attend_to(attn):
    query, keys = torch.randn(2, 4), torch.randn(2, 3, 4)
    mask = torch.tensor([[True, True, False], [False, False, False]])
    context, weights = attn(query, keys, mask)
    assert torch.equal(weights[1], torch.zeros(3)) and torch.equal(context[1], torch.zeros(4))
    torch.testing.assert_close(weights[0].sum(), torch.tensor(1.0))


def test_a_loss_over_a_batch_that_is_all_pad_is_refused_instead_of_nan():
    logits, targets = torch.randn(2, 3, V), torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match=r"every target in this batch is PAD \(pad_id=0\)"):
        sequence_loss(logits, targets, pad_id=0)
    assert sequence_loss(logits, targets, pad_id=0, reduction="sum").item() == 0.0
