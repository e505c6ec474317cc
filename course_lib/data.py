"""Data for the course: a character vocabulary, the date-format translation task, toy tasks, batches.

The main task translates a human-written date into ISO 8601:

    "saturday 3 march 2001"  ->  "2001-03-03"
    "the 3rd of march, 2001" ->  "2001-03-03"

Everything is generated in memory from a seed; nothing is downloaded.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterable, Iterator, Sequence
from functools import cache
from pathlib import Path
from typing import NamedTuple

import torch

DATA_DIR = Path(__file__).resolve().parent.parent / "data"

Pair = tuple[str, str]

# ----------------------------------------------------------------------------- vocabulary


class CharVocab:
    """Character-level vocabulary: ids 0-3 are PAD, BOS, EOS, UNK, then the sorted unique chars."""

    PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
    SPECIALS = (PAD, BOS, EOS, UNK)
    pad_id, bos_id, eos_id, unk_id = 0, 1, 2, 3

    def __init__(self, chars: Iterable[str]) -> None:
        chars = list(chars)
        bad = [c for c in chars if not isinstance(c, str) or len(c) != 1]
        if bad:
            raise ValueError(
                f"CharVocab expects single characters, got {bad[:5]!r}; "
                "pass a string such as 'abc' or a list of 1-character strings"
            )
        self.itos: list[str] = list(self.SPECIALS) + sorted(set(chars))
        self.stoi: dict[str, int] = {s: i for i, s in enumerate(self.itos)}

    @property
    def chars(self) -> str:
        """The ordinary (non-special) characters as one string: `CharVocab(v.chars)` rebuilds v."""
        return "".join(self.itos[len(self.SPECIALS) :])

    def __len__(self) -> int:
        return len(self.itos)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CharVocab) and self.itos == other.itos

    def __hash__(self) -> int:
        return hash(tuple(self.itos))

    def __repr__(self) -> str:
        return f"CharVocab(size={len(self)}, chars={self.chars!r})"

    def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """Text -> list of ids; characters outside the vocabulary become UNK."""
        if not isinstance(text, str):
            raise ValueError(f"encode expects a str, got {type(text).__name__}")
        ids = [self.stoi.get(c, self.unk_id) for c in text]
        return ([self.bos_id] if add_bos else []) + ids + ([self.eos_id] if add_eos else [])

    def decode(self, ids: Iterable[int] | torch.Tensor, strip_special: bool = True) -> str:
        """Ids -> text. With strip_special, stop at the first EOS and drop PAD/BOS (UNK is kept)."""
        if isinstance(ids, torch.Tensor):
            if ids.dim() != 1:
                raise ValueError(
                    f"decode expects a 1-D tensor of ids, got shape {tuple(ids.shape)}"
                )
            ids = ids.tolist()
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < len(self.itos):
                raise ValueError(f"id {i} is outside the vocabulary (0..{len(self.itos) - 1})")
            if strip_special:
                if i == self.eos_id:
                    break
                if i in (self.pad_id, self.bos_id):
                    continue
            out.append(self.itos[i])
        return "".join(out)

    def tokens(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[str]:
        """Text -> token strings, e.g. ["<bos>", "2", "0", ...]: labels for heatmap axes."""
        return [self.itos[i] for i in self.encode(text, add_bos, add_eos)]

    def ids_to_tokens(self, ids: Iterable[int] | torch.Tensor) -> list[str]:
        """Ids -> token strings, specials included (e.g. to label a row of `tgt_in`)."""
        if isinstance(ids, torch.Tensor):
            ids = ids.reshape(-1).tolist()
        return [self.itos[int(i)] for i in ids]


# ----------------------------------------------------------------------------- dates

MONTHS = (
    "january", "february", "march", "april", "may", "june",
    "july", "august", "september", "october", "november", "december",
)  # fmt: skip
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
FIRST_DAY, LAST_DAY = dt.date(1950, 1, 1), dt.date(2049, 12, 31)
TEST_FRACTION = 0.2
SPLIT_SEED = 1234  # fixed for ever: changing it would move calendar days between train and test


def _ordinal(n: int) -> str:
    """1 -> '1st', 2 -> '2nd', 11 -> '11th', 23 -> '23rd'."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _parts(d: dt.date) -> dict[str, str]:
    """The pieces a format is assembled from, for one date."""
    month, weekday = MONTHS[d.month - 1], WEEKDAYS[d.weekday()]
    return {
        "D": str(d.day),
        "DD": f"{d.day:02d}",
        "Dth": _ordinal(d.day),
        "MM": f"{d.month:02d}",
        "M": str(d.month),
        "YYYY": f"{d.year:04d}",
        "YY": f"{d.year % 100:02d}",
        "month": month,
        "Month": month.capitalize(),
        "MONTH": month.upper(),
        "mon": month[:3],
        "Mon": month[:3].capitalize(),
        "MON": month[:3].upper(),
        "weekday": weekday,
        "Weekday": weekday.capitalize(),
        "Wkd": weekday[:3].capitalize(),
    }


