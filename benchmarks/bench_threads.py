"""Which thread policy survives a busy machine? Training steps of the course's models, timed.

Workloads, both taken from the notebooks (sizes, batch sizes, optimisers as there):
  date  notebook 07/09's date translator (course_lib.translation.DATE_MODEL): `train_step` on
        batches of 128 pairs, AdamW
  gpt   notebook 10's character GPT (d_model 128, 4 heads, 3 layers) on CPython's docs:
        batches of 12 windows of 64 characters, AdamW, clipping
Each run is a FRESH Python process (OpenMP reads OMP_WAIT_POLICY / GOMP_SPINCOUNT when torch is
imported) that times both workloads, under one policy and one load:
  quiet  nothing extra
  busy   one extra process spinning on a core (a bounded Python loop, stopped after the run)
Runs are interleaved (every policy and load once per repeat, in a rotating order) so that work
from other users of the machine hits all of them alike. For each run we also record its CPU
time and the CPU time that *other* processes used meanwhile ("others", in cores): a run with
large "others" was disturbed by someone else, not by its policy. Run:

    .venv/bin/python benchmarks/bench_threads.py                      # about 4 minutes
    .venv/bin/python benchmarks/bench_threads.py --repeats 5 --policies 1,2,2-passive
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")
WORKLOADS = ("date", "gpt")
# name -> (threads for torch.set_num_threads, or "lib" = whatever `import course_lib` chose; env)
POLICIES: dict[str, tuple[str, dict[str, str]]] = {
    "1": ("1", {}),
    "2": ("2", {}),
    "2-passive": ("2", {"OMP_WAIT_POLICY": "PASSIVE"}),
    "2-spin1k": ("2", {"GOMP_SPINCOUNT": "1000"}),
    "2-spin3k": ("2", {"GOMP_SPINCOUNT": "3000"}),
    "2-spin10k": ("2", {"GOMP_SPINCOUNT": "10000"}),
    "2-spin30k": ("2", {"GOMP_SPINCOUNT": "30000"}),
    "2-dynamic": ("2", {"OMP_DYNAMIC": "true"}),
    "course_lib": ("lib", {}),  # what `import course_lib` leaves
}
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
THREAD_ENV += ("OMP_DYNAMIC", "COURSE_THREADS")


# ----------------------------------------------------------------------------- measuring


def machine_busy_s() -> float:
    """CPU-seconds all processes of the machine have used since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / CLK_TCK


def process_cpu_s(pid: int) -> float:
    """user + system CPU-seconds of process `pid` (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def timed(fn, busy_pid: int) -> dict[str, float]:
    """Run fn(); its wall and CPU seconds, and the cores other processes used meanwhile."""
    m0, b0 = machine_busy_s(), process_cpu_s(busy_pid) if busy_pid else 0.0
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    machine = machine_busy_s() - m0
    busy = (process_cpu_s(busy_pid) - b0) if busy_pid else 0.0
    return {"wall": wall, "cpu": cpu, "others": max(0.0, machine - cpu - busy) / wall}


# ----------------------------------------------------------------------------- workloads


def date_workload(steps: int):
    """A function running `steps` training steps of notebook 09's date translator."""
    import torch

    from course_lib.data import batch_iterator, date_pairs, date_vocab
    from course_lib.date_recipe import DATE_TRAINING, build_date_model
    from course_lib.training import train_step

    vocab = date_vocab()
    model = build_date_model(vocab, seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=DATE_TRAINING["lr"], weight_decay=0.01)
    batches = batch_iterator(date_pairs(5_000, seed=0, split="train"), vocab, 128, seed=0)
    torch.manual_seed(0)

    def run() -> None:
        for _ in range(steps):
            train_step(model, next(batches), opt, None, clip=DATE_TRAINING["clip"])

    return run


