"""Run one submitted notebook; this is the program that runs INSIDE the sandbox.

    python -m grading.runner < job.json > result.zip

The grader (grading/sandbox.py) starts it in the sandbox, with a read-only copy of the course's
code on PYTHONPATH. It reads one job from stdin, JSON: {"name": "03_self_attention.ipynb",
"notebook": <the sanitized notebook>, "execute": {GuardedExecute's settings}}, runs the notebook
top to bottom with GuardedExecute (grading/execute.py) in ./notebooks/, and writes one zip file
to stdout:

- `notebook.ipynb`: the notebook with its outputs;
- `records/<grade_id>/<n>.pt`: what the checks recorded while that graded cell ran (the learner
  function's return values on the checks' inputs, see course_lib/checks/_machinery.py);
- `run.json`: kernel restarts, lost replies, seconds.

Nothing here is trusted by the grader: the learner's code runs in the same sandbox and could
rewrite any of it. The grader takes only the outputs from this notebook (cell sources come from
its own copy) and decides the points from the records with a judge of its own.
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
import zipfile
from pathlib import Path

# jsonschema imports rfc3987_syntax, which builds a grammar for seconds at import (every
# sandbox pays it): nbformat's validation does not need it
sys.modules.setdefault("rfc3987_syntax", None)

import nbformat  # noqa: E402

RECORD_ENV = "COURSE_CHECK_RECORD"  # the kernel's checks write their records there


def _grade_id(cell) -> str | None:
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return meta.get("grade_id") if meta.get("grade") else None


def main() -> int:
    result_fd = os.dup(1)  # the result goes to the original stdout, nothing else does
    os.dup2(2, 1)  # stray prints (ours, nbclient's, the kernel's children's) go to the log
    os.set_inheritable(result_fd, False)
    job = json.loads(sys.stdin.read())
    home = Path.cwd()
    work, records = home / "notebooks", home / ".records"
    work.mkdir(exist_ok=True)
    records.mkdir(exist_ok=True)
    os.environ[RECORD_ENV] = str(records)
    nb = nbformat.reads(json.dumps(job["notebook"]), as_version=4)
    (work / job["name"]).write_text(nbformat.writes(nb))

    from grading.execute import GuardedExecute

    kept: dict[str, list[bytes]] = {}

    class RecordingExecute(GuardedExecute):
        """GuardedExecute that files the records made while a graded cell ran under its id."""

        def preprocess_cell(self, cell, resources, index):
            before = set(os.listdir(records))
            try:
                return super().preprocess_cell(cell, resources, index)
            finally:
                gid = _grade_id(cell)
                for name in sorted(set(os.listdir(records)) - before):
                    path = records / name
                    if gid is not None and len(kept.get(gid, ())) < 50:
                        kept.setdefault(gid, []).append(path.read_bytes())
                    path.unlink()

    settings = dict(job.get("execute", {}))
    executor = RecordingExecute(kernel_name="python3", **settings)
    start = time.perf_counter()
    nb, _ = executor.preprocess(nb, {"metadata": {"path": str(work)}})
    run = {
        "seconds": round(time.perf_counter() - start, 1),
        "restarts": executor._restarts,
        "lost_replies": executor.lost_replies,
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("notebook.ipynb", nbformat.writes(nb))
        for gid, blobs in kept.items():
            for n, blob in enumerate(blobs):
                z.writestr(f"records/{gid}/{n}.pt", blob)
        z.writestr("run.json", json.dumps(run))
    with os.fdopen(result_fd, "wb") as out:
        out.write(buffer.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
