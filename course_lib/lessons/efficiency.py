"""Helpers that keep notebook 11's cells short: measure the memory, time and calls of attention.

`MemoryTracker`, `saved_tensor_bytes` and `measure_attention` count the memory attention really
uses on any device (the CPU has no `max_memory_allocated`); `counting_attention` and
`kv_cache_bytes` count what a KV cache saves and costs in generation.
"""

from __future__ import annotations

import statistics
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from ..attention import scaled_dot_product_attention
from ..tiled_attention import online_softmax_attention
from ..utils import evaluating


def _storages(obj: Any) -> dict[int, int]:
    """data_ptr -> nbytes of every tensor storage in a (nested) structure."""
    found = {}
    for t in tree_flatten(obj)[0]:
        if isinstance(t, torch.Tensor) and t.layout == torch.strided:
            s = t.untyped_storage()
            found[s.data_ptr()] = s.nbytes()
    return found


class MemoryTracker(TorchDispatchMode):
    """Counts the bytes of every tensor created inside `with MemoryTracker() as mem:`.

    `mem.peak` is the most bytes alive at once, `mem.largest` the largest single tensor,
    `mem.current` what is still alive. Exact and deterministic on any device (it follows
    storages as operations create them and Python frees them), but blind to scratch space
    inside a fused kernel and to memory allocated before the block.
    """

    def __init__(self) -> None:
        super().__init__()
        self.current = self.peak = self.largest = 0
        self._live: set[int] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = _storages((args, kwargs))  # views and in-place results are not new memory
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or t.layout != torch.strided:
                continue
            storage = t.untyped_storage()
            ptr, nbytes = storage.data_ptr(), storage.nbytes()
            if nbytes == 0 or ptr in inputs or ptr in self._live:
                continue
            self._live.add(ptr)
            self.current += nbytes
            self.peak = max(self.peak, self.current)
            self.largest = max(self.largest, nbytes)
            weakref.finalize(storage, self._freed, ptr, nbytes)
        return out

    def _freed(self, ptr: int, nbytes: int) -> None:
        """Called when a tracked storage is deallocated."""
        self._live.discard(ptr)
        self.current -= nbytes


def saved_tensor_bytes(fn: Callable[..., Any], *inputs: torch.Tensor) -> int:
    """Bytes autograd keeps for the backward pass of fn(*inputs), the inputs themselves excluded."""
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.update(_storages(t))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*inputs)
    own = _storages(inputs)
    return sum(n for ptr, n in saved.items() if ptr not in own)


def median_time(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1) -> float:
    """Median wall-clock seconds of fn() over `repeats` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


ATTENTION_IMPLS: dict[str, Callable[..., torch.Tensor]] = {
    "naive": lambda q, k, v: scaled_dot_product_attention(q, k, v)[0],
    "sdpa": lambda q, k, v: F.scaled_dot_product_attention(q, k, v),
    "online": lambda q, k, v: online_softmax_attention(q, k, v, block_size=128),
}


def measure_attention(
    impl: str,
    length: int,
    batch: int = 4,
    heads: int = 4,
    d_head: int = 64,
    backward: bool = True,
    repeats: int = 3,
    seed: int = 0,
) -> dict[str, float]:
    """Time and memory of one attention implementation on random (B, H, L, d) inputs.

    Returns seconds (median of `repeats`), peak_bytes and largest_bytes (MemoryTracker,
    q/k/v excluded), saved_bytes (kept for backward) for forward (+ backward) of `impl`,
    a key of ATTENTION_IMPLS.
    """
    if impl not in ATTENTION_IMPLS:
        raise ValueError(f"impl must be one of {sorted(ATTENTION_IMPLS)}, got {impl!r}")
    fn = ATTENTION_IMPLS[impl]
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(batch, heads, length, d_head, generator=g) for _ in range(3))
    q, k, v = (t.requires_grad_(backward) for t in (q, k, v))

    def run() -> None:
        with torch.set_grad_enabled(backward):
            out = fn(q, k, v)  # (B, H, L, d)
            if backward:
                out.backward(torch.ones_like(out))
        q.grad = k.grad = v.grad = None

    with MemoryTracker() as mem:
        run()
    saved = saved_tensor_bytes(fn, q, k, v) if backward else 0
    return {
        "seconds": median_time(run, repeats=repeats),
        "peak_bytes": mem.peak,
        "largest_bytes": mem.largest,
        "saved_bytes": saved,
    }


@contextmanager
def counting_attention(model: nn.Module) -> Iterator[dict[str, int]]:
    """Count the work of every causal self-attention layer of `model` while the block runs.

    Yields a dict, filled in as the model runs: `steps` (forward passes of the model),
    `positions` (query rows computed, per layer) and `pairs` (query-key pairs a causal query may
    attend to, per layer). Works with course_lib.gpt.GPT, with and without a KV cache.
    """
    from ..gpt import CausalSelfAttention

    layers = [m for m in model.modules() if isinstance(m, CausalSelfAttention)]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no CausalSelfAttention layer to count")
    work = {"steps": 0, "positions": 0, "pairs": 0}

    def first_layer(module: nn.Module, args: tuple, kwargs: dict) -> None:
        x, past = args[0], args[1] if len(args) > 1 else kwargs.get("past_kv")
        B, T = x.shape[:2]
        T_past = 0 if past is None else past[0].shape[2]
        work["steps"] += 1
        work["positions"] += B * T
        work["pairs"] += B * (T * T_past + T * (T + 1) // 2)  # query i sees T_past + i + 1 keys

    handle = layers[0].register_forward_pre_hook(first_layer, with_kwargs=True)
    try:
        yield work
    finally:
        handle.remove()


@torch.no_grad()
def incremental_logits(model: nn.Module, idx: torch.Tensor) -> torch.Tensor:
    """Logits (B, T, V) of a GPT fed idx (B, T) one token at a time through its KV cache."""
    past, rows = None, []
    for t in range(idx.shape[1]):
        logits, _, past = model(idx[:, t : t + 1], past_kv=past, use_cache=True)
        rows.append(logits)  # (B, 1, V)
    return torch.cat(rows, dim=1)


def cached_attention(
    q_new: torch.Tensor,
    k_new: torch.Tensor,
    v_new: torch.Tensor,
    cache_k: torch.Tensor,
    cache_v: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One attention step after a KV cache: T_new queries at positions T_past .. T_past+T_new-1.

    q_new, k_new, v_new (B, H, T_new, d); cache_k, cache_v (B, H, T_past, d) ->
    (out (B, H, T_new, d), k_all, v_all (B, H, T_past + T_new, d)). New query i may see keys
    0 .. T_past + i: the causal mask aligned bottom-right, not top-left as `is_causal=True`.
    """
    k_all = torch.cat([cache_k, k_new], dim=2)  # (B, H, T_all, d): the cache first
    v_all = torch.cat([cache_v, v_new], dim=2)
    T_new, T_all = q_new.shape[2], k_all.shape[2]
    rows = torch.arange(T_all - T_new, T_all)[:, None]  # absolute positions of the new queries
    mask = torch.arange(T_all)[None, :] <= rows  # (T_new, T_all), True = may attend
    out = F.scaled_dot_product_attention(q_new, k_all, v_all, attn_mask=mask)
    return out, k_all, v_all


