"""Specification: no failure message a check can print contains a line of the reference solution,
or any other piece of code.

Graded feedback names the mistake and the concept in words (issue #14, rule 2). Code belongs to
the last level of an exercise's hint ladder (`LADDERS`), which the learner asks for, never to a
failure message.

What counts as "a message a check can print": every module-level string constant, and every
string value (nested dicts included) of a module-level dict, of every module in
`course_lib/checks/` (`_hints.py` included). Left out: `LADDERS` (its last level shows code by
design; its earlier levels are held to rule 2 below by their own test, and
tests/test_checks_hints.py keeps them free of solution lines), dunder names
such as `__all__`, and aliases (`H = DECODING_HINTS` is checked once, under its first name).

Besides, the literal text of every `raise` in the checks' functions (the constant parts of its
f-strings, joined) is held to both rules, so a message written inline is covered too.

Two rules, each parametrised per checks module, so a failure names the module and lists every
offending string with its key:

1. No solution line. The solution lines are the lines of every `### BEGIN SOLUTION` ...
   `### END SOLUTION` region of every notebook, cut and normalised exactly as the student-build
   specification does (tests/test_student_build.py, `solution_fragments`): comments dropped,
   whitespace removed, quotes unified; besides the whole line, what an assignment assigns and what
   a `return` returns; trivial pieces left out (under 15 characters, `pass`, imports, bare names,
   bare guards and loop headers, a given function's call on bare names). `def` and `class`
   lines, and decorators, are left out too: they state the interface the prompt hands over.
   A message leaks when its normalised text contains a normalised solution fragment.

2. No code fragment, even one that is not a solution line. A message contains code when it has
   one of the patterns in `CODE_PATTERNS`:
   - a library function or attribute: `torch.`, `F.`, `nn.`, `math.`, `np.` followed by a
     lower-case name (`torch.tril`, `F.cross_entropy`, `math.sqrt`); dtype names (`torch.long`,
     `torch.bool`, ...) are requirements on the answer and allowed, and so are class names
     (`nn.LayerNorm`), which name a thing, not how to compute it;
   - a method call `.name(` (`.transpose(`, `.sum(`, `.all(`);
   - a tensor-library function called bare: `masked_fill(`, `scatter(`, `gather(`, `topk(`,
     `cumsum(`, `tril(`, `triu(`, `arange(`, `cat(`, `stack(`, `einsum(`, `matmul(`,
     `transpose(`, `reshape(`, `view(`, `unsqueeze(`, `squeeze(`, `log_softmax(`;
   - the matrix-product operator between operands (`x @ w_q`);
   - a slice in an index (`logits[:, -1]`, `x[..., 0::2]`);
   - a tensor-library keyword argument with a value (`dim=-1`, `keepdim=True`,
     `descending=True`, `diagonal=0`, `is_causal=True`); a format field (`dim={dim}`, which
     reports what the learner did) is not a value;
   - an augmented assignment (`done |= ...`, `acc += ...`);
   - a Python builtin call that writes a value or a loop: `float(`, `range(`, `zip(`,
     `enumerate(`, `sorted(`;
   - a tensor attribute: `.T`, `.mT`, `.shape`.
   Not code, and so allowed: mathematical notation (`exp(m_prev - m_new)`, `softmax over the
   last axis`, `pos / 10000^(2i/d_model)`, `(1 - eps) * one_hot + eps / V`), shapes
   (`(B, H, L, d_k)`, `(len(out_fields), len(src_fields))`), single-element indices of the
   maths (`logits[b, t]`), names of concepts, axes, arguments and variables (`pad_id`, `the
   last axis, the vocabulary`, `model.pad_id`), and the value `-inf`.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import nbformat
import pytest
from test_student_build import code_lines, normal, regions, solution_fragments

ROOT = Path(__file__).resolve().parents[1]
CHECKS_DIR = ROOT / "course_lib" / "checks"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
MODULES = sorted(p.stem for p in CHECKS_DIR.glob("*.py"))
NOT_MESSAGES = {"LADDERS"}  # the hint ladders: the last level shows code by design

TORCH_FUNCTIONS = (
    "masked_fill|scatter|gather|topk|cumsum|tril|triu|arange|cat|stack|einsum|matmul|"
    "transpose|reshape|view|unsqueeze|squeeze|log_softmax"
)
DTYPES = "long|int64|int32|int16|int8|uint8|bool|float|float16|float32|float64|double|half|bfloat16"
KEYWORDS = (
    "dim|keepdim|descending|diagonal|is_causal|dtype|attn_mask|largest|ignore_index|"
    "label_smoothing|as_tuple"
)
CODE_PATTERNS = {
    "a library function": rf"\b(?:torch|F|nn|math|np)\.(?!(?:{DTYPES})\b)[a-z_]\w*",
    "a method call": r"(?<!torch)(?<!\bF)(?<!\bnn)(?<!math)(?<!\bnp)\.[A-Za-z_]\w*\(",
    "a tensor-library function": rf"(?<![\w.])(?:{TORCH_FUNCTIONS})_?\(",
    "the @ operator": r"[\w)\]]\s*@\s*[\w(]",
    "a slice": r"\w\[[^\]]*:[^\]]*\]",
    "a keyword argument": rf"\b(?:{KEYWORDS})\s*=\s*(?![{{\s=])",
    "an augmented assignment": r"\w\s*(?:\|=|&=|\+=|-=|\*=|/=)",
    "a builtin call": r"\b(?:float|range|zip|enumerate|sorted)\(",
    "a tensor attribute": r"\w\.(?:T|mT|shape)\b",
}


def _module(stem: str):
    return importlib.import_module("course_lib.checks" + ("" if stem == "__init__" else f".{stem}"))


def _assigned_names(stem: str) -> list[str]:
    """The names a module assigns at its top level, in source order (imports excluded)."""
    tree = ast.parse((CHECKS_DIR / f"{stem}.py").read_text())
    names = []
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        else:
            continue
        names += [t.id for t in targets if isinstance(t, ast.Name)]
    return names


def _strings(where: str, value: object):
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(f"{where}[{key!r}]", item)


def messages(stem: str) -> dict[str, str]:
    """Every message string of one checks module: `module.NAME[key]` -> text (module doc)."""
    module, seen, found = _module(stem), set(), {}
    for name in _assigned_names(stem):
        value = getattr(module, name)
        if name in NOT_MESSAGES or name.startswith("__") or id(value) in seen:
            continue
        seen.add(id(value))
        found.update(_strings(f"{stem}.{name}", value))
    return found


def solution_lines() -> dict[str, str]:
    """Normalised solution fragment -> 'notebook: original line', over every notebook."""
    found: dict[str, str] = {}
    for path in NOTEBOOKS:
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type != "code":
                continue
            for block in regions(cell.source):
                for line in code_lines(block):
                    if line.strip().startswith(("def ", "class ", "@")):
                        continue
                    for fragment in solution_fragments(line):
                        found.setdefault(fragment, f"{path.name[:2]}: {line.strip()}")
    return found


def code_fragments(text: str) -> list[str]:
    """'<kind> <match>' for every code pattern found in a message (module doc, rule 2)."""
    return [
        f"{kind} {m.group(0)!r}"
        for kind, pattern in CODE_PATTERNS.items()
        for m in re.finditer(pattern, text)
    ]


def markdown_leaks(number: str) -> list[str]:
    """'cell i: line' for each solution line (of any notebook) in notebook `number`'s markdown."""
    lines = solution_lines()
    (path,) = [p for p in NOTEBOOKS if p.name.startswith(f"{number}_")]
    return [
        f"cell {i}: {lines[fragment]}"
        for i, cell in enumerate(nbformat.read(path, as_version=4).cells)
        if cell.cell_type == "markdown"
        for fragment in lines
        if fragment in normal(cell.source)
    ]


