"""Run a student's notebook in a sandbox: bubblewrap, a fresh home, a read-only copy of the course.

One notebook of one student = one sandbox (`run`), started by the grader and gone, with every
process in it, before the grader reads what came out. The sandbox (bubblewrap, `bwrap`) has

- its own PID, network, IPC and UTS namespaces: no network (only its own loopback, which the
  kernel's ZeroMQ sockets use), no view of the host's processes; when the runner ends or the
  per-notebook wall-clock limit is hit, the namespace's init dies and the kernel kills every
  process left in it (`--die-with-parent`; a detached or `setsid` process does not survive);
- a root file system that is empty but for read-only binds of /usr, /etc, the Python install,
  the virtual environment, and `/course`: a copy of the course's code (course_lib, the grading
  runner, data/) made for this grading run; the checkout, build/grading/ (gradebook, instructor
  notebooks, other submissions), the submissions folder and the lecturer's home are not there;
- a fresh tmpfs home, /home/student (size-limited), holding only this submission, in
  /home/student/notebooks/ (`../checkpoints` works as in the course), and a tmpfs /tmp;
- an unprivileged identity: as root, bwrap keeps only CAP_SETUID/CAP_SETGID for `setpriv`,
  which switches to nobody (65534), clears the groups and all capabilities and sets
  no_new_privs; as another user, bwrap's user namespace maps that user to 65534;
- a limit on processes (RLIMIT_NPROC) and no core dumps.

Not isolated: CPU time and memory (a cgroup would be needed), the kernel's system calls
(no seccomp filter), and what is readable under /usr and /etc.

The job goes in on stdin and the result (a zip: the executed notebook, the checks' records)
comes out on stdout, read with a size limit; the sandbox's stderr is the log. Nothing that comes
out is trusted: see grading/judge.py.
"""

from __future__ import annotations

import atexit
import compileall
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import Integer, Unicode

from grading import report

ROOT = Path(__file__).resolve().parent.parent
NOBODY = 65534
HOME = "/home/student"
COURSE_MOUNT = "/course"
MAX_RESULT = 200 * 1024 * 1024  # bytes of result read from a sandbox
MAX_LOG = 2 * 1024 * 1024  # bytes of its stderr kept
HOME_SIZE = 2 * 1024**3  # bytes of the tmpfs home (checkpoints, the notebook's files)
TMP_SIZE = 1024**3
NPROC = 512  # processes of the sandbox user
UNSAFE_FLAG = "UNSAFE_NO_SANDBOX"
# what the sandbox's copy of the course holds (and the grading modules the runner needs)
COURSE_PARTS = ("course_lib", "data")
GRADING_PARTS = ("__init__.py", "execute.py", "runner.py")


class SandboxUnavailable(RuntimeError):
    """No sandbox can be had here, and running student code without one was not allowed."""


def bwrap_path() -> str | None:
    """The bubblewrap binary, if it is installed and can make a sandbox here."""
    path = shutil.which("bwrap")
    if path is None:
        return None
    probe = subprocess.run(
        [path, "--ro-bind", "/", "/", "--unshare-pid", "--unshare-net", "--", "true"],
        capture_output=True,
        timeout=60,
    )
    return path if probe.returncode == 0 else None


def why_unavailable() -> str:
    """A sentence for the lecturer: why there is no sandbox and how to get one."""
    if shutil.which("bwrap") is None:
        how = (
            "install bubblewrap (Debian/Ubuntu: `sudo apt-get install bubblewrap`; `make grade` "
            "does it when run as root with apt-get)"
        )
        return f"bubblewrap (bwrap) is not installed: {how}"
    return (
        "bubblewrap is installed but cannot create namespaces here (in a container, allow "
        "user namespaces or run it privileged; on Ubuntu 24.04 allow unprivileged user "
        "namespaces for bwrap, or run make grade as root)"
    )


def choose(mode: str | None = None) -> str:
    """'bwrap', or 'none' when the lecturer explicitly allowed running without a sandbox."""
    mode = mode or ("none" if os.environ.get(UNSAFE_FLAG) == "1" else "bwrap")
    if mode == "none":
        return mode
    if mode != "bwrap":
        raise ValueError(f"unknown sandbox {mode!r}: 'bwrap' or 'none'")
    if bwrap_path() is None:
        raise SandboxUnavailable(
            "refusing to run student code without a sandbox: "
            + why_unavailable()
            + f". Student notebooks would run as you, with access to your files, the gradebook "
            f"and the other submissions. To run them anyway (only for code you trust): "
            f"{UNSAFE_FLAG}=1 make grade ..."
        )
    return mode


