"""The two ways to install the course (pip via pyproject.toml, conda via environment.yml) agree."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONDA_NAMES = {"torch": "pytorch-cpu"}  # PyPI name -> conda-forge name where they differ


def _names(specs: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[ ;]", s.strip(), maxsplit=1)[0].lower() for s in specs}


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _conda_dependencies() -> set[str]:
    deps = []
    for line in (ROOT / "environment.yml").read_text().splitlines():
        m = re.match(r"^  - ([A-Za-z0-9_.-]+)", line)
        if m:
            deps.append(m.group(1))
    return _names(deps)


def test_every_runtime_dependency_is_in_the_conda_environment():
    conda = _conda_dependencies()
    for name in _names(_pyproject()["project"]["dependencies"]):
        assert CONDA_NAMES.get(name, name) in conda, f"{name} is missing from environment.yml"


def test_every_dev_dependency_is_in_the_conda_environment():
    conda = _conda_dependencies()
    for name in _names(_pyproject()["project"]["optional-dependencies"]["dev"]):
        assert name in conda, f"{name} (dev) is missing from environment.yml"


def test_conda_environment_installs_the_course_package_itself():
    assert "- -e ." in (ROOT / "environment.yml").read_text()


def test_makefile_pins_the_cpu_torch_wheel_by_default():
    assert "TORCH_SPEC ?= torch==2.13.0" in (ROOT / "Makefile").read_text()
