"""Run directories: atomic writes of a checkpoint (``torch.save`` of tensors and plain data, read
back with ``weights_only=True`` so no pickled code is ever executed) and of the JSON of every
setting; loading checks every file and says which one is wrong and how.

Layout of a run directory::

    config.json        every setting: env, problem, network, solver, gradient mode, version
    checkpoint.pt      model / optimizer / schedule / RNG states, iteration, history
    snapshots/model_XXXXXXX.pt   weights at each checkpoint (for ``jfbgym diagnose``)
    log.csv, log.json  the training history
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

CONFIG = "config.json"
CHECKPOINT = "checkpoint.pt"
SNAPSHOTS = "snapshots"


class CheckpointError(ValueError):
    """A run directory or one of its files is missing, unreadable or inconsistent; the message
    names the file and what is wrong with it."""


def atomic_write(path: str | Path, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Write via a temporary file in the same directory and ``os.replace``: a crash mid-write
    leaves the previous file intact, never a truncated one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_state(path: str | Path, state: dict) -> None:
    atomic_write(path, lambda fh: torch.save(state, fh))


def load_state(path: str | Path, device: str | torch.device | None = None) -> dict:
    """A checkpoint's dict, loaded without executing code (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: expected a checkpoint file; it does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the checkpoint file is empty")
    try:
        state = torch.load(path, map_location=device or "cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # code, or a type outside the allow-list
        raise CheckpointError(f"{path}: refused to load: the file holds objects other than "
                              f"tensors and plain data ({str(err).splitlines()[0]})") from err
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt: "
                              f"{str(err).splitlines()[0]})") from err
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a dict of states, got {type(state).__name__}")
    return state


def state_is_finite(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """Whether every floating tensor of a state dict is finite."""
    return all(bool(torch.isfinite(v).all()) for v in state_dict.values()
               if isinstance(v, torch.Tensor) and v.is_floating_point())


def load_weights(module: torch.nn.Module, state: Any, path: str | Path) -> None:
    """Load ``state`` (a state dict read from ``path``) into ``module``, refusing missing,
    extra, wrongly shaped or non-finite tensors with a message naming the file."""
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor)
                                                 for v in state.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors")
    expected = module.state_dict()
    state = dict(state)
    for key in state:  # saved before the local prior had branches (0.1.0): one per agent
        if key.rsplit(".", 1)[-1] == "group" and state[key].dim() == 1 and key in expected \
                and expected[key].dim() == 2:
            state[key] = state[key].unsqueeze(-1)
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise CheckpointError(f"{path}: the weights do not fit this network (missing "
                              f"{missing[:3]}, unexpected {extra[:3]})")
    for key, value in expected.items():
        if tuple(state[key].shape) != tuple(value.shape):
            raise CheckpointError(f"{path}: weight {key!r} has shape {tuple(state[key].shape)}, "
                                  f"this network needs {tuple(value.shape)}")
    if not state_is_finite(state):
        raise CheckpointError(f"{path}: the weights hold NaN or inf")
    module.load_state_dict(state)


def save_json(path: str | Path, obj: Any) -> None:
    atomic_write(path, lambda fh: json.dump(obj, fh, indent=2, sort_keys=True), mode="w")


def read_json(path: str | Path) -> Any:
    """A JSON file's content; a ``CheckpointError`` naming the file when it is missing or not
    JSON."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: expected a JSON file; it does not exist")
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from err


def load_config(run_dir: str | Path) -> dict:
    """The ``config.json`` of a run directory."""
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise CheckpointError(f"{run_dir}: expected a run directory holding {CONFIG}; "
                              "there is none")
    config = read_json(path)
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return config


def require_keys(mapping: Any, keys: tuple[str, ...], where: str) -> None:
    """Raise ``CheckpointError`` naming ``where`` when ``mapping`` lacks one of ``keys``."""
    if not isinstance(mapping, Mapping):
        raise CheckpointError(f"{where}: expected a JSON object, got {type(mapping).__name__}")
    missing = [k for k in keys if k not in mapping]
    if missing:
        raise CheckpointError(f"{where}: incomplete: missing {missing}")


def snapshot_paths(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(iteration, path) of every weight snapshot of a run, in order."""
    folder = Path(run_dir) / SNAPSHOTS
    found = []
    for p in folder.glob("model_*.pt"):
        try:
            found.append((int(p.stem.split("_")[1]), p))
        except (IndexError, ValueError):
            continue  # not one of ours
    return sorted(found)


def snapshot_path(run_dir: str | Path, iteration: int) -> Path:
    return Path(run_dir) / SNAPSHOTS / f"model_{iteration:07d}.pt"
