"""Time and peak memory of attention against sequence length, and the KV cache's speed-up.

Part 1, attention forward + backward on random (B, H, L, d) inputs:
  naive   course_lib.attention.scaled_dot_product_attention (materialises the L x L weights)
  sdpa    torch.nn.functional.scaled_dot_product_attention (PyTorch's fused kernel)
  online  course_lib.tiled_attention.online_softmax_attention (key blocks of 128, online softmax)
Memory is counted with course_lib.lessons.efficiency.MemoryTracker (every tensor the operations create,
q/k/v excluded; exact and the same on every machine); `--rss` also runs each cell in a fresh
process and reports the growth of its peak resident memory (Linux /proc) as an independent check. Times are
medians, in a rotating order so that load from other processes hits every path alike.

Part 2, greedy generation with course_lib.gpt.GPT, with and without the KV cache.

    .venv/bin/python benchmarks/bench_attention_memory.py                   # the full sweep
    .venv/bin/python benchmarks/bench_attention_memory.py --lengths 128,256 --skip-kv --rss
    .venv/bin/python benchmarks/bench_attention_memory.py --skip-attention --new-tokens 64,256
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, no install
from course_lib.gpt import GPT  # noqa: E402
from course_lib.lessons.efficiency import ATTENTION_IMPLS, MemoryTracker, saved_tensor_bytes  # noqa: E402

MiB = 2**20


def inputs(args: argparse.Namespace, L: int) -> tuple[torch.Tensor, ...]:
    """Random q, k, v of shape (B, H, L, d) that require gradients."""
    g = torch.Generator().manual_seed(0)
    shape = (args.batch, args.heads, L, args.d_head)
    return tuple(torch.randn(*shape, generator=g).requires_grad_() for _ in range(3))


def fwd_bwd(impl: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """One forward and backward pass of an attention implementation."""
    out = ATTENTION_IMPLS[impl](q, k, v)
    out.backward(torch.ones_like(out))
    q.grad = k.grad = v.grad = None


def _vm_hwm() -> int:
    """This process's peak resident memory (VmHWM), in bytes."""
    with open("/proc/self/status") as f:
        line = next(ln for ln in f if ln.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def rss_child(impl: str, L: int, args: argparse.Namespace) -> None:
    """(In a fresh process) print how much one forward + backward raises the peak RSS, in bytes."""
    q, k, v = inputs(args, L)
    fwd_bwd("sdpa", q[:, :, :8], k[:, :, :8], v[:, :, :8])  # load kernels before the baseline
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak to the current RSS (Linux >= 4.0)
    before = _vm_hwm()
    fwd_bwd(impl, q, k, v)
    print(_vm_hwm() - before)


def rss_growth(impl: str, L: int, args: argparse.Namespace) -> int:
    """Peak-RSS growth of one forward + backward, measured in a subprocess."""
    cmd = [sys.executable, __file__, "--child", f"{impl}:{L}", "--batch", str(args.batch),
           "--heads", str(args.heads), "--d-head", str(args.d_head)]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    return int(out.stdout.strip().splitlines()[-1])


def bench_attention(args: argparse.Namespace) -> None:
    """Print the time / memory table of every implementation at every length."""
    impls = args.impls.split(",")
    print(f"\nAttention forward + backward, B={args.batch} H={args.heads} d={args.d_head}, "
          f"{args.threads} thread(s), median of {args.repeats}")  # fmt: skip
    head = f"{'L':>6} {'impl':>7} {'time (ms)':>10} {'peak (MiB)':>11} {'largest':>9} {'saved':>9}"
    print(head + (f" {'RSS (MiB)':>10}" if args.rss else ""))
    for L in [int(x) for x in args.lengths.split(",")]:
        q, k, v = inputs(args, L)
        times: dict[str, list[float]] = {i: [] for i in impls}
        for impl in impls:
            fwd_bwd(impl, q, k, v)  # warm-up
        for r in range(args.repeats):
            for impl in impls[r % len(impls) :] + impls[: r % len(impls)]:
                start = time.perf_counter()
                fwd_bwd(impl, q, k, v)
                times[impl].append(time.perf_counter() - start)
        for impl in impls:
            with MemoryTracker() as mem:
                fwd_bwd(impl, q, k, v)
            saved = saved_tensor_bytes(ATTENTION_IMPLS[impl], q, k, v)
            row = (f"{L:>6} {impl:>7} {1e3 * statistics.median(times[impl]):>10.1f} "
                   f"{mem.peak / MiB:>11.1f} {mem.largest / MiB:>9.1f} {saved / MiB:>9.1f}")  # fmt: skip
            if args.rss:
                row += f" {rss_growth(impl, L, args) / MiB:>10.1f}"
            print(row, flush=True)


@torch.no_grad()
def bench_kv_cache(args: argparse.Namespace) -> None:
    """Print the generation time with and without the KV cache at each number of new tokens."""
    news = [int(x) for x in args.new_tokens.split(",")]
    torch.manual_seed(0)
    model = GPT(args.vocab, d_model=args.d_model, num_heads=args.heads, num_layers=args.layers,
                max_len=args.prompt + max(news)).eval()  # fmt: skip
    prompt = torch.randint(0, args.vocab, (1, args.prompt))
    print(f"\nGreedy generation, GPT d_model={args.d_model} layers={args.layers} "
          f"heads={args.heads}, prompt {args.prompt} tokens, {args.threads} thread(s), "
          f"median of {args.repeats}")  # fmt: skip
    print(f"{'new tokens':>10} {'cache (s)':>10} {'no cache (s)':>13} {'speed-up':>9} {'same':>5}")
    for n in news:
        t = {True: [], False: []}
        outs = {}
        for r in range(args.repeats):
            for cache in (True, False) if r % 2 == 0 else (False, True):
                start = time.perf_counter()
                outs[cache] = model.generate(prompt, n, temperature=0, use_cache=cache)
                t[cache].append(time.perf_counter() - start)
        with_c, without = statistics.median(t[True]), statistics.median(t[False])
        same = torch.equal(outs[True], outs[False])
        print(
            f"{n:>10} {with_c:>10.3f} {without:>13.3f} {without / with_c:>8.1f}x {str(same):>5}",
            flush=True,
        )


def main(argv: list[str] | None = None) -> None:
    """Parse the flags and run the requested parts."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lengths", default="128,256,512,1024", help="comma-separated L values")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--d-head", type=int, default=128)
    p.add_argument("--impls", default="naive,sdpa,online", help="subset of naive,sdpa,online")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--rss", action="store_true", help="also peak-RSS growth, one process per cell")
    p.add_argument("--new-tokens", default="64,128,256", help="comma-separated generation lengths")
    p.add_argument("--prompt", type=int, default=16, help="prompt length for the KV-cache part")
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--vocab", type=int, default=65)
    p.add_argument("--skip-attention", action="store_true")
    p.add_argument("--skip-kv", action="store_true")
    p.add_argument("--child", help=argparse.SUPPRESS)  # internal: impl:L for --rss
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.child:
        impl, L = args.child.split(":")
        rss_child(impl, int(L), args)
        return
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average "
          + " ".join(f"{x:.1f}" for x in os.getloadavg()))  # fmt: skip
    if not args.skip_attention:
        bench_attention(args)
    if not args.skip_kv:
        bench_kv_cache(args)


if __name__ == "__main__":
    main()
