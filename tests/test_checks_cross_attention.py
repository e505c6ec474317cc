"""Exercise 7.2 (field_attention) and the notebook 07 helpers it rests on."""

from __future__ import annotations

import datetime as dt

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
