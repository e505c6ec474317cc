"""The machinery behind `course_lib.checks`: run a learner's function and explain its mistakes.

A check calls the learner's function with course_lib's reference implementations switched off,
turns any exception into a short message with a hint, and compares the result with an
independently computed expected value. When they differ it compares the result with the outputs
of known-wrong variants, so the message can name the likely mistake instead of a raw difference.

Rules every check follows (tests/test_checks*.py hold them to it):
- the expected value is computed *before* the learner's function runs, and the function gets
  deep copies of every argument (tensors, modules, bound methods), so it can neither see nor
  change what it is compared with; changing an argument in place is itself reported;
- while it runs, course_lib's references and the checks' own answer key are switched off
  wherever the function can reach them: module attributes, the notebook's globals, default
  arguments, keyword defaults and closure cells (recursively through learner-defined helpers);
  every patched binding is restored afterwards, including in modules first imported meanwhile;
- only a plain `torch.Tensor` counts as a tensor result (no subclasses);
- a failure message names the mistake and the concept, never a line of the solution; the code
  itself is left to the last level of `hint(exercise_id)`;
- a check reaches the learner's function only through `call_learner`, and concludes only from
  what it returns (and from side effects read through `observed`), so a judge outside the
  learner's process can replay it (below).

call_learner and `isolated` record each check run for the grader's judge, or replay a
recorded one (`_replay`, grading/judge.py).
"""

from __future__ import annotations

import copy
import functools
import inspect
import linecache
import traceback
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from ..utils import fmt_shape
from . import _replay
from ._references import POLICY, REFERENCES, reference_disabled, reference_objects

__all__ = ["POLICY", "REFERENCES", "reference_disabled", "reference_objects"]  # re-exported

ATOL = 1e-5  # absolute and relative tolerance of every comparison
RTOL = 1e-5

Mistake = tuple[str, Callable[[], Any]]  # (hint naming the mistake, thunk computing its output)

NOT_ATTEMPTED = "Exercise not attempted yet"


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


def _changed(before: Any, after: Any) -> bool:
    """True if a tensor argument was modified in place (NaN counts as equal to NaN)."""
    if not isinstance(before, torch.Tensor) or not isinstance(after, torch.Tensor):
        return False
    if before.shape != after.shape or before.dtype != after.dtype:
        return True
    return not torch.equal(before, after) and not (
        before.is_floating_point() and torch.allclose(before, after, equal_nan=True, atol=0, rtol=0)
    )


def _param_names(fn: Callable[..., Any], n: int) -> list[str]:
    """The names of fn's first n parameters, for messages ('argument 1' where unknown)."""
    try:
        names = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        names = []
    return [names[i] if i < len(names) else f"argument {i + 1}" for i in range(n)]


def call_learner(
    fn: Callable[..., Any],
    label: str,
    args: Sequence[Any],
    error_hint: str,
    allow: Iterable[str] = (),
) -> Any:
    """Call fn(*args) on deep copies of the inputs, references disabled; explain any exception.

    The one place a check calls a learner's function; it records the call for the grader's
    judge, or replays a recorded one (see the module's docstring). Fails if the function
    changed one of its tensor arguments in place.
    """
    originals = list(args)
    replay = _replay.active()
    if replay is not None:  # the grader's judge: the recorded answer, the learner's code unrun
        result, after = replay.call(label, len(originals))
        _refuse_in_place(replay.fn, label, originals, after + originals[len(after) :])
        return result
    call = _replay.record_call(label)
    try:
        result, args = _call(fn, label, originals, error_hint, allow)
    except AssertionError as exc:
        _replay.record_outcome(call, raised=str(exc))
        raise
    _replay.record_outcome(call, result=result, after=args)
    _refuse_in_place(fn, label, originals, args)
    return result


