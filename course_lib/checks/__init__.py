"""Checks for the notebook exercises: run `check_<name>(your_function)` after each exercise.

A check runs your function on a few seeded cases with course_lib's own reference switched off,
compares it with an independently computed answer at 1e-5 and, when it is wrong, names the
likely mistake ("softmax over the query axis", "mask polarity reversed") with a hint. On
success it prints one line. `progress("03")` runs the checks of notebook 03 whose functions
your notebook defines and lists them in the notebook's order.

Stuck? `hint("ex3_1")` prints the next level of a hint ladder for Exercise 3.1 (level 1 restates
the idea, level 2 names the operations and axes, the last level shows code);
`hint("ex3_1", level=2)` prints one level directly.

One module per notebook holds that notebook's checks and its `LADDERS` (`checks/self_attention.py`
for `03_self_attention.ipynb`); `_machinery` runs a learner's function and compares,
`_references` keeps course_lib's references out, `_hints` holds the shared hint texts and
`_answers` the independent expected answers.

Policy on references: a check switches off course_lib's reference for its own exercise, and the
checks' answer key; the reference of an *earlier* exercise is allowed only where the prompt says
the exercise builds on it (3.2 may call scaled_dot_product_attention; 4.3 it and split/merge
heads; 5.3 those and the RoPE pieces of course_lib.positional). A refused call says so in its message.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import os
import re
import types
from collections.abc import Callable
from typing import Any

from . import (
    _machinery,
    attention_in_rnns,
    cross_attention,
    efficiency,
    full_transformer,
    gpt_decoder_only,
    masking,
    multi_head_attention,
    positional_encoding,
    rnn_bottlenecks,
    self_attention,
    transformer_block,
)
from ._layer_norm import check_layer_norm
from ._machinery import NOT_ATTEMPTED, reference_objects
from ._rope_attention import check_rope_self_attention
from .attention_in_rnns import check_additive_attention, check_decoder_step, check_dot_attention
from .cross_attention import check_cross_attention, check_field_attention
from .efficiency import check_cached_attention, check_online_softmax
from .full_transformer import check_beam_decode, check_greedy_decode, check_label_smoothed_loss
from .gpt_decoder_only import check_causal_lm_loss, check_top_k, check_top_p
from .masking import check_causal_mask, check_masked_softmax, check_padding_mask
from .multi_head_attention import check_merge_heads, check_multi_head_attention, check_split_heads
from .positional_encoding import check_rope, check_sinusoidal_encoding
from .rnn_bottlenecks import check_gradient_reach, check_rnn_cell, check_rnn_step_jacobian
from .self_attention import (
    check_scaled_dot_product_attention,
    check_self_attention,
    check_successor_projections,
)
from .transformer_block import check_encoder_layer, check_fixed_block

_MODULES = (
    rnn_bottlenecks,
    attention_in_rnns,
    self_attention,
    multi_head_attention,
    positional_encoding,
    masking,
    cross_attention,
    transformer_block,
    full_transformer,
    gpt_decoder_only,
    efficiency,
)

Check = Callable[[Any], None]

# notebook -> exercise -> (check, names a notebook may give the learner's function, first wins),
# each notebook's exercises in the order the notebook asks for them.
EXERCISES: dict[str, dict[str, tuple[Check, tuple[str, ...]]]] = {
    "01": {
        "rnn_cell": (check_rnn_cell, ("rnn_cell", "rnn_step")),
        "rnn_step_jacobian": (check_rnn_step_jacobian, ("rnn_step_jacobian",)),
        "gradient_reach": (check_gradient_reach, ("gradient_reach",)),
    },
    "02": {
        "additive_attention": (
            check_additive_attention,
            ("additive_attention", "bahdanau_attention"),
        ),
        "dot_attention": (check_dot_attention, ("dot_attention", "luong_attention")),
        "decoder_step": (check_decoder_step, ("decoder_step", "attention_decoder_step")),
    },
    "03": {
        "scaled_dot_product_attention": (
            check_scaled_dot_product_attention,
            ("attention", "scaled_dot_product_attention", "sdpa"),
        ),
        "self_attention": (check_self_attention, ("self_attention", "self_attention_layer")),
        "successor_projections": (check_successor_projections, ("successor_projections",)),
    },
    "04": {
        "split_heads": (check_split_heads, ("split_heads",)),
        "merge_heads": (check_merge_heads, ("merge_heads",)),
        "multi_head_attention": (
            check_multi_head_attention,
            ("multi_head_attention", "mha_forward"),
        ),
    },
    "05": {
        "sinusoidal_encoding": (check_sinusoidal_encoding, ("sinusoidal_encoding",)),
        "rope": (check_rope, ("rope", "apply_rotary")),
        "rope_self_attention": (check_rope_self_attention, ("rope_self_attention",)),
    },
    "06": {
        "padding_mask": (check_padding_mask, ("padding_mask",)),
        "causal_mask": (check_causal_mask, ("causal_mask",)),
        "masked_softmax": (check_masked_softmax, ("masked_softmax",)),
    },
    "07": {
        "cross_attention": (check_cross_attention, ("cross_attention_step", "cross_attention")),
        "field_attention": (check_field_attention, ("field_attention",)),
    },
    "08": {
        "encoder_layer": (check_encoder_layer, ("encoder_layer", "encoder_layer_forward")),
        "layer_norm": (check_layer_norm, ("layer_norm",)),
        "fixed_block": (check_fixed_block, ("fixed_block",)),
    },
    "09": {
        "label_smoothed_loss": (
            check_label_smoothed_loss,
            ("label_smoothed_loss", "smoothed_loss"),
        ),
        "greedy_decode": (check_greedy_decode, ("greedy_decode",)),
        "beam_decode": (check_beam_decode, ("beam_decode", "beam_search_decode")),
    },
    "10": {
        "causal_lm_loss": (check_causal_lm_loss, ("causal_lm_loss", "next_token_loss")),
        "top_k": (check_top_k, ("top_k_filter",)),
        "top_p": (check_top_p, ("top_p_filter", "nucleus_filter")),
    },
    "11": {
        "online_softmax": (check_online_softmax, ("online_softmax_update", "online_softmax")),
        "cached_attention": (check_cached_attention, ("cached_attention", "cached_attention_step")),
    },
}
# every exercise of the course, in course order
CHECKS: dict[str, tuple[Check, tuple[str, ...]]] = {
    name: entry for notebook in EXERCISES.values() for name, entry in notebook.items()
}

# exercise id ("ex3_1": notebook 3, its first exercise) <-> exercise name, in course order
EXERCISE_IDS: dict[str, str] = {
    f"ex{int(nb)}_{i}": name for nb, table in EXERCISES.items() for i, name in enumerate(table, 1)
}
# every notebook module's hint ladders, keyed by exercise id
LADDERS: dict[str, tuple[str, ...]] = {
    key: ladder for module in _MODULES for key, ladder in getattr(module, "LADDERS", {}).items()
}
_hint_level: dict[str, int] = {}  # the last level shown per exercise, so hint() walks up

__all__ = ["CHECKS", "EXERCISES", "EXERCISE_IDS", "LADDERS", "hint", "progress"] + sorted(
    check.__name__ for check, _ in CHECKS.values()
)


def _find(namespace: dict[str, Any], names: tuple[str, ...]) -> Callable[..., Any] | None:
    """The first learner-written function among `names`; course_lib's references don't count."""
    refs = reference_objects()
    for n in names:
        obj = namespace.get(n)
        if (inspect.isfunction(obj) or inspect.ismethod(obj)) and id(obj) not in refs:
            return obj
    return None


def _notebook_key(notebook: str | int) -> str:
    """'03' for 3, '3', '03' or '03_self_attention'; a clear error for anything else."""
    key = f"{int(notebook):02d}" if str(notebook).isdigit() else str(notebook)[:2]
    if key not in EXERCISES:
        raise ValueError(
            f"notebook {notebook!r} has no exercises; choose one of {', '.join(EXERCISES)}"
        )
    return key


def _run(check: Check, fn: Callable[..., Any]) -> tuple[str, str]:
    """(status, reason) of one check, its printed lines swallowed."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            check(fn)
        return "pass", ""
    except AssertionError as exc:
        reason = (str(exc).strip() or "failed").splitlines()[0]
        return ("not attempted", "") if reason.startswith(NOT_ATTEMPTED) else ("fail", reason)
    except Exception as exc:  # a broken check must not hide the rest of the table
        return "fail", f"the check itself raised {type(exc).__name__}: {exc}"


