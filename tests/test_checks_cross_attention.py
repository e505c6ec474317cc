"""Exercise 7.2 (field_attention) and the notebook 07 helpers it rests on."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import nbformat
import pytest
import torch

from course_lib import checks
from course_lib.data import DATE_FORMATS, format_date
from course_lib.lessons.cross_attention import ISO_FIELDS, date_field_spans, field_attention


def fields(weights, out_fields, src_fields):  # written independently of the lesson's reference
    table = torch.zeros(len(out_fields), len(src_fields))
    for i, (a, b) in enumerate(out_fields.values()):
        for j, (c, d) in enumerate(src_fields.values()):
            table[i, j] = sum(weights[r, c:d].sum() for r in range(a, b)) / (b - a)
    return table


def per_field(reduce_keys, reduce_rows):
    def fn(w, out_f, src_f):
        return torch.stack(
            [
                torch.stack([reduce_rows(reduce_keys(w[a:b, c:d])) for c, d in src_f.values()])
                for a, b in out_f.values()
            ]
        )

    return fn


MISTAKES = [
    (lambda w, o, s: fields(w, o, s).T, "transposed"),
    (per_field(lambda x: x.mean(-1), lambda r: r.mean()), "averaged over the source characters"),
    (per_field(lambda x: x.sum(-1), lambda r: r.sum()), "summed over the output rows"),
    (
        lambda w, o, s: fields(
            w,
            {k: (a, b + 1) for k, (a, b) in o.items()},
            {k: (c, d + 1) for k, (c, d) in s.items()},
        ),
        "end is exclusive",
    ),  # fmt: skip
    (lambda w, o, s: fields(w.T, s, o).T, "the other way round"),
    (lambda w, o, s: fields(w, o, s).tolist(), "one torch.Tensor"),
]


def test_the_reference_passes_with_one_line(capsys):
    checks.check_field_attention(fields)
    assert capsys.readouterr().out.strip() == "✓ field_attention: all 3 cases pass"


@pytest.mark.parametrize(("wrong", "phrase"), MISTAKES, ids=[p for _, p in MISTAKES])
def test_each_typical_mistake_is_named(wrong, phrase):
    with pytest.raises(AssertionError) as info:
        checks.check_field_attention(wrong)
    assert phrase in str(info.value), str(info.value)


def test_a_blank_fails_only_its_own_check():
    def blank(*args):
        raise NotImplementedError

    with pytest.raises(AssertionError, match="Exercise not attempted yet"):
        checks.check_field_attention(blank)


def test_the_lesson_reference_is_refused_inside_the_check():
    with pytest.raises(AssertionError, match="write it yourself"):
        checks.check_field_attention(lambda w, o, s: field_attention(w, o, s))


def test_the_lesson_reference_agrees_with_an_independent_sum():
    g = torch.Generator().manual_seed(0)
    w = torch.softmax(torch.randn(11, 13, generator=g), -1)
    src = {"month": (0, 5), "day": (6, 7), "year": (9, 13)}
    assert torch.allclose(field_attention(w, ISO_FIELDS, src), fields(w, ISO_FIELDS, src))


@pytest.mark.parametrize("fmt", sorted(DATE_FORMATS))
def test_date_field_spans_cut_every_format_into_its_fields(fmt):
    d = dt.date(2001, 3, 3)
    text, spans = date_field_spans(d, fmt)
    assert text == format_date(d, fmt)
    assert {"day", "month", "year"} <= set(spans)
    starts = [a for a, _ in spans.values()]
    assert starts == sorted(starts), "fields are listed in the order they appear"
    assert text[slice(*spans["year"])] in ("2001", "01")
    assert text[slice(*spans["day"])] in ("3", "03", "3rd")


def test_renormalising_the_rows_of_the_table_is_named():
    def renormalised(w, o, s):
        t = fields(w, o, s)
        return t / t.sum(-1, keepdim=True)

    with pytest.raises(AssertionError, match="spaces and punctuation belong to no field"):
        checks.check_field_attention(renormalised)


def test_an_unrecognised_wrong_table_gets_the_definition_not_the_recipe():
    with pytest.raises(AssertionError) as info:
        checks.check_field_attention(lambda w, o, s: fields(w, o, s) * 0.9)
    msg = str(info.value)
    assert "share between 0 and 1" in msg and "definition in the prompt" in msg, msg
    assert "sum it over the columns" not in msg and "average" not in msg, msg


# ----------------------------------------------------------------------------- Exercise 7.1


def cross_step(x, memory, mha, norm, src_mask):  # the reference sublayer
    out, _ = mha(norm(x), memory, memory, src_mask)
    return x + out


def cross_with(q="normed", k="memory", v="memory", residual="raw", mask="pass"):
    """The sublayer with each wiring choice switchable, as a learner might get it wrong."""

    def fn(x, memory, mha, norm, src_mask):
        h = norm(x)
        pick = {"normed": h, "raw": x, "memory": memory, "normed_memory": norm(memory)}
        m = {"pass": src_mask, "ignore": None, "reverse": src_mask}[mask]
        if mask == "reverse" and src_mask is not None:
            m = ~src_mask
        out = mha(pick[q], pick[k], pick[v], m)[0]
        return {"raw": x + out, "normed": h + out, "none": out}[residual]

    return fn


def test_the_cross_attention_reference_passes():
    checks.check_cross_attention(cross_step)


@pytest.mark.parametrize(
    ("wrong", "phrase"),
    [
        (cross_with(residual="none"), "the residual is missing"),
        (cross_with(residual="normed"), "the residual adds the normalised vector"),
        (cross_with(k="normed", v="normed"), "that is self-attention"),
        (cross_with(k="normed_memory", v="normed_memory"), "memory was normalised"),
        (cross_with(q="raw"), "the queries were not normalised"),
        (cross_with(v="normed"), "keys and values are one sequence"),
        (cross_with(k="normed"), "keys and values are one sequence"),
        (cross_with(mask="ignore"), "padding mask was ignored"),
        (cross_with(mask="reverse"), "mask polarity reversed"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_each_cross_attention_mistake_is_named(wrong, phrase):
    with pytest.raises(AssertionError) as info:
        checks.check_cross_attention(wrong)
    assert phrase in str(info.value), str(info.value)


def test_an_unrecognised_cross_attention_wiring_gets_the_concepts_not_the_recipe():
    def odd(x, memory, mha, norm, src_mask):
        return x + 0.5 * mha(norm(x), memory, memory, src_mask)[0]

    with pytest.raises(AssertionError) as info:
        checks.check_cross_attention(odd)
    msg = str(info.value)
    assert "not the pre-LN cross-attention sublayer" in msg and 'hint("ex7_1")' in msg, msg
    assert "normalise the decoder states" not in msg and "add what comes back" not in msg, msg


def test_keys_and_values_from_different_sequences_of_one_length_are_named():
    odd_case = []

    def mixed(x, memory, mha, norm, src_mask):
        if x.shape[1] != memory.shape[1]:  # only the case with L_t = L_s reaches the comparison
            return cross_step(x, memory, mha, norm, src_mask)
        odd_case.append(True)
        return x + mha(norm(x), memory, norm(x), src_mask)[0]

    with pytest.raises(AssertionError, match="keys and values came from different sequences"):
        checks.check_cross_attention(mixed)
    assert odd_case


def test_the_cross_attention_error_hint_describes_the_interface_not_the_wiring():
    def crashes(x, memory, mha, norm, src_mask):
        return x + mha(norm(x), memory, memory[:, :, :4], src_mask)[0]  # values too narrow

    with pytest.raises(AssertionError) as info:
        checks.check_cross_attention(crashes)
    msg = str(info.value)
    assert "returns a tuple (out, weights)" in msg, msg
    assert "normalised decoder states" not in msg and "encoder memory" not in msg, msg


def test_the_7_1_prompt_states_requirements_and_leaves_the_traps_to_the_hints():
    prompt = _prompt("07_cross_attention", "### Exercise 7.1")
    for requirement in ("pre-LN", "already normalised", "True = real source token", "(B, L_t, D)"):
        assert requirement in prompt, requirement
    for nudge in ("not the memory", "not put in its place", "which one answers"):
        assert nudge not in prompt, nudge
    assert "not put in its place" in checks.LADDERS["ex7_1"][0]


def test_the_7_2_prompt_defines_the_entry_without_the_recipe():
    prompt = _prompt("07_cross_attention", "### Exercise 7.2")
    assert "share of attention" in prompt and "may sum to less than 1" in prompt
    assert "stays a share between 0 and 1" not in prompt


def _prompt(notebook, heading):
    path = Path(__file__).resolve().parents[1] / "notebooks" / f"{notebook}.ipynb"
    nb = nbformat.read(path, as_version=4)
    (cell,) = [c for c in nb.cells if c.cell_type == "markdown" and c.source.startswith(heading)]
    return cell.source
