"""Specifications of course_lib.data: the vocabulary, the date task, toy tasks and batching."""

import datetime as dt
import re

import pytest
import torch

from course_lib.data import (
    DATA_DIR,
    DATE_FORMATS,
    Batch,
    CharVocab,
    batch_iterator,
    calendar_days,
    copy_pairs,
    date_pairs,
    date_vocab,
    format_date,
    make_batch,
    reverse_pairs,
    sort_pairs,
)

# An independent reader of every format, written without looking at the generator's templates:
# month and weekday names, regexes and the 2-digit-year rule are all spelled out again here.
MONTH_NUMBER = {
    name: i + 1
    for i, name in enumerate(
        "january february march april may june july august september october november december".split()
    )
}
FULL_MONTHS = set(MONTH_NUMBER)
MONTH_NUMBER.update({name[:3]: n for name, n in list(MONTH_NUMBER.items())})
WEEKDAY_NUMBER = {
    name: i
    for i, name in enumerate("monday tuesday wednesday thursday friday saturday sunday".split())
}
WEEKDAY_NUMBER.update({name[:3]: n for name, n in list(WEEKDAY_NUMBER.items())})

W, MN, D, ORD = (
    r"(?P<wd>[A-Za-z]+)",
    r"(?P<mon>[A-Za-z]+)",
    r"(?P<d>\d{1,2})",
    r"(?P<d>\d{1,2})(?P<suf>st|nd|rd|th)",
)
Y4, Y2, MM, DD = r"(?P<y>\d{4})", r"(?P<yy>\d{2})", r"(?P<m>\d{2})", r"(?P<d>\d{2})"
PATTERNS = {
    "weekday D month YYYY": (rf"{W} {D} {MN} {Y4}", str.islower),
    "Wkd, D Month YYYY": (rf"{W}, {D} {MN} {Y4}", str.istitle),
    "Weekday, Month Dth, YYYY": (rf"{W}, {MN} {ORD}, {Y4}", None),
    "Month D, YYYY": (rf"{MN} {D}, {Y4}", str.istitle),
    "MONTH D, YYYY": (rf"{MN} {D}, {Y4}", str.isupper),
    "month Dth YYYY": (rf"{MN} {ORD} {Y4}", str.islower),
    "the Dth of month, YYYY": (rf"the {ORD} of {MN}, {Y4}", str.islower),
    "D Mon YYYY": (rf"{D} {MN} {Y4}", str.istitle),
    "D month YY": (rf"{D} {MN} {Y2}", str.islower),
    "mon D YYYY": (rf"{MN} {D} {Y4}", str.islower),
    "D-MON-YYYY": (rf"{D}-{MN}-{Y4}", str.isupper),
    "D/M/YY": (rf"{D}/(?P<m>\d{{1,2}})/{Y2}", None),
    "DD/MM/YYYY": (rf"{DD}/{MM}/{Y4}", None),
    "DD.MM.YYYY": (rf"{DD}\.{MM}\.{Y4}", None),
    "DD-MM-YYYY": (rf"{DD}-{MM}-{Y4}", None),
    "YYYY/MM/DD": (rf"{Y4}/{MM}/{DD}", None),
    "YYYYMMDD": (rf"{Y4}{MM}{DD}", None),
    "YYYY-MM-DD": (rf"{Y4}-{MM}-{DD}", None),
}


def parse_human_date(text: str, fmt: str) -> dt.date:
    """Read `text` written in format `fmt` back into a date, checking weekday, suffix and case."""
    pattern, case_ok = PATTERNS[fmt]
    m = re.fullmatch(pattern, text)
    assert m, f"{text!r} does not look like format {fmt!r}"
    g = m.groupdict()
    if "mon" in g:
        assert case_ok is None or case_ok(g["mon"]), f"wrong case in {text!r} for {fmt!r}"
        name = g["mon"].lower()
        full = not re.search(r"\b(mon|Mon|MON)\b", fmt)
        assert name in FULL_MONTHS if full else len(name) == 3, f"month {name!r} in {text!r}"
        month = MONTH_NUMBER[name]
    else:
        month = int(g["m"])
    year = (
        int(g["y"])
        if g.get("y")
        else (1900 + int(g["yy"]) if int(g["yy"]) >= 50 else 2000 + int(g["yy"]))
    )
    date = dt.date(year, month, int(g["d"]))
    if g.get("suf"):
        n = date.day
        want = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
        assert g["suf"] == want, f"ordinal suffix in {text!r}"
    if g.get("wd"):
        assert WEEKDAY_NUMBER[g["wd"].lower()] == date.weekday(), f"weekday wrong in {text!r}"
    return date