# Format name -> template. The name is the pattern itself: lowercase `month` gives "march",
# `Month` gives "March", `MON` gives "MAR"; slash and dot formats are day-first (European).
# Two-digit years are unambiguous because every date lies in 1950-2049.
DATE_FORMATS: dict[str, str] = {
    "weekday D month YYYY": "{weekday} {D} {month} {YYYY}",
    "Wkd, D Month YYYY": "{Wkd}, {D} {Month} {YYYY}",
    "Weekday, Month Dth, YYYY": "{Weekday}, {Month} {Dth}, {YYYY}",
    "Month D, YYYY": "{Month} {D}, {YYYY}",
    "MONTH D, YYYY": "{MONTH} {D}, {YYYY}",
    "month Dth YYYY": "{month} {Dth} {YYYY}",
    "the Dth of month, YYYY": "the {Dth} of {month}, {YYYY}",
    "D Mon YYYY": "{D} {Mon} {YYYY}",
    "D month YY": "{D} {month} {YY}",
    "mon D YYYY": "{mon} {D} {YYYY}",
    "D-MON-YYYY": "{D}-{MON}-{YYYY}",
    "D/M/YY": "{D}/{M}/{YY}",
    "DD/MM/YYYY": "{DD}/{MM}/{YYYY}",
    "DD.MM.YYYY": "{DD}.{MM}.{YYYY}",
    "DD-MM-YYYY": "{DD}-{MM}-{YYYY}",
    "YYYY/MM/DD": "{YYYY}/{MM}/{DD}",
    "YYYYMMDD": "{YYYY}{MM}{DD}",
    "YYYY-MM-DD": "{YYYY}-{MM}-{DD}",
}


def format_date(d: dt.date, fmt: str) -> str:
    """Write date `d` in the format named `fmt` (a key of DATE_FORMATS)."""
    if fmt not in DATE_FORMATS:
        raise ValueError(f"unknown date format {fmt!r}; choose one of {list(DATE_FORMATS)}")
    if not FIRST_DAY <= d <= LAST_DAY:
        raise ValueError(f"date {d} is outside the task's range {FIRST_DAY}..{LAST_DAY}")
    return DATE_FORMATS[fmt].format(**_parts(d))


@cache
def _split_days() -> dict[str, tuple[dt.date, ...]]:
    """Every calendar day in range, split once by a fixed permutation into train and test."""
    n_days = (LAST_DAY - FIRST_DAY).days + 1
    order = list(range(n_days))
    random.Random(SPLIT_SEED).shuffle(order)
    n_test = round(n_days * TEST_FRACTION)
    test = sorted(order[:n_test])
    train = sorted(order[n_test:])
    to_days = lambda idx: tuple(FIRST_DAY + dt.timedelta(days=i) for i in idx)
    return {"train": to_days(train), "test": to_days(test)}


def calendar_days(split: str = "train") -> tuple[dt.date, ...]:
    """The calendar days (sorted) that `split` draws from; train and test never share a day."""
    days = _split_days()
    if split not in days:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return days[split]


def date_pairs(
    n: int,
    seed: int = 0,
    split: str = "train",
    with_format: bool = False,
    formats: Sequence[str] | None = None,
) -> list[tuple[str, ...]]:
    """n (human date, ISO date) pairs, or (human, ISO, format name) triples with `with_format`.

    Days are drawn with replacement from the split's calendar days and formats uniformly from
    `formats` (default: all of DATE_FORMATS). The same (n, seed, split, formats) gives the same list.
    """
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    days = calendar_days(split)
    formats = list(DATE_FORMATS) if formats is None else list(formats)
    unknown = [f for f in formats if f not in DATE_FORMATS]
    if unknown or not formats:
        raise ValueError(f"unknown or empty formats {unknown or formats!r}; see DATE_FORMATS")
    rng = random.Random(f"date_pairs/{split}/{seed}")
    out: list[tuple[str, ...]] = []
    for _ in range(n):
        d, fmt = rng.choice(days), rng.choice(formats)
        pair = (format_date(d, fmt), d.isoformat())
        out.append(pair + (fmt,) if with_format else pair)
    return out


def date_vocab() -> CharVocab:
    """One vocabulary for sources and targets, covering every character any format can produce."""
    chars = set("0123456789")
    d = dt.date(2000, 1, 1)  # a leap year: every month, day number, ordinal suffix and weekday
    while d.year == 2000:
        for fmt in DATE_FORMATS:
            chars.update(format_date(d, fmt))
        d += dt.timedelta(days=1)
    return CharVocab(chars)


# ----------------------------------------------------------------------------- toy tasks


def _random_strings(n: int, min_len: int, max_len: int, seed: int, alphabet: str) -> list[str]:
    """n random strings over `alphabet` with lengths uniform in [min_len, max_len]."""
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    if not 1 <= min_len <= max_len:
        raise ValueError(f"need 1 <= min_len <= max_len, got min_len={min_len}, max_len={max_len}")
    if not alphabet:
        raise ValueError("alphabet must contain at least one character")
    rng = random.Random(seed)
    return ["".join(rng.choices(alphabet, k=rng.randint(min_len, max_len))) for _ in range(n)]