@pytest.fixture(scope="module")
def solutions() -> dict[str, str]:
    return solution_lines()


# ----------------------------------------------------------------------------- the rules, pinned


def test_every_checks_module_and_the_solutions_are_found(solutions):
    assert {"_hints", "full_transformer", "gpt_decoder_only", "efficiency"} <= set(MODULES)
    assert len(MODULES) >= 15 and len(NOTEBOOKS) >= 11
    assert len(solutions) > 100
    assert normal("torch.tanh(x @ W_ih.T + b_ih + h @ W_hh.T + b_hh)") in solutions
    assert any("_HINTS[" in w for w in messages("full_transformer"))
    assert not any(".LADDERS" in w for stem in MODULES for w in messages(stem))


def test_module_strings_dict_values_and_aliases_are_collected(tmp_path):
    texts = messages("efficiency")
    assert "efficiency._NAN" in texts  # a private module-level constant is a message too
    assert "efficiency.EFFICIENCY_HINTS['ca_error']" in texts
    assert not any(w.startswith("efficiency.E[") for w in texts)  # E = EFFICIENCY_HINTS
    assert not any(w.startswith("efficiency.HINTS") for w in texts)  # imported, not assigned


@pytest.mark.parametrize(
    "text",
    [
        "scores = q @ k.transpose(-2, -1) has shape (..., L_q, L_k)",
        "off by one: use torch.tril(..., diagonal=0)",
        "project with x @ w_q",
        "keep a done mask with done |= next == eos",
        "read logits[:, -1], the newest position",
        "pair x[..., 0::2] with x[..., 1::2]",
        "set them to float('-inf')",
        "the running max must be the max with keepdim=True",
        "fill the hidden positions with masked_fill(~keep, -inf)",
        "stop when done.all()",
        "PyTorch's F.cross_entropy wants the classes on axis 1",
        "divide by math.sqrt(d_k)",
        "the product with w.T",
        "the width is q.shape[-1]",
    ],
)
def test_code_in_a_message_is_flagged(text):
    assert code_fragments(text), text


