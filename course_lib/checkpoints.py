"""Checkpoints: save a model's config and weights atomically, load them back safely.

A checkpoint is a plain dict {format, version, config, state_dict, **extra} holding only
tensors and plain Python values, so `torch.load(weights_only=True)` can read it and it cannot
run code. `course_lib.training` re-exports these functions.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .utils import fmt_shape

CHECKPOINT_FORMAT = "attention-course-checkpoint"
CHECKPOINT_VERSION = 1

_PLAIN = (str, int, float, bool, type(None), torch.Tensor)


def _check_plain(obj: Any, where: str) -> None:
    """Raise ValueError if `obj` holds anything torch.load(weights_only=True) would refuse."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise ValueError(f"{where} has a key of type {type(k).__name__}; use str keys")
            _check_plain(v, f"{where}[{k!r}]")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
    elif not isinstance(obj, _PLAIN):
        raise ValueError(
            f"{where} has type {type(obj).__name__}; checkpoints hold only str, int, float, bool, "
            "None, lists, tuples, dicts and tensors so that they load with weights_only=True "
            "(convert numpy numbers with float(x), paths with str(p), a History with "
            "dataclasses.asdict(h))"
        )


def save_checkpoint(path: str | Path, model: nn.Module, config: dict, **extra: Any) -> Path:
    """Atomically save {format, version, config, state_dict, **extra} to `path`; return the path."""
    if not isinstance(config, dict):
        raise ValueError(
            f"config must be a dict of the model's constructor arguments, got {type(config).__name__}"
        )
    reserved = {"format", "version", "config", "state_dict"} & extra.keys()
    if reserved:
        raise ValueError(f"extra keys {sorted(reserved)} are reserved by the checkpoint format")
    _check_plain(config, "config")
    _check_plain(extra, "extra")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": config,
        "state_dict": state,
        **extra,
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic: readers see the old file or the new one, never half
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint written by save_checkpoint (safely: weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {path}; train a model and write it with save_checkpoint first"
        )
    expected = (
        f"a course checkpoint (a dict with format={CHECKPOINT_FORMAT!r}) written by save_checkpoint"
    )
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, random bytes, pickled arbitrary objects...
        reason = str(e).split(". ")[0][:120]
        raise ValueError(
            f"could not read {path} as a course checkpoint ({type(e).__name__}: {reason}). "
            f"Expected {expected}; this file is truncated (an interrupted save or copy), not a "
            "PyTorch file, or holds objects other than tensors and plain Python values"
        ) from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        got = (
            f"a dict with keys {sorted(map(str, ckpt))[:8]}"
            if isinstance(ckpt, dict)
            else f"a {type(ckpt).__name__}"
        )
        raise ValueError(f"{path} is not a course checkpoint: expected {expected}, got {got}")
    if ckpt.get("version") != CHECKPOINT_VERSION:
        raise ValueError(
            f"{path} has checkpoint version {ckpt.get('version')!r}, this course_lib reads "
            f"version {CHECKPOINT_VERSION}; update course_lib or re-create the checkpoint"
        )
    if not isinstance(ckpt.get("state_dict"), dict) or not isinstance(ckpt.get("config"), dict):
        raise ValueError(f"{path} is damaged: its 'state_dict' and 'config' must both be dicts")
    return ckpt


def load_model_state(model: nn.Module, ckpt: dict) -> nn.Module:
    """Copy a checkpoint's weights into `model`, naming missing, unexpected and mis-shaped keys."""
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ValueError("load_model_state expects the dict returned by load_checkpoint")
    state, own = ckpt["state_dict"], model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: checkpoint {fmt_shape(state[k].shape)} vs model {fmt_shape(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        problems = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)):
            if items:
                more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
                problems.append(f"{label}: {items[:5]}{more}")
        raise ValueError(
            f"checkpoint does not fit {type(model).__name__}: "
            + "; ".join(problems)
            + f". Was the model built with the checkpoint's config {ckpt.get('config')}?"
        )
    model.load_state_dict(state)
    return model


__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "load_checkpoint",
    "load_model_state",
    "save_checkpoint",
]