def copy_pairs(
    n: int, min_len: int, max_len: int, seed: int = 0, alphabet: str = "abcdefghij"
) -> list[Pair]:
    """Toy task: the target is the source ("abc" -> "abc")."""
    return [(s, s) for s in _random_strings(n, min_len, max_len, seed, alphabet)]


def reverse_pairs(
    n: int, min_len: int, max_len: int, seed: int = 0, alphabet: str = "abcdefghij"
) -> list[Pair]:
    """Toy task: the target is the reversed source ("abc" -> "cba")."""
    return [(s, s[::-1]) for s in _random_strings(n, min_len, max_len, seed, alphabet)]


def sort_pairs(
    n: int, min_len: int, max_len: int, seed: int = 0, alphabet: str = "abcdefghij"
) -> list[Pair]:
    """Toy task: the target is the source's characters sorted ("cab" -> "abc")."""
    return [(s, "".join(sorted(s))) for s in _random_strings(n, min_len, max_len, seed, alphabet)]


# ----------------------------------------------------------------------------- batches


class Batch(NamedTuple):
    """A padded batch: src (B, L_s), tgt_in = BOS + target (B, L_t), tgt_out = target + EOS."""

    src: torch.Tensor  # (B, L_s) int64, PAD on the right
    tgt_in: torch.Tensor  # (B, L_t) int64, what the decoder reads (teacher forcing)
    tgt_out: torch.Tensor  # (B, L_t) int64, what the decoder should predict

    def to(self, device: torch.device | str) -> Batch:
        """Move all three tensors to `device`."""
        return Batch(*(t.to(device) for t in self))


def _pad(rows: Sequence[Sequence[int]], pad_id: int) -> torch.Tensor:
    """Right-pad lists of ids into one (B, L) int64 tensor."""
    out = torch.full((len(rows), max(len(r) for r in rows)), pad_id, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out


def _encode_pairs(pairs: Sequence[Sequence[str]], vocab: CharVocab) -> list[tuple[list, list]]:
    """Check pairs and encode them as (source ids, target ids), without BOS/EOS."""
    if not isinstance(vocab, CharVocab):
        raise ValueError(f"vocab must be a CharVocab, got {type(vocab).__name__}")
    if len(pairs) == 0:
        raise ValueError("need at least one (source, target) pair, got an empty list")
    encoded = []
    for p in pairs:
        if not (
            isinstance(p, (tuple, list)) and len(p) >= 2 and all(isinstance(x, str) for x in p[:2])
        ):
            raise ValueError(f"each pair must be (source: str, target: str, ...), got {p!r:.80}")
        if not p[0]:
            raise ValueError(f"empty source string in pair {p!r}: a row of only PAD has no keys")
        encoded.append((vocab.encode(p[0]), vocab.encode(p[1])))
    return encoded


def _collate(encoded: Sequence[tuple[list, list]], vocab: CharVocab) -> Batch:
    """Encoded pairs -> padded Batch."""
    src = _pad([s for s, _ in encoded], vocab.pad_id)  # (B, L_s)
    tgt_in = _pad([[vocab.bos_id] + t for _, t in encoded], vocab.pad_id)  # (B, L_t)
    tgt_out = _pad([t + [vocab.eos_id] for _, t in encoded], vocab.pad_id)  # (B, L_t)
    return Batch(src, tgt_in, tgt_out)


def make_batch(pairs: Sequence[Sequence[str]], vocab: CharVocab) -> Batch:
    """(source, target) pairs (extra items such as a format name are ignored) -> padded Batch."""
    return _collate(_encode_pairs(pairs, vocab), vocab)


def batch_iterator(
    pairs: Sequence[Sequence[str]],
    vocab: CharVocab,
    batch_size: int,
    seed: int = 0,
    shuffle: bool = True,
    epochs: int | None = None,
) -> Iterator[Batch]:
    """Yield Batches forever (epochs=None) or for `epochs` passes over the data.

    Each epoch visits every pair once, reshuffled from a torch.Generator seeded with `seed`
    (so the sequence of batches is deterministic); the last batch of an epoch may be smaller.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if epochs is not None and epochs < 0:
        raise ValueError(f"epochs must be None (forever) or >= 0, got {epochs}")
    encoded = _encode_pairs(pairs, vocab)
    gen = torch.Generator().manual_seed(seed)
    epoch = 0
    while epochs is None or epoch < epochs:
        order = torch.randperm(len(encoded), generator=gen) if shuffle else range(len(encoded))
        order = [int(i) for i in order]
        for start in range(0, len(order), batch_size):
            yield _collate([encoded[i] for i in order[start : start + batch_size]], vocab)
        epoch += 1


__all__ = [
    "DATA_DIR",
    "DATE_FORMATS",
    "Batch",
    "CharVocab",
    "batch_iterator",
    "calendar_days",
    "copy_pairs",
    "date_pairs",
    "date_vocab",
    "format_date",
    "make_batch",
    "reverse_pairs",
    "sort_pairs",
]
