"""Two text corpora for language modelling, neither downloaded (see data/README.md).

1. A **toy grammar** of English-like sentences that the course generates from a seed, such as

       the small cat near the dogs sleeps .
       some teachers chase a bird .

   The subject and its verb must agree in number even when a prepositional phrase with a noun
   of the other number stands between them. Because the course wrote the grammar, it can
   check any sentence (`sentence_error`) and give its exact probability (`sentence_log_prob`).

2. **Real prose**: the documentation topics that CPython ships inside its standard library
   (`pydoc_data.topics`, what `help("if")` prints; about 465k characters). It is read from
   the learner's own Python installation at run time; nothing is copied into the repository.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import torch

from .data import CharVocab

# ----------------------------------------------------------------------------- the toy grammar

# Each slot is a weighted choice; singular ("sg") and plural ("pl") forms are listed separately.
DETERMINERS = {"sg": {"the": 0.5, "a": 0.3, "every": 0.2}, "pl": {"the": 0.6, "some": 0.4}}
ADJECTIVES = {"small": 0.25, "old": 0.25, "happy": 0.25, "red": 0.25}
NOUNS = {
    "sg": {"cat": 0.2, "dog": 0.2, "bird": 0.2, "child": 0.2, "teacher": 0.2},
    "pl": {"cats": 0.2, "dogs": 0.2, "birds": 0.2, "children": 0.2, "teachers": 0.2},
}
PREPOSITIONS = {"near": 1 / 3, "behind": 1 / 3, "with": 1 / 3}
# Intransitive verbs: one frequent verb, and four rarer ones that share their first letter,
# so that the likeliest *first letter* ("s", 0.6) is not the start of the likeliest *word*
# ("runs", 0.4). Greedy decoding falls into this; beam search does not.
INTRANSITIVE = {
    "sg": {"runs": 0.4, "sleeps": 0.15, "sings": 0.15, "sits": 0.15, "swims": 0.15},
    "pl": {"run": 0.4, "sleep": 0.15, "sing": 0.15, "sit": 0.15, "swim": 0.15},
}
TRANSITIVE = {
    "sg": {"likes": 1 / 3, "follows": 1 / 3, "chases": 1 / 3},
    "pl": {"like": 1 / 3, "follow": 1 / 3, "chase": 1 / 3},
}
P_PLURAL, P_ADJECTIVE, P_PP, P_INTRANSITIVE = 0.5, 0.3, 0.4, 0.5
END = "."  # every sentence ends with " ."; a corpus puts one sentence per line


def _choose(rng: random.Random, table: dict[str, float]) -> str:
    """One key of `table`, drawn with the given probabilities."""
    return rng.choices(list(table), weights=list(table.values()))[0]


def _noun_phrase(rng: random.Random) -> list[str]:
    """determiner [adjective] noun, with a number drawn for this phrase."""
    num = "pl" if rng.random() < P_PLURAL else "sg"
    words = [_choose(rng, DETERMINERS[num])]
    if rng.random() < P_ADJECTIVE:
        words.append(_choose(rng, ADJECTIVES))
    return words + [_choose(rng, NOUNS[num])]


def grammar_sentence(rng: random.Random) -> str:
    """One sentence: subject [preposition + noun phrase] verb [object] '.'."""
    subject = _noun_phrase(rng)
    num = "pl" if subject[-1] in NOUNS["pl"] else "sg"
    words = list(subject)
    if rng.random() < P_PP:
        words += [_choose(rng, PREPOSITIONS)] + _noun_phrase(rng)
    if rng.random() < P_INTRANSITIVE:
        words.append(_choose(rng, INTRANSITIVE[num]))
    else:
        words += [_choose(rng, TRANSITIVE[num])] + _noun_phrase(rng)
    return " ".join(words + [END])


def grammar_sentences(n: int, seed: int = 0) -> list[str]:
    """n sentences of the toy grammar; the same (n, seed) always gives the same list."""
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    rng = random.Random(f"grammar/{seed}")
    return [grammar_sentence(rng) for _ in range(n)]


def grammar_corpus(n: int, seed: int = 0) -> str:
    """n sentences, one per line, each line ending in a newline: the text a model trains on."""
    return "".join(s + "\n" for s in grammar_sentences(n, seed))


def _number(noun: str) -> str | None:
    """'sg' or 'pl' for a noun of the grammar, None for anything else."""
    return next((num for num, table in NOUNS.items() if noun in table), None)


def _parse_noun_phrase(words: list[str], i: int) -> tuple[int, str, float]:
    """Parse det [adj] noun at words[i:]; return (next index, number, log-probability)."""
    if i >= len(words) or not any(words[i] in DETERMINERS[n] for n in DETERMINERS):
        got = words[i] if i < len(words) else "the end of the sentence"
        raise ValueError(f"expected a determiner, got {got!r}")
    det, j = words[i], i + 1
    adj = words[j] if j < len(words) and words[j] in ADJECTIVES else None
    j += adj is not None
    num = _number(words[j]) if j < len(words) else None
    if num is None:
        got = words[j] if j < len(words) else "the end of the sentence"
        raise ValueError(f"expected a noun after {det!r}, got {got!r}")
    if det not in DETERMINERS[num]:
        raise ValueError(
            f"{det!r} cannot go with the {'plural' if num == 'pl' else 'singular'} "
            f"noun {words[j]!r}"
        )
    logp = math.log(P_PLURAL if num == "pl" else 1 - P_PLURAL) + math.log(DETERMINERS[num][det])
    logp += math.log(P_ADJECTIVE * ADJECTIVES[adj]) if adj else math.log(1 - P_ADJECTIVE)
    return j + 1, num, logp + math.log(NOUNS[num][words[j]])


def _parse(sentence: str) -> float:
    """The sentence's exact log-probability under the grammar, or ValueError naming the fault."""
    if not sentence.endswith(" " + END):
        raise ValueError("a sentence must end with ' .'")
    words = sentence[: -len(END) - 1].split(" ")
    i, num, logp = _parse_noun_phrase(words, 0)
    if i < len(words) and words[i] in PREPOSITIONS:
        prep = words[i]
        i, _, lp = _parse_noun_phrase(words, i + 1)
        logp += math.log(P_PP * PREPOSITIONS[prep]) + lp
    else:
        logp += math.log(1 - P_PP)
    if i >= len(words):
        raise ValueError("the sentence has no verb")
    verb = words[i]
    forms = {n: (INTRANSITIVE[n], TRANSITIVE[n]) for n in ("sg", "pl")}
    other = "pl" if num == "sg" else "sg"
    if verb not in forms[num][0] and verb not in forms[num][1]:
        if verb in forms[other][0] or verb in forms[other][1]:
            raise ValueError(
                f"the verb {verb!r} does not agree with the "
                f"{'plural' if num == 'pl' else 'singular'} subject"
            )
        raise ValueError(f"expected a verb, got {verb!r}")
    if verb in forms[num][0]:
        logp += math.log(P_INTRANSITIVE * INTRANSITIVE[num][verb])
        i += 1
    else:
        logp += math.log((1 - P_INTRANSITIVE) * TRANSITIVE[num][verb])
        i, _, lp = _parse_noun_phrase(words, i + 1)
        logp += lp
    if i != len(words):
        raise ValueError(f"unexpected words after the sentence is complete: {words[i:]!r}")
    return logp