def make_course_copy(dest: Path) -> Path:
    """A copy of the code the sandbox needs (course_lib, data/, the runner), compiled, a+rX."""
    dest.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")
    for part in COURSE_PARTS:
        if (ROOT / part).exists():
            shutil.copytree(ROOT / part, dest / part, ignore=ignore)
    (dest / "grading").mkdir()
    for name in GRADING_PARTS:
        shutil.copy2(ROOT / "grading" / name, dest / "grading" / name)
    compileall.compile_dir(str(dest), quiet=1, workers=1)
    for path in [dest, *dest.rglob("*")]:
        mode = 0o755 if path.is_dir() else 0o644
        path.chmod(mode)
    return dest


@dataclass
class Outcome:
    """What came back from one sandboxed run (all of it written by untrusted code)."""

    ok: bool
    reason: str = ""  # why there is no result
    notebook: nbformat.NotebookNode | None = None
    records: dict[str, list[bytes]] = field(default_factory=dict)
    run: dict = field(default_factory=dict)
    log: str = ""
    seconds: float = 0.0
    hit_limit: bool = False


def _parents(path: Path) -> list[str]:
    """'/a', '/a/b' for /a/b/c: the directories bwrap must create before binding /a/b/c."""
    return [str(p) for p in reversed(path.parents) if str(p) != "/"]