@pytest.mark.parametrize(
    "text",
    [
        "softmax over the wrong axis (dim={dim}): each query's weights sum to 1 over the keys",
        "multiply the old accumulator by exp(m_prev - m_new): the old max over the new",
        "the angle is pos / 10000^(2i/d_model); sin on even dimensions, cos on odd ones",
        "(1 - eps) * one_hot + eps / V over all V tokens",
        "loss = mean over b and t < T-1 of -log softmax(logits[b, t])[tokens[b, t + 1]]",
        "return a (B, T) tensor of token ids (torch.long); PAD (model.pad_id) after EOS",
        "the biased variance (divide by D, as nn.LayerNorm) was right",
        "one row per output field: (len(out_fields), len(src_fields))",
        "removed tokens get a logit of -inf, probability 0 after the softmax",
        "mask polarity reversed: True means 'may attend', the last axis, the keys",
        "q·kᵀ / √d_k, with d_k = D / num_heads",
        "e.g. a lower-triangular mask",
    ],
)
def test_notation_and_concept_words_are_not_flagged(text):
    assert not code_fragments(text), code_fragments(text)


# ----------------------------------------------------------------------------- the real messages


@pytest.mark.parametrize("stem", MODULES)
def test_no_message_contains_a_solution_line(stem, solutions):
    leaks = [
        f"{where}: shows {solutions[fragment]!r}"
        for where, text in messages(stem).items()
        for fragment in solutions
        if fragment in normal(text)
    ]
    assert not leaks, f"course_lib/checks/{stem}.py:\n" + "\n".join(leaks)


@pytest.mark.parametrize("stem", MODULES)
def test_no_message_contains_code(stem):
    found = {where: code_fragments(text) for where, text in messages(stem).items()}
    offending = [f"{where}: {', '.join(hits)}" for where, hits in found.items() if hits]
    assert not offending, f"course_lib/checks/{stem}.py:\n" + "\n".join(offending)


# each notebook's module holds its ladders (the package's LADDERS is their union)
@pytest.mark.parametrize(
    "stem", [s for s in MODULES if "LADDERS" in _assigned_names(s) and s != "__init__"]
)
def test_no_hint_level_before_the_last_contains_code(stem):
    ladders = _module(stem).LADDERS
    offending = [
        f"{stem}.LADDERS[{exercise!r}] level {level}: {', '.join(hits)}"
        for exercise, ladder in ladders.items()
        for level, text in enumerate(ladder[:-1], 1)
        if (hits := code_fragments(text))
    ]
    assert not offending, f"course_lib/checks/{stem}.py:\n" + "\n".join(offending)


def raised_texts(stem: str) -> dict[str, str]:
    """'module line N' -> the literal text of each `raise` in a checks module (f-string fields out)."""
    found = {}
    for node in ast.walk(ast.parse((CHECKS_DIR / f"{stem}.py").read_text())):
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            parts = [
                sub.value
                for arg in node.exc.args
                for sub in ast.walk(arg)
                if isinstance(sub, ast.Constant) and isinstance(sub.value, str)
            ]
            if parts:
                found[f"{stem} line {node.lineno}"] = " ".join(parts)
    return found


def test_raised_texts_are_collected():
    texts = raised_texts("_machinery")
    assert any("NotImplementedError" in t for t in texts.values())


@pytest.mark.parametrize("stem", MODULES)
def test_no_inline_message_contains_code_or_a_solution_line(stem, solutions):
    offending = [
        f"{where}: {', '.join(hits)}"
        for where, text in raised_texts(stem).items()
        if (hits := code_fragments(text) + [solutions[f] for f in solutions if f in normal(text)])
    ]
    assert not offending, f"course_lib/checks/{stem}.py:\n" + "\n".join(offending)
