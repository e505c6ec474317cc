"""The house rules of course_lib: which room may import which, no cycles, no oversized module.

- the core (the model code every notebook builds on) imports only the core and third-party
  packages, so it can be read, copied and tested on its own;
- lessons/<slug>.py belongs to notebooks/NN_<slug>.ipynb and checks/<slug>.py to its exercises;
- no import cycle anywhere in course_lib; no module longer than MAX_LINES.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "course_lib"
NOTEBOOKS = PACKAGE.parent / "notebooks"
CORE = {"attention", "masks", "positional", "blocks", "models", "gpt", "rnn", "sampling", "utils"}
MAX_LINES = 400


def _module_name(path: Path) -> str:
    """'course_lib.lessons.masking' for course_lib/lessons/masking.py."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every course_lib import in the file, nested ones included."""
    here = _module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            targets = [target] if node.module else [f"{target}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        found += [(node.lineno, t) for t in targets if t.split(".")[0] == "course_lib"]
    return found


def _resolve(target: str, modules: dict[str, Path]) -> str:
    """The module a dotted import lands in ('course_lib.checks.progress' -> 'course_lib.checks')."""
    while target not in modules and "." in target:
        target = target.rpartition(".")[0]
    return target


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {
        name: {_resolve(t, modules) for _, t in _imports(path)} - {name}
        for name, path in modules.items()
    }


@pytest.mark.parametrize("name", sorted(CORE))
def test_core_modules_import_only_core_modules(name):
    path = PACKAGE / f"{name}.py"
    allowed = {f"course_lib.{c}" for c in CORE} | {"course_lib"}
    bad = [
        f"{path.name}:{line} imports {target}"
        for line, target in _imports(path)
        if _resolve(target, _modules()) not in allowed
    ]
    assert not bad, "the core may import only the core (" + ", ".join(sorted(CORE)) + "): " + (
        "; ".join(bad)
    )


def test_course_lib_has_no_import_cycle():
    graph = _graph()
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            pytest.fail("import cycle: " + " -> ".join(cycle))


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: _module_name(p))
def test_no_module_is_longer_than_the_limit(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, (
        f"{path.relative_to(PACKAGE.parent)} has {lines} lines (limit {MAX_LINES}): split it by idea"
    )


def test_every_lesson_and_check_module_is_named_after_a_notebook():
    slugs = {p.stem.partition("_")[2] for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")}
    for room in ("lessons", "checks"):
        rooms = {p.stem for p in (PACKAGE / room).glob("*.py") if not p.stem.startswith("_")}
        strays = sorted(rooms - slugs)
        assert not strays, f"course_lib/{room}/ modules without a notebook of that slug: {strays}"


def test_no_module_reexports_what_another_module_defines():
    """A name is imported from the module that defines it: no import at the bottom of a file."""
    for path in PACKAGE.rglob("*.py"):
        body = ast.parse(path.read_text(encoding="utf-8")).body
        seen_def = False
        for node in body:
            if isinstance(node, ast.FunctionDef | ast.ClassDef):
                seen_def = True
            elif seen_def and isinstance(node, ast.ImportFrom) and node.level:
                pytest.fail(
                    f"{path.relative_to(PACKAGE.parent)}:{node.lineno} imports after its "
                    "definitions (a re-export shim): import the name from where it is defined"
                )
