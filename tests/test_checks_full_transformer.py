"""Specifications of Exercise 9.3's check: beam search with EOS set aside and a length penalty.

The reference solution passes; a blank fails as "not attempted" and only there; each typical
mistake is named by its message; the course's own beam search is refused.
"""

from __future__ import annotations

import pytest
import torch

from course_lib import checks
from course_lib.checks import full_transformer as ft
from course_lib.checks._machinery import NOT_ATTEMPTED


def beam_decode(
    step_fn, max_len, eos_id, beam_size, alpha, *, width=None, shrink=True, stop_first=False,
    rank="gnmt", count_eos=True, keep_eos=True, extend_eos=False, as_list=False,
):  # fmt: skip
    """A learner's beam search, written with tensors; each keyword reproduces one mistake."""
    width = beam_size if width is None else width
    live, finished = [([], 0.0)], []
    for _ in range(max_len):
        prefixes = torch.tensor([t for t, _ in live], dtype=torch.long).view(len(live), -1)
        log_p = step_fn(prefixes)  # (k, V)
        V = log_p.shape[1]
        scores = torch.tensor([s for _, s in live])[:, None] + log_p
        n = width - len(finished) if shrink else width
        best = scores.flatten().topk(n)
        grown = [(live[i // V][0] + [i % V], s)
                 for s, i in zip(best.values.tolist(), best.indices.tolist(), strict=True)]  # fmt: skip
        if extend_eos:  # EOS-ended prefixes stay in the beam and keep growing
            live = grown
            continue
        finished += [h for h in grown if h[0][-1] == eos_id]
        live = [h for h in grown if h[0][-1] != eos_id]
        if not live or (stop_first and finished):
            break

    def penalised(h):
        n = len(h[0]) - (0 if count_eos else 1)
        if rank == "none":
            return h[1]
        if rank == "times":
            return h[1] * ((5 + n) / 6) ** alpha
        return h[1] / n if rank == "mean" else h[1] / ((5 + n) / 6) ** alpha

    pool = finished or live
    tokens = max(pool, key=penalised if finished else (lambda h: h[1]))[0]
    if extend_eos:
        tokens = max(live, key=penalised)[0]
    if not keep_eos and tokens and tokens[-1] == eos_id:
        tokens = tokens[:-1]
    return tokens if as_list else torch.tensor(tokens, dtype=torch.long)


def test_the_reference_solution_passes(capsys):
    checks.check_beam_decode(beam_decode)
    assert capsys.readouterr().out.strip() == "✓ beam_decode: all 5 cases pass"


def test_a_blank_fails_as_not_attempted_and_only_its_own_check():
    def blank(step_fn, max_len, eos_id, beam_size, alpha):
        raise NotImplementedError

    with pytest.raises(AssertionError, match=NOT_ATTEMPTED):
        checks.check_beam_decode(blank)
    assert [n for n, (c, _) in checks.EXERCISES["09"].items() if c is checks.check_beam_decode] == [
        "beam_decode"
    ]  # a blank 9.3 is graded in its own cell only
    checks.check_beam_decode(beam_decode)  # and a right answer still passes afterwards


@pytest.mark.parametrize(
    ("knobs", "message"),
    [
        (dict(width=1), "which is greedy decoding"),
        (dict(shrink=False), "the beam did not shrink"),
        (dict(stop_first=True), "stopped at the first finished hypothesis"),
        (dict(rank="none"), "ranked by summed log-probability alone"),
        (dict(rank="times"), "ranked by summed log-probability alone"),
        (dict(count_eos=False), "its EOS included"),
        (dict(rank="mean"), "divided by the length |y| itself"),
        (dict(keep_eos=False), "EOS is missing"),
        (dict(extend_eos=True), "tokens after EOS"),
        (dict(as_list=True), "one torch.Tensor"),
    ],
)
def test_typical_mistakes_are_named(knobs, message):
    with pytest.raises(AssertionError, match=message.replace("|", r"\|")):
        checks.check_beam_decode(lambda *a: beam_decode(*a, **knobs))


def test_the_courses_beam_search_is_refused():
    from course_lib.sampling import beam_search

    def borrowed(step_fn, max_len, eos_id, beam_size, alpha):
        hyps = beam_search(lambda p, parents: step_fn(p), max_len, eos_id, beam_size, alpha)
        return torch.tensor(hyps[0].tokens)

    with pytest.raises(AssertionError, match="course_lib.sampling.beam_search"):
        checks.check_beam_decode(borrowed)
    assert beam_search.__name__ == "beam_search"  # restored after the check


def test_the_answer_key_agrees_with_the_courses_beam_search():
    """The check's independent answer is the course's one beam search on every case."""
    from course_lib.checks import _answers
    from course_lib.sampling import beam_search

    for _, seed, bias, k, alpha, max_len in ft.BS_CASES:
        lm = _answers.MarkovLM(seed, bias)
        ours = _answers.beam(lm, max_len, ft.BS_EOS, k, alpha)
        course = beam_search(lambda p, parents, lm=lm: lm(p), max_len, ft.BS_EOS, k, alpha)
        assert ours == course[0].tokens


def test_the_cases_cover_a_long_winner_a_short_winner_and_no_finished_hypothesis():
    from course_lib.checks import _answers

    answers = [
        _answers.beam(_answers.MarkovLM(seed, bias), max_len, ft.BS_EOS, k, alpha)
        for _, seed, bias, k, alpha, max_len in ft.BS_CASES
    ]
    finished = [a for a in answers if a[-1] == ft.BS_EOS]
    assert min(map(len, finished)) == 1 and max(map(len, finished)) >= 4
    assert any(a[-1] != ft.BS_EOS for a in answers), "one case must end without EOS"


def test_a_step_fn_given_a_list_says_what_it_takes():
    def lists(step_fn, max_len, eos_id, beam_size, alpha):
        step_fn([[]])
        return torch.tensor([eos_id])

    with pytest.raises(AssertionError, match=r"one \(k, t\) tensor of token ids"):
        checks.check_beam_decode(lists)


# ----------------------------------------------------------------------------- 9.1 and 9.2, the hints


def label_smoothed_loss(logits, targets, pad_id, eps, *, log=None, denominator="real"):
    """A learner's loss, right by default; `log` and `denominator` reproduce typical mistakes."""
    log_p = torch.log_softmax(logits, dim=-1) if log is None else log(logits)
    nll = -log_p.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    per_position = (1 - eps) * nll - eps * log_p.mean(dim=-1)
    real = targets != pad_id
    n = real.sum() if denominator == "real" else targets.numel()
    return (per_position * real).sum() / n


def greedy_decode(model, src, max_len, bos_id, eos_id, *, early_exit=True, encode_each_step=False,
                  position=-1, pad_after_eos=True):  # fmt: skip
    """A learner's greedy decoder, right by default; each keyword reproduces one mistake."""
    memory = model.encode(src)
    ys = torch.full((src.shape[0], 1), bos_id, dtype=torch.long)
    done = torch.zeros(src.shape[0], dtype=torch.bool)
    for _ in range(max_len):
        if encode_each_step:
            memory = model.encode(src)
        next_id = model.decode(ys, memory, src)[:, position].argmax(dim=-1)
        if pad_after_eos:
            next_id = next_id.masked_fill(done, model.pad_id)
        ys = torch.cat([ys, next_id[:, None]], dim=1)
        done |= next_id == eos_id
        if early_exit and done.all():
            break
    return ys[:, 1:]


def test_the_loss_and_decoder_references_pass(capsys):
    checks.check_label_smoothed_loss(label_smoothed_loss)
    checks.check_greedy_decode(greedy_decode)
    out = capsys.readouterr().out
    assert out == "✓ label_smoothed_loss: all 5 cases pass\n✓ greedy_decode: all 4 cases pass\n"


@pytest.mark.parametrize(
    ("knobs", "phrase"),
    [
        (dict(log=lambda x: torch.log(torch.softmax(x, dim=-1))), "use a stable log-softmax"),
        (dict(denominator="all"), "divided by every position"),
    ],
)
def test_loss_mistakes_are_named(knobs, phrase):
    with pytest.raises(AssertionError, match=phrase):
        checks.check_label_smoothed_loss(lambda *a: label_smoothed_loss(*a, **knobs))


@pytest.mark.parametrize(
    ("knobs", "phrase"),
    [
        # the prompt requires both, so a decoder that ignores them fails although its rows agree
        (dict(early_exit=False), "stop as soon as every row is finished"),
        (dict(encode_each_step=True), r"model.encode ran \d+ times.*encode the source once"),
        (dict(position=0), "the last position along the time axis, not the first"),
        (dict(pad_after_eos=False, early_exit=False), "must be PAD"),
    ],
)
def test_greedy_mistakes_are_named(knobs, phrase):
    with pytest.raises(AssertionError, match=phrase):
        checks.check_greedy_decode(lambda *a: greedy_decode(*a, **knobs))


def test_a_decoder_that_runs_to_max_len_or_re_encodes_produces_the_right_rows():
    """The two requirements are the prompt's, not the answer's: the rows themselves are right."""
    from course_lib.checks.full_transformer import _cut, _decoding_model, _greedy_rows

    model = _decoding_model(3, 1.0)
    src = torch.randint(3, 9, (3, 5), generator=torch.Generator().manual_seed(4))
    expected = _greedy_rows(model, src, 9)
    for knobs in (dict(early_exit=False), dict(encode_each_step=True)):
        with torch.no_grad():
            out = greedy_decode(model, src, 9, ft.GD_BOS, ft.GD_EOS, **knobs)
        assert _cut(out.tolist()) == expected


def from_ladder(exercise: str, signature: str):
    """The last level of an exercise's hint ladder, run as the body of the learner's function."""
    import math
    import textwrap

    import torch.nn.functional as F

    namespace = {"torch": torch, "F": F, "math": math}
    exec(
        f"def solution{signature}:\n" + textwrap.indent(checks.LADDERS[exercise][-1], "    "),
        namespace,
    )
    return namespace["solution"]


@pytest.mark.parametrize(
    ("exercise", "signature", "check"),
    [
        ("ex9_1", "(logits, targets, pad_id, eps)", "check_label_smoothed_loss"),
        ("ex9_2", "(model, src, max_len, bos_id, eos_id)", "check_greedy_decode"),
        ("ex9_3", "(step_fn, max_len, eos_id, beam_size, alpha)", "check_beam_decode"),
    ],
)
def test_the_last_hint_level_is_a_working_answer(exercise, signature, check):
    getattr(checks, check)(from_ladder(exercise, signature))


def test_the_messages_of_typical_mistakes_show_no_code():
    from test_feedback_shows_no_code import code_fragments

    wrongs = [
        (checks.check_label_smoothed_loss, lambda *a: label_smoothed_loss(*a, denominator="all")),
        (
            checks.check_label_smoothed_loss,
            lambda *a: label_smoothed_loss(*a, log=lambda x: torch.log(torch.softmax(x, dim=-1))),
        ),
        (checks.check_greedy_decode, lambda *a: greedy_decode(*a, position=0)),
        (checks.check_greedy_decode, lambda *a: greedy_decode(*a, pad_after_eos=False)),
        (checks.check_beam_decode, lambda *a: beam_decode(*a, width=1)),
        (checks.check_beam_decode, lambda *a: beam_decode(*a, rank="none")),
    ]
    for check, wrong in wrongs:
        with pytest.raises(AssertionError) as info:
            check(wrong)
        message = str(info.value).split("(at line")[0]  # the learner's own line may show
        assert not code_fragments(message), message


def test_the_notebooks_markdown_holds_no_solution_line():
    from test_feedback_shows_no_code import markdown_leaks

    assert not markdown_leaks("09"), markdown_leaks("09")