def bwrap_command(course_copy: Path, python: str) -> list[str]:
    """The bubblewrap command line that runs `python -m grading.runner` in the sandbox."""
    venv = Path(sys.prefix)
    base = Path(sys.base_prefix).resolve()
    cmd = [bwrap_path() or "bwrap"]
    for top in ("/bin", "/lib", "/lib64", "/lib32", "/sbin"):
        if os.path.islink(top):
            cmd += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            cmd += ["--ro-bind", top, top]
    cmd += ["--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc"]
    made: set[str] = {"/usr", "/etc"}
    for target in (base, venv):
        for parent in _parents(target):
            if parent not in made and not any(parent.startswith(m + "/") for m in ("/usr",)):
                cmd += ["--perms", "0755", "--dir", parent]
                made.add(parent)
        if str(target) not in made and not str(target).startswith("/usr/"):
            cmd += ["--ro-bind", str(target), str(target)]
            made.add(str(target))
    cmd += ["--ro-bind", str(course_copy), COURSE_MOUNT]
    cmd += ["--proc", "/proc", "--dev", "/dev"]
    cmd += ["--size", str(TMP_SIZE), "--perms", "01777", "--tmpfs", "/tmp"]
    cmd += ["--perms", "0755", "--dir", "/home"]
    cmd += ["--size", str(HOME_SIZE), "--perms", "01777", "--tmpfs", HOME]
    cmd += ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts"]
    cmd += ["--unshare-cgroup-try", "--die-with-parent", "--new-session", "--chdir", HOME]
    cmd += ["--clearenv"]
    for key, value in _environment(python).items():
        cmd += ["--setenv", key, value]
    if os.geteuid() == 0:
        cmd += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--"]
        cmd += [shutil.which("setpriv") or "/usr/bin/setpriv"]
        cmd += [f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
        cmd += ["--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]
    else:
        cmd += ["--unshare-user", "--uid", str(NOBODY), "--gid", str(NOBODY), "--"]
    return [*cmd, python, "-m", "grading.runner"]


def _environment(python: str) -> dict[str, str]:
    """The sandbox's whole environment (bwrap --clearenv): nothing of the lecturer's."""
    env = {
        "HOME": HOME,
        "USER": "student",
        "PATH": f"{Path(python).parent}:/usr/local/bin:/usr/bin:/bin",
        "PYTHONPATH": COURSE_MOUNT,
        "PYTHONDONTWRITEBYTECODE": "1",
        "MPLBACKEND": "agg",
        "MPLCONFIGDIR": "/tmp/matplotlib",
        "IPYTHONDIR": "/tmp/ipython",
        "JUPYTER_RUNTIME_DIR": "/tmp/jupyter-runtime",
        "JUPYTER_DATA_DIR": "/tmp/jupyter-data",
        "JUPYTER_CONFIG_DIR": "/tmp/jupyter-config",
        "JUPYTER_PLATFORM_DIRS": "1",
        "LANG": "C.UTF-8",
    }
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "COURSE_THREADS", "TZ"):
        if key in os.environ:
            env[key] = os.environ[key]
    return env


def _unsafe_command(python: str) -> list[str]:
    return [python, "-m", "grading.runner"]


def _limits() -> None:
    """In the child before exec: a cap on processes, no core dumps."""
    import resource

    resource.setrlimit(resource.RLIMIT_NPROC, (NPROC, NPROC))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _read_capped(stream, limit: int, out: list) -> None:
    """Read a stream to its end, keeping at most `limit` bytes (the rest is drained)."""
    kept, total = io.BytesIO(), 0
    while chunk := stream.read(1 << 16):
        total += len(chunk)
        if kept.tell() < limit:
            kept.write(chunk[: limit - kept.tell()])
    out.append((kept.getvalue(), total))


def run(
    name: str,
    notebook: dict,
    execute: dict,
    course_copy: Path,
    mode: str = "bwrap",
    wall_limit: float = 3600,
) -> Outcome:
    """Run one notebook in a fresh sandbox; return what came out once every process is gone."""
    python = str(Path(sys.prefix) / "bin" / "python")
    job = json.dumps({"name": name, "notebook": notebook, "execute": execute}).encode()
    scratch = None
    if mode == "bwrap":
        cmd, cwd, env = bwrap_command(course_copy, python), "/", None
    else:  # UNSAFE: the same runner as a plain process, in a temporary folder
        scratch = tempfile.mkdtemp(prefix="grading-unsafe-")
        cmd, cwd = _unsafe_command(python), scratch
        env = {**os.environ, **_environment(python), "HOME": scratch}
        env["PYTHONPATH"] = str(course_copy)
        for key in ("MPLCONFIGDIR", "IPYTHONDIR", "JUPYTER_RUNTIME_DIR", "JUPYTER_DATA_DIR"):
            env[key] = os.path.join(scratch, ".tmp", key.lower())
        env.pop("JUPYTER_CONFIG_DIR", None)
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=_limits,
        start_new_session=True,
    )
    out: list = []
    err: list = []
    readers = [
        threading.Thread(target=_read_capped, args=(proc.stdout, MAX_RESULT, out), daemon=True),
        threading.Thread(target=_read_capped, args=(proc.stderr, MAX_LOG, err), daemon=True),
    ]
    for t in readers:
        t.start()
    try:
        proc.stdin.write(job)
        proc.stdin.close()
    except BrokenPipeError:
        pass
    hit_limit = False
    try:
        proc.wait(timeout=wall_limit)
    except subprocess.TimeoutExpired:
        hit_limit = True
    _kill_group(proc)
    for t in readers:
        t.join(timeout=30)
    seconds = time.perf_counter() - start
    if scratch is not None:
        shutil.rmtree(scratch, ignore_errors=True)
    log = err[0][0].decode("utf-8", "replace") if err else ""
    if hit_limit:
        return Outcome(
            False,
            f"the notebook ran past the grader's limit of {wall_limit:.0f} s for one notebook "
            "and was stopped",
            log=log,
            seconds=seconds,
            hit_limit=True,
        )
    data, total = out[0] if out else (b"", 0)
    if total > MAX_RESULT:
        return Outcome(False, "the notebook's result was too large", log=log, seconds=seconds)
    if proc.returncode != 0 or not data:
        return Outcome(
            False, f"the grader's runner failed (exit status {proc.returncode})", log=log,
            seconds=seconds,
        )  # fmt: skip
    try:
        return _unpack(data, log, seconds)
    except Exception as exc:  # a result the learner's code garbled costs only this notebook
        return Outcome(False, f"unreadable result ({type(exc).__name__}: {exc})", log=log,
                       seconds=seconds)  # fmt: skip


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill the sandbox (bwrap: its namespace goes with it) and its process group."""
    import signal

    for sig in (signal.SIGKILL,):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass


def _unpack(data: bytes, log: str, seconds: float) -> Outcome:
    """The zip from the runner, read with limits on names and sizes."""
    records: dict[str, list[bytes]] = {}
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        infos = z.infolist()
        if len(infos) > 5000 or sum(i.file_size for i in infos) > 4 * MAX_RESULT:
            raise ValueError("too many or too large entries")
        notebook = nbformat.reads(z.read("notebook.ipynb").decode("utf-8"), as_version=4)
        run_info = json.loads(z.read("run.json")) if "run.json" in z.namelist() else {}
        for info in infos:
            parts = info.filename.split("/")
            if len(parts) == 3 and parts[0] == "records" and parts[2].endswith(".pt"):
                records.setdefault(parts[1], []).append(z.read(info))
    for blobs in records.values():
        blobs[:] = blobs[:50]
    return Outcome(True, notebook=notebook, records=records, run=run_info, log=log,
                   seconds=seconds)  # fmt: skip


# ----------------------------------------------------------------------------- nbgrader step

# GuardedExecute's settings that travel into the sandbox (the runner builds it from them)
EXECUTE_SETTINGS = (
    "timeout",
    "story_timeout",
    "interrupt_on_timeout",
    "error_on_timeout",
    "raise_on_iopub_timeout",
    "iopub_timeout",
    "startup_timeout",
    "max_output_chars",
    "interrupt_grace",
    "max_restarts",
    "lost_reply_grace",
    "extra_arguments",
)
_course_copies: dict[str, Path] = {}


COPY_ENV = "GRADING_COURSE_COPY"  # a folder for the copy (kept), instead of a temporary one


def shared_course_copy() -> Path:
    """One copy of the course's code per grading process, removed when it exits.

    With GRADING_COURSE_COPY=folder the copy is made there (or the one already there is used)
    and kept, e.g. so that a test can check it is unchanged afterwards.
    """
    chosen = os.environ.get(COPY_ENV)
    if chosen and "path" not in _course_copies:
        path = Path(chosen)
        _course_copies["path"] = path if path.is_dir() else make_course_copy(path)
    if "path" not in _course_copies:
        base = Path(tempfile.mkdtemp(prefix="course-sandbox-"))
        base.chmod(0o755)
        atexit.register(shutil.rmtree, base, ignore_errors=True)
        _course_copies["path"] = make_course_copy(base / "course")
    return _course_copies["path"]


class SandboxedExecute(NbGraderPreprocessor):
    """nbgrader's Execute step, done by GuardedExecute inside a fresh sandbox per notebook.

    The notebook (already sanitized by nbgrader: locked cells restored) goes in; only the
    outputs and execution counts come back into this notebook, cell by cell. What the checks
    recorded goes to resources["sandbox"] for the judge (grading/judge.py).
    """

    sandbox = Unicode(
        "",
        help="'bwrap' (bubblewrap), or 'none' to run without isolation (unsafe); empty: "
        "bwrap, or none when UNSAFE_NO_SANDBOX=1 is in the environment.",
    ).tag(config=True)
    notebook_timeout = Integer(
        3600, help="Wall-clock seconds one notebook may run in all, its cells' limits aside."
    ).tag(config=True)

    def preprocess(self, nb, resources):
        from grading.execute import GuardedExecute

        mode = choose(self.sandbox or None)
        guarded = GuardedExecute(config=self.config)
        settings = {name: getattr(guarded, name) for name in EXECUTE_SETTINGS}
        name = f"{resources.get('unique_key', 'notebook')}.ipynb"
        outcome = run(name, nb, settings, shared_course_copy(), mode, self.notebook_timeout)
        resources["sandbox"] = outcome
        entry = report.entry(resources)
        entry.update(sandbox=mode, seconds=round(outcome.seconds, 1), log=outcome.log)
        entry.update({k: outcome.run.get(k) for k in ("restarts", "lost_replies")})
        if not outcome.ok:
            entry["failed"] = outcome.reason
            raise RuntimeError(f"{name}: {outcome.reason}")
        merge_outputs(nb, outcome.notebook)
        return nb, resources


def merge_outputs(nb, executed: dict) -> None:
    """Copy outputs and execution counts from the sandbox's notebook; keep everything else."""
    cells = executed.get("cells") if isinstance(executed, dict) else None
    if not isinstance(cells, list) or len(cells) != len(nb.cells):
        raise RuntimeError("the executed notebook does not have the submission's cells")
    for mine, theirs in zip(nb.cells, cells, strict=True):
        if mine.cell_type != "code":
            continue
        if not isinstance(theirs, dict) or theirs.get("cell_type") != "code":
            raise RuntimeError("the executed notebook's cells do not match the submission's")
        outputs = theirs.get("outputs", [])
        count = theirs.get("execution_count")
        mine.outputs = [nbformat.from_dict(o) for o in outputs] if isinstance(outputs, list) else []
        mine.execution_count = count if isinstance(count, int) else None
    nbformat.validate(nb)  # a garbled output fails this notebook only