def _refuse_in_place(fn: Any, label: str, originals: Sequence[Any], args: Sequence[Any]) -> None:
    """Fail if the learner's function changed a tensor argument in place."""
    names = _param_names(fn, len(args))
    for name, before, after in zip(names, originals, args, strict=True):
        if _changed(before, after):
            raise AssertionError(
                f"{label}: your function changed its input `{name}` in place. The caller still "
                "needs it (the same logits, cache or state is used again), so compute a new "
                "tensor and leave the arguments as they were; in-place methods end in `_`"
            )


def _call(
    fn: Callable[..., Any], label: str, args: Sequence[Any], error_hint: str, allow: Iterable[str]
) -> tuple[Any, tuple[Any, ...]]:
    """(fn's result, the copies of the arguments it got); an exception becomes a hint."""
    args = copy.deepcopy(tuple(args))  # tensors, modules and bound methods: nothing shared
    namespaces = [fn.__globals__] if isinstance(getattr(fn, "__globals__", None), dict) else []
    with reference_disabled(allow, namespaces, functions=[fn]):
        try:
            result = fn(*args)
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
    return result, args


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
    """Check that `value` is one plain tensor (one name) or a tuple of len(names) of them."""
    want = names[0] if len(names) == 1 else "a tuple (" + ", ".join(names) + ")"
    if len(names) == 1 and isinstance(value, tuple | list):
        raise AssertionError(
            f"{label}: expected {want} (one torch.Tensor), got a {type(value).__name__} of "
            f"{len(value)} items; return only the tensor the exercise asks for. {hint}".rstrip()
        )
    items = [value] if len(names) == 1 else value
    if len(names) > 1 and (not isinstance(value, tuple | list) or len(value) != len(names)):
        got = type(value).__name__
        if isinstance(value, tuple | list):
            got = f"a {got} of {len(value)} items"
        raise AssertionError(f"{label}: expected {want}, got {got}. {hint}".rstrip())
    for name, item in zip(names, items, strict=True):
        if type(item) is not torch.Tensor:
            kind = "a subclass of torch.Tensor" if isinstance(item, torch.Tensor) else "got"
            raise AssertionError(
                f"{label}: {name} should be a plain torch.Tensor, {kind} "
                f"{type(item).__name__}. {hint}".rstrip()
            )
    return [t.detach().cpu() for t in items]


def require_bool_mask(label: str, mask: torch.Tensor, right: torch.Tensor) -> None:
    """Raise if a mask is not boolean, saying whether its values were otherwise right."""
    if mask.dtype == torch.bool:
        return
    base = (
        f"{label}: the mask has dtype {mask.dtype}; the course convention is a bool mask, "
        "True = may attend (the convention of PyTorch's own scaled dot-product attention)."
    )
    values = mask.double()
    if torch.isinf(values).any():
        raise AssertionError(
            f"{base} Yours is an additive float mask (0 where allowed, -inf where hidden); the "
            "course needs the bool one: True exactly where an additive mask holds 0."
        )
    if torch.equal(values, right.double()):
        raise AssertionError(f"{base} Your values are right: convert them to the bool dtype.")
    raise AssertionError(
        f"{base} Build it from comparisons (they give bool tensors) or in the bool dtype."
    )


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


NAN_HINT = (
    "A NaN comes from 0·∞, ∞ - ∞ or a softmax over a row whose scores are all -inf; find the "
    "step that makes one"
)
NAN_MASK_HINT = (
    "A softmax over a row that is all -inf gives NaN: check which positions your mask hides"
)


def _nan_to_zero(values: Any) -> Any:
    """The same output with NaN replaced by 0 (a learner may zero the rows that came out NaN)."""
    if isinstance(values, torch.Tensor):
        return torch.nan_to_num(
            values.detach().double(), nan=0.0, posinf=torch.inf, neginf=-torch.inf
        )
    return [_nan_to_zero(v) for v in values]


