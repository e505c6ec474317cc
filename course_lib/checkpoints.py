"""Checkpoints: save a model's config and weights atomically, load them back safely.

A checkpoint is a plain dict {format, version, config, state_dict, sha256, **extra} holding only
tensors and plain Python values, so `torch.load(weights_only=True)` can read it and it cannot
run code. Two things make a wrong load fail loudly instead of giving a silently different model:
- `sha256` fingerprints the weights (names, dtypes, shapes and bytes); `load_checkpoint` checks
  it, so flipped bytes on disk or weights edited after saving are reported, not used;
- `config` is the model's full configuration (a model's own `.config` dict, completed with
  what the caller passed); `load_model_state` compares it with the model it loads into and
  names every setting that differs (4 heads vs 2 keeps every shape, yet is another model).
"""

from __future__ import annotations

import hashlib
import inspect
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .utils import fmt_shape

CHECKPOINT_FORMAT = "attention-course-checkpoint"
CHECKPOINT_VERSION = 1
RESERVED_KEYS = ("format", "version", "config", "state_dict", "sha256")

_PLAIN = (str, int, float, bool, type(None), torch.Tensor)
_SETTING = (str, int, float, bool, type(None), list, tuple)  # what a config value can be


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


# ----------------------------------------------------------------------------- weights hash


def state_dict_sha256(state: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in sorted-name order."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous().reshape(-1)  # (N,) in memory order
        h.update(f"{name}|{t.dtype}|{fmt_shape(state[name].shape)}|".encode())
        h.update(memoryview(t.view(torch.uint8).numpy()))  # the raw bytes, any dtype
    return h.hexdigest()


def _verify_hash(path: Path, ckpt: dict) -> None:
    """Raise ValueError if the weights do not match the hash saved with them; warn if none."""
    stored = ckpt.get("sha256")
    if stored is None:
        warnings.warn(
            f"{path} has no weights hash (it was saved by an older course_lib), so corrupted "
            "bytes cannot be detected; loading it anyway. Re-save it with save_checkpoint to "
            "add one",
            UserWarning,
            stacklevel=3,
        )
        return
    actual = state_dict_sha256(ckpt["state_dict"])
    if actual != stored:
        raise ValueError(
            f"{path} is corrupted or was modified after it was saved: its weights hash to "
            f"sha256 {actual[:16]}..., but save_checkpoint recorded {str(stored)[:16]}... "
            "(flipped bytes on a disk or in a copy, or weights edited by hand). Do not use it: "
            "copy it again from its source or re-create it by training"
        )


# ----------------------------------------------------------------------------- config check


def _own_config(model: nn.Module, keys: Any) -> tuple[dict, bool]:
    """The model's settings and whether they are complete (a `.config` dict) or read off attributes."""
    config = getattr(model, "config", None)
    if isinstance(config, dict):
        return dict(config), True
    found = {k: getattr(model, k) for k in keys if isinstance(k, str) and hasattr(model, k)}
    return {k: v for k, v in found.items() if isinstance(v, _SETTING)}, False


def _defaults(model: nn.Module) -> dict:
    """The model constructor's non-None defaults (None often means "derived", e.g. d_ff)."""
    try:
        params = inspect.signature(type(model).__init__).parameters.values()
    except (TypeError, ValueError):
        return {}
    return {p.name: p.default for p in params if p.default not in (inspect.Parameter.empty, None)}


def config_differences(saved: dict, model: nn.Module, label: str = "checkpoint") -> list[str]:
    """Every setting where `saved` and `model` disagree, as 'key: <label> X vs model Y'."""
    own, complete = _own_config(model, saved)
    defaults = _defaults(model) if complete else {}
    diffs = []
    for key in [*own, *(k for k in saved if k not in own)]:
        if key in saved and key in own:
            if saved[key] != own[key]:
                diffs.append(f"{key}: {label} {saved[key]!r} vs model {own[key]!r}")
        elif key in saved and complete:  # a setting this model does not have
            diffs.append(f"{key}: {label} {saved[key]!r} vs model (no such setting)")
        elif key in own and (key not in defaults or defaults[key] != own[key]):
            known = f"default {defaults[key]!r}, " if key in defaults else ""
            diffs.append(f"{key}: {label} ({known}not recorded) vs model {own[key]!r}")
    return diffs


# ----------------------------------------------------------------------------- save and load


def save_checkpoint(path: str | Path, model: nn.Module, config: dict, **extra: Any) -> Path:
    """Atomically save {format, version, config, state_dict, sha256, **extra}; return the path.

    A model with a `.config` dict has it recorded in full (`config` may give a subset); a
    `config` that contradicts the model is refused, so the checkpoint always describes it.
    """
    if not isinstance(config, dict):
        raise ValueError(
            f"config must be a dict of the model's constructor arguments, got {type(config).__name__}"
        )
    reserved = set(RESERVED_KEYS) & extra.keys()
    if reserved:
        raise ValueError(f"extra keys {sorted(reserved)} are reserved by the checkpoint format")
    own, complete = _own_config(model, config)
    config = {**own, **config} if complete else dict(config)
    diffs = config_differences(config, model, label="config")
    if diffs:
        raise ValueError(
            f"config does not describe this {type(model).__name__}: {diffs}; pass the "
            "arguments the model was built with (for course models: model.config)"
        )
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
        "sha256": state_dict_sha256(state),
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
    """Load a checkpoint written by save_checkpoint (weights_only=True) and verify its hash."""
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
    state = ckpt.get("state_dict")
    if not isinstance(state, dict) or not isinstance(ckpt.get("config"), dict):
        raise ValueError(f"{path} is damaged: its 'state_dict' and 'config' must both be dicts")
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} is damaged: its 'state_dict' must map names to tensors")
    _verify_hash(path, ckpt)
    return ckpt


def load_model_state(model: nn.Module, ckpt: dict) -> nn.Module:
    """Copy a checkpoint's weights into `model` after checking that its config and keys fit.

    Names, in one error, every config setting that differs and every missing, unexpected
    and mis-shaped weight.
    """
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ValueError("load_model_state expects the dict returned by load_checkpoint")
    name = type(model).__name__
    if not isinstance(ckpt.get("config"), dict):
        raise ValueError(
            f"checkpoint has no config (got {type(ckpt.get('config')).__name__}), so it cannot "
            f"be checked against this {name}; load it with load_checkpoint from a file written "
            "by save_checkpoint"
        )
    state, own = ckpt["state_dict"], model.state_dict()
    config = config_differences(ckpt["config"], model)
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: checkpoint {fmt_shape(state[k].shape)} vs model {fmt_shape(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if config or missing or unexpected or shapes:
        problems = [f"config: {config}"] if config else []  # every key: configs are short
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)):
            if items:
                more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
                problems.append(f"{label}: {items[:5]}{more}")
        raise ValueError(
            f"checkpoint does not fit {name}: "
            + "; ".join(problems)
            + f". Build the model from the checkpoint's own config: {name}(**ckpt['config'])"
        )
    model.load_state_dict(state)
    return model


__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "RESERVED_KEYS",
    "config_differences",
    "load_checkpoint",
    "load_model_state",
    "save_checkpoint",
    "state_dict_sha256",
]
