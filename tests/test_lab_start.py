"""`make lab` works where learners run it (as root, in a container, without a browser), shows
no lecturer tools, and `python tools/course.py` offers the same commands without `make`.

The start-up tests run the real JupyterLab (about 5 s each): in a fresh `git clone` of this
repository, with this test run's venv linked in as .venv so nothing is reinstalled.
"""

from __future__ import annotations

import http.cookiejar
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
START_S = 60  # JupyterLab's first start on a busy 2-core machine takes 3-15 s
TOKEN_URL = re.compile(r"http://127\.0\.0\.1:(\d+)/lab\?token=([0-9a-f]+)")
CONFIG_DATA = re.compile(
    r'<script id="jupyter-config-data" type="application/json">(.*?)</script>', re.S
)


def _course():
    spec = importlib.util.spec_from_file_location("course", ROOT / "tools" / "course.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


course = _course()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A process started in its own process group whose output is collected by a thread."""

    def __init__(self, cmd: list[str], cwd: Path, env: dict[str, str]):
        self.proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group: make, python, jupyter, kernels
        )
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for_url(self) -> tuple[int, str]:
        """(port, token) from the URL JupyterLab prints, within START_S."""
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline:
            m = TOKEN_URL.search(self.output)
            if m:
                return int(m.group(1)), m.group(2)
            if self.proc.poll() is not None:
                pytest.fail(f"exited with {self.proc.returncode} before serving:\n{self.output}")
            time.sleep(0.2)
        pytest.fail(f"no http://127.0.0.1:<port>/lab?token=... within {START_S} s:\n{self.output}")

    def stop(self) -> None:
        """SIGTERM to the whole process group, SIGKILL to whatever is left after 15 s."""
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=15)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        try:  # children that outlived their parent (kernels) are still in the group
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _get(opener, url: str) -> tuple[int, str]:
    try:
        with opener.open(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""


def page_config(port: int, token: str) -> tuple[dict, urllib.request.OpenerDirector]:
    """Log in with the token and return /lab's page config (the JSON JupyterLab starts from)."""
    opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
    )
    status, html = _get(opener, f"http://127.0.0.1:{port}/lab?token={token}")
    assert status == 200, f"/lab answered {status}"
    m = CONFIG_DATA.search(html)
    assert m, "/lab served no jupyter-config-data: not JupyterLab's page"
    return json.loads(m.group(1)), opener


def isolated_env(tmp: Path) -> dict[str, str]:
    """This environment with Jupyter's user config and runtime files in tmp (no ~/.jupyter)."""
    env = dict(os.environ)
    for name in ("config", "runtime"):
        (tmp / name).mkdir(parents=True, exist_ok=True)
    env.update(JUPYTER_CONFIG_DIR=str(tmp / "config"), JUPYTER_RUNTIME_DIR=str(tmp / "runtime"))
    env.pop("JUPYTER_CONFIG_PATH", None)
    env.pop("MAKEFLAGS", None)
    env.pop("MFLAGS", None)
    return env


