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

import contextlib
import hashlib
import json
import os
import pickle
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

CONFIG = "config.json"
CHECKPOINT = "checkpoint.pt"
SNAPSHOTS = "snapshots"


LOCK = ".lock"


class CheckpointError(ValueError):
    """A run directory or one of its files is missing, unreadable or inconsistent; the message
    names the file and what is wrong with it."""


class RunLock:
    """An exclusive lock on a run directory (``flock`` on ``OUT/.lock``, which names the
    holder's pid): a second trainer on the same directory is refused at once instead of both
    writing one checkpoint and log; the lock dies with its process, so a crash never leaves
    the directory locked."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.handle: Any = None

    def __enter__(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no lock
            return
        handle = open(self.folder / LOCK, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise ValueError(f"out: {str(self.folder)!r} is in use by another training run "
                             f"(pid {holder}); wait for it to end or choose another --out") \
                from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self.handle = handle

    def __exit__(self, *exc: object) -> None:
        if self.handle is not None:
            import fcntl

            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block ends, then deliver them: a file being written
    is finished, not abandoned (``torch.save`` would also turn the interrupt into a
    ``RuntimeError``). Only the main thread receives signals; elsewhere a plain block."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, lambda signum, frame: held.append(signum)) for s in signals}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for signum in held[:1]:
            handler = previous[signum]
            if callable(handler):
                handler(signum, None)
            elif handler == signal.SIG_DFL and signum == signal.SIGINT:
                raise KeyboardInterrupt
            elif handler == signal.SIG_DFL:
                signal.raise_signal(signum)


def _temporary_prefix(path: Path) -> str:
    return f".{path.name}."


def remove_stale_temporaries(path: Path) -> None:
    """Delete the temporary files of writes to ``path`` whose process no longer runs (a
    SIGKILL mid-write leaves one behind; a live writer's are left alone)."""
    for tmp in path.parent.glob(_temporary_prefix(path) + "*.tmp"):
        try:
            pid = int(tmp.name[len(_temporary_prefix(path)):].split(".", 1)[0])
        except ValueError:
            continue  # not one of ours
        if pid == os.getpid() or _running(pid):
            continue
        with contextlib.suppress(OSError):
            tmp.unlink()


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, but another user's
        return True
    return True


def atomic_write(path: str | Path, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Write via a temporary file in the same directory and ``os.replace``: a crash mid-write
    leaves the previous file intact, never a truncated one; Ctrl-C waits for the write to
    finish (``deferred_interrupts``); temporaries of writers killed mid-write are removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    with deferred_interrupts():
        fd, tmp = tempfile.mkstemp(dir=path.parent,
                                   prefix=f"{_temporary_prefix(path)}{os.getpid()}.",
                                   suffix=".tmp")
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


CHECKSUM = "sha256"  # key of the checksum every saved state carries


def checksum(obj: Any) -> str:
    """SHA-256 over a state's structure and contents: every key, every plain value, every
    tensor's dtype, shape and bytes (a flipped bit anywhere changes it)."""
    digest = hashlib.sha256()

    def visit(x: Any) -> None:
        if isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous()
            digest.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(x, Mapping):
            digest.update(f"D{len(x)}".encode())
            for key in sorted(x, key=repr):
                digest.update(repr(key).encode())
                visit(x[key])
        elif isinstance(x, (list, tuple)):
            digest.update(f"L{type(x).__name__}{len(x)}".encode())
            for item in x:
                visit(item)
        else:
            digest.update(f"V{type(x).__name__}:{x!r}".encode())

    visit(obj)
    return digest.hexdigest()


def save_state(path: str | Path, state: dict) -> None:
    """Write ``state`` (tensors and plain data) atomically, with its ``checksum``."""
    atomic_write(path, lambda fh: torch.save({**state, CHECKSUM: checksum(state)}, fh))


def load_state(path: str | Path, device: str | torch.device | None = None) -> dict:
    """A checkpoint's dict, loaded without executing code (``weights_only=True``), its
    checksum verified (files from before checksums load unverified), every tensor dense."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: expected a checkpoint file; it does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the checkpoint file is empty")
    try:
        with deferred_interrupts():  # inside torch.load, Ctrl-C would become a RuntimeError
            state = torch.load(path, map_location=device or "cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # code, or a type outside the allow-list
        raise CheckpointError(f"{path}: refused to load: the file holds objects other than "
                              f"tensors and plain data ({first_line(err)})") from err
    except Exception as err:
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt: "
                              f"{type(err).__name__}: {first_line(err)})") from err
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a dict of states, got {type(state).__name__}")
    stored = state.pop(CHECKSUM, None)
    if stored is not None and stored != checksum(state):
        raise CheckpointError(f"{path}: checksum mismatch: the file was changed or corrupted "
                              "after it was written")
    _require_dense(state, path)
    return state


def first_line(err: BaseException) -> str:
    text = str(err)
    return text.splitlines()[0][:200] if text else ""


def _require_dense(obj: Any, path: Path, where: str = "") -> None:
    """Every tensor in ``obj`` dense, with data, and real (no sparse, meta or complex ones)."""
    if isinstance(obj, torch.Tensor):
        if obj.layout != torch.strided or obj.is_meta or obj.is_complex():
            raise CheckpointError(f"{path}: entry {where or 'the state'} is a "
                                  f"{obj.layout} {obj.dtype} tensor on {obj.device}; expected "
                                  "dense real tensors with data")
    elif isinstance(obj, Mapping):
        for key, value in obj.items():
            _require_dense(value, path, f"{where}.{key}" if where else str(key))
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            _require_dense(value, path, f"{where}[{i}]")


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
        if state[key].is_floating_point() != value.is_floating_point():
            raise CheckpointError(f"{path}: weight {key!r} holds {state[key].dtype}, this "
                                  f"network needs {value.dtype}")
    _require_dense(state, Path(path))
    if not state_is_finite(state):
        raise CheckpointError(f"{path}: the weights hold NaN or inf")
    module.load_state_dict(state)
    for name, part in module.named_modules():  # tables whose entries index each other
        check = getattr(part, "check_loaded", None)
        if callable(check):
            try:
                check()
            except ValueError as err:
                raise CheckpointError(f"{path}: {name or 'the network'}: {err}") from err


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
    except (ValueError, RecursionError) as err:  # JSON and Unicode errors are ValueErrors
        raise CheckpointError(f"{path}: not valid JSON ({type(err).__name__}: "
                              f"{first_line(err)})") from err
    except OSError as err:
        raise CheckpointError(f"{path}: cannot be read ({err.strerror})") from err


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