Attend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _sdpa_is_causal(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """F.scaled_dot_product_attention(is_causal=True): its mask is aligned top-left."""
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


@torch.no_grad()
def logits_after_cache(
    model: nn.Module, idx: torch.Tensor, past_len: int, attend: str | Attend = "offset"
) -> torch.Tensor:
    """A GPT's logits (B, T - past_len, V) for idx[:, past_len:], fed in one step after a cache.

    The cache is filled by the model itself from idx[:, :past_len]; then every layer attends
    with `attend(q_new, k_all, v_all)`: "offset" (the right bottom-right mask), "is_causal"
    (SDPA's top-left mask) or any function of that signature.
    """
    from ..attention import merge_heads, split_heads

    if attend == "offset":
        attend = _offset_attend
    elif attend == "is_causal":
        attend = _sdpa_is_causal
    with evaluating(model):
        _, _, past = model(idx[:, :past_len], use_cache=True)
        new = idx[:, past_len:]
        x = model.tok_embed(new) + model._positions(new.shape[1], past_len, idx.device)
        for block, (k_old, v_old) in zip(model.blocks, past, strict=True):
            attn, h = block.attn, block.norm1(x)
            q, k, v = (split_heads(w(h), attn.num_heads) for w in (attn.w_q, attn.w_k, attn.w_v))
            k, v = torch.cat([k_old, k], dim=2), torch.cat([v_old, v], dim=2)
            x = x + attn.w_o(merge_heads(attend(q, k, v)))
            x = x + block.ff(block.norm2(x))
        return model.head(model.norm(x))


def _offset_attend(q: torch.Tensor, k_all: torch.Tensor, v_all: torch.Tensor) -> torch.Tensor:
    """Attention of the last q.shape[2] positions over all keys, with the offset causal mask."""
    T_past = k_all.shape[2] - q.shape[2]
    old, new = slice(0, T_past), slice(T_past, None)
    return cached_attention(
        q, k_all[..., new, :], v_all[..., new, :], k_all[..., old, :], v_all[..., old, :]
    )[0]


def kv_cache_bytes(past_kv: Any) -> int:
    """Bytes held by a KV cache: every layer's keys and values."""
    return sum(t.nbytes for t in tree_flatten(past_kv)[0] if isinstance(t, torch.Tensor))


def gpt_step_seconds(model: nn.Module, cache_len: int, repeats: int = 10, seed: int = 0) -> float:
    """Median seconds of one cached decoding step of a GPT whose cache holds cache_len tokens."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, model.vocab_size, (1, cache_len + 1), generator=g)
    with evaluating(model):
        _, _, past = model(idx[:, :-1], use_cache=True)  # (1, H, cache_len, d_k) per layer
        return median_time(lambda: model(idx[:, -1:], past_kv=past, use_cache=True), repeats)


@torch.no_grad()
def rnn_step_seconds(rnn: nn.RNNBase, repeats: int = 10) -> float:
    """Median seconds of one step of a batch-first nn.GRU/nn.LSTM/nn.RNN on one token."""
    x = torch.randn(1, 1, rnn.input_size)  # (B, 1, I)
    _, state = rnn(x)  # whatever came before is summarised in `state`, of fixed size
    return median_time(lambda: rnn(x, state), repeats)
