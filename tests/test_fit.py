"""Specifications of course_lib.fit: the one training loop every trainer in the course uses."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_lib.fit import FitConfig, History, fit
from course_lib.lessons.rnn_bottlenecks import MemoryRNN, first_symbol_batch, train_memory_task


def _regression(seed: int = 0, dropout: float = 0.0):
    """A tiny model, an endless stream of (x, y) batches and its mean-squared-error loss."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(dropout), nn.Linear(8, 1))
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(4, 1, generator=g)

    def batches():
        while True:
            x = torch.randn(16, 4, generator=g)
            yield x, x @ w

    loss_fn = lambda m, xy: F.mse_loss(m(xy[0]), xy[1])  # noqa: E731
    return model, batches(), loss_fn


def test_fit_records_one_entry_per_step_and_lowers_the_loss():
    model, batches, loss_fn = _regression()
    h = fit(model, batches, loss_fn, FitConfig(60, lr=1e-2, progress=False))
    assert isinstance(h, History)
    assert h.step == list(range(60)) and len(h.loss) == len(h.lr) == len(h.grad_norm) == 60
    assert sum(h.loss[-10:]) < 0.5 * sum(h.loss[:10])


def test_constant_schedule_ramps_linearly_over_the_warmup_then_stays():
    model, batches, loss_fn = _regression()
    h = fit(model, batches, loss_fn, FitConfig(6, lr=0.1, warmup=4, schedule="constant",
                                               progress=False))  # fmt: skip
    assert h.lr == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1, 0.1])


def test_cosine_schedule_decays_from_the_peak_to_min_lr_ratio():
    model, batches, loss_fn = _regression()
    config = FitConfig(11, lr=1.0, warmup=1, min_lr_ratio=0.1, progress=False)
    h = fit(model, batches, loss_fn, config)
    assert h.lr[0] == pytest.approx(1.0)  # the end of a one-step warm-up
    assert all(a > b for a, b in zip(h.lr[1:], h.lr[2:], strict=False))
    assert h.lr[-1] > 0.1 and config.lr_multiplier(11) == pytest.approx(0.1)


def test_clip_bounds_the_gradient_norm_and_none_leaves_it_alone():
    seen = []
    record = lambda step, h: seen.append(  # noqa: E731
        math.sqrt(sum(float(p.grad.pow(2).sum()) for p in model.parameters()))
    )
    model, batches, loss_fn = _regression()
    h = fit(model, batches, loss_fn, FitConfig(5, clip=1e-3, progress=False), callback=record)
    assert all(n > 1e-3 for n in h.grad_norm)  # the norm before clipping is recorded
    assert all(n <= 1e-3 * 1.001 for n in seen)  # the gradient the optimizer used was clipped
    seen.clear()
    model, batches, loss_fn = _regression()
    h = fit(model, batches, loss_fn, FitConfig(5, clip=None, progress=False), callback=record)
    assert seen == pytest.approx(h.grad_norm, rel=1e-5)


def test_a_non_finite_loss_stops_training_with_the_step_and_the_settings():
    model, batches, _ = _regression()
    nan_loss = lambda m, xy: m(xy[0]).sum() * float("nan")  # noqa: E731
    with pytest.raises(FloatingPointError, match=r"loss became nan at step 0.*lr.*warm-up.*clip"):
        fit(model, batches, nan_loss, FitConfig(3, progress=False))


def test_evaluate_runs_every_eval_every_steps_and_after_the_last():
    model, batches, loss_fn = _regression()
    calls = []

    def evaluate(m):
        calls.append(m.training)
        return {"val_loss": float(len(calls))}

    h = fit(model, batches, loss_fn, FitConfig(7, eval_every=3, progress=False), evaluate)
    assert h.eval_step == [2, 5, 6] and h.val_loss == [1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match="eval_every=3 needs an evaluate function"):
        fit(model, batches, loss_fn, FitConfig(7, eval_every=3, progress=False))


def test_seed_makes_dropout_repeatable_and_leaves_the_global_random_state_alone():
    runs = []
    for _ in range(2):
        model, batches, loss_fn = _regression(dropout=0.5)
        torch.manual_seed(123)
        runs.append(fit(model, batches, loss_fn, FitConfig(5, seed=7, progress=False)).loss)
        after = torch.rand(1)
        torch.manual_seed(123)
        assert torch.equal(after, torch.rand(1))  # fit did not advance the global generator
    assert runs[0] == runs[1]
    model, batches, loss_fn = _regression(dropout=0.5)
    torch.manual_seed(123)
    fit(model, batches, loss_fn, FitConfig(5, seed=None, progress=False))
    after = torch.rand(1)
    torch.manual_seed(123)
    assert not torch.equal(after, torch.rand(1))  # seed=None: dropout drew from the global one


def test_mean_over_ranks_is_what_the_history_records():
    model, batches, loss_fn = _regression()
    h = fit(model, batches, loss_fn, FitConfig(3, progress=False), mean_over_ranks=lambda x: 42.0)
    assert h.loss == [42.0, 42.0, 42.0]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(steps=0), "steps must be a positive int"),
        (dict(steps=5, schedule="linear"), "schedule must be one of"),
        (dict(steps=5, warmup=6), "need 0 <= warmup <= steps"),
        (dict(steps=5, clip=0.0), "clip must be > 0, or None"),
        (dict(steps=5, eval_every=-1), "eval_every must be >= 0"),
    ],
)
def test_fit_config_refuses_settings_that_cannot_work(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FitConfig(**kwargs)


def test_the_memory_task_adapter_is_the_plain_adam_loop_it_replaced():
    """train_memory_task through fit == Adam + clipping at 1 written out by hand, to the bit."""
    _, losses = train_memory_task("gru", steps=8, max_len=7, seed=3)
    with torch.random.fork_rng():
        torch.manual_seed(3)
        model = MemoryRNN("gru")
    g = torch.Generator().manual_seed(3)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    reference = []
    for _ in range(8):
        length = int(torch.randint(2, 8, (1,), generator=g))
        x, y = first_symbol_batch(64, length, generator=g)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        reference.append(loss.item())
    assert losses == reference
