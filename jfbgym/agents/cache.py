"""The on-disk cache of what is slow to build and fixed by its inputs (a value prior: about 45
CPU-s of open-loop solves for a quadrotor), shared between processes.

One file per entry under ``cache_dir()``, tensors and plain data only, read without executing
code (``checkpoint.load_state``). An entry's key names its inputs and a hash of the source that
builds from them (``code_version``), so a changed build never reads a stale entry; a corrupt or
foreign file is reported and ignored, and the entry is built again.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import os
import warnings
from pathlib import Path
from typing import Any

from .checkpoint import CheckpointError, load_state, save_state

CACHE_ENV = "JFBGYM_CACHE_DIR"  # where entries are kept; "off": nowhere


def cache_dir() -> Path | None:
    """``$JFBGYM_CACHE_DIR`` (``off``: no cache), else ``$XDG_CACHE_HOME/jfbgym`` or
    ``~/.cache/jfbgym``."""
    value = os.environ.get(CACHE_ENV)
    if value is not None:
        return None if value.strip().lower() in ("", "off") else Path(value)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "jfbgym"


@functools.cache
def code_version(*sources: str | None) -> str:
    """A hash of the source files that decide what a build computes: ``sources`` and the
    open-loop solver and problem contract every build uses. Read once per process."""
    from jfbgym import openloop
    from jfbgym.problems import base

    files = {inspect.getsourcefile(m) for m in (openloop, base)} | set(sources)
    digest = hashlib.sha256()
    for name in sorted(str(f) for f in files if f):
        digest.update(Path(name).read_bytes())
    return digest.hexdigest()[:16]


def entry_path(kind: str, key: str) -> Path | None:
    """Where the entry of ``kind`` for ``key`` lives (None: caching is off)."""
    root = cache_dir()
    return None if root is None else \
        root / f"{kind}-{hashlib.sha256(key.encode()).hexdigest()[:24]}.pt"


def read(kind: str, key: str, what: str = "value prior") -> tuple[dict, Path] | None:
    """(the stored state, its path) of the entry for ``key``, or None when there is none or
    it cannot be used (reported, so it is built again)."""
    path = entry_path(kind, key)
    if path is None or not path.is_file():
        return None
    try:
        state = load_state(path)
        if state.get("key") != key:
            raise CheckpointError(f"{path}: an entry for other inputs or code")
    except CheckpointError as err:
        warnings.warn(f"{path}: ignoring the cached {what} ({err}); building it again",
                      stacklevel=3)
        return None
    return state, path


def write(kind: str, key: str, state: dict[str, Any], what: str = "value prior") -> None:
    """Store ``state`` (tensors and plain data) as the entry for ``key``; a cache that cannot
    be written is reported, never fatal."""
    path = entry_path(kind, key)
    if path is None:
        return
    try:
        save_state(path, {"key": key, **state})
    except OSError as err:
        warnings.warn(f"{path}: could not cache the {what} ({err}); set {CACHE_ENV} to a "
                      "writable folder, or to 'off'", stacklevel=3)