def sentence_error(sentence: str) -> str:
    """'' if the grammar can produce `sentence`, else a short reason it cannot."""
    try:
        _parse(sentence)
    except ValueError as err:
        return str(err)
    return ""


def is_valid_sentence(sentence: str) -> bool:
    """True if the grammar can produce `sentence` (words, word order and agreement all right)."""
    return sentence_error(sentence) == ""


def sentence_log_prob(sentence: str) -> float:
    """Exact natural-log probability that the grammar produces `sentence` (-inf if it cannot)."""
    try:
        return _parse(sentence)
    except ValueError:
        return float("-inf")


def validity_rate(texts: Sequence[str]) -> float:
    """Fraction of generated texts whose *first line* is a valid sentence (0 for no texts)."""
    if len(texts) == 0:
        return 0.0
    return sum(is_valid_sentence(t.split("\n", 1)[0]) for t in texts) / len(texts)


def subject_prefix(sentence: str) -> str:
    """The words before the verb, with a trailing space: 'the cats near a dog sleep .' -> 'the cats near a dog '."""
    words = sentence.split(" ")
    verbs = {v for table in (*INTRANSITIVE.values(), *TRANSITIVE.values()) for v in table}
    i = next((i for i, w in enumerate(words) if w in verbs), None)
    if i is None:
        raise ValueError(f"no verb of the grammar in {sentence!r}")
    return " ".join(words[:i]) + " "


