"""Specifications of course_lib.train: sharded batches, the DDP loss, two processes equal one."""

import os
import socket
import time

import pytest
import torch
import torch.multiprocessing as mp

from course_lib.checkpoints import load_checkpoint, load_model_state
from course_lib.data import CharVocab, make_batch, reverse_pairs
from course_lib.models import Transformer
from course_lib.train import DistInfo, main, setup_distributed, shard_batch, train_distributed
from course_lib.training import sequence_loss, train_seq2seq, train_step

VOCAB = CharVocab("abcdefghij")
STEPS, BATCH = 8, 32
TINY = dict(d_model=16, num_heads=2, num_encoder_layers=1, num_decoder_layers=1, d_ff=32)


def tiny_model(seed: int = 0) -> Transformer:
    """A small float64 Transformer: float64 keeps rounding far below the 1e-7 being tested.

    (In float32 the losses still match to ~1e-6, but Adam divides by sqrt(v), which turns the
    rounding noise of gradients that should be exactly zero, such as the key biases', into
    lr-sized steps on those few weights.)
    """
    torch.manual_seed(seed)
    model = Transformer(len(VOCAB), len(VOCAB), **TINY, pad_id=VOCAB.pad_id, max_len=32)
    return model.double()


def pairs() -> list:
    """Strings of very different lengths, so the ranks' shards hold uneven numbers of tokens."""
    return reverse_pairs(4 * BATCH, 1, 12, seed=3)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing is listening on (right now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, out: str) -> None:
    """One rank of the two-process run: what torchrun would set up, then train_distributed."""
    torch.set_num_threads(1)
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
        WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
    )  # fmt: skip
    info = setup_distributed("cpu")
    try:
        assert info.backend == "gloo" and info.world_size == world_size
        model = tiny_model()
        history = train_distributed(
            model, pairs(), VOCAB, STEPS, info, BATCH, warmup=2, log_every=0
        )
        torch.save({"loss": history.loss, "state": model.state_dict()}, f"{out}.{rank}")
    finally:
        torch.distributed.destroy_process_group()


def test_shards_are_disjoint_and_together_are_the_global_batch():
    batch = make_batch(reverse_pairs(10, 1, 8, seed=0), VOCAB)
    for world_size in (1, 2, 3):
        shards = [shard_batch(batch, r, world_size) for r in range(world_size)]
        assert [len(s.src) for s in shards] == [
            len(t) for t in torch.arange(10).tensor_split(world_size)
        ]
        for i in range(3):  # src, tgt_in, tgt_out: in order, nothing missing, nothing twice
            assert torch.equal(torch.cat([s[i] for s in shards]), batch[i])
    with pytest.raises(ValueError, match="cannot give each of 16 ranks a row"):
        shard_batch(batch, 0, 16)


def test_token_weighted_shard_losses_average_to_the_global_mean_gradient():
    model, batch = tiny_model(), make_batch(pairs()[:BATCH], VOCAB)

    def grads(loss_fn) -> torch.Tensor:
        model.zero_grad()
        loss_fn().backward()
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    def loss(b, reduction="mean") -> torch.Tensor:
        return sequence_loss(model(b.src, b.tgt_in), b.tgt_out, VOCAB.pad_id, reduction=reduction)

    full = grads(lambda: loss(batch))
    shards = [shard_batch(batch, r, 2) for r in range(2)]
    tokens = [int((s.tgt_out != VOCAB.pad_id).sum()) for s in shards]
    assert tokens[0] != tokens[1]  # the case that matters
    per_token = sum(grads(lambda s=s: loss(s, "sum") / (sum(tokens) / 2)) for s in shards) / 2
    naive = sum(grads(lambda s=s: loss(s)) for s in shards) / 2  # mean per shard, then average
    assert torch.allclose(per_token, full, rtol=1e-9, atol=1e-12)
    assert not torch.allclose(naive, full, rtol=1e-3, atol=1e-6)


def test_train_step_with_its_own_token_count_is_the_plain_mean():
    batch = make_batch(pairs()[:BATCH], VOCAB)
    results = []
    for loss_tokens in (None, float((batch.tgt_out != VOCAB.pad_id).sum())):
        model = tiny_model()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        results.append(train_step(model, batch, opt, loss_tokens=loss_tokens))
    assert results[0] == pytest.approx(results[1], rel=1e-12)


def test_two_gloo_processes_train_exactly_like_one_process(tmp_path):
    model = tiny_model()
    reference = train_seq2seq(model, pairs(), VOCAB, STEPS, BATCH, warmup=2, progress=False)
    start = time.perf_counter()
    out = str(tmp_path / "rank")
    mp.spawn(_worker, args=(2, free_port(), out), nprocs=2, join=True)
    seconds = time.perf_counter() - start
    ranks = [torch.load(f"{out}.{r}", weights_only=True) for r in range(2)]
    for run in ranks:  # the loss curve (the global mean, on both ranks) and the final weights
        assert run["loss"] == pytest.approx(reference.loss, rel=1e-7)
        for name, p in model.state_dict().items():
            torch.testing.assert_close(run["state"][name], p, rtol=1e-7, atol=1e-10, msg=name)
    assert reference.loss[-1] < reference.loss[0]  # it did learn something
    print(f"two gloo processes, {STEPS} steps: {seconds:.1f} s including start-up")


def test_the_command_line_trains_one_process_and_writes_a_loadable_checkpoint(tmp_path, capsys):
    path = tmp_path / "ckpt" / "reverse.pt"
    args = "--task reverse --steps 3 --n-train 64 --batch-size 16 --n-eval 8 --log-every 1"
    result = main([*args.split(), "--device", "cpu", "--out", str(path)])
    printed = capsys.readouterr().out
    assert "1 process(es) on cpu" in printed and "exact match on 8 held-out pairs" in printed
    ckpt = load_checkpoint(path)
    assert ckpt["task"] == "reverse" and ckpt["world_size"] == 1
    assert ckpt["history"]["loss"] == result["history"].loss and len(result["history"].loss) == 3
    vocab = CharVocab(ckpt["vocab"])
    model = load_model_state(Transformer(**ckpt["config"]), ckpt).eval()
    assert model(*make_batch([("abc", "cba")], vocab)[:2]).shape == (1, 4, len(vocab))


def test_the_global_batch_must_split_evenly_over_the_ranks():
    info = DistInfo(rank=0, world_size=3, device=torch.device("cpu"), backend="gloo")
    with pytest.raises(ValueError, match="must divide evenly over 3 ranks"):
        train_distributed(tiny_model(), pairs(), VOCAB, 1, info, batch_size=32)