def _difference(a: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """|a - e| with matching infinities (and matching NaN) counted as 0, others as inf."""
    a, e = a.double(), e.double()
    same = (a == e) | (torch.isnan(a) & torch.isnan(e))
    diff = (a - e).abs()
    diff = torch.where(torch.isnan(diff), torch.full_like(diff, torch.inf), diff)
    return torch.where(same, torch.zeros_like(diff), diff)


def compare(
    label: str,
    actual: Sequence[torch.Tensor],
    expected: Sequence[torch.Tensor],
    names: Sequence[str],
    mistakes: Iterable[Mistake] = (),
    shape_hint: str = "",
    value_hint: str = "",
    nan_hint: str = NAN_HINT,
) -> None:
    """Pass silently if actual matches expected; else raise naming the mistake it matches.

    A mistake also matches when the learner zeroed the NaN its variant produces. `nan_hint`
    explains a NaN in the output (checks with masks pass NAN_MASK_HINT).
    """
    if _all_close(actual, expected):
        return
    for hint, wrong in mistakes:
        try:
            candidate = wrong()
        except Exception:  # a variant that cannot run on this case cannot be the mistake
            continue
        if _all_close(actual, candidate) or _all_close(actual, _nan_to_zero(candidate)):
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
        if a.is_floating_point() and torch.isnan(a).any() and not torch.isnan(e).any():
            raise AssertionError(f"{label}: {name} contains NaN. {nan_hint} {value_hint}".rstrip())
        if a.dtype == torch.bool or e.dtype == torch.bool:
            a, e = a.to(e.dtype) if a.dtype != e.dtype else a, e
        diff = _difference(a, e)
        idx = tuple(int(i) for i in torch.unravel_index(diff.argmax(), diff.shape))
        largest = diff.max().item()
        raise AssertionError(
            f"{label}: {name}: right shape, wrong values; at index {idx} expected "
            f"{_fmt(e[idx].item())}, got {_fmt(a[idx].item())} "
            f"(largest difference {_fmt(largest) if largest != float('inf') else 'inf'}). "
            f"{value_hint}".rstrip()
        )


def _fmt(x: float | bool) -> str:
    """A number with 4 decimals (-inf, inf and nan by name), or True / False."""
    if isinstance(x, bool) or not isinstance(x, float) or x != x or abs(x) == float("inf"):
        return str(x)
    return f"{x:.4f}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"


def isolated(check: Callable[..., None]) -> Callable[..., None]:
    """Run a check without gradients or touching the global RNG; fail with the hint alone.

    When the learner's function fails and calls the learner's own function of an earlier
    exercise that fails its own check, the message says which exercise to fix first.
    """

    @functools.wraps(check)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        __tracebackhide__ = True  # IPython hides this frame: the learner sees their cell + hint
        fn = args[0] if args else None
        params = [p for p in _param_names(fn, 20) if " " not in p] if callable(fn) else []
        run = _replay.begin_run(check.__name__, fn_name(fn), params)
        verdict = "did not finish"
        try:
            with torch.random.fork_rng(devices=[]), torch.no_grad():
                value = check(*args, **kwargs)
            verdict = "pass"
            return value
        except AssertionError as exc:
            message = str(exc)
            if args and not message.startswith(NOT_ATTEMPTED):
                if earlier_failure_hook is not None:  # set by the package, which has the registry
                    message += earlier_failure_hook(check.__name__, args[0])
            verdict = message
            raise AssertionError(message) from None  # drop the check's internal frames
        finally:
            _replay.end_run(run, verdict)

    return wrapper


# checks/__init__.py sets this to its earlier_failure (the registry of exercises lives there)
earlier_failure_hook: Callable[[str, object], str] | None = None


def randn(gen: torch.Generator, *shape: int) -> torch.Tensor:
    """Standard-normal float32 tensor drawn from the check's own generator."""
    return torch.randn(*shape, generator=gen)


def case_label(name: str, i: int, n: int, desc: str) -> str:
    """'name, case i/n (desc)', the prefix of every message."""
    return f"{name}, case {i}/{n} ({desc})"


def passed(name: str, n_cases: int) -> None:
    """Print the one-line success message."""
    print(f"✓ {name}: all {n_cases} cases pass")
