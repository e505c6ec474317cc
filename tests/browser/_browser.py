"""Helpers for the browser checks: Debian's Chromium, a throw-away JupyterLab, screenshots.

Every wait here is bounded, so a hang fails a test instead of hanging CI.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "build" / "browser"  # git-ignored; look here after a failure
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root in a container
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SERVER_START_S = 90  # JupyterLab's first start on a busy 2-core machine
# Requests a page may make; anything else is aborted and recorded (the course works offline).
LOCAL_PREFIXES = ("file:", "data:", "blob:", "about:", "http://127.0.0.1", "ws://127.0.0.1")


def chromium_path() -> str:
    """Debian's chromium (Playwright's own browser download is not used)."""
    path = os.environ.get("CHROMIUM") or shutil.which("chromium")
    if path is None:
        pytest.fail("Chromium is not installed: run `make test-browser` (it installs it)")
    return path


@dataclass
class Guard:
    """What a page tried to fetch from outside this machine, and what failed or broke in it."""

    blocked: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def screenshot(target, name: str) -> Path:
    """Save a screenshot of a page or a locator under build/browser/ and return its path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    target.screenshot(path=str(path))
    return path


# ----------------------------------------------------------------------------- JupyterLab


@dataclass
class Lab:
    """A running JupyterLab: its URL, the folder it serves, its process and log."""

    url: str
    root: Path
    proc: subprocess.Popen
    log: Path

    def log_tail(self, n: int = 40) -> str:
        """The last lines of the server's log, for failure messages."""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_lab(base: Path) -> Lab:
    """JupyterLab on 127.0.0.1:<free port>, no token, its own config/data/runtime folders.

    The server runs on this venv's Python, so its kernels do too (the venv's python3 kernel
    spec). It serves base/root, a temporary folder: nothing the lab writes (autosave,
    checkpoints) touches the repository.
    """
    root = base / "root"
    dirs = {d: base / d for d in ("config", "data", "runtime")}
    for d in [root, *dirs.values()]:
        d.mkdir(parents=True, exist_ok=True)
    # No "would you like news?" toast over the notebook, no update check.
    settings = dirs["config"] / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True, exist_ok=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    env = dict(os.environ)
    env.pop("MPLBACKEND", None)  # the Makefile exports agg; a learner's lab has the inline one
    env.pop("JUPYTER_PATH", None)
    env.update(
        JUPYTER_CONFIG_DIR=str(dirs["config"]),
        JUPYTER_DATA_DIR=str(dirs["data"]),
        JUPYTER_RUNTIME_DIR=str(dirs["runtime"]),
        OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"),  # kernels share 2 cores with Chromium
    )
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        "--IdentityProvider.token=",
        "--LabApp.expose_app_in_browser=True",  # window.jupyterapp: wait on the kernel itself
        f"--ServerApp.root_dir={root}",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    log = base / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=root)
    lab = Lab(url=f"http://127.0.0.1:{port}", root=root, proc=proc, log=log)
    try:
        _wait_until_serving(lab, time.monotonic() + SERVER_START_S)
    except BaseException:
        stop_lab(lab)
        raise
    return lab


def _wait_until_serving(lab: Lab, deadline: float) -> None:
    """Poll /api/status until the server answers (or exits, or time runs out)."""
    while time.monotonic() < deadline:
        if lab.proc.poll() is not None:
            pytest.fail(f"JupyterLab exited with {lab.proc.returncode}:\n{lab.log_tail()}")
        try:
            with urllib.request.urlopen(f"{lab.url}/api/status", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"JupyterLab did not answer within {SERVER_START_S} s:\n{lab.log_tail()}")


def stop_lab(lab: Lab) -> None:
    """Stop the server by PID (SIGTERM shuts its kernels down), then kill survivors by PID."""
    import psutil  # ships with ipykernel

    try:
        family = psutil.Process(lab.proc.pid).children(recursive=True)  # kernels included
    except psutil.NoSuchProcess:
        family = []
    if lab.proc.poll() is None:
        lab.proc.send_signal(signal.SIGTERM)
        try:
            lab.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            lab.proc.kill()
            lab.proc.wait(timeout=10)
    _, alive = psutil.wait_procs(family, timeout=10)
    for p in alive:
        p.kill()