def gpt_workload(steps: int):
    """A function running `steps` training steps of notebook 10's character GPT."""
    import torch

    from course_lib.corpora import encode_text, pydoc_text, split_text
    from course_lib.data import CharVocab
    from course_lib.gpt import GPT
    from course_lib.lm import lm_batch

    train_text, _ = split_text(pydoc_text(), val_fraction=0.1)
    vocab = CharVocab(set(train_text))
    ids = encode_text(train_text, vocab)
    torch.manual_seed(0)
    model = GPT(vocab_size=len(vocab), d_model=128, num_heads=4, num_layers=3, max_len=64)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, betas=(0.9, 0.99))
    gen = torch.Generator().manual_seed(0)

    def run() -> None:
        model.train()
        for _ in range(steps):
            x, y = lm_batch(ids, 12, 64, gen)  # (B, T) each
            _, loss = model(x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()

    return run


def worker(threads: str, steps: dict[str, int], busy_pid: int) -> None:
    """Inside the fresh process: set the threads, time each workload, print one JSON line."""
    import torch

    import course_lib  # noqa: F401  (its import applies the course's thread policy)

    if threads != "lib":
        torch.set_num_threads(int(threads))
    result: dict = {"threads": torch.get_num_threads()}
    for name, build in (("date", date_workload), ("gpt", gpt_workload)):
        if steps[name] > 0:
            result[name] = timed(build(steps[name]), busy_pid)
    print(json.dumps(result))


# ----------------------------------------------------------------------------- the driver


def start_busy(seconds: float) -> subprocess.Popen:
    """One process spinning on a core for at most `seconds` (a plain Python loop)."""
    code = f"import time\nend = time.time() + {seconds:.0f}\nwhile time.time() < end:\n    pass\n"
    return subprocess.Popen([sys.executable, "-c", code])


def stop(proc: subprocess.Popen | None) -> None:
    """Kill a child we started and reap it."""
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait()


def run_once(policy: str, load: str, args: argparse.Namespace, deadline: float) -> dict | None:
    """One fresh process under `policy` and `load`; its measurements, or None past the deadline."""
    threads, extra = POLICIES[policy]
    env = {k: v for k, v in os.environ.items() if k not in THREAD_ENV} | extra
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    left = deadline - time.monotonic()
    if left < 5:
        return None
    busy = start_busy(left + 5) if load == "busy" else None
    try:
        if busy is not None:
            time.sleep(0.3)  # let the spinner get its core
        cmd = [sys.executable, __file__, "--_worker", threads]
        cmd += ["--date-steps", str(args.date_steps), "--gpt-steps", str(args.gpt_steps)]
        cmd += ["--_busy-pid", str(busy.pid if busy else 0)]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=left)
    except subprocess.TimeoutExpired:
        return None
    finally:
        stop(busy)
    if out.returncode != 0:
        raise RuntimeError(f"worker for policy {policy} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def spread(values: list[float]) -> str:
    """median (min-max), seconds."""
    if not values:
        return "-"
    return f"{statistics.median(values):5.1f} ({min(values):.1f}-{max(values):.1f})"


def table(results: dict, policies: list[str], args: argparse.Namespace) -> str:
    """The summary: per workload and policy, quiet and busy wall time, ratios, CPU, others."""
    lines = []
    for w in WORKLOADS:
        steps = getattr(args, f"{w}_steps")
        if steps <= 0:
            continue
        med = {
            (p, load): statistics.median(r[w]["wall"] for r in results[(p, load)])
            for p in policies
            for load in ("quiet", "busy")
            if results[(p, load)]
        }
        best_quiet = min((v for (p, load), v in med.items() if load == "quiet"), default=None)
        lines.append(f"\n{w}: {steps} training steps, wall seconds, median (min-max)")
        lines.append(
            f"{'policy':<11} {'thr':>3} {'quiet':>16} {'busy core':>16} {'busy/quiet':>10} "
            f"{'quiet/best':>10} {'CPU s q/b':>10} {'others q/b':>10}"
        )
        for p in policies:
            q, b = results[(p, "quiet")], results[(p, "busy")]
            thr = "/".join(sorted({str(r["threads"]) for r in q + b})) or "-"
            ratio = f"{med[(p, 'busy')] / med[(p, 'quiet')]:.2f}" if q and b else "-"
            vs_best = f"{med[(p, 'quiet')] / best_quiet:.2f}" if q else "-"
            cpu = "/".join(
                f"{statistics.median(r[w]['cpu'] for r in rs):.1f}" if rs else "-" for rs in (q, b)
            )
            others = "/".join(
                f"{statistics.median(r[w]['others'] for r in rs):.2f}" if rs else "-"
                for rs in (q, b)
            )
            lines.append(
                f"{p:<11} {thr:>3} {spread([r[w]['wall'] for r in q]):>16} "
                f"{spread([r[w]['wall'] for r in b]):>16} {ratio:>10} {vs_best:>10} "
                f"{cpu:>10} {others:>10}"
            )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--policies", default="1,2,2-passive,2-spin10k", help=", ".join(POLICIES))
    p.add_argument("--repeats", type=int, default=3, help="runs per policy and load")
    p.add_argument("--date-steps", type=int, default=30, help="date-translator steps per run")
    p.add_argument("--gpt-steps", type=int, default=60, help="GPT steps per run")
    p.add_argument("--budget", type=float, default=270, help="stop starting runs after this (s)")
    p.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--_busy-pid", type=int, default=0, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Interleave every (policy, load) `repeats` times, then print the table."""
    args = parse_args(argv)
    if args._worker:
        worker(args._worker, {"date": args.date_steps, "gpt": args.gpt_steps}, args._busy_pid)
        return
    policies = [s.strip() for s in args.policies.split(",") if s.strip()]
    unknown = [p for p in policies if p not in POLICIES]
    if unknown:
        raise SystemExit(f"unknown --policies {unknown}; choose from {', '.join(POLICIES)}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` stops the spinner
    print(
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; policies: "
        + "; ".join(f"{p} = {POLICIES[p][0]} thr {POLICIES[p][1] or ''}" for p in policies)
    )
    deadline = time.monotonic() + args.budget
    results: dict = {(p, load): [] for p in policies for load in ("quiet", "busy")}
    combos = [(p, load) for p in policies for load in ("quiet", "busy")]
    done = True
    for r in range(args.repeats):
        shift = (2 * r) % len(combos)  # rotate who goes first
        for p, load in combos[shift:] + combos[:shift]:
            out = run_once(p, load, args, deadline)
            if out is None:
                done = False
                break
            results[(p, load)].append(out)
            d, g = out.get("date", {}), out.get("gpt", {})
            print(
                f"  repeat {r + 1} {p:<11} {load:<5} threads {out['threads']}: "
                f"date {d.get('wall', 0):5.1f} s (cpu {d.get('cpu', 0):4.1f}, others "
                f"{d.get('others', 0):.2f}), gpt {g.get('wall', 0):5.1f} s (cpu "
                f"{g.get('cpu', 0):4.1f}, others {g.get('others', 0):.2f})",
                flush=True,
            )
        if not done:
            print(f"budget of {args.budget:.0f} s reached: the table uses the runs so far")
            break
    print(table(results, policies, args))
    print(
        "\nbusy/quiet: slowdown from one busy core; quiet/best: vs the fastest quiet policy; "
        "others: cores used by other processes meanwhile (noise)"
    )
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
