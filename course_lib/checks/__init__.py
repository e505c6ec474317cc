"""Checks for the notebook exercises: run `check_<name>(your_function)` after each exercise.

A check runs your function on a few seeded cases with course_lib's own reference switched off,
compares it with an independently computed answer at 1e-5 and, when it is wrong, names the
likely mistake ("softmax over the query axis", "mask polarity reversed") with a hint. On
success it prints one line. `progress("03")` runs the checks of notebook 03 whose functions
your notebook defines and lists them in the notebook's order.

One module per notebook holds that notebook's checks (`checks/self_attention.py` for
`03_self_attention.ipynb`); `_machinery` runs a learner's function and compares, `_hints`
holds every hint text and `_answers` the independent expected answers.
"""

from __future__ import annotations

import contextlib
import inspect
import io
from collections.abc import Callable
from typing import Any

from ._machinery import NOT_ATTEMPTED, reference_objects
from .attention_in_rnns import check_additive_attention, check_dot_attention
from .cross_attention import check_cross_attention, check_cross_attention_mask
from .efficiency import check_kv_cache_step, check_online_softmax
from .full_transformer import check_greedy_decode, check_label_smoothed_loss
from .gpt_decoder_only import check_causal_lm_loss, check_top_k, check_top_p
from .masking import check_causal_mask, check_padding_mask
from .multi_head_attention import check_merge_heads, check_multi_head_attention, check_split_heads
from .positional_encoding import check_rope, check_sinusoidal_encoding
from .rnn_bottlenecks import check_rnn_cell, check_rnn_step_jacobian
from .self_attention import check_scaled_dot_product_attention, check_self_attention
from .transformer_block import check_encoder_layer, check_layer_norm

Check = Callable[[Any], None]

# notebook -> exercise -> (check, names a notebook may give the learner's function, first wins),
# each notebook's exercises in the order the notebook asks for them.
EXERCISES: dict[str, dict[str, tuple[Check, tuple[str, ...]]]] = {
    "01": {
        "rnn_cell": (check_rnn_cell, ("rnn_cell", "rnn_step")),
        "rnn_step_jacobian": (check_rnn_step_jacobian, ("rnn_step_jacobian",)),
    },
    "02": {
        "additive_attention": (
            check_additive_attention,
            ("additive_attention", "bahdanau_attention"),
        ),
        "dot_attention": (check_dot_attention, ("dot_attention", "luong_attention")),
    },
    "03": {
        "scaled_dot_product_attention": (
            check_scaled_dot_product_attention,
            ("attention", "scaled_dot_product_attention", "sdpa"),
        ),
        "self_attention": (check_self_attention, ("self_attention", "self_attention_layer")),
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
    },
    "06": {
        "padding_mask": (check_padding_mask, ("padding_mask",)),
        "causal_mask": (check_causal_mask, ("causal_mask",)),
    },
    "07": {
        "cross_attention": (check_cross_attention, ("cross_attention_step", "cross_attention")),
        "cross_attention_mask": (check_cross_attention_mask, ("cross_attention_mask",)),
    },
    "08": {
        "encoder_layer": (check_encoder_layer, ("encoder_layer", "encoder_layer_forward")),
        "layer_norm": (check_layer_norm, ("layer_norm",)),
    },
    "09": {
        "label_smoothed_loss": (
            check_label_smoothed_loss,
            ("label_smoothed_loss", "smoothed_loss"),
        ),
        "greedy_decode": (check_greedy_decode, ("greedy_decode",)),
    },
    "10": {
        "causal_lm_loss": (check_causal_lm_loss, ("causal_lm_loss", "next_token_loss")),
        "top_k": (check_top_k, ("top_k_filter",)),
        "top_p": (check_top_p, ("top_p_filter", "nucleus_filter")),
    },
    "11": {
        "online_softmax": (check_online_softmax, ("online_softmax_update", "online_softmax")),
        "kv_cache_step": (check_kv_cache_step, ("kv_cache_step", "append_to_cache")),
    },
}
# every exercise of the course, in course order
CHECKS: dict[str, tuple[Check, tuple[str, ...]]] = {
    name: entry for notebook in EXERCISES.values() for name, entry in notebook.items()
}

__all__ = ["CHECKS", "EXERCISES", "progress"] + sorted(
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
    """Run the checks of `notebook` ("03"; all notebooks when None), print a table, return it.

    `namespace` defaults to the caller's globals (your notebook). The result maps each
    exercise, in the notebook's order, to (status, reason): "pass", "fail" or "not attempted".
    """
    if namespace is None:
        caller = inspect.currentframe().f_back  # type: ignore[union-attr]
        namespace = caller.f_globals if caller is not None else {}
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
