"""Keep course_lib's references, and the checks' own answer key, out of a learner's function.

While a check runs the learner's function, every binding of a reference object that the
function can reach is replaced by a stub that raises: attributes of course_lib's modules and of
the checks' modules, the notebook's globals, and the function's default arguments, keyword
defaults and closure cells, recursively through the learner-defined functions it can reach.
A `functools.partial` around a reference cannot be patched, so it is refused. On exit every
patched binding is restored, and any stub that a module imported *during* the call copied
(`from course_lib.masks import padding_mask` binds whatever is there) is put back too.

Policy on earlier exercises: a check refuses the reference of its own exercise. The reference
of an *earlier* exercise is allowed (through `allow=`) exactly where the exercise's prompt says
the learner may build on it: 3.2 on scaled_dot_product_attention, 4.3 on it and split/merge
heads, 5.3 on those and the RoPE pieces of course_lib.positional. Every refusal message says so.
"""

from __future__ import annotations

import functools
import importlib
import sys
import types
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

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
        "beam_search",
        "gnmt_length_penalty",
    ),
    "course_lib.rnn": (
        "rnn_cell_step",
        "rnn_step_jacobian",
        "AdditiveAttention",
        "DotAttention",
    ),
    "course_lib.training": ("sequence_loss",),
    "course_lib.lessons.positional_encoding": ("RotarySelfAttention",),
    "course_lib.lessons.cross_attention": ("field_attention",),
    "course_lib.tiled_attention": (
        "online_softmax_step",
        "online_softmax_forward",
        "online_softmax_attention",
    ),
    "course_lib.lessons.efficiency": ("cached_attention",),
}
# The checks' modules whose every function and class is answer key, not learner material.
# (_machinery, _hints and the package itself are the checks' tools and stay callable.)
ANSWER_KEY_EXCLUDED = {
    "course_lib.checks",
    "course_lib.checks._machinery",
    "course_lib.checks._references",
    "course_lib.checks._hints",
}

POLICY = (
    "a check switches off course_lib's reference for its own exercise (and the checks' "
    "answer key); earlier exercises' references are allowed only where the prompt says so"
)


