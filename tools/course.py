"""The course's two commands without `make` (Windows, or any machine): the same steps as the Makefile.

    python tools/course.py lab             # create .venv, install the course, open JupyterLab at 00
    python tools/course.py test            # the same .venv, then lint, unit tests, every notebook
    python tools/course.py install         # only create/update .venv (what `make install` runs)
    python tools/course.py lab --lecturer  # JupyterLab with nbgrader's panels (`make lab-lecturer`)
    python tools/course.py lab --dry-run   # print the commands instead of running them

This file is the one place the install steps live: `make install` (and so `make lab`,
`make test`) runs `python tools/course.py install`, and `make lab` runs `... lab`. It uses only
the standard library, so any Python >= 3.11 can run it before .venv exists.

The learner's lab leaves out nbgrader's Formgrader and assignment menus (they are for the
lecturer); it passes --allow-root when run as root (containers, cloud notebooks), listens on
all interfaces inside a container so a published port reaches it, and does not try to open a
browser where there is no display: JupyterLab then prints the URL (with its token) to open.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TORCH = (
    "torch==2.13.0"  # the Makefile's TORCH_SPEC default: a CPU wheel on the reference machine
)
KERNEL_NAME = "attention-course"
KERNEL_DISPLAY = "Attention course (.venv)"
WELCOME = "notebooks/00_welcome.ipynb"
STAMP = ".installed"  # inside the venv: newer than pyproject.toml means "installed"

# nbgrader's parts of JupyterLab: the lecturer's, switched off in the learner's lab.
NBGRADER_SERVER_EXTENSIONS = (
    "nbgrader.server_extensions.formgrader",
    "nbgrader.server_extensions.validate_assignment",
    "nbgrader.server_extensions.assignment_list",
    "nbgrader.server_extensions.course_list",
)
NBGRADER_LAB_EXTENSION = "@jupyter/nbgrader"
# A Jupyter config folder of the learner's lab (added with JUPYTER_CONFIG_PATH): its
# labconfig/page_config.json disables NBGRADER_LAB_EXTENSION.
LEARNER_CONFIG = ROOT / "tools" / "lab_config" / "learner"
LECTURER_ROOT = ROOT / "build" / "grading"  # `make student` builds this nbgrader course folder

# `make test`, step by step (tests/test_lab_start.py checks that the Makefile says the same).
LINT_PATHS = ("course_lib", "tests", "benchmarks", "grading")
PYTEST_ARGS = (
    "tests",
    "notebooks",
    "--nbval-lax",
    "--nbval-current-env",
    "--nbval-sanitize-with",
    "tests/nbval_sanitize.cfg",
    "--durations=15",
    "-q",
)


def venv_bin(venv: Path, name: str) -> Path:
    """A program of the venv: bin/<name> on Linux and macOS, Scripts\\<name>.exe on Windows."""
    if os.name == "nt":
        return venv / "Scripts" / f"{name}.exe"
    return venv / "bin" / name


def is_installed(venv: Path) -> bool:
    """The venv's stamp exists and is newer than pyproject.toml (the Makefile's rule)."""
    stamp = venv / STAMP
    pyproject = ROOT / "pyproject.toml"
    return stamp.exists() and stamp.stat().st_mtime >= pyproject.stat().st_mtime


def install_commands(venv: Path, torch_spec: str, kernel: str, python: str) -> list[list[str]]:
    """Create the venv (if needed), pin PyTorch, install the course with [dev], register the kernel."""
    py = str(venv_bin(venv, "python"))
    commands = []
    if not venv_bin(venv, "python").exists():
        commands.append([python, "-m", "venv", str(venv)])
    commands += [
        [py, "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
        [py, "-m", "pip", "install", "--quiet", *shlex.split(torch_spec)],
        [py, "-m", "pip", "install", "--quiet", "-e", f"{ROOT}[dev]"],
        [py, "-m", "ipykernel", "install", "--user", "--name", kernel]
        + ["--display-name", KERNEL_DISPLAY],
    ]
    return commands


def in_container() -> bool:
    """Docker (/.dockerenv), Podman (/run/.containerenv) or a runtime that sets $container."""
    return (
        Path("/.dockerenv").exists()
        or Path("/run/.containerenv").exists()
        or bool(os.environ.get("container"))
    )


def has_display() -> bool:
    """Can a browser window open here? Windows and macOS: yes; Linux: only with X11 or Wayland."""
    if sys.platform in ("win32", "darwin"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def lab_command(
    venv: Path,
    port: int,
    ip: str | None,
    lecturer: bool,
    extra: list[str],
    course_dir: Path = LECTURER_ROOT,
) -> tuple[list[str], dict[str, str], Path]:
    """(argv, environment, working folder) of `jupyter lab` for a learner or a lecturer.

    The lecturer's lab starts in course_dir, an nbgrader course folder with its
    nbgrader_config.py; the learner's opens the welcome notebook without nbgrader's parts.
    """
    env = dict(os.environ)
    env.pop("MPLBACKEND", None)  # `make` exports agg for the tests; the lab's kernels draw inline
    cmd = [str(venv_bin(venv, "jupyter")), "lab", f"--port={port}"]
    if ip is None and in_container():
        ip = "0.0.0.0"  # a published port (docker run -p 8888:8888) reaches the lab
    if ip is not None:
        cmd.append(f"--ip={ip}")
    if is_root():
        cmd.append("--allow-root")  # JupyterLab refuses root without it; containers run as root
    if not has_display():
        cmd.append("--no-browser")  # no window can open; JupyterLab prints the URL instead
    if lecturer:
        cwd = course_dir  # nbgrader reads nbgrader_config.py from the folder it starts in
        cmd.append(f"--ServerApp.root_dir={cwd}")
    else:
        cwd = ROOT
        cmd += [
            f"--ServerApp.jpserver_extensions={name}=False" for name in NBGRADER_SERVER_EXTENSIONS
        ]
        paths = [str(LEARNER_CONFIG), *filter(None, [env.get("JUPYTER_CONFIG_PATH")])]
        env["JUPYTER_CONFIG_PATH"] = os.pathsep.join(paths)
        cmd.append(WELCOME)
    return cmd + extra, env, cwd


def test_commands(venv: Path, extra: list[str]) -> list[list[str]]:
    """ruff, then pytest on the unit tests and every notebook (nbval)."""
    return [
        [str(venv_bin(venv, "ruff")), "check", *LINT_PATHS],
        [str(venv_bin(venv, "python")), "-m", "pytest", *PYTEST_ARGS, *extra],
    ]


def show(cmd: list[str]) -> str:
    return shlex.join(cmd) if os.name != "nt" else subprocess.list2cmdline(cmd)


def run(cmd: list[str], dry_run: bool, **kwargs) -> int:
    """Print a command; run it unless dry_run. Returns its exit status."""
    print(("would run: " if dry_run else "+ ") + show(cmd), flush=True)
    if dry_run:
        return 0
    return subprocess.run(cmd, cwd=kwargs.pop("cwd", ROOT), **kwargs).returncode


def install(args: argparse.Namespace) -> int:
    """Run the install steps unless the venv is already up to date (or --force)."""
    venv = args.venv
    if is_installed(venv) and not args.force:
        return 0
    for cmd in install_commands(venv, args.torch, args.kernel, sys.executable):
        rc = run(cmd, args.dry_run)
        if rc != 0:
            print(f"install step failed (exit {rc}): {show(cmd)}", file=sys.stderr)
            return rc
    if not args.dry_run:
        (venv / STAMP).touch()
    return 0


def lab(args: argparse.Namespace) -> int:
    """Install if needed, then start JupyterLab in the foreground (Ctrl+C stops it)."""
    rc = install(args) if not args.no_install else 0
    if rc != 0:
        return rc
    if args.lecturer:  # nbgrader's course folder, its source/ fresh from notebooks/
        rc = run(
            [str(venv_bin(args.venv, "python")), "-m", "grading.grade", "student"], args.dry_run
        )
        if rc != 0:
            return rc
    cmd, env, cwd = lab_command(args.venv, args.port, args.ip, args.lecturer, args.extra)
    if not args.dry_run:
        print(
            "Starting JupyterLab. If no browser opens, copy the "
            "http://127.0.0.1:<port>/lab?token=... URL it prints below into one. "
            "Ctrl+C stops it.",
            flush=True,
        )
    try:
        return run(cmd, args.dry_run, env=env, cwd=cwd)
    except KeyboardInterrupt:
        return 0


def test(args: argparse.Namespace) -> int:
    """Install if needed, then lint and every test, as `make test` does."""
    rc = install(args) if not args.no_install else 0
    for cmd in test_commands(args.venv, args.extra):
        if rc != 0:
            return rc
        rc = run(cmd, args.dry_run)
    if rc == 5:
        print("pytest collected no tests: that is a failure", file=sys.stderr)
    return rc


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python tools/course.py", description=__doc__.splitlines()[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--venv", type=Path, default=Path(os.environ.get("VENV", ROOT / ".venv")), help=".venv"
    )
    common.add_argument(
        "--torch",
        default=os.environ.get("TORCH_SPEC", DEFAULT_TORCH),
        help=f"pip requirement(s) for PyTorch, e.g. 'torch --index-url URL' (default {DEFAULT_TORCH})",
    )
    common.add_argument("--kernel", default=os.environ.get("KERNEL_NAME", KERNEL_NAME))
    common.add_argument("--dry-run", action="store_true", help="print the commands only")
    common.add_argument("--force", action="store_true", help="reinstall even if up to date")
    common.add_argument("--no-install", action="store_true", help="skip the install step")
    sub = ap.add_subparsers(dest="command", required=True, metavar="{lab,test,install}")
    sub.add_parser("install", parents=[common], help="create/update .venv")
    p_lab = sub.add_parser("lab", parents=[common], help="open the course in JupyterLab")
    p_lab.add_argument("--port", type=int, default=int(os.environ.get("PORT", 8888)))
    p_lab.add_argument(
        "--ip", default=os.environ.get("IP") or None, help="default: 0.0.0.0 in a container"
    )
    p_lab.add_argument("--lecturer", action="store_true", help="with nbgrader's panels")
    p_lab.add_argument("extra", nargs="*", help="more `jupyter lab` arguments (after --)")
    p_test = sub.add_parser("test", parents=[common], help="lint, unit tests, every notebook")
    p_test.add_argument("extra", nargs="*", help="more pytest arguments (after --)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.venv = args.venv if args.venv.is_absolute() else (ROOT / args.venv)
    args.extra = getattr(args, "extra", [])
    return {"install": install, "lab": lab, "test": test}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
