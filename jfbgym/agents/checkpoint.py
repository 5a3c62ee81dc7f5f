"""Run directories: atomic writes of a checkpoint (``torch.save`` of state dicts, read back with
``weights_only=True`` so no pickled code is ever executed) and of the JSON of every setting.

Layout of a run directory::

    config.json        every setting: env, problem, network, solver, gradient mode, version
    checkpoint.pt      model / optimizer / scheduler / RNG states, iteration, history
    snapshots/model_XXXXXXX.pt   weights at each checkpoint (for ``jfbgym diagnose``)
    log.csv, log.json  the training history
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

CONFIG = "config.json"
CHECKPOINT = "checkpoint.pt"
SNAPSHOTS = "snapshots"


def atomic_write(path: str | Path, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Write via a temporary file in the same directory and ``os.replace``: a crash mid-write
    leaves the previous file intact, never a truncated one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_state(path: str | Path, state: dict) -> None:
    atomic_write(path, lambda fh: torch.save(state, fh))


def load_state(path: str | Path, device: str | torch.device | None = None) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"path: expected a checkpoint file, {str(path)!r} does not exist")
    return torch.load(path, map_location=device or "cpu", weights_only=True)


def save_json(path: str | Path, obj: Any) -> None:
    atomic_write(path, lambda fh: json.dump(obj, fh, indent=2, sort_keys=True), mode="w")


def load_config(run_dir: str | Path) -> dict:
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise ValueError(f"path: expected a run directory holding {CONFIG}, "
                         f"{str(run_dir)!r} has none")
    with open(path) as fh:
        return json.load(fh)


def snapshot_paths(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(iteration, path) of every weight snapshot of a run, in order."""
    folder = Path(run_dir) / SNAPSHOTS
    found = [(int(p.stem.split("_")[1]), p) for p in folder.glob("model_*.pt")]
    return sorted(found)


def snapshot_path(run_dir: str | Path, iteration: int) -> Path:
    return Path(run_dir) / SNAPSHOTS / f"model_{iteration:07d}.pt"
