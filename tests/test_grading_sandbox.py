"""The sandbox a student's notebook runs in (grading/sandbox.py), and make grade's refusal to
run student code without one. The notebooks here are one or two cells; each run is one sandbox.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from nbformat.v4 import new_code_cell, new_notebook

from grading import grade, sandbox

ROOT = Path(__file__).resolve().parent.parent
HAS_BWRAP = sandbox.bwrap_path() is not None
needs_bwrap = pytest.mark.skipif(not HAS_BWRAP, reason=sandbox.why_unavailable())
SETTINGS = {"timeout": 60, "story_timeout": 60, "iopub_timeout": 10}

PROBE = """
import json, os, socket, subprocess
found = {"uid": os.getuid(), "home": os.path.expanduser("~"), "cwd": os.getcwd()}
found["sees"] = [p for p in PATHS if os.path.exists(p)]
try:
    open("/course/course_lib/__init__.py", "a").close()
    found["course_writable"] = True
except OSError:
    found["course_writable"] = False
try:
    socket.create_connection(("1.1.1.1", 53), timeout=3)
    found["network"] = True
except OSError:
    found["network"] = False
import course_lib
found["course_lib"] = course_lib.__file__
subprocess.Popen(["setsid", "sleep", "987654"], start_new_session=True)
print("PROBE " + json.dumps(found))
"""


def _probe(paths: list[str], mode: str, course_copy: Path) -> tuple[dict, sandbox.Outcome]:
    source = f"PATHS = {paths!r}\n" + PROBE
    nb = new_notebook(cells=[new_code_cell(source)])
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    outcome = sandbox.run("probe.ipynb", nb, SETTINGS, course_copy, mode, wall_limit=300)
    assert outcome.ok, outcome.reason + outcome.log[-3000:]
    text = "".join(o.get("text", "") for o in outcome.notebook.cells[0].outputs)
    line = next(x for x in text.splitlines() if x.startswith("PROBE "))
    return json.loads(line[len("PROBE ") :]), outcome


@pytest.fixture(scope="module")
def course_copy(tmp_path_factory):
    return sandbox.make_course_copy(tmp_path_factory.mktemp("sandbox") / "course")


@needs_bwrap
def test_a_notebook_in_the_sandbox_sees_only_its_home_and_the_course_copy(course_copy, tmp_path):
    secret = tmp_path / "gradebook.db"
    secret.write_text("the lecturer's")
    paths = [str(ROOT / "course_lib"), str(ROOT / "notebooks"), str(secret)]
    paths += [str(p) for p in sorted(Path.home().iterdir()) if p.name != ".pyenv"][:5]  # home
    paths += ["/proc/1/root/" + str(ROOT).lstrip("/")]
    found, outcome = _probe(paths, "bwrap", course_copy)
    assert found["uid"] == sandbox.NOBODY, "an unprivileged identity"
    assert found["home"] == sandbox.HOME and found["cwd"] == f"{sandbox.HOME}/notebooks"
    assert found["sees"] == [], f"the sandbox sees the lecturer's files: {found['sees']}"
    assert found["course_writable"] is False, "the course copy must be read-only"
    assert found["network"] is False, "no network"
    assert found["course_lib"].startswith(sandbox.COURSE_MOUNT), found["course_lib"]
    time.sleep(1)
    left = subprocess.run(["pgrep", "-f", "sleep 987654"], capture_output=True, text=True)
    assert left.stdout.strip() == "", "a process started in the sandbox outlived it"


@needs_bwrap
def test_a_notebook_past_the_wall_clock_limit_is_stopped_with_everything_it_started(course_copy):
    nb = new_notebook(
        cells=[
            new_code_cell(
                "import subprocess, time\nsubprocess.Popen(['sleep', '876543'])\ntime.sleep(600)"
            )
        ]
    )
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    start = time.perf_counter()
    outcome = sandbox.run(
        "slow.ipynb", nb, {**SETTINGS, "story_timeout": 900}, course_copy, "bwrap", wall_limit=20
    )
    assert time.perf_counter() - start < 90
    assert not outcome.ok and outcome.hit_limit and "limit" in outcome.reason
    left = subprocess.run(["pgrep", "-f", "sleep 876543"], capture_output=True, text=True)
    assert left.stdout.strip() == ""


def test_make_grade_refuses_to_run_student_code_without_a_sandbox(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(sandbox, "bwrap_path", lambda: None)
    monkeypatch.delenv(sandbox.UNSAFE_FLAG, raising=False)
    with pytest.raises(sandbox.SandboxUnavailable, match=sandbox.UNSAFE_FLAG):
        sandbox.choose()
    (tmp_path / "subs" / "alice").mkdir(parents=True)
    code = grade.main(["--course", str(tmp_path / "c"), "grade", str(tmp_path / "subs")])
    assert code == 2
    err = capsys.readouterr().err
    assert "refusing to run student code without a sandbox" in err and "bubblewrap" in err
    assert not (tmp_path / "c").exists(), "nothing was built or run"
    monkeypatch.setenv(sandbox.UNSAFE_FLAG, "1")
    assert sandbox.choose() == "none", "the lecturer's explicit flag allows it"