def progress(
    notebook: str | int | None = None, namespace: dict[str, Any] | None = None
) -> dict[str, tuple[str, str]]:
    """Run the checks of `notebook` ("03"), print a table in the notebook's order, return it.

    `namespace` defaults to the caller's globals (your notebook). Without `notebook` the
    notebook is inferred from the kernel's `__session__` / `__vsc_ipynb_file__`, or from the
    exercises whose functions the namespace defines when they all belong to one notebook;
    failing that, every exercise of the course is listed. The result maps each exercise to
    (status, reason): "pass", "fail" or "not attempted".
    """
    if namespace is None:
        caller = inspect.currentframe().f_back  # type: ignore[union-attr]
        namespace = caller.f_globals if caller is not None else {}
    if notebook is None:
        notebook = _notebook_of_caller(namespace)
    table = CHECKS if notebook is None else EXERCISES[_notebook_key(notebook)]
    results: dict[str, tuple[str, str]] = {}
    for exercise, (check, names) in table.items():
        fn = _find(namespace, names)
        results[exercise] = ("not attempted", "") if fn is None else _run(check, fn)
    symbols = {"pass": "✓ pass", "fail": "✗ fail", "not attempted": "– not attempted"}
    width = max(len(e) for e in results)
    print(f"{'exercise':<{width}}  status")
    for exercise, (status, reason) in results.items():
        line = f"{exercise:<{width}}  {symbols[status]}"
        print(f"{line}: {reason}" if reason else line)
    return results


