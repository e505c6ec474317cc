"""Forward + backward time of course_lib's MultiHeadAttention against nn.MultiheadAttention.

Variants, all self-attention on the same (B, L, d_model) input with requires_grad=True:
  (a) course_lib MultiHeadAttention, need_weights=True   (explicit softmax, weights returned)
  (b) course_lib MultiHeadAttention, need_weights=False  (fused F.scaled_dot_product_attention)
  (c) nn.MultiheadAttention(batch_first=True), need_weights=False

Each repeat times every variant once, in a rotating order, so load from other processes hits
all of them alike; the table shows medians. Run:

    .venv/bin/python benchmarks/bench_mha.py --lengths 32,128,256,512,1024 --repeats 7
    .venv/bin/python benchmarks/bench_mha.py --memory   # also peak memory, one process per cell
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, no install
from course_lib.attention import MultiHeadAttention  # noqa: E402

VARIANTS = {
    "a": "course_lib, need_weights=True",
    "b": "course_lib, need_weights=False",
    "c": "nn.MultiheadAttention",
}


def build(variant: str, d_model: int, heads: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function x -> output for one variant, with the same weights for every variant."""
    torch.manual_seed(0)
    ref = nn.MultiheadAttention(d_model, heads, batch_first=True)
    if variant == "c":
        return lambda x: ref(x, x, x, need_weights=False)[0]
    ours = MultiHeadAttention(d_model, heads).load_from_torch(ref)
    need = variant == "a"
    return lambda x: ours(x, x, x, need_weights=need)[0]


def step(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> None:
    """One forward and backward pass (gradients for the weights and the input)."""
    fn(x).sum().backward()
    x.grad = None


def time_once(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, inner: int
) -> tuple[float, float]:
    """(wall, CPU) seconds per forward+backward, averaged over `inner` back-to-back calls.

    CPU time (all threads of this process) is less disturbed by other processes than wall time.
    """
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(inner):
        step(fn, x)
    return (time.perf_counter() - wall) / inner, (time.process_time() - cpu) / inner


def bench_length(args: argparse.Namespace, L: int) -> dict[str, tuple[float, float]]:
    """Median (wall, CPU) seconds per forward+backward of every variant at sequence length L."""
    x = torch.randn(args.batch, L, args.d_model, requires_grad=True)
    fns = {v: build(v, args.d_model, args.heads) for v in VARIANTS}
    inner = {}
    for v, fn in fns.items():  # warm-up, and choose calls per sample (~target seconds)
        for _ in range(args.warmup):
            step(fn, x)
        one, _ = time_once(fn, x, 1)
        inner[v] = max(1, int(args.target / max(one, 1e-6)))
    samples: dict[str, list[tuple[float, float]]] = {v: [] for v in VARIANTS}
    order = list(VARIANTS)
    for r in range(args.repeats):
        for v in order[r % 3 :] + order[: r % 3]:  # rotate who goes first
            samples[v].append(time_once(fns[v], x, inner[v]))
    return {
        v: (statistics.median(w for w, _ in s), statistics.median(c for _, c in s))
        for v, s in samples.items()
    }


def _status_kib(field: str) -> int:
    """A memory field of /proc/self/status (VmRSS, VmHWM) in KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")


def measure_memory(args: argparse.Namespace, variant: str, L: int) -> int:
    """Peak extra resident memory (bytes) of one forward+backward, -1 if it cannot be measured.

    Linux resets the peak-RSS mark when "5" is written to /proc/self/clear_refs; the peak during
    the call minus the resident size just before it is what the call needed.
    """
    x = torch.randn(args.batch, L, args.d_model, requires_grad=True)
    fn = build(variant, args.d_model, args.heads)
    step(fn, torch.randn(2, 8, args.d_model, requires_grad=True))  # load kernels first
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = _status_kib("VmRSS")
        step(fn, x)
        return max(0, _status_kib("VmHWM") - before) * 1024
    except OSError:
        return -1


def memory_table(args: argparse.Namespace) -> dict[tuple[str, int], float]:
    """Peak extra memory (MiB) per (variant, L), each measured in its own process."""
    result = {}
    for L in args.lengths:
        for v in VARIANTS:
            cmd = [
                sys.executable,
                __file__,
                "--_memory",
                f"{v}:{L}",
                "--threads",
                str(args.threads),
            ]
            cmd += ["--batch", str(args.batch), "--d-model", str(args.d_model)]
            cmd += ["--heads", str(args.heads)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            result[(v, L)] = int(out.strip()) / 2**20  # negative: not measurable here
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lengths", default="32,128,256,512,1024", help="comma-separated L values")
    p.add_argument("--repeats", type=int, default=7, help="timed samples per variant and length")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per variant and length")
    p.add_argument("--target", type=float, default=0.2, help="seconds per timed sample (approx)")
    p.add_argument("--memory", action="store_true", help="also measure peak memory (slower)")
    p.add_argument("--_memory", default=None, help=argparse.SUPPRESS)  # internal: 'variant:L'
    args = p.parse_args(argv)
    args.lengths = [int(s) for s in str(args.lengths).split(",") if s.strip()]
    return args


def main(argv: list[str] | None = None) -> None:
    """Time every variant at every length and print the table."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args._memory:
        variant, L = args._memory.split(":")
        print(measure_memory(args, variant, int(L)))
        return
    print(
        f"MHA forward+backward, B={args.batch}, d_model={args.d_model}, H={args.heads}, "
        f"threads={args.threads}, torch {torch.__version__}, median of {args.repeats}; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    for v, name in VARIANTS.items():
        print(f"  ({v}) {name}")
    print(f"{'':>6} {'wall-clock ms per call':^29} {'wall ratio':^13} {'CPU-time ratio':^13}")
    print(f"{'L':>6} {'(a)':>9} {'(b)':>9} {'(c)':>9} {'a/c':>6} {'b/c':>6} {'a/c':>6} {'b/c':>6}")
    for L in args.lengths:
        t = bench_length(args, L)
        (wa, ca), (wb, cb), (wc, cc) = t["a"], t["b"], t["c"]
        print(
            f"{L:>6} {wa * 1e3:>9.2f} {wb * 1e3:>9.2f} {wc * 1e3:>9.2f} "
            f"{wa / wc:>6.2f} {wb / wc:>6.2f} {ca / cc:>6.2f} {cb / cc:>6.2f}",
            flush=True,
        )
    if args.memory:
        mem = memory_table(args)
        print("\npeak extra resident memory of one forward+backward (MiB, fresh process each)")
        print(f"{'L':>6} {'(a)':>9} {'(b)':>9} {'(c)':>9}")
        for L in args.lengths:
            cells = [
                f"{mem[(v, L)]:>9.1f}" if mem[(v, L)] >= 0 else f"{'n/a':>9}" for v in VARIANTS
            ]
            print(f"{L:>6} " + " ".join(cells))
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