ISO = re.compile(r"\d{4}-\d{2}-\d{2}")


# ----------------------------------------------------------------------------- vocabulary


def test_vocab_specials_come_first_then_sorted_unique_chars():
    v = CharVocab("cabca")
    assert v.itos == ["<pad>", "<bos>", "<eos>", "<unk>", "a", "b", "c"]
    assert (v.pad_id, v.bos_id, v.eos_id, v.unk_id) == (0, 1, 2, 3)
    assert v.stoi["a"] == 4 and len(v) == 7 and CharVocab(v.chars) == v


def test_unknown_chars_map_to_unk_and_decode_keeps_them_visible():
    v = CharVocab("ab")
    assert v.encode("aZb") == [4, v.unk_id, 5]
    assert v.decode(v.encode("aZb")) == "a<unk>b"


def test_encode_decode_bos_eos_and_strip_special():
    v = CharVocab("ab")
    ids = v.encode("ab", add_bos=True, add_eos=True)
    assert ids == [1, 4, 5, 2]
    assert v.decode(ids + [4, 0, 0]) == "ab"  # stops at EOS
    assert v.decode(torch.tensor(ids + [0]), strip_special=False) == "<bos>ab<eos><pad>"
    assert v.tokens("ab", add_bos=True) == ["<bos>", "a", "b"]
    assert v.ids_to_tokens(torch.tensor([1, 4, 0])) == ["<bos>", "a", "<pad>"]


def test_vocab_rejects_multi_char_tokens_and_out_of_range_ids():
    with pytest.raises(ValueError, match="single characters"):
        CharVocab(["ab", "c"])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        CharVocab("ab").decode([99])


# ----------------------------------------------------------------------------- dates


def test_there_are_at_least_15_formats_and_every_one_appears():
    assert len(DATE_FORMATS) >= 15 and set(PATTERNS) == set(DATE_FORMATS)
    fmts = {f for _, _, f in date_pairs(2000, seed=0, with_format=True)}
    assert fmts == set(DATE_FORMATS)


def test_same_seed_same_data_and_different_seed_different_data():
    assert date_pairs(300, seed=3) == date_pairs(300, seed=3)
    assert date_pairs(300, seed=3) != date_pairs(300, seed=4)
    assert date_pairs(300, seed=3, split="train") != date_pairs(300, seed=3, split="test")
    assert copy_pairs(50, 2, 6, seed=1) == copy_pairs(50, 2, 6, seed=1)
    assert copy_pairs(50, 2, 6, seed=1) != copy_pairs(50, 2, 6, seed=2)


@pytest.mark.parametrize("split", ["train", "test"])
def test_every_target_is_the_iso_form_of_the_source_date(split):
    for src, tgt, fmt in date_pairs(3000, seed=1, split=split, with_format=True):
        assert ISO.fullmatch(tgt), tgt
        assert dt.date.fromisoformat(tgt) == parse_human_date(src, fmt), (src, tgt, fmt)


def test_every_format_renders_every_calendar_edge_case_readably():
    # first/last day of the range, a leap day, and the ordinals 1st 2nd 3rd 11th 12th 13th 21st ..
    days = [dt.date(1950, 1, 1), dt.date(2049, 12, 31), dt.date(2000, 2, 29)]
    days += [dt.date(2001, 5, d) for d in (1, 2, 3, 11, 12, 13, 21, 22, 23, 31)]
    for fmt in DATE_FORMATS:
        for d in days:
            assert parse_human_date(format_date(d, fmt), fmt) == d