def best_completion(prefix: str) -> tuple[str, float]:
    """The grammar's most likely way to finish a sentence after its subject, found exhaustively.

    prefix is a subject with its prepositional phrase, ending in a space (from `subject_prefix`),
    so the verb must come next. Returns (completion, exact log p(completion | prefix)); the
    completion ends with ' .' (no newline). Every verb and every object noun phrase is tried.
    """
    objects = [
        " ".join(w for w in (det, adj, noun) if w)
        for num in ("sg", "pl")
        for det in DETERMINERS[num]
        for adj in (None, *ADJECTIVES)
        for noun in NOUNS[num]
    ]
    verbs = [v for num in ("sg", "pl") for v in INTRANSITIVE[num]]
    candidates = [f"{v} {END}" for v in verbs]
    candidates += [
        f"{v} {o} {END}" for num in ("sg", "pl") for v in TRANSITIVE[num] for o in objects
    ]
    scored = [(sentence_log_prob(prefix + c), c) for c in candidates]
    best_logp, best = max(scored)
    if best_logp == float("-inf"):
        raise ValueError(f"{prefix!r} is not the start of a sentence of the grammar")
    prefix_logp = math.log(sum(math.exp(lp) for lp, _ in scored if lp > float("-inf")))
    return best, best_logp - prefix_logp


# ----------------------------------------------------------------------------- real prose


def pydoc_text() -> str:
    """CPython's own documentation topics (`pydoc_data.topics`), sorted by topic, as one string.

    Read from the running Python installation; its exact size depends on the Python version.
    """
    try:
        from pydoc_data.topics import topics
    except ImportError as err:  # pragma: no cover - CPython always ships it
        raise RuntimeError(
            "this Python installation has no pydoc_data package (CPython ships it in the "
            "standard library; some minimal Linux packages leave it out): install the full "
            "standard library, e.g. `apt install libpython3-stdlib`"
        ) from err
    return "\n".join(topics[key] for key in sorted(topics))


def split_text(text: str, val_fraction: float = 0.1) -> tuple[str, str]:
    """(train, val): the first (1 - val_fraction) of the text, then the rest, not shuffled.

    A contiguous split keeps whole paragraphs on one side, so validation text is truly unseen.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    cut = int(len(text) * (1.0 - val_fraction))
    return text[:cut], text[cut:]


def line_starts(ids: torch.Tensor, newline_id: int) -> torch.Tensor:
    """Positions of the newlines in (N,) ids: windows starting there begin with a whole line."""
    return (ids == newline_id).nonzero()[:, 0]


def encode_text(text: str, vocab: CharVocab) -> torch.Tensor:
    """A string -> (N,) int64 ids; characters outside the vocabulary become UNK."""
    return torch.tensor(vocab.encode(text), dtype=torch.long)


__all__ = [
    "best_completion",
    "encode_text",
    "grammar_corpus",
    "grammar_sentence",
    "grammar_sentences",
    "is_valid_sentence",
    "line_starts",
    "pydoc_text",
    "sentence_error",
    "sentence_log_prob",
    "split_text",
    "subject_prefix",
    "validity_rate",
]
