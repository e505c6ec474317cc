"""The machinery behind `course_lib.checks`: run a learner's function and explain its mistakes.

A check calls the learner's function with course_lib's reference implementations switched off,
turns any exception into a short message with a hint, and compares the result with an
independently computed expected value. When they differ it compares the result with the outputs
of known-wrong variants, so the message can name the likely mistake instead of a raw difference.
"""

from __future__ import annotations

import functools
import importlib
import linecache
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from ..utils import fmt_shape

ATOL = 1e-5  # absolute and relative tolerance of every comparison
RTOL = 1e-5

# Reference implementations a learner must not call while their exercise is being checked.
# Add new modules or names here; a module that does not exist yet is skipped.
REFERENCES: dict[str, tuple[str, ...]] = {
    "course_lib.attention": (
        "scaled_dot_product_attention",
        "split_heads",
        "merge_heads",
        "MultiHeadAttention",
    ),
    "course_lib.masks": ("padding_mask", "causal_mask", "decoder_mask"),
    "course_lib.positional": (
        "sinusoidal_encoding",
        "SinusoidalPositionalEncoding",
        "apply_rope",
        "rope_angles",
        "RotaryEmbedding",
    ),
    "course_lib.sampling": (
        "top_k_filter",
        "top_p_filter",
        "filter_logits",
        "next_token_probs",
        "sample_next",
    ),
    "course_lib.rnn": (
        "rnn_cell_step",
        "rnn_step_jacobian",
        "AdditiveAttention",
        "DotAttention",
    ),
    "course_lib.tiled_attention": (
        "online_softmax_step",
        "online_softmax_forward",
        "online_softmax_attention",
    ),
}

Mistake = tuple[str, Callable[[], Any]]  # (hint naming the mistake, thunk computing its output)

NOT_ATTEMPTED = "Exercise not attempted yet"


