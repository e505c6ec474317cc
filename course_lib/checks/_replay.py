"""Record a check's calls of the learner's function, and replay them, for the grader's judge.

Recording: when the environment variable COURSE_CHECK_RECORD names a folder (the grader's
sandbox sets it for the kernel; nobody else does), every check run (`_machinery.isolated`)
writes one file there with torch.save: the check's name, the learner function's name and
parameters, and per `call_learner` call its label and either the exception message or the
returned value and the tensor arguments after the call. Values are kept as plain data
(`portable`): tensors, numbers, strings, tuples, lists and dicts; anything else as its type name.

Replaying: the grader's judge (grading/judge.py), in a process that never runs learner code,
loads a record with `torch.load(weights_only=True)` and calls the same check inside
`replaying(record)` with the replay's stand-in `fn`: each call_learner then answers with the
recorded value instead of calling anything, while the check builds its own inputs and expected
values and compares as usual. Tampering with the checks, torch or the inputs inside the
learner's kernel therefore cannot change the judge's verdict: only the returned values count.
A check that needs a side effect of the learner's call (not its return value) reads it through
`observed(name, value)`, which is recorded and replayed with the call.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import os
from collections.abc import Iterator, Sequence
from typing import Any

import torch

RECORD_ENV = "COURSE_CHECK_RECORD"  # a folder: the kernel's check runs are recorded there
INCOMPLETE = (
    "the check did not finish in the notebook (it was interrupted, the kernel died, or the "
    "check was changed there), so its remaining cases have no answers to judge"
)
_MAX_DEPTH = 12  # nesting kept in a recorded value
_MAX_ITEMS = 10_000  # items kept per recorded list, tuple or dict
_recording: list[dict[str, Any]] = []  # check runs being recorded, innermost last
_sequence = itertools.count()
_NOTHING = object()


def _record_dir() -> str | None:
    return os.environ.get(RECORD_ENV) or None


def portable(value: Any, depth: int = 0) -> Any:
    """`value` as data that torch.load(weights_only=True) reads back; see `restore`."""
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
        safe = name if name.isidentifier() else "TensorSubclass"
        return data["data"].as_subclass(type(safe, (torch.Tensor,), {}))
    return _opaque(str(data.get("type", "object"))[:100])


def _opaque(name: str) -> Any:
    """An object whose type is called `name` (a value the record keeps only the type of)."""
    safe = name if name.isidentifier() else "object"
    return type(safe, (), {"__repr__": lambda self: f"<{name}>"})()


# ----------------------------------------------------------------------------- recording


def begin_run(check: str, fn_name: str, params: Sequence[str]) -> dict[str, Any] | None:
    """Start recording a check run, when the grader asked for records (else None)."""
    if _replay is not None or _record_dir() is None:
        return None
    run = {
        "format": 1,
        "check": check,
        "depth": len(_recording),
        "fn": {"name": str(fn_name)[:200], "params": [str(p)[:100] for p in params][:20]},
        "calls": [],
    }
    _recording.append(run)
    return run


def end_run(run: dict[str, Any] | None, verdict: str) -> None:
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


def record_call(label: str) -> dict[str, Any] | None:
    """A new call entry in the innermost run being recorded."""
    if not _recording:
        return None
    call: dict[str, Any] = {"label": label}
    _recording[-1]["calls"].append(call)
    return call


def record_outcome(
    call: dict[str, Any] | None,
    raised: str | None = None,
    result: Any = None,
    after: Sequence[Any] = (),
) -> None:
    """What the learner's function did: the check's message for an exception, or its result
    and the tensor arguments after the call."""
    if call is None:
        return
    if raised is not None:
        call["raised"] = raised
        return
    try:
        call["result"] = portable(result)
        call["after"] = [portable(a) if type(a) is torch.Tensor else None for a in after]
    except Exception as exc:  # never fail the learner's check for the grader's sake
        call["result"] = {"__kind__": "opaque", "type": f"unrecordable ({exc})"[:200]}


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


# ----------------------------------------------------------------------------- replaying


class StandIn:
    """What a replayed check gets instead of the learner's function: its name and signature."""

    def __init__(self, name: str, params: Sequence[str]) -> None:
        self.__name__ = name
        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
        names = [p for p in params if isinstance(p, str) and p.isidentifier()]
        with contextlib.suppress(ValueError):
            self.__signature__ = inspect.Signature([inspect.Parameter(p, kind) for p in names])

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a replayed check never runs the learner's code")


class Replay:
    """The recorded calls of one check run, handed out in order."""

    def __init__(self, record: dict[str, Any]) -> None:
        calls = record.get("calls")
        self.calls = calls if isinstance(calls, list) else []
        self.position = 0
        self.current: dict[str, Any] = {}
        info = record.get("fn") if isinstance(record.get("fn"), dict) else {}
        params = info.get("params") if isinstance(info.get("params"), list) else []
        self.fn = StandIn(str(info.get("name", "your_function"))[:200], params)

    def call(self, label: str, n_args: int) -> tuple[Any, list[Any]]:
        """(the recorded result, the recorded tensor arguments after the call) of the next call;
        raises the check's message where the learner's function raised."""
        if self.position >= len(self.calls) or not isinstance(self.calls[self.position], dict):
            raise AssertionError(f"{label}: {INCOMPLETE}")
        call = self.current = self.calls[self.position]
        self.position += 1
        if call.get("label") != label:
            got = str(call.get("label"))[:200]
            raise AssertionError(
                f"{label}: the notebook recorded another case here ({got!r}): the check or its "
                "inputs were changed in the notebook"
            )
        if "raised" in call:
            raise AssertionError(str(call["raised"])[:5000])
        if "result" not in call:
            raise AssertionError(f"{label}: {INCOMPLETE}")
        after = call.get("after") if isinstance(call.get("after"), list) else []
        return restore(call["result"]), [restore(a) for a in after][:n_args]

    def observed(self, name: str) -> Any:
        found = self.current.get("observed", {})
        return restore(found[name]) if isinstance(found, dict) and name in found else _NOTHING


_replay: Replay | None = None


def active() -> Replay | None:
    """The replay in progress (in the grader's judge), or None."""
    return _replay


@contextlib.contextmanager
def replaying(record: dict[str, Any]) -> Iterator[Replay]:
    """Within the block, call_learner answers from `record` (one recorded check run).

    Call the check with the replay's stand-in: `with replaying(r) as rp: check(rp.fn)`.
    """
    global _replay
    if _replay is not None:
        raise RuntimeError("replays do not nest")
    _replay = Replay(record)
    try:
        yield _replay
    finally:
        _replay = None