@pytest.fixture
def fresh_clone(tmp_path) -> Path:
    """`git clone` of this repository (its last commit) with this venv linked in as .venv."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs git and a git checkout")
    venv = Path(sys.prefix)
    if not (venv / course.STAMP).exists():
        pytest.skip(f"{venv} was not installed by `make install` (no {course.STAMP} stamp)")
    clone = tmp_path / "course"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True, timeout=60)
    (clone / ".venv").symlink_to(venv, target_is_directory=True)
    # A clone's files are newer than the venv's stamp: age pyproject.toml so `make` sees an
    # installed venv instead of reinstalling (and re-pointing the editable install).
    os.utime(clone / "pyproject.toml", (0, 0))
    return clone


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_lab_serves_the_lab_in_a_fresh_clone_as_this_user(fresh_clone, tmp_path):
    port = _free_port()
    server = Server(
        ["make", "lab", f"PORT={port}", "IP=127.0.0.1"], fresh_clone, isolated_env(tmp_path)
    )
    try:
        served_port, token = server.wait_for_url()
        config, opener = page_config(served_port, token)
        assert served_port == port
        # The learner's lab: nbgrader's lab extension disabled, its server extensions not loaded.
        assert course.NBGRADER_LAB_EXTENSION in config["disabledExtensions"]
        assert _get(opener, f"http://127.0.0.1:{port}/formgrader")[0] == 404
        assert _get(opener, f"http://127.0.0.1:{port}/assignments")[0] == 404
        assert "No nbgrader_config.py" not in server.output
        assert "Running as root is not recommended" not in server.output
        if course.is_root():
            assert "--allow-root" in server.output
    finally:
        server.stop()
    assert server.proc.poll() is not None


def test_lecturer_lab_has_nbgrader_formgrader_and_no_config_warning(tmp_path):
    course_dir = tmp_path / "grading"
    course_dir.mkdir()
    (course_dir / "nbgrader_config.py").write_text(
        'c = get_config()\nc.CourseDirectory.course_id = "test-course"\n'
    )
    port = _free_port()
    cmd, env, cwd = course.lab_command(
        Path(sys.prefix), port, "127.0.0.1", lecturer=True, extra=[], course_dir=course_dir
    )
    env.update(isolated_env(tmp_path))
    server = Server(cmd, cwd, env)
    try:
        _, token = server.wait_for_url()
        config, opener = page_config(port, token)
        assert course.NBGRADER_LAB_EXTENSION not in config["disabledExtensions"]
        names = [e["name"] for e in config["federated_extensions"]]
        assert course.NBGRADER_LAB_EXTENSION in names
        assert _get(opener, f"http://127.0.0.1:{port}/formgrader")[0] == 200
        assert "No nbgrader_config.py" not in server.output
    finally:
        server.stop()


# ------------------------------------------------------------------ tools/course.py, no make


def _dry_run(command: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "course.py"), command, "--dry-run", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_course_py_install_dry_run_lists_the_makefile_steps_in_order(tmp_path):
    out = _dry_run("install", "--force", "--venv", str(tmp_path / "v"), "--torch", "torch==9.9")
    lines = out.splitlines()
    assert lines[0].endswith(f"-m venv {tmp_path / 'v'}")
    assert "pip install --quiet torch==9.9" in lines[2]
    assert lines[3].endswith(f"-e '{ROOT}[dev]'") or lines[3].endswith(f"-e {ROOT}[dev]")
    assert "ipykernel install --user --name attention-course" in lines[4]
    assert not (tmp_path / "v").exists(), "--dry-run must not create the venv"


def test_course_py_splits_a_torch_spec_with_an_index_url(tmp_path):
    spec = "torch --index-url https://download.example/whl/cpu"
    steps = course.install_commands(tmp_path / "v", spec, "k", sys.executable)
    assert steps[2][-3:] == ["torch", "--index-url", "https://download.example/whl/cpu"]


def test_course_py_skips_install_when_the_venv_is_up_to_date():
    venv = Path(sys.prefix)
    if not course.is_installed(venv):
        pytest.skip("this venv has no up-to-date stamp")
    assert _dry_run("install", "--venv", str(venv)) == ""


def test_course_py_lab_dry_run_is_the_learner_lab():
    out = _dry_run("lab", "--no-install", "--port", "9999", "--ip", "127.0.0.1")
    assert "jupyter lab --port=9999 --ip=127.0.0.1" in out
    assert out.rstrip().endswith(course.WELCOME)
    assert "nbgrader.server_extensions.formgrader=False" in out
    assert ("--allow-root" in out) == course.is_root()


def test_course_py_test_dry_run_runs_ruff_then_pytest_with_extra_args():
    out = _dry_run("test", "--no-install", "--", "-x", "-k", "masks").splitlines()
    assert "ruff check course_lib tests benchmarks grading" in out[0]
    assert out[1].endswith("-m pytest " + " ".join(course.PYTEST_ARGS) + " -x -k masks")


def test_course_py_rejects_an_unknown_command():
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "course.py"), "serve"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "invalid choice: 'serve'" in result.stderr


@pytest.mark.parametrize("root", [True, False])
@pytest.mark.parametrize("container", [True, False])
@pytest.mark.parametrize("display", [True, False])
def test_lab_flags_follow_root_container_and_display(monkeypatch, root, container, display):
    monkeypatch.setattr(course, "is_root", lambda: root)
    monkeypatch.setattr(course, "in_container", lambda: container)
    monkeypatch.setattr(course, "has_display", lambda: display)
    cmd, env, cwd = course.lab_command(Path("/v"), 8888, None, lecturer=False, extra=[])
    assert ("--allow-root" in cmd) == root
    assert ("--ip=0.0.0.0" in cmd) == container
    assert ("--no-browser" in cmd) == (not display)
    assert "MPLBACKEND" not in env
    assert str(course.LEARNER_CONFIG) in env["JUPYTER_CONFIG_PATH"].split(os.pathsep)
    assert cwd == ROOT


def test_an_explicit_ip_wins_over_the_container_default(monkeypatch):
    monkeypatch.setattr(course, "in_container", lambda: True)
    cmd, _, _ = course.lab_command(Path("/v"), 8888, "127.0.0.1", lecturer=False, extra=[])
    assert "--ip=127.0.0.1" in cmd and "--ip=0.0.0.0" not in cmd


def test_learner_config_disables_the_nbgrader_lab_extension():
    page = json.loads((course.LEARNER_CONFIG / "labconfig" / "page_config.json").read_text())
    assert page["disabledExtensions"] == {course.NBGRADER_LAB_EXTENSION: True}


def test_makefile_and_course_py_agree_on_the_torch_pin_and_the_test_command():
    makefile = (ROOT / "Makefile").read_text()
    assert f"TORCH_SPEC ?= {course.DEFAULT_TORCH}\n" in makefile
    recipe = makefile.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert "ruff check " + " ".join(course.LINT_PATHS) in recipe
    flat = " ".join(recipe.replace("\\\n", " ").split())
    assert "-m pytest " + " ".join(course.PYTEST_ARGS) in flat