def _stub(qualname: str) -> Callable[..., Any]:
    """A stand-in for a reference implementation that refuses to answer."""

    def disabled(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(
            f"your function called course_lib's reference `{qualname}`; write it yourself "
            "(the check switches the reference off while it runs your code)"
        )

    return disabled


def reference_objects(allow: Iterable[str] = ()) -> dict[int, tuple[Any, str]]:
    """id -> (object, qualified name) of every reference implementation not in `allow`."""
    allowed = set(allow)
    found: dict[int, tuple[Any, str]] = {}
    for modname, names in REFERENCES.items():
        try:
            module = importlib.import_module(modname)
        except ImportError:
            continue
        for name in names:
            qualname = f"{modname}.{name}"
            obj = getattr(module, name, None)
            if obj is not None and qualname not in allowed:
                found[id(obj)] = (obj, qualname)
    return found


@contextmanager
def reference_disabled(
    allow: Iterable[str] = (), namespaces: Iterable[dict[str, Any]] = ()
) -> Iterator[None]:
    """Make course_lib's reference implementations raise while the block runs.

    Patches every name bound to a reference object (found by identity, so aliases count too)
    in every loaded course_lib module, in `__main__` and in any extra `namespaces` (e.g. the
    learner function's globals); everything is restored on exit.
    """
    refs = reference_objects(allow)
    modules = [m for n, m in list(sys.modules.items()) if n.partition(".")[0] == "course_lib"]
    spaces = [vars(m) for m in (*modules, sys.modules.get("__main__")) if m is not None]
    spaces.extend(namespaces)
    patched: list[tuple[dict[str, Any], str, Any]] = []
    seen: set[int] = set()
    try:
        for space in spaces:
            if id(space) in seen:
                continue
            seen.add(id(space))
            for key, value in list(space.items()):
                hit = refs.get(id(value))
                if hit is not None and hit[0] is value:
                    patched.append((space, key, value))
                    space[key] = _stub(hit[1])
        yield
    finally:
        for space, key, value in reversed(patched):
            space[key] = value


def fn_name(fn: Callable[..., Any]) -> str:
    """The learner function's name, for messages."""
    return getattr(fn, "__name__", type(fn).__name__)


def require_callable(fn: Any, check: str) -> None:
    """Fail with a clear message if the check was given something other than a function."""
    if not callable(fn):
        raise AssertionError(
            f"{check} expects your function itself, e.g. `check_{check}(my_function)`, "
            f"but got a {type(fn).__name__}; pass the function without calling it"
        )


def _where(exc: BaseException, fn: Callable[..., Any]) -> str:
    """' (line N of your code: `...`)' for the deepest frame in the learner's file, if any."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return ""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == code.co_filename]
    if not frames:
        return ""
    frame = frames[-1]
    line = (frame.line or linecache.getline(frame.filename, frame.lineno or 0)).strip()
    return f" (at line {frame.lineno} of your code: `{line}`)" if line else ""


def call_learner(
    fn: Callable[..., Any],
    label: str,
    args: Sequence[Any],
    error_hint: str,
    allow: Iterable[str] = (),
) -> Any:
    """Call fn(*args) on copies of the inputs, references disabled; explain any exception."""
    args = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
    namespaces = [fn.__globals__] if isinstance(getattr(fn, "__globals__", None), dict) else []
    with reference_disabled(allow, namespaces):
        try:
            return fn(*args)
        except NotImplementedError:
            raise AssertionError(
                f"{NOT_ATTEMPTED}: `{fn_name(fn)}` still raises NotImplementedError. "
                "Replace the `raise NotImplementedError` line with your code, run that cell, "
                "then run this check again."
            ) from None
        except AssertionError:
            raise
        except Exception as exc:
            tb = exc.__traceback__
            if isinstance(exc, TypeError) and tb is not None and tb.tb_next is None:
                error_hint = (  # raised by the call itself: the signature does not fit
                    f"the check calls your function with {len(args)} positional arguments, "
                    f"{_describe(args)}; make its parameters match the exercise's signature"
                )
            raise AssertionError(
                f"{label}: your function raised {type(exc).__name__}: {exc}{_where(exc, fn)}\n"
                f"Hint: {error_hint}"
            ) from None


def _describe(args: Sequence[Any]) -> str:
    """'(tensor (2, 4, 8), 3)': the arguments a check passes, for messages."""
    parts = []
    for a in args:
        if isinstance(a, torch.Tensor):
            kind = "bool tensor" if a.dtype == torch.bool else "tensor"
            parts.append(f"{kind} {fmt_shape(a.shape)}")
        else:
            parts.append(type(a).__name__ if isinstance(a, torch.nn.Module) else repr(a))
    return "(" + ", ".join(parts) + ")"


def as_tensors(value: Any, label: str, names: Sequence[str], hint: str = "") -> list[torch.Tensor]:
    """Check that `value` is one tensor (one name) or a tuple of len(names) tensors."""
    want = names[0] if len(names) == 1 else "a tuple (" + ", ".join(names) + ")"
    items = [value] if len(names) == 1 else value
    if len(names) > 1 and (not isinstance(value, tuple | list) or len(value) != len(names)):
        got = type(value).__name__
        if isinstance(value, tuple | list):
            got = f"a {got} of {len(value)} items"
        raise AssertionError(f"{label}: expected {want}, got {got}. {hint}".rstrip())
    for name, item in zip(names, items, strict=True):
        if not isinstance(item, torch.Tensor):
            raise AssertionError(
                f"{label}: {name} should be a torch.Tensor, got {type(item).__name__}. {hint}".rstrip()
            )
    return [t.detach().cpu() for t in items]


def require_bool_mask(label: str, mask: torch.Tensor, right: torch.Tensor) -> None:
    """Raise if a mask is not boolean, saying whether its values were otherwise right."""
    if mask.dtype == torch.bool:
        return
    base = (
        f"{label}: the mask has dtype {mask.dtype}; the course convention is a bool mask, "
        "True = may attend (as in F.scaled_dot_product_attention)."
    )
    values = mask.double()
    if torch.isinf(values).any():
        raise AssertionError(
            f"{base} Yours is an additive float mask (0 / -inf); build a bool one instead "
            "(an additive mask converts with `mask == 0`)."
        )
    if torch.equal(values, right.double()):
        raise AssertionError(f"{base} Your values are right: make it bool, e.g. with `.bool()`.")
    raise AssertionError(f"{base} Build it from comparisons or with dtype=torch.bool.")


def _close(actual: torch.Tensor, expected: torch.Tensor) -> bool:
    """Same shape and values: exactly for bool tensors, within ATOL/RTOL for numbers."""
    if actual.shape != expected.shape:
        return False
    if expected.dtype == torch.bool or actual.dtype == torch.bool:
        return actual.dtype == expected.dtype and torch.equal(actual, expected)
    return torch.allclose(actual.double(), expected.double(), rtol=RTOL, atol=ATOL, equal_nan=True)


def _all_close(actual: Sequence[torch.Tensor], expected: Any) -> bool:
    """_close for each pair; `expected` may be one tensor or a sequence of them."""
    exp = [expected] if isinstance(expected, torch.Tensor) else list(expected)
    if len(exp) != len(actual) or not all(isinstance(e, torch.Tensor) for e in exp):
        return False
    return all(_close(a, e.detach().cpu()) for a, e in zip(actual, exp, strict=True))


def compare(
    label: str,
    actual: Sequence[torch.Tensor],
    expected: Sequence[torch.Tensor],
    names: Sequence[str],
    mistakes: Iterable[Mistake] = (),
    shape_hint: str = "",
    value_hint: str = "",
) -> None:
    """Pass silently if actual matches expected; else raise naming the mistake it matches."""
    if _all_close(actual, expected):
        return
    for hint, wrong in mistakes:
        try:
            candidate = wrong()
        except Exception:  # a variant that cannot run on this case cannot be the mistake
            continue
        if _all_close(actual, candidate):
            raise AssertionError(f"{label}: {hint}")
    for name, a, e in zip(names, actual, expected, strict=True):
        if a.shape != e.shape:
            raise AssertionError(
                f"{label}: {name} should have shape {fmt_shape(e.shape)}, "
                f"got {fmt_shape(a.shape)}. {shape_hint}".rstrip()
            )
    for name, a, e in zip(names, actual, expected, strict=True):
        if _close(a, e):
            continue
        if a.is_floating_point() and torch.isnan(a).any():
            raise AssertionError(
                f"{label}: {name} contains NaN. A softmax over a row that is all -inf gives NaN; "
                f"check your masking. {value_hint}".rstrip()
            )
        diff = (a.double() - e.double()).abs()
        idx = tuple(int(i) for i in torch.unravel_index(diff.argmax(), diff.shape))
        raise AssertionError(
            f"{label}: {name} has the right shape but wrong values; at index {idx} expected "
            f"{_fmt(e[idx].item())}, got {_fmt(a[idx].item())} "
            f"(largest difference {diff.max().item():.2e}). {value_hint}".rstrip()
        )


def _fmt(x: float | bool) -> str:
    """A number with 4 decimals, or True / False."""
    return str(x) if isinstance(x, bool) else f"{x:.4f}"


def isolated(check: Callable[..., None]) -> Callable[..., None]:
    """Run a check without gradients or touching the global RNG; fail with the hint alone."""

    @functools.wraps(check)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        __tracebackhide__ = True  # IPython hides this frame: the learner sees their cell + hint
        try:
            with torch.random.fork_rng(devices=[]), torch.no_grad():
                return check(*args, **kwargs)
        except AssertionError as exc:
            raise AssertionError(str(exc)) from None  # drop the check's internal frames

    return wrapper


def randn(gen: torch.Generator, *shape: int) -> torch.Tensor:
    """Standard-normal float32 tensor drawn from the check's own generator."""
    return torch.randn(*shape, generator=gen)


def case_label(name: str, i: int, n: int, desc: str) -> str:
    """'name, case i/n (desc)', the prefix of every message."""
    return f"{name}, case {i}/{n} ({desc})"


def passed(name: str, n_cases: int) -> None:
    """Print the one-line success message."""
    print(f"✓ {name}: all {n_cases} cases pass")
