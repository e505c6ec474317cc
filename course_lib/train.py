"""Train a course Transformer from the command line, on one process or many (torchrun + DDP).

    python -m course_lib.train --task dates --steps 800 --out checkpoints/dates.pt
    torchrun --nproc_per_node=2 -m course_lib.train --task dates --steps 800

Under torchrun every process (a "rank") builds the same model from the same seed and draws the
same global batch of `--batch-size` pairs, then keeps only its own slice of the rows. Each rank
runs forward and backward on its slice; DistributedDataParallel (DDP) averages the gradients
across ranks during backward, so every rank takes the same optimizer step. A slice's loss is its
summed token loss divided by (global non-PAD tokens / world size): averaged over the ranks, these
gradients are exactly those of the single-process mean loss over the whole global batch, however
unevenly the PAD tokens fall. The gradients travel over gloo on CPU and over nccl on GPUs.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from .checkpoints import save_checkpoint
from .data import (
    Batch,
    CharVocab,
    batch_iterator,
    copy_pairs,
    date_pairs,
    date_vocab,
    reverse_pairs,
)
from .date_recipe import DATE_MODEL, DATE_TRAIN_PAIRS, DATE_TRAINING, build_date_model
from .fit import FitConfig, History, fit
from .training import exact_match, seq2seq_loss
from .utils import count_parameters, get_device

TASKS = ("dates", "copy", "reverse")
TOY_ALPHABET = "abcdefghij"
TOY_MAX_LEN = 16  # copy/reverse strings have 1..16 characters

# ----------------------------------------------------------------------------- processes


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: its rank among world_size processes and its device."""

    rank: int
    world_size: int
    device: torch.device
    backend: str | None  # "gloo" or "nccl" when world_size > 1, else None

    @property
    def is_main(self) -> bool:
        """Rank 0 prints, evaluates and saves; the other ranks only train."""
        return self.rank == 0


def setup_distributed(device: str = "auto") -> DistInfo:
    """Read torchrun's RANK/WORLD_SIZE/LOCAL_RANK, pick the device, join the process group."""
    rank = int(os.environ.get("RANK", "0"))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = get_device() if device == "auto" else torch.device(device)
    if dev.type == "mps" and world_size > 1:
        dev = torch.device("cpu")  # neither gloo nor nccl moves MPS tensors
    if dev.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(
                f"local rank {local_rank} has no GPU: {torch.cuda.device_count()} visible; "
                "use --nproc_per_node <= the number of GPUs, or --device cpu"
            )
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    backend = None
    if world_size > 1:
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend, init_method="env://")  # MASTER_ADDR/PORT from torchrun
    return DistInfo(rank, world_size, dev, backend)


def shard_batch(batch: Batch, rank: int, world_size: int) -> Batch:
    """Rank `rank`'s contiguous slice of a global batch's rows (slice sizes differ by <= 1)."""
    n = batch.src.shape[0]
    if not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    if n < world_size:
        raise ValueError(
            f"a batch of {n} rows cannot give each of {world_size} ranks a row; use more "
            "training pairs or a batch size that divides them"
        )
    return Batch(*(t.tensor_split(world_size)[rank] for t in batch))


def _all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum `x` over all ranks (a no-op in a single process)."""
    if dist.is_initialized():
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


# ----------------------------------------------------------------------------- training


def train_distributed(
    model: nn.Module,
    pairs: Sequence[Sequence[str]],
    vocab: CharVocab,
    steps: int,
    info: DistInfo,
    batch_size: int = 128,
    lr: float = 3e-3,
    warmup: int = 100,
    weight_decay: float = 0.01,
    clip: float | None = 1.0,
    seed: int = 0,
    log_every: int = 50,
    log: Callable[[str], None] = print,
) -> History:
    """train_seq2seq's recipe with every global batch split over the ranks; returns the history.

    It is `fit` on this rank's slices with a token-weighted loss; DDP averages the gradients.
    Every rank records the same History: the loss of a step is the mean over the global batch's
    non-PAD tokens, as train_seq2seq records it. With dropout 0, the losses and final weights
    equal train_seq2seq's with the same arguments, up to float rounding.
    """
    if batch_size % info.world_size != 0:
        raise ValueError(
            f"the global batch size {batch_size} must divide evenly over {info.world_size} ranks"
        )
    # train_seq2seq's recipe; seed=None: dropout (none in the recipe) is seeded by main, per rank
    config = FitConfig(steps, lr, weight_decay, warmup=min(warmup, steps // 2), clip=clip,
                       seed=None, progress=False)  # fmt: skip
    model.to(info.device)
    if info.world_size > 1:  # DDP copies rank 0's weights to all ranks, then averages gradients
        device_ids = [info.device.index] if info.device.type == "cuda" else None
        model = DDP(model, device_ids=device_ids)
    batches = batch_iterator(pairs, vocab, batch_size, seed=seed)  # the same on every rank
    shards = (shard_batch(b, info.rank, info.world_size).to(info.device) for b in batches)

    def loss_fn(model: nn.Module, shard: Batch) -> torch.Tensor:
        """This rank's summed token loss / (global non-PAD tokens / world size)."""
        tokens = _all_reduce_sum((shard.tgt_out != vocab.pad_id).sum())  # global non-PAD count
        return seq2seq_loss(model, shard, vocab.pad_id, loss_tokens=tokens.item() / info.world_size)

    def mean_over_ranks(loss: float) -> float:
        """Each rank's loss is its share of the global mean times world size: average them."""
        share = torch.tensor(loss / info.world_size, dtype=torch.float64, device=info.device)
        return _all_reduce_sum(share).item()

    start = time.perf_counter()

    def report(step: int, history: History) -> None:
        """Rank 0 prints a line every log_every steps and after the last."""
        if info.is_main and log_every and (step % log_every == 0 or step == steps - 1):
            elapsed = time.perf_counter() - start
            loss, current_lr = history.loss[-1], history.lr[-1]
            log(f"step {step:>5}/{steps}  loss {loss:.4f}  lr {current_lr:.2e}  {elapsed:6.1f} s")

    average = mean_over_ranks if info.world_size > 1 else None
    return fit(model, shards, loss_fn, config, callback=report, mean_over_ranks=average)


