"""Specifications of notebook 10's generation helpers: metrics, line completion, plots, explorer."""

from __future__ import annotations

import matplotlib

matplotlib.use("agg")

import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from course_lib.data import CharVocab  # noqa: E402
from course_lib.gpt import GPT  # noqa: E402
from course_lib.lessons.gpt_decoder_only import (
    RUNGS,
    LadderLM,
    complete_line,
    continue_text,
    distinct_ngram_ratio,
    head_explorer,
    ids_to_text,
    known_word_rate,
    next_token_distribution,
    plot_next_token_probs,
    plot_sorted_probs,
    sampling_explorer,
    word_set,
)
from course_lib.lm import train_lm  # noqa: E402

VOCAB = CharVocab("abc .\n")


def tiny(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(len(VOCAB), d_model=16, num_heads=2, num_layers=1, max_len=24).eval()


def test_distinct_ngrams_separate_loops_from_varied_text():
    assert distinct_ngram_ratio("abcabcabcabcabcabc", n=3) == 3 / 16
    assert distinct_ngram_ratio("abcdefgh", n=3) == 1.0
    assert distinct_ngram_ratio("ab", n=3) == 0.0


def test_known_word_rate_ignores_the_possibly_cut_last_word():
    known = word_set("the cat sat on the mat")
    assert known_word_rate("the cat zzz on the ma", known) == 0.8  # 4 of the, cat, zzz, on, the
    assert known_word_rate("", known) == 0.0


def test_continuations_are_reproducible_and_exclude_the_prompt():
    model = tiny()
    a = continue_text(model, VOCAB, "ab", 10, seed=3, num_samples=2)
    assert a == continue_text(model, VOCAB, "ab", 10, seed=3, num_samples=2)
    assert len(a) == 2 and a[0] != a[1]
    greedy = continue_text(model, VOCAB, "ab", 10, temperature=0)[0]
    ids = model.generate(torch.tensor([VOCAB.encode("ab")]), 10, temperature=0)[0, 2:]
    assert greedy == ids_to_text(VOCAB, ids)


def test_a_list_of_prompts_is_continued_in_one_batch():
    model = tiny()
    both = continue_text(model, VOCAB, ["ab", "ca"], 6, temperature=0)
    assert both == [continue_text(model, VOCAB, p, 6, temperature=0)[0] for p in ("ab", "ca")]
    try:
        continue_text(model, VOCAB, ["ab", "abc"], 3)
    except ValueError as err:
        assert "same length" in str(err)
    else:
        raise AssertionError("prompts of different lengths must be refused")


def test_complete_line_stops_at_the_newline_and_scores_the_completion():
    model = tiny(1)
    data = torch.tensor(VOCAB.encode("ab c .\nab cc .\n" * 40))
    train_lm(model, data, 80, batch_size=8, context=24, lr=1e-2, warmup=5, progress=False)
    text, logp = complete_line(model, VOCAB, "ab", max_new=20)
    assert text.endswith("\n") and "\n" not in text[:-1]
    assert text == continue_text(model, VOCAB, "ab", len(text), temperature=0)[0]
    beam, beam_logp = complete_line(model, VOCAB, "ab", max_new=20, beam_size=4)
    assert beam.endswith("\n") and beam_logp >= logp - 1e-5 and logp < 0


def test_the_distribution_plot_shows_the_filtered_support():
    model = tiny()
    probs = next_token_distribution(model, VOCAB, "ab", top_k=3)
    assert int((probs > 0).sum()) == 3 and abs(probs.sum().item() - 1) < 1e-6
    ax = plot_next_token_probs(probs, VOCAB, top=5)
    assert "3 of 10" in ax.get_title() and ax.get_ylabel() == "probability"
    plt.close("all")


def test_the_sampling_explorer_renders_once_and_rerenders_on_a_change(capsys):
    ex = sampling_explorer(tiny(), VOCAB, prompt="ab", n_chars=12)
    assert ex.renders == 1
    ex.controls["top_k"].value = 2
    ex.controls["temperature"].value = 0.5
    assert ex.renders == 3 and "ab\u2502" in capsys.readouterr().out
    plt.close("all")


def test_every_rung_of_the_ladder_is_causal_and_only_the_bigram_ignores_the_past():
    idx = torch.randint(0, 10, (2, 12), generator=torch.Generator().manual_seed(0))
    edited = idx.clone()
    edited[:, 6] = (idx[:, 6] + 1) % 10
    for rung in RUNGS:
        torch.manual_seed(0)
        model = LadderLM(10, rung, d_model=16, max_len=12).eval()
        logits, loss = model(idx, idx)
        assert logits.shape == (2, 12, 10) and loss.dim() == 0
        with torch.no_grad():
            change = (model(idx)[0] - model(edited)[0]).abs().amax(dim=(0, 2))  # (T,)
        assert change[:6].max() == 0, f"{rung} looked ahead"
        assert (change[7:].max() > 0) == (rung != "bigram"), f"{rung}: context use is wrong"


def test_the_sorted_plot_counts_what_top_p_keeps():
    from course_lib.sampling import top_p_filter

    logits = torch.randn(30, generator=torch.Generator().manual_seed(2)) * 2
    ax, kept = plot_sorted_probs(logits.softmax(dim=-1), 0.9, 5, "test")
    assert kept == int(top_p_filter(logits, 0.9).isfinite().sum())
    assert ax.get_yscale() == "log" and len(ax.patches) == 30
    plt.close("all")


def test_the_head_explorer_starts_at_the_chosen_head():
    weights = torch.rand(2, 3, 4, 4).tril()
    ex = head_explorer(weights, list("abcd"), 1, 2, "heads")
    assert ex.renders == 1 and ex.values == {"layer": 1, "head": 2}
    ex.controls["head"].value = 0
    assert ex.renders == 2
    plt.close("all")