def test_train_and_test_share_no_calendar_day_and_cover_the_range():
    train, test = set(calendar_days("train")), set(calendar_days("test"))
    assert not train & test
    assert len(train | test) == (dt.date(2049, 12, 31) - dt.date(1950, 1, 1)).days + 1
    assert 0.19 < len(test) / len(train | test) < 0.21
    train_targets = {t for _, t in date_pairs(5000, seed=0, split="train")}
    test_targets = {t for _, t in date_pairs(5000, seed=0, split="test")}
    assert not train_targets & test_targets
    assert all(dt.date.fromisoformat(t) in test for t in test_targets)


def test_date_vocab_round_trips_every_pair_without_unk():
    v = date_vocab()
    for src, tgt in date_pairs(3000, seed=2) + date_pairs(1000, seed=2, split="test"):
        for text in (src, tgt):
            ids = v.encode(text)
            assert v.unk_id not in ids and v.decode(ids) == text


def test_date_pairs_rejects_bad_arguments():
    with pytest.raises(ValueError, match="split must be"):
        date_pairs(3, split="valid")
    with pytest.raises(ValueError, match="unknown or empty formats"):
        date_pairs(3, formats=["%d/%m"])
    only = date_pairs(50, formats=["YYYYMMDD"], with_format=True)
    assert {f for *_, f in only} == {"YYYYMMDD"}


# ----------------------------------------------------------------------------- toy tasks


def test_toy_tasks_have_the_right_targets_and_lengths():
    for src, tgt in copy_pairs(100, 3, 7, alphabet="xyz"):
        assert src == tgt and 3 <= len(src) <= 7 and set(src) <= set("xyz")
    assert all(t == s[::-1] for s, t in reverse_pairs(100, 1, 5))
    assert all(t == "".join(sorted(s)) for s, t in sort_pairs(100, 1, 5))
    with pytest.raises(ValueError, match="min_len <= max_len"):
        copy_pairs(3, 5, 2)


# ----------------------------------------------------------------------------- batches


def test_batch_shapes_and_bos_eos_pad_placement():
    v = CharVocab("abc")
    b = make_batch([("abc", "ab"), ("a", "cccc")], v)
    assert isinstance(b, Batch)
    assert b.src.shape == (2, 3) and b.tgt_in.shape == (2, 5) and b.tgt_out.shape == (2, 5)
    assert all(t.dtype == torch.int64 for t in b)
    assert b.src.tolist() == [[4, 5, 6], [4, 0, 0]]
    assert b.tgt_in.tolist() == [[1, 4, 5, 0, 0], [1, 6, 6, 6, 6]]
    assert b.tgt_out.tolist() == [[4, 5, 2, 0, 0], [6, 6, 6, 6, 2]]
    # tgt_in is tgt_out shifted right by one, with BOS in front
    real = b.tgt_out != v.pad_id
    assert torch.equal(b.tgt_in[:, 1:][real[:, 1:]], b.tgt_out[:, :-1][real[:, 1:]])


def test_make_batch_accepts_triples_and_rejects_bad_input():
    v = date_vocab()
    b = make_batch(date_pairs(4, with_format=True), v)
    assert b.src.shape[0] == 4
    with pytest.raises(ValueError, match="empty list"):
        make_batch([], v)
    with pytest.raises(ValueError, match="empty source"):
        make_batch([("", "x")], v)


def test_batch_iterator_is_deterministic_and_covers_each_epoch_once():
    v = CharVocab("abcdefghij")
    pairs = copy_pairs(10, 1, 4, seed=0)
    one = list(batch_iterator(pairs, v, batch_size=4, seed=5, epochs=2))
    two = list(batch_iterator(pairs, v, batch_size=4, seed=5, epochs=2))
    assert [b.src.shape[0] for b in one] == [4, 4, 2, 4, 4, 2]
    assert all(torch.equal(x.src, y.src) for x, y in zip(one, two, strict=True))
    seen = sorted(v.decode(row) for b in one[:3] for row in b.src)
    assert seen == sorted(s for s, _ in pairs)
    ordered = next(batch_iterator(pairs, v, batch_size=10, shuffle=False))
    assert [v.decode(r) for r in ordered.src] == [s for s, _ in pairs]
    forever = batch_iterator(pairs, v, batch_size=4)
    assert len([next(forever) for _ in range(20)]) == 20


def test_data_dir_points_at_the_repository_data_folder():
    assert DATA_DIR.name == "data" and (DATA_DIR.parent / "course_lib").is_dir()
