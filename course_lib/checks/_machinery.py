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

Record and replay, for grading (grading/judge.py): when the environment variable
COURSE_CHECK_RECORD names a folder (the grader's sandbox sets it for the kernel), every check run
writes there, with torch.save, the name of the check, the learner function's name and
parameters, and per call_learner call its label and either the exception message or the
returned value and the tensor arguments after the call (plain tensors, numbers, strings,
tuples, lists and dicts; anything else as its type name). The grader's judge, in a process
that never runs learner code, calls the same check with `replaying(record)`: each call_learner
then returns the recorded value instead of calling anything, while the check builds its own
inputs and expected values and compares as usual. Tampering with the checks, torch or the
inputs inside the learner's kernel therefore cannot change the judge's verdict; only the
returned values count.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import itertools
import linecache
import os
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch

from ..utils import fmt_shape
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
    if _replay is not None:
        return _replay.call(label, list(args))
    call = _record_call(label)
    originals = list(args)
    try:
        result, args = _call(fn, label, originals, error_hint, allow)
    except AssertionError as exc:
        if call is not None:
            call["raised"] = str(exc)
        raise
    if call is not None:
        try:
            call["result"] = portable(result)
            call["after"] = [portable(a) if type(a) is torch.Tensor else None for a in args]
        except Exception as exc:  # never fail the learner's check for the grader's sake
            call["result"] = {"__kind__": "opaque", "type": f"unrecordable ({exc})"[:200]}
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
            f"{label}: {name} has the right shape but wrong values; at index {idx} expected "
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
        run = _begin_run(check.__name__, args[0] if args else None)
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
            _end_run(run, verdict)

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


# ----------------------------------------------------------------------------- record and replay

RECORD_ENV = "COURSE_CHECK_RECORD"  # a folder: the kernel's check runs are recorded there
INCOMPLETE = (
    "the check did not finish in the notebook (it was interrupted, the kernel died, or the "
    "check was changed there), so its remaining cases have no answers to judge"
)
_MAX_DEPTH = 12  # nesting kept in a recorded value
_MAX_ITEMS = 10_000  # items kept per recorded list, tuple or dict
_recording: list[dict[str, Any]] = []  # check runs being recorded, innermost last
_sequence = itertools.count()


def _record_dir() -> str | None:
    return os.environ.get(RECORD_ENV) or None


def portable(value: Any, depth: int = 0) -> Any:
    """`value` as data torch.load(weights_only=True) reads back; see `restore`."""
    kind = type(value)
    if kind is torch.Tensor:
        t = value.detach()
        if t.layout != torch.strided or t.is_quantized:
            return {"__kind__": "opaque", "type": f"{kind.__name__} ({t.layout})"}
        t = t.cpu()
        if t.untyped_storage().nbytes() > 2 * t.numel() * t.element_size() + 1024:
            t = t.clone()  # a view of a large tensor: keep only its own values
        return t
    if isinstance(value, torch.Tensor):  # a subclass: its values, and its type's name
        data = portable(value.as_subclass(torch.Tensor), depth + 1)
        return {"__kind__": "tensor subclass", "type": kind.__name__, "data": data}
    if value is None or kind in (bool, int, float, str):
        return value
    if depth < _MAX_DEPTH and isinstance(value, tuple | list):
        items = [portable(v, depth + 1) for v in list(value)[:_MAX_ITEMS]]
        return {"__kind__": "list" if isinstance(value, list) else "tuple", "items": items}
    if depth < _MAX_DEPTH and isinstance(value, dict):
        pairs = list(value.items())[:_MAX_ITEMS]
        items = [[portable(k, depth + 1), portable(v, depth + 1)] for k, v in pairs]
        return {"__kind__": "dict", "items": items}
    return {"__kind__": "opaque", "type": kind.__name__}


def restore(data: Any, depth: int = 0) -> Any:
    """The value `portable` recorded: tensors, numbers, strings, tuples, lists and dicts; a
    value of another type comes back as an object of a stand-in class with that type's name."""
    if data is None or type(data) in (bool, int, float, str, torch.Tensor):
        return data
    if depth > _MAX_DEPTH + 2 or not isinstance(data, dict):
        return _opaque("unreadable")
    kind, items = data.get("__kind__"), data.get("items", [])
    if kind in ("tuple", "list") and isinstance(items, list):
        values = [restore(v, depth + 1) for v in items]
        return tuple(values) if kind == "tuple" else values
    if kind == "dict" and isinstance(items, list):
        out = {}
        for pair in items:
            if isinstance(pair, list) and len(pair) == 2:
                key = restore(pair[0], depth + 1)
                if isinstance(key, str | int | float | bool | tuple) or key is None:
                    out[key] = restore(pair[1], depth + 1)
        return out
    if kind == "tensor subclass" and type(data.get("data")) is torch.Tensor:
        name = str(data.get("type", "Tensor"))[:100]
        return data["data"].as_subclass(type(name, (torch.Tensor,), {}))
    return _opaque(str(data.get("type", "object"))[:100])


def _opaque(name: str) -> Any:
    """An object whose type is called `name` (a value the record keeps only the type of)."""
    safe = name if name.isidentifier() else "object"
    return type(safe, (), {"__repr__": lambda self: f"<{name}>"})()


def _begin_run(check: str, fn: Any) -> dict[str, Any] | None:
    """Start recording a check run, when the grader asked for records."""
    if _replay is not None or _record_dir() is None:
        return None
    params: list[str] = []
    with contextlib.suppress(TypeError, ValueError):
        params = [str(p) for p in inspect.signature(fn).parameters][:20]
    run = {
        "format": 1,
        "check": check,
        "depth": len(_recording),
        "fn": {"name": str(fn_name(fn))[:200], "params": params},
        "calls": [],
    }
    _recording.append(run)
    return run


def _end_run(run: dict[str, Any] | None, verdict: str) -> None:
    """Write a finished check run to the record folder (never failing the learner's cell)."""
    if run is None:
        return
    if run in _recording:
        _recording.remove(run)
    run["verdict_in_notebook"] = verdict[:2000]
    folder = _record_dir()
    if folder is None:
        return
    path = os.path.join(folder, f"{os.getpid()}-{next(_sequence):06d}.pt")
    with contextlib.suppress(Exception):
        torch.save(run, path + ".part")
        os.replace(path + ".part", path)


def _record_call(label: str) -> dict[str, Any] | None:
    """A new call entry in the innermost run being recorded."""
    if not _recording:
        return None
    call: dict[str, Any] = {"label": label}
    _recording[-1]["calls"].append(call)
    return call


def observed(name: str, value: Any) -> Any:
    """A side effect of the learner's last call that the check reads (say, a call count).

    Returns `value`; recorded with that call, and replayed by the judge, who cannot see the
    side effect itself.
    """
    if _replay is not None:
        recorded = _replay.observed(name)
        return value if recorded is _NOTHING else recorded
    if _recording and _recording[-1]["calls"]:
        _recording[-1]["calls"][-1].setdefault("observed", {})[name] = portable(value)
    return value


_NOTHING = object()


class _StandIn:
    """What a replayed check gets instead of the learner's function: its name and signature."""

    def __init__(self, name: str, params: Sequence[str]) -> None:
        self.__name__ = name
        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
        names = [p for p in params if isinstance(p, str) and p.isidentifier()]
        with contextlib.suppress(ValueError):
            self.__signature__ = inspect.Signature([inspect.Parameter(p, kind) for p in names])

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a replayed check never runs the learner's code")


class _Replay:
    """The recorded calls of one check run, handed out in order."""

    def __init__(self, record: dict[str, Any]) -> None:
        calls = record.get("calls")
        self.calls = calls if isinstance(calls, list) else []
        self.position = 0
        self.current: dict[str, Any] = {}
        info = record.get("fn") if isinstance(record.get("fn"), dict) else {}
        params = info.get("params") if isinstance(info.get("params"), list) else []
        self.fn = _StandIn(str(info.get("name", "your_function"))[:200], params)

    def call(self, label: str, args: list[Any]) -> Any:
        if self.position >= len(self.calls) or not isinstance(self.calls[self.position], dict):
            raise AssertionError(f"{label}: {INCOMPLETE}")
        call = self.current = self.calls[self.position]
        self.position += 1
        if call.get("label") != label:
            raise AssertionError(
                f"{label}: the notebook recorded another case here ({str(call.get('label'))[:200]!r}): "
                "the check or its inputs were changed in the notebook"
            )
        if "raised" in call:
            raise AssertionError(str(call["raised"])[:5000])
        if "result" not in call:
            raise AssertionError(f"{label}: {INCOMPLETE}")
        result = restore(call["result"])
        after = call.get("after") if isinstance(call.get("after"), list) else []
        after = [restore(a) for a in after][: len(args)]
        after += args[len(after) :]
        _refuse_in_place(self.fn, label, args, after)
        return result

    def observed(self, name: str) -> Any:
        found = self.current.get("observed", {})
        return restore(found[name]) if isinstance(found, dict) and name in found else _NOTHING


_replay: _Replay | None = None


@contextlib.contextmanager
def replaying(record: dict[str, Any]) -> Iterator[_Replay]:
    """Within the block, call_learner answers from `record` (one recorded check run).

    Call the check with the replay's `fn` stand-in: `with replaying(r) as rp: check(rp.fn)`.
    """
    global _replay
    if _replay is not None:
        raise RuntimeError("replays do not nest")
    _replay = _Replay(record)
    try:
        yield _replay
    finally:
        _replay = None
