"""Specifications of the language-model corpora: the toy grammar and CPython's own docs."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from course_lib.corpora import (
    encode_text,
    grammar_corpus,
    grammar_sentences,
    is_valid_sentence,
    pydoc_text,
    sentence_error,
    sentence_log_prob,
    split_text,
    validity_rate,
)
from course_lib.data import CharVocab


def test_grammar_sentences_are_valid_and_repeatable():
    a, b = grammar_sentences(500, seed=3), grammar_sentences(500, seed=3)
    assert a == b and a != grammar_sentences(500, seed=4)
    assert all(is_valid_sentence(s) for s in a)
    assert all(s.endswith(" .") and "\n" not in s for s in a)


def test_a_corpus_is_one_sentence_per_line():
    text = grammar_corpus(20, seed=0)
    lines = text.split("\n")
    assert lines[-1] == "" and lines[:-1] == grammar_sentences(20, seed=0)


@pytest.mark.parametrize(
    ("sentence", "reason"),
    [
        ("the cat near the dogs sleep .", "does not agree with the singular subject"),
        ("the cats with a dog runs .", "does not agree with the plural subject"),
        ("a cats run .", "'a' cannot go with the plural noun"),
        ("the cat runs", "must end with ' .'"),
        ("the cat runs the dog .", "unexpected words"),
        ("the cst runs .", "expected a noun"),
        ("the cat .", "no verb"),
        ("cat runs .", "expected a determiner"),
        ("the cat likes .", "expected a determiner"),
        ("the cat jumps .", "expected a verb"),
    ],
)
def test_invalid_sentences_are_rejected_with_a_reason(sentence, reason):
    assert reason in sentence_error(sentence)
    assert not is_valid_sentence(sentence) and sentence_log_prob(sentence) == float("-inf")


def test_the_log_probability_is_the_product_of_the_choices():
    # P(singular) P(a | sg) P(no adjective) P(dog | sg) P(no PP) P(intransitive) P(runs | sg)
    expected = 0.5 * 0.3 * 0.7 * 0.2 * 0.6 * 0.5 * 0.4
    assert math.isclose(sentence_log_prob("a dog runs ."), math.log(expected))
    subject = 0.5 * 0.6 * 0.7 * 0.2  # plural, "the", no adjective, "cats"
    pp = 0.4 * (1 / 3) * (0.5 * 0.4 * 0.3 * 0.25 * 0.2)  # "near" + "some old dogs"
    verb = 0.5 * (1 / 3)  # transitive, "chase"
    obj = 0.5 * 0.5 * 0.7 * 0.2  # singular, "the", no adjective, "cat"
    got = sentence_log_prob("the cats near some old dogs chase the cat .")
    assert math.isclose(got, math.log(subject * pp * verb * obj))


def test_sampled_frequencies_match_the_exact_probabilities():
    sentences = grammar_sentences(40_000, seed=0)
    counts = Counter(sentences)
    for s, n in counts.most_common(5):
        p = math.exp(sentence_log_prob(s))
        sigma = math.sqrt(len(sentences) * p * (1 - p))
        assert abs(n - len(sentences) * p) < 5 * sigma, (s, n, p)


def test_validity_rate_reads_the_first_line_of_each_sample():
    samples = ["the cat runs .\nthe cat", "the cat run .\n", "some dogs sleep ."]
    assert validity_rate(samples) == pytest.approx(2 / 3)
    assert validity_rate([]) == 0.0


def test_pydoc_text_is_read_from_the_python_installation():
    text = pydoc_text()
    assert len(text) > 200_000 and text == pydoc_text()
    assert "if_stmt" in text or 'The "if" statement' in text


def test_split_is_contiguous_and_deterministic():
    text = "".join(chr(97 + i % 26) for i in range(1000))
    train, val = split_text(text, 0.1)
    assert train + val == text and len(val) == 100
    with pytest.raises(ValueError):
        split_text(text, 0.0)


def test_encode_text_maps_unknown_characters_to_unk():
    vocab = CharVocab("ab")
    ids = encode_text("abz", vocab)
    assert ids.dtype == torch.long and ids.tolist() == [4, 5, vocab.unk_id]
