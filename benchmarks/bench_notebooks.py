"""Every notebook under nbval, timed on a quiet machine and with one other process busy.

The course's thread policy (course_lib.utils.configure_threads: one thread unless
COURSE_THREADS says otherwise) must keep a notebook within 2x its quiet time when another
process saturates a core, as on a learner's laptop with a browser open. For each notebook this
runs `pytest <notebook> --nbval-lax ...` twice, quiet and beside a busy-loop process, and prints
the wall times, their ratio and whether nbval passed. Run it on an otherwise idle machine:

    .venv/bin/python benchmarks/bench_notebooks.py [notebooks/07_cross_attention.ipynb ...]
        [--threads N]    # COURSE_THREADS for the notebooks (default: the course's policy)
        [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NBVAL = ["--nbval-lax", "--nbval-current-env", "--nbval-sanitize-with", "tests/nbval_sanitize.cfg"]
BUSY_LOOP = "while True: pass"


def run_nbval(notebook: Path, env: dict[str, str]) -> tuple[float, bool]:
    """Wall seconds of one nbval run of `notebook`, and whether it passed."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", str(notebook), "-q", "-p", "no:cacheprovider", *NBVAL],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - start, done.returncode == 0


def measure(notebook: Path, env: dict[str, str]) -> dict[str, float | bool | str]:
    """Quiet, then with one busy core: seconds, ratio and pass/fail."""
    quiet, ok_quiet = run_nbval(notebook, env)
    burner = subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
    try:
        time.sleep(1.0)  # let the busy loop take its core
        busy, ok_busy = run_nbval(notebook, env)
    finally:
        burner.kill()
        burner.wait()
    return {
        "notebook": notebook.stem,
        "quiet_s": round(quiet, 1),
        "busy_s": round(busy, 1),
        "ratio": round(busy / quiet, 2),
        "passed": ok_quiet and ok_busy,
    }


def main(argv: list[str] | None = None) -> int:
    """Measure the notebooks, print a Markdown table, optionally write JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebooks", nargs="*", type=Path)
    ap.add_argument("--threads", type=int, default=None, help="COURSE_THREADS for the kernels")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    env = dict(os.environ)  # the conftest lets the kernels draw inline, as in the lab
    if args.threads is not None:
        env["COURSE_THREADS"] = str(args.threads)
    paths = args.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb"))
    print(f"cores: {os.cpu_count()}, load before: {os.getloadavg()[0]:.2f}", flush=True)
    print("| notebook | quiet (s) | one busy core (s) | ratio | nbval |\n|---|---|---|---|---|")
    rows = []
    for path in paths:
        row = measure(path, env)
        rows.append(row)
        status = "pass" if row["passed"] else "FAIL"
        print(
            f"| {row['notebook']} | {row['quiet_s']} | {row['busy_s']} | {row['ratio']} | {status} |",
            flush=True,
        )
    quiet = sum(r["quiet_s"] for r in rows)
    busy = sum(r["busy_s"] for r in rows)
    print(f"| total | {quiet:.0f} | {busy:.0f} | {busy / quiet:.2f} | |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0 if all(r["passed"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
