"""Specifications of course_lib.training: loss, schedule, training loop, evaluation, checkpoints."""

import math
import random

import pytest
import torch
from torch import nn

from course_lib.checkpoints import load_checkpoint, load_model_state, save_checkpoint
from course_lib.data import CharVocab, make_batch, reverse_pairs
from course_lib.fit import History, warmup_cosine
from course_lib.training import (
    exact_match,
    exact_match_by,
    sequence_loss,
    train_seq2seq,
    train_step,
    translate,
)

ALPHABET = "abcdef"


class TinySeq2Seq(nn.Module):
    """A minimal GRU encoder-decoder that follows the course's seq2seq contract."""

    def __init__(self, vocab_size: int, d: int = 32, dropout: float = 0.1) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d)
        self.encoder = nn.GRU(d, d, batch_first=True)
        self.decoder = nn.GRU(d, d, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(d, vocab_size)

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        _, h = self.encoder(self.drop(self.embed(src)))  # h: (1, B, d)
        y, _ = self.decoder(self.drop(self.embed(tgt_in)), h)  # (B, L_t, d)
        return self.out(y)  # (B, L_t, V)

    @torch.no_grad()
    def greedy_decode(self, src: torch.Tensor, max_len: int, bos_id: int, eos_id: int):
        _, h = self.encoder(self.embed(src))
        tok = torch.full((src.shape[0], 1), bos_id, dtype=torch.long)
        done = torch.zeros(src.shape[0], dtype=torch.bool)
        out = []
        for _ in range(max_len):
            y, h = self.decoder(self.embed(tok), h)
            tok = self.out(y).argmax(-1)  # (B, 1)
            out.append(torch.where(done, 0, tok[:, 0]))
            done |= tok[:, 0] == eos_id
            if done.all():
                break
        return torch.stack(out, dim=1)  # (B, <= max_len)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models train ~20x faster on one thread than on an oversubscribed shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _pairs(n: int, min_len: int, max_len: int) -> list[tuple[str, str]]:
    return reverse_pairs(n, min_len, max_len, alphabet=ALPHABET)


@pytest.fixture(scope="module")
def vocab() -> CharVocab:
    return CharVocab(ALPHABET)


def _model(vocab: CharVocab, seed: int = 0) -> TinySeq2Seq:
    torch.manual_seed(seed)
    return TinySeq2Seq(len(vocab))


# ----------------------------------------------------------------------------- loss and schedule


def test_warmup_cosine_values_at_start_end_of_warmup_and_total():
    assert warmup_cosine(0, warmup=10, total=100) == pytest.approx(0.1)
    assert warmup_cosine(9, warmup=10, total=100) == pytest.approx(1.0)
    assert warmup_cosine(10, warmup=10, total=100) == pytest.approx(1.0)
    assert warmup_cosine(55, warmup=10, total=100) == pytest.approx(0.5)
    assert warmup_cosine(100, warmup=10, total=100) == pytest.approx(0.0)
    assert warmup_cosine(100, warmup=10, total=100, min_ratio=0.1) == pytest.approx(0.1)
    assert warmup_cosine(500, warmup=10, total=100, min_ratio=0.1) == pytest.approx(0.1)
    assert warmup_cosine(0, warmup=0, total=100) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="warmup <= total"):
        warmup_cosine(0, warmup=200, total=100)


def test_pad_positions_do_not_contribute_to_the_loss():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 7, generator=g)
    targets = torch.tensor([[4, 5, 2, 0], [6, 2, 0, 0]])
    changed = logits.clone()
    changed[targets == 0] = 100 * torch.randn(3, 7, generator=g)  # garbage where PAD is
    assert sequence_loss(logits, targets, pad_id=0) == sequence_loss(changed, targets, pad_id=0)
    real = targets != 0
    manual = nn.functional.cross_entropy(logits[real], targets[real])
    torch.testing.assert_close(sequence_loss(logits, targets, pad_id=0), manual)


def test_label_smoothing_changes_the_loss_but_still_ignores_pad():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 7, generator=g)
    targets = torch.tensor([[4, 5, 2, 0], [6, 2, 0, 0]])
    plain = sequence_loss(logits, targets, 0)
    smooth = sequence_loss(logits, targets, 0, label_smoothing=0.1)
    assert not torch.isclose(plain, smooth)
    changed = logits.clone()
    changed[targets == 0] = 50.0
    torch.testing.assert_close(sequence_loss(changed, targets, 0, label_smoothing=0.1), smooth)


def test_sequence_loss_names_the_shapes_on_mismatch():
    with pytest.raises(ValueError, match=r"logits \(2, 4, 7\) and targets \(2, 5\)"):
        sequence_loss(torch.zeros(2, 4, 7), torch.zeros(2, 5, dtype=torch.long), 0)


# ----------------------------------------------------------------------------- training


def test_train_step_returns_loss_and_grad_norm_and_updates_weights(vocab):
    model = _model(vocab)
    batch = make_batch(_pairs(8, 2, 5), vocab)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    before = model.out.weight.detach().clone()
    loss, grad_norm = train_step(model, batch, opt, scheduler=None, clip=1.0)
    assert math.isfinite(loss) and loss > 0 and grad_norm > 0
    assert not torch.equal(before, model.out.weight)


def test_train_step_explains_a_model_that_breaks_the_contract(vocab):
    class Wrong(TinySeq2Seq):
        def forward(self, src, tgt_in):
            return super().forward(src, tgt_in)[:, :-1]  # one position short

    model = Wrong(len(vocab))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"\(B, L_t, V\)"):
        train_step(model, make_batch(_pairs(4, 2, 5), vocab), opt)


