"""Specifications of the one beam search (course_lib.sampling.beam_search) both model families use."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from course_lib.sampling import beam_search, gnmt_length_penalty

V, EOS = 4, 3


def markov_step(table: torch.Tensor, start: int = 0):
    """A step function whose next-token log-probs depend only on the last token (start if none)."""

    def step(prefixes: torch.Tensor, parents: torch.Tensor) -> torch.Tensor:
        last = prefixes[:, -1] if prefixes.shape[1] else torch.full((len(prefixes),), start)
        return table[last]  # (k, V)

    return step


def random_table(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (3 * torch.randn(V, V, generator=g)).log_softmax(-1)  # (V, V) log p(next | last)


def log_p(table: torch.Tensor, tokens: list[int], start: int = 0) -> float:
    prev = [start, *tokens[:-1]]
    return sum(table[a, b].item() for a, b in zip(prev, tokens, strict=True))


@pytest.mark.parametrize("seed", range(5))
def test_a_beam_as_wide_as_every_continuation_finds_the_most_likely_finished_one(seed):
    table = random_table(seed)
    hyps = beam_search(markov_step(table), 3, EOS, beam_size=V**3, length_penalty=0.0)
    finished = [list(s) for n in (1, 2, 3) for s in itertools.product(range(V), repeat=n)
                if s[-1] == EOS and EOS not in s[:-1]]  # fmt: skip
    best = max(finished, key=lambda s: log_p(table, s))
    assert hyps[0].finished and hyps[0].tokens == best
    assert math.isclose(hyps[0].log_prob, log_p(table, best), abs_tol=1e-5)


def test_finished_hypotheses_rank_before_ones_that_ran_out_of_steps():
    table = torch.full((V, V), -5.0)
    table[0, 1] = -0.01  # 0 -> 1 -> 1 -> ... is likely but never ends
    table[1, 1] = -0.01
    table[0, EOS] = -4.0  # ending at once is unlikely, but it is finished
    hyps = beam_search(markov_step(table), 3, EOS, beam_size=2)
    assert hyps[0].tokens == [EOS] and hyps[0].finished
    assert not hyps[1].finished and hyps[1].score > hyps[0].score


def test_scores_are_log_prob_over_the_gnmt_penalty_and_sorted_best_first():
    table = random_table(7)
    for alpha in (0.0, 0.6, 1.0):
        hyps = beam_search(markov_step(table), 5, EOS, beam_size=4, length_penalty=alpha)
        for h in hyps:
            assert math.isclose(h.log_prob, log_p(table, h.tokens), abs_tol=1e-5)
            assert math.isclose(h.score, h.log_prob / gnmt_length_penalty(len(h.tokens), alpha))
            assert (h.tokens[-1] == EOS) == h.finished and EOS not in h.tokens[:-1]
        ranks = [(h.finished, h.score) for h in hyps]
        assert ranks == sorted(ranks, reverse=True)


def test_the_gnmt_penalty_is_one_for_one_token_and_grows_with_length():
    assert gnmt_length_penalty(1, 0.6) == 1.0
    assert gnmt_length_penalty(10, 0.0) == 1.0
    assert gnmt_length_penalty(10, 0.6) == pytest.approx(2.5**0.6)


def test_a_length_penalty_can_prefer_a_longer_finished_sentence():
    table = torch.full((V, V), -9.0)
    table[0, EOS], table[0, 1] = -1.2, -0.4  # stop now (log p -1.2) or go on
    table[1, 2], table[2, EOS] = -0.45, -0.45  # 0 -> 1 -> 2 -> EOS: log p -1.3 over 3 tokens
    short = beam_search(markov_step(table), 4, EOS, beam_size=3, length_penalty=0.0)[0]
    long = beam_search(markov_step(table), 4, EOS, beam_size=3, length_penalty=1.0)[0]
    assert short.tokens == [EOS] and long.tokens == [1, 2, EOS]


def test_a_beam_of_one_is_greedy_decoding():
    table = random_table(3)
    table[:, EOS] = -50.0  # never ends: greedy runs all 6 steps
    tokens, last = [], 0
    for _ in range(6):
        last = int(table[last].argmax())
        tokens.append(last)
    (hyp,) = beam_search(markov_step(table), 6, EOS, beam_size=1)
    assert hyp.tokens == tokens and not hyp.finished


def test_parents_tell_a_cached_step_function_which_prefix_each_new_one_extends():
    table, seen = random_table(2), []

    def step(prefixes, parents):
        if seen:
            previous = seen[-1]
            assert torch.equal(prefixes[:, :-1], previous[parents])  # a cache reordered by parents
        seen.append(prefixes.clone())
        return markov_step(table)(prefixes, parents)

    beam_search(step, 5, EOS, beam_size=3)
    assert len(seen) >= 2


def test_a_step_function_returning_the_wrong_shape_is_refused():
    with pytest.raises(ValueError, match=r"step_fn must return log-probs \(k, V\) with k = 1"):
        beam_search(lambda prefixes, parents: torch.zeros(V), 3, EOS)
