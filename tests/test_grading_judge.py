"""The judge (grading/judge.py): checks recorded in the learner's process, replayed outside it.

Fast, in this process: a check runs with COURSE_CHECK_RECORD set (as in the sandbox's kernel),
its record is read back as the grader reads it, and the judge's verdict is compared with the
truth, including when the "kernel" was tampered with while the record was made.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import pickle
from pathlib import Path

import pytest
import torch

from course_lib import checks
from course_lib.checks import _machinery, _replay
from grading import judge

SDPA = "check_scaled_dot_product_attention"


def good_sdpa(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return weights @ v, weights


def unscaled_sdpa(q, k, v, mask=None):
    weights = torch.softmax(q @ k.transpose(-2, -1), dim=-1)
    return weights @ v, weights


@pytest.fixture
def record(tmp_path, monkeypatch):
    """record(check, fn) -> (blobs, message in the 'kernel' or '' if it passed)."""
    monkeypatch.setenv(_replay.RECORD_ENV, str(tmp_path))

    def run(check_name: str, fn) -> tuple[list[bytes], str]:
        for old in tmp_path.glob("*.pt"):
            old.unlink()
        message = ""
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                getattr(checks, check_name)(fn)
            except AssertionError as exc:
                message = str(exc)
        return [p.read_bytes() for p in sorted(tmp_path.glob("*.pt"))], message

    return run


def test_a_right_function_passes_and_a_wrong_one_fails_with_the_checks_message(record):
    blobs, message = record(SDPA, good_sdpa)
    assert message == "" and judge.verdict(SDPA, blobs) == (True, "")
    blobs, message = record(SDPA, unscaled_sdpa)
    passed, why = judge.verdict(SDPA, blobs)
    assert not passed and message and why == message.split("\nYour function calls")[0]


def test_rebinding_torch_in_the_kernel_changes_nothing(record, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(torch, "allclose", lambda *a, **k: True)
        m.setattr(torch, "equal", lambda *a, **k: True)
        blobs, message = record(SDPA, unscaled_sdpa)
    assert message == "", "the tampered kernel believed the wrong function"
    passed, why = judge.verdict(SDPA, blobs)
    assert not passed and "not scaled" in why


def test_other_inputs_in_the_kernel_are_noticed(record, monkeypatch):
    real = torch.randn
    with monkeypatch.context() as m:  # every input of the check becomes zero in the "kernel"
        m.setattr(torch, "randn", lambda *a, **k: real(*a, **k) * 0)
        blobs, _ = record(SDPA, good_sdpa)
    passed, why = judge.verdict(SDPA, blobs)
    assert not passed, "values computed on other inputs must not pass"


def test_no_record_a_cut_record_or_an_extra_call_gets_no_points(record):
    assert not judge.verdict(SDPA, [])[0]
    blobs, _ = record(SDPA, good_sdpa)
    run = judge.load_record(blobs[-1])
    cut = {**run, "calls": run["calls"][:2]}
    passed, why = judge.verdict(SDPA, [_save(cut)])
    assert not passed and _replay.INCOMPLETE in why
    extra = {**run, "calls": run["calls"] + run["calls"][-1:]}
    assert not judge.verdict(SDPA, [_save(extra)])[0]
    other_check = {**run, "check": "check_self_attention"}
    assert not judge.verdict(SDPA, [_save(other_check)])[0]


def test_an_in_place_change_is_judged_from_the_arguments_after_the_call(record):
    def in_place(q, k, v, mask=None):
        result = good_sdpa(q, k, v, mask)
        q.zero_()  # right values, but the caller's queries are gone
        return result

    blobs, message = record(SDPA, in_place)
    passed, why = judge.verdict(SDPA, blobs)
    assert not passed and "in place" in why and "in place" in message


def test_a_record_is_read_as_data_only(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    blob = pickle.dumps({"check": SDPA, "calls": [Payload()]})
    assert judge.load_record(blob) is None
    buffer = io.BytesIO()
    torch.save({"check": SDPA, "calls": [{"label": "x", "result": Payload()}]}, buffer)
    assert judge.load_record(buffer.getvalue()) is None
    assert not marker.exists(), "loading a record ran code"


def test_values_of_any_type_survive_the_record():
    sub = type("Mine", (torch.Tensor,), {})
    value = (torch.ones(2).as_subclass(sub), [1, 2.5, "x", None, True], {"a": torch.zeros(1)})
    buffer = io.BytesIO()
    torch.save(_replay.portable((value, object())), buffer)
    back = _replay.restore(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))
    (tensor, items, mapping), other = back
    assert isinstance(tensor, torch.Tensor) and type(tensor) is not torch.Tensor
    assert type(tensor).__name__ == "Mine" and items == [1, 2.5, "x", None, True]
    assert torch.equal(mapping["a"], torch.zeros(1)) and type(other).__name__ == "object"


@pytest.mark.parametrize("check_name", sorted(c.__name__ for c, _ in checks.CHECKS.values()))
def test_every_check_replays_to_the_verdict_it_gave_in_the_notebook(record, check_name):
    """A function that returns garbage: the judge must fail it with the kernel's own message
    (the replay builds the same cases, in the same order, with the same labels)."""
    blobs, message = record(check_name, lambda *args, **kwargs: torch.zeros(1))
    assert message and blobs
    passed, why = judge.verdict(check_name, blobs)
    assert not passed and why == message.split("\nYour function calls")[0]


@pytest.mark.parametrize(
    ("check_name", "reference"),
    [
        (SDPA, "course_lib.attention.scaled_dot_product_attention"),
        ("check_padding_mask", "course_lib.masks.padding_mask"),
        ("check_causal_mask", "course_lib.masks.causal_mask"),
    ],
)
def test_every_case_of_a_right_answer_replays_to_a_pass(record, monkeypatch, check_name, reference):
    module, name = reference.rsplit(".", 1)
    fn = getattr(__import__(module, fromlist=[name]), name)
    monkeypatch.setattr(_machinery, "reference_disabled", _allow_everything)
    blobs, message = record(check_name, lambda *args: fn(*args))
    assert message == "", message
    assert judge.verdict(check_name, blobs) == (True, "")


@contextlib.contextmanager
def _allow_everything(*args, **kwargs):
    yield


def _save(run: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(run, buffer)
    return buffer.getvalue()


def test_hidden_tests_are_stripped_from_check_cells():
    source = "check_x(f)\n### BEGIN HIDDEN TESTS\nassert f(1) == 2\n### END HIDDEN TESTS"
    assert judge.strip_hidden_tests(source).strip() == "check_x(f)"
    assert judge.checks_called("check_padding_mask(padding_mask)\nprint(1)") == [
        "check_padding_mask"
    ]
    assert judge.checks_called("check_nonexistent_thing(f)") == []
    assert Path(judge.__file__).exists()