def test_training_on_reverse_reduces_loss_and_is_deterministic(vocab):
    pairs = _pairs(512, 2, 5)
    kwargs = dict(steps=80, batch_size=32, lr=1e-2, warmup=10, seed=3, progress=False)
    calls = []
    h1 = train_seq2seq(_model(vocab), pairs, vocab, callback=lambda s, h: calls.append(s), **kwargs)
    state = torch.get_rng_state()
    h2 = train_seq2seq(_model(vocab), pairs, vocab, **kwargs)
    assert torch.equal(state, torch.get_rng_state())  # the caller's RNG is left untouched
    assert isinstance(h1, History) and len(h1.loss) == len(h1.lr) == len(h1.grad_norm) == 80
    assert calls == list(range(80))
    assert h1.loss == h2.loss  # bit-identical, dropout included
    assert sum(h1.loss[-10:]) / 10 < 0.7 * sum(h1.loss[:10]) / 10
    assert max(h1.lr) == pytest.approx(1e-2) and h1.lr[-1] < 1e-3


def test_train_seq2seq_records_eval_accuracy(vocab):
    pairs = _pairs(64, 2, 4)
    h = train_seq2seq(
        _model(vocab), pairs, vocab, steps=6, batch_size=16, eval_pairs=pairs[:20],
        eval_every=3, progress=False,
    )  # fmt: skip
    assert h.eval_step == [2, 5] and all(0.0 <= a <= 1.0 for a in h.eval_acc)
    with pytest.raises(ValueError, match="needs eval_pairs"):
        train_seq2seq(_model(vocab), pairs, vocab, steps=2, eval_every=1, progress=False)


# ----------------------------------------------------------------------------- evaluation


class Oracle(nn.Module):
    """A fake model whose greedy_decode reverses its source: exact match must be 1."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def greedy_decode(self, src, max_len, bos_id, eos_id):
        rows = []
        for row in src:
            ids = [int(i) for i in row if i != 0][::-1] + [eos_id]
            rows.append(ids[:max_len] + [0] * (max_len - len(ids)))
        return torch.tensor(rows)


def test_exact_match_translate_and_per_group_accuracy(vocab):
    pairs = _pairs(30, 1, 6)
    oracle = Oracle().train()
    assert exact_match(oracle, pairs, vocab) == 1.0
    assert oracle.training  # train mode restored
    assert translate(oracle, ["abc", "fed"], vocab, max_len=8) == ["cba", "def"]
    copy = [(s, s) for s, _ in pairs]
    by_len = exact_match_by(oracle, copy, vocab, key_fn=lambda p: len(p[0]))
    expected: dict[int, list[bool]] = {}
    for src, _ in copy:
        expected.setdefault(len(src), []).append(src == src[::-1])  # only palindromes match
    assert by_len == {n: sum(v) / len(v) for n, v in sorted(expected.items())}
    assert list(by_len) == sorted(by_len) and by_len[1] == 1.0
    with pytest.raises(ValueError, match="greedy_decode"):
        translate(nn.Linear(2, 2), ["ab"], vocab)


# ----------------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip_gives_identical_outputs(vocab, tmp_path):
    model = _model(vocab, seed=1).eval()
    path = save_checkpoint(tmp_path / "sub" / "tiny.pt", model, {"d": 32}, step=7, note="hi")
    ckpt = load_checkpoint(path)
    assert ckpt["config"] == {"d": 32} and ckpt["step"] == 7 and ckpt["version"] == 1
    clone = load_model_state(_model(vocab, seed=2).eval(), ckpt)
    batch = make_batch(_pairs(4, 2, 5), vocab)
    torch.testing.assert_close(clone(batch.src, batch.tgt_in), model(batch.src, batch.tgt_in))
    assert [p.name for p in path.parent.iterdir()] == ["tiny.pt"]  # no temp file left behind


def test_missing_truncated_foreign_and_random_files_raise_clear_errors(vocab, tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "nope.pt")
    good = save_checkpoint(tmp_path / "good.pt", _model(vocab), {"d": 32})
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:300])
    with pytest.raises(ValueError, match="truncated"):
        load_checkpoint(truncated)
    noise = tmp_path / "noise.pt"
    noise.write_bytes(random.Random(0).randbytes(2000))
    with pytest.raises(
        ValueError, match="could not read .* as a course checkpoint.*not a PyTorch file"
    ):
        load_checkpoint(noise)
    tensor = tmp_path / "tensor.pt"
    torch.save(torch.ones(3), tensor)
    with pytest.raises(ValueError, match="not a course checkpoint.*got a Tensor"):
        load_checkpoint(tensor)
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": {"w": torch.ones(2)}, "epoch": 3}, foreign)
    with pytest.raises(
        ValueError, match=r"expected a course checkpoint.*keys \['epoch', 'model'\]"
    ):
        load_checkpoint(foreign)


def test_load_model_state_names_missing_and_mis_shaped_keys(vocab, tmp_path):
    ckpt = load_checkpoint(save_checkpoint(tmp_path / "m.pt", _model(vocab), {"d": 32}))
    with pytest.raises(ValueError, match=r"shape: \['embed.weight: checkpoint \(10, 32\)"):
        load_model_state(TinySeq2Seq(len(vocab) + 1), ckpt)
    with pytest.raises(ValueError, match="unexpected"):
        load_model_state(nn.Linear(2, 2), ckpt)


def test_save_checkpoint_refuses_what_weights_only_cannot_load(vocab, tmp_path):
    with pytest.raises(ValueError, match=r"config\['path'\] has type \w*Path"):
        save_checkpoint(tmp_path / "x.pt", _model(vocab), {"path": tmp_path})
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(tmp_path / "x.pt", _model(vocab), {}, state_dict={})
    assert not list(tmp_path.iterdir())