def _exercise_number(name: str) -> str:
    """'3.1' for scaled_dot_product_attention."""
    key = next(k for k, n in EXERCISE_IDS.items() if n == name)
    return key[2:].replace("_", ".")


def hint(exercise: str, level: int | None = None) -> None:
    """Print the next level of `exercise`'s hint ladder, or the given `level`.

    `exercise` is an id such as "ex3_1" (Exercise 3.1). Level 1 restates the idea, level 2 is
    more concrete, the last level shows code; calling again walks up one level at a time.
    """
    key = str(exercise).strip().lower().replace(".", "_")
    key = key if key.startswith("ex") else f"ex{key}"
    if key not in LADDERS:
        match = re.match(r"ex(\d+)_", key)
        nb = match.group(1) if match else ""
        same = [k for k in LADDERS if nb and k.startswith(f"ex{nb}_")]
        choices = same or list(LADDERS)
        where = f"notebook {int(nb):02d}" if same else "the course"
        raise ValueError(
            f"no hints for exercise {exercise!r}; {where} has hints for: {', '.join(choices)}"
        )
    ladder = LADDERS[key]
    if level is None:
        level = min(_hint_level.get(key, 0) + 1, len(ladder))
    if not isinstance(level, int) or not 1 <= level <= len(ladder):
        raise ValueError(f"level must be 1 .. {len(ladder)} for {key}, got {level!r}")
    _hint_level[key] = max(_hint_level.get(key, 0), level)
    last = " (the last level: it shows code)" if level == len(ladder) else ""
    more = f"; hint({key!r}) again for level {level + 1}" if level < len(ladder) else ""
    sep = ":\n" if level == len(ladder) else ": "
    text = f"Hint {level}/{len(ladder)} for {key}{last}{sep}{ladder[level - 1]}"
    print(text + (f"\n({more[2:]})" if more else ""))  # printed only: no second, quoted copy


def _code_names(code: types.CodeType) -> set[str]:
    """Every global name a function's code (nested functions included) refers to."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


_blaming = False


def earlier_failure(check_name: str, fn: object) -> str:
    """' ...fix Exercise N.k first' when fn calls the learner's own earlier function that fails."""
    global _blaming
    code, space = getattr(fn, "__code__", None), getattr(fn, "__globals__", None)
    if _blaming or code is None or not isinstance(space, dict):
        return ""
    used = _code_names(code)
    refs = reference_objects()
    _blaming = True
    try:
        for exercise, (check, names) in CHECKS.items():
            if check.__name__ == check_name:
                break  # only earlier exercises
            for n in names:
                other = space.get(n)
                if n not in used or other is fn or not inspect.isfunction(other):
                    continue
                if id(other) in refs:
                    continue
                status, reason = _run(check, other)
                if status == "fail":
                    number = _exercise_number(exercise)
                    return (
                        f"\nYour function calls your `{n}` from Exercise {number}, which fails "
                        f"its own check ({reason}). Fix Exercise {number} first, then run this "
                        "check again."
                    )
    finally:
        _blaming = False
    return ""


def _notebook_of_caller(namespace: dict[str, Any]) -> str | None:
    """The notebook key ('03') a namespace belongs to, when it can be told."""
    for var in ("__session__", "__vsc_ipynb_file__", "__file__"):
        path = namespace.get(var)
        if isinstance(path, str):
            match = re.match(r"(\d\d)_", os.path.basename(path))
            if match and match.group(1) in EXERCISES:
                return match.group(1)
    found = {
        nb
        for nb, table in EXERCISES.items()
        for _, names in table.values()
        if _find(namespace, names) is not None
    }
    return found.pop() if len(found) == 1 else None


_machinery.earlier_failure_hook = earlier_failure