def _stub(qualname: str, original: Any) -> Callable[..., Any]:
    """A stand-in for a reference implementation that refuses to answer."""

    def disabled(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(
            f"your function called course_lib's reference `{qualname}`; write it yourself "
            f"({POLICY})"
        )

    disabled.__course_reference__ = original  # type: ignore[attr-defined]
    return disabled


def _answer_key() -> dict[int, tuple[Any, str]]:
    """id -> (object, name) of every function and class defined in the checks' own modules."""
    found: dict[int, tuple[Any, str]] = {}
    for modname, module in list(sys.modules.items()):
        if not modname.startswith("course_lib.checks") or modname in ANSWER_KEY_EXCLUDED:
            continue
        for name, obj in list(vars(module).items()):
            defined_here = getattr(obj, "__module__", None) == modname
            if defined_here and isinstance(obj, types.FunctionType | type):
                if not name.startswith("check_"):  # a check is no answer
                    found[id(obj)] = (obj, f"{modname}.{name}")
    return found


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
    found.update({k: v for k, v in _answer_key().items() if v[1] not in allowed})
    return found


def _reachable_functions(fn: Any, limit: int = 200) -> list[types.FunctionType]:
    """The learner's function and every learner-defined function reachable from it."""
    seen: dict[int, types.FunctionType] = {}
    todo = [fn.__func__ if isinstance(fn, types.MethodType) else fn]
    while todo and len(seen) < limit:
        f = todo.pop()
        if not isinstance(f, types.FunctionType) or id(f) in seen:
            continue
        if (f.__module__ or "").startswith("course_lib"):
            continue
        seen[id(f)] = f
        values = list(f.__defaults__ or ()) + list((f.__kwdefaults__ or {}).values())
        for cell in f.__closure__ or ():
            try:
                values.append(cell.cell_contents)
            except ValueError:  # an empty cell
                pass
        values += [f.__globals__.get(n) for n in f.__code__.co_names]
        todo += [v for v in values if isinstance(v, types.FunctionType | types.MethodType)]
        todo = [v.__func__ if isinstance(v, types.MethodType) else v for v in todo]
    return list(seen.values())


def _refuse_partials(values: Iterable[Any], refs: dict[int, tuple[Any, str]]) -> None:
    """A functools.partial of a reference cannot be patched: refuse it outright."""
    for v in values:
        if isinstance(v, functools.partial) and id(v.func) in refs:
            raise AssertionError(
                f"your function holds course_lib's reference `{refs[id(v.func)][1]}` in a "
                f"functools.partial; write it yourself ({POLICY})"
            )


@contextmanager
def reference_disabled(
    allow: Iterable[str] = (),
    namespaces: Iterable[dict[str, Any]] = (),
    functions: Sequence[Any] = (),
) -> Iterator[None]:
    """Make course_lib's reference implementations raise while the block runs.

    Patches every binding of a reference object (found by identity, so aliases count too) in
    every loaded course_lib module, in `__main__`, in any extra `namespaces`, and in the
    defaults, keyword defaults and closure cells of `functions` and the learner-defined
    functions they reach; everything is restored on exit, also in modules imported meanwhile.
    """
    refs = reference_objects(allow)
    stubs = {key: _stub(name, obj) for key, (obj, name) in refs.items()}
    before = set(sys.modules)
    modules = [m for n, m in list(sys.modules.items()) if n.partition(".")[0] == "course_lib"]
    spaces = [vars(m) for m in (*modules, sys.modules.get("__main__")) if m is not None]
    spaces.extend(namespaces)
    funcs = [f for fn in functions for f in _reachable_functions(fn)]
    undo: list[Callable[[], None]] = []
    seen: set[int] = set()

    def patch_dict(space: dict[Any, Any]) -> None:
        for key, value in list(space.items()):
            if id(value) in refs and refs[id(value)][0] is value:
                space[key] = stubs[id(value)]
                undo.append(lambda space=space, key=key, value=value: space.__setitem__(key, value))

    try:
        _refuse_partials(functions, refs)
        for space in spaces:
            if id(space) not in seen:
                seen.add(id(space))
                patch_dict(space)
        for f in funcs:
            values = list(f.__defaults__ or ()) + list((f.__kwdefaults__ or {}).values())
            _refuse_partials(values, refs)
            if f.__defaults__ and any(id(v) in refs for v in f.__defaults__):
                old = f.__defaults__
                f.__defaults__ = tuple(stubs.get(id(v), v) for v in old)
                undo.append(lambda f=f, old=old: setattr(f, "__defaults__", old))
            if f.__kwdefaults__:
                patch_dict(f.__kwdefaults__)
            for cell in f.__closure__ or ():
                try:
                    value = cell.cell_contents
                except ValueError:
                    continue
                _refuse_partials([value], refs)
                if id(value) in refs:
                    cell.cell_contents = stubs[id(value)]
                    undo.append(
                        lambda cell=cell, value=value: setattr(cell, "cell_contents", value)
                    )
        yield
    finally:
        for restore in reversed(undo):
            restore()
        _restore_copied_stubs(set(sys.modules) - before)


def _restore_copied_stubs(new_modules: set[str]) -> None:
    """Put the originals back wherever a module imported during the call bound a stub."""
    names = [n for n in new_modules] + [n for n in sys.modules if n.startswith("course_lib")]
    for name in names:
        module = sys.modules.get(name)
        space = getattr(module, "__dict__", None)
        if not isinstance(space, dict):
            continue
        for key, value in list(space.items()):
            original = getattr(value, "__course_reference__", None)
            if original is not None and isinstance(value, types.FunctionType):
                space[key] = original