# ----------------------------------------------------------------------------- tasks


def task_data(
    task: str, n_train: int | None = None, n_eval: int = 1000, seed: int = 0
) -> tuple[CharVocab, list, list]:
    """(vocab, training pairs, held-out evaluation pairs) of a task; the same seed, the same data."""
    if task == "dates":
        n_train = DATE_TRAIN_PAIRS if n_train is None else n_train
        train = date_pairs(n_train, seed=seed, split="train")
        return date_vocab(), train, date_pairs(n_eval, seed=seed, split="test")
    if task in ("copy", "reverse"):
        make = copy_pairs if task == "copy" else reverse_pairs
        n_train = 20_000 if n_train is None else n_train
        train = make(n_train, 1, TOY_MAX_LEN, seed=seed, alphabet=TOY_ALPHABET)
        held_out = make(n_eval, 1, TOY_MAX_LEN, seed=seed + 10_000, alphabet=TOY_ALPHABET)
        return CharVocab(TOY_ALPHABET), train, held_out
    raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")


def model_config(vocab: CharVocab) -> dict:
    """Notebook 09's Transformer architecture for `vocab`: what `Transformer(**config)` takes."""
    sizes = dict(src_vocab_size=len(vocab), tgt_vocab_size=len(vocab), pad_id=vocab.pad_id)
    return DATE_MODEL | sizes


# ----------------------------------------------------------------------------- command line


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command-line options; the defaults are notebook 09's date recipe."""
    p = argparse.ArgumentParser(
        prog="python -m course_lib.train",
        description="Train the course's Transformer (pre-LN, d_model 64, 2+2 layers, 4 heads) "
        "on one process, or on several with torchrun (DistributedDataParallel).",
        epilog="example: torchrun --nproc_per_node=2 -m course_lib.train --task dates --steps 800",
    )
    p.add_argument("--task", choices=TASKS, default="dates", help="what to learn (default: dates)")
    p.add_argument("--steps", type=int, default=800, help="optimizer steps (default: 800)")
    p.add_argument("--batch-size", type=int, default=DATE_TRAINING["batch_size"],
                   help="global batch, split over the processes (default: 128)")  # fmt: skip
    p.add_argument("--lr", type=float, default=DATE_TRAINING["lr"], help="peak AdamW lr")
    p.add_argument("--warmup", type=int, default=DATE_TRAINING["warmup"], help="warm-up steps")
    p.add_argument("--weight-decay", type=float, default=DATE_TRAINING["weight_decay"])
    p.add_argument("--clip", type=float, default=DATE_TRAINING["clip"], help="0: no clipping")
    p.add_argument("--seed", type=int, default=0, help="weights, data and batch order")
    p.add_argument("--n-train", type=int, default=None,
                   help="training pairs (default: 50,000 dates or 20,000 strings)")  # fmt: skip
    p.add_argument("--n-eval", type=int, default=1000, help="held-out pairs for exact match")
    p.add_argument("--log-every", type=int, default=50, help="print every N steps (0: never)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads per process")
    p.add_argument("--out", default=None, help="save a checkpoint here (rank 0)")
    args = p.parse_args(argv)
    if args.steps < 1 or args.batch_size < 1 or args.n_eval < 1:
        p.error("--steps, --batch-size and --n-eval must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    """Train as the options say; rank 0 returns {'history', 'exact_match', 'out'}, others {}."""
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    info = setup_distributed(args.device)
    log = print if info.is_main else (lambda _: None)
    try:
        torch.manual_seed(args.seed + info.rank)  # dropout only (the recipe has none)
        vocab, train, held_out = task_data(args.task, args.n_train, args.n_eval, args.seed)
        config = model_config(vocab)
        model = build_date_model(vocab, args.seed)  # the same weights on every rank
        per_rank = args.batch_size // max(1, info.world_size)
        log(
            f"{args.task}: {count_parameters(model):,} parameters, {len(train):,} pairs, "
            f"{args.steps} steps; {info.world_size} process(es) on {info.device}"
            + (f" ({info.backend})" if info.backend else "")
            + f", global batch {args.batch_size} = {info.world_size} x {per_rank}"
        )
        history = train_distributed(
            model, train, vocab, args.steps, info, args.batch_size, args.lr, args.warmup,
            args.weight_decay, args.clip or None, args.seed, args.log_every, log,
        )  # fmt: skip
        result: dict = {}
        if info.is_main:
            acc = exact_match(model, held_out, vocab)
            log(f"exact match on {len(held_out):,} held-out pairs: {acc:.4f}")
            result = {"history": history, "exact_match": acc, "out": None}
            if args.out:
                result["out"] = save_checkpoint(
                    args.out, model, config, vocab=vocab.chars, task=args.task,
                    world_size=info.world_size, exact_match=acc,
                    args={k: v for k, v in vars(args).items() if k != "out"},
                    history=dataclasses.asdict(history),
                )  # fmt: skip
                log(f"saved {result['out']}")
        if dist.is_initialized():
            dist.barrier()  # the other ranks wait while rank 0 evaluates and saves
        return result
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


__all__ = [
    "DistInfo",
    "main",
    "model_config",
    "setup_distributed",
    "shard_batch",
    "task_data",
    "train_distributed",
]


if __name__ == "__main__":
    main()
