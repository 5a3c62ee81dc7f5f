"""Argument checks shared by every layer: a bad value raises ``ValueError`` naming the argument
and what was expected, never a ``TypeError`` from deep inside torch or a silent wrong answer.

Integral numbers of any kind are integers (``3``, ``numpy.int64(3)``: values from config files
and sweeps), booleans are not (``True`` is not a number of agents). Deliberately free of torch,
numpy and gymnasium imports, so the CLI can validate before importing anything heavy.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Collection
from pathlib import Path
from typing import Any


def require(condition: bool, name: str, expected: str, got: object) -> None:
    """Raise ``ValueError(f"{name}: expected {expected}, got {got!r}")`` unless ``condition``."""
    if not condition:
        raise ValueError(f"{name}: expected {expected}, got {got!r}")


def is_integer(value: object) -> bool:
    """An integral number that is not a bool (``numpy.bool_`` included)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) \
        and type(value).__name__ != "bool_"


def is_number(value: object) -> bool:
    """A real number that is not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) \
        and type(value).__name__ != "bool_"


def integer(value: object, name: str, minimum: int | None = None,
            maximum: int | None = None) -> int:
    """``value`` as an int in [minimum, maximum] (either bound optional)."""
    bounds = " and ".join(part for part in (
        None if minimum is None else f">= {minimum}",
        None if maximum is None else f"<= {maximum}") if part)
    ok = is_integer(value) and (minimum is None or int(value) >= minimum) \
        and (maximum is None or int(value) <= maximum)  # type: ignore[arg-type]
    require(ok, name, "an integer" + (f" {bounds}" if bounds else ""), value)
    return int(value)  # type: ignore[arg-type]


def positive_int(value: object, name: str) -> int:
    """``value`` as an int >= 1."""
    return integer(value, name, 1)


def finite_float(value: object, name: str, minimum: float | None = None,
                 strict: bool = False, maximum: float | None = None) -> float:
    """``value`` as a finite float, at least ``minimum`` (above it if ``strict``), at most
    ``maximum``."""
    parts = []
    if minimum is not None:
        parts.append(f"{'>' if strict else '>='} {minimum:g}")
    if maximum is not None:
        parts.append(f"<= {maximum:g}")
    ok = is_number(value) and math.isfinite(float(value))  # type: ignore[arg-type]
    if ok and minimum is not None:
        x = float(value)  # type: ignore[arg-type]
        ok = x > minimum if strict else x >= minimum
    if ok and maximum is not None:
        ok = float(value) <= maximum  # type: ignore[arg-type]
    require(ok, name, "a finite number" + (f" {' and '.join(parts)}" if parts else ""), value)
    return float(value)  # type: ignore[arg-type]


# Ranges of physical parameters in which every problem's float32 arithmetic stays finite (a
# wheelbase of 1e-300 makes ψ̇ = v tan δ / l overflow): lengths and masses, cost weights,
# coordinates, initial spreads.
SCALE = (1e-3, 1e3)
WEIGHT = 1e6
COORDINATE = 1e3
SPREAD = 1e2


def scale(value: object, name: str) -> float:
    """A length, mass or similar positive scale, in [1e-3, 1e3]."""
    return finite_float(value, name, SCALE[0], maximum=SCALE[1])


def weight(value: object, name: str) -> float:
    """A cost weight, in [0, 1e6]."""
    return finite_float(value, name, 0.0, maximum=WEIGHT)


def coordinate(value: object, name: str, limit: float = COORDINATE) -> float:
    """A position, angle or speed, |value| <= ``limit`` (1e3 by default)."""
    return finite_float(value, name, -limit, maximum=limit)


def spread(value: object, name: str) -> float:
    """A standard deviation of initial states, in [0, 1e2]."""
    return finite_float(value, name, 0.0, maximum=SPREAD)


def positive_float(value: object, name: str) -> float:
    """``value`` as a finite float > 0."""
    return finite_float(value, name, 0.0, strict=True)


# Sizes a run may ask for: beyond them a request is a typo or an attack, refused before any
# allocation (a width of 10⁶ or a depth of 10⁷ otherwise ends in the allocator or a hang).
MAX_WIDTH = 2**16
MAX_DEPTH = 1024
MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed takes 64 bits
MAX_LR = 1e3  # Adam moves each weight by about lr a step: far beyond any useful rate, below overflow
THREADS_PER_CORE = 4


def seed(value: object, name: str = "seed") -> int:
    """A seed: an integer in [0, 2⁶⁴ − 1] (the same range for every env, agent and command)."""
    return integer(value, name, 0, MAX_SEED)


def cpu_count() -> int:
    """CPUs this process may run on."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def threads(value: object, name: str = "threads") -> int:
    """A torch thread count: at least 1, at most ``THREADS_PER_CORE`` per CPU of this machine
    (more only oversubscribes the cores; 10⁵ threads crash torch's pool)."""
    return integer(value, name, 1, THREADS_PER_CORE * cpu_count())


def layers(width: object, depth: object, inputs: int, bytes_per_value: int = 4,
           prefix: str = "") -> tuple[int, int]:
    """(width, depth) of a network on ``inputs`` features: width in [1, ``MAX_WIDTH``], depth in
    [1, ``MAX_DEPTH``], and its weights with Adam's two moments within the memory."""
    w = integer(width, prefix + "width", 1, MAX_WIDTH)
    d = integer(depth, prefix + "depth", 1, MAX_DEPTH)
    require_memory(4 * bytes_per_value * w * (inputs + 2 + d * (w + 1)), prefix + "width",
                   f"a network of width {w} and depth {d} with its optimiser state")
    return w, d


def agent_count(value: object, name: str, values_per_agent: int) -> int:
    """A number of agents, refused at once where one time step of one sample would not fit
    (before any per-agent list or tensor is built)."""
    n = positive_int(value, name)
    require_memory(8 * 32 * values_per_agent * n, name, f"one time step of {n} agents")
    return n


def optional(check: Any, value: object, name: str, *args: Any) -> Any:
    """``None`` passes through; anything else goes through ``check(value, name, *args)``."""
    return None if value is None else check(value, name, *args)


def one_of(value: object, name: str, choices: Collection[object]) -> Any:
    """``value`` if it is one of ``choices``."""
    require(value in choices, name, f"one of {sorted(map(str, choices))}", value)
    return value


def known_keywords(given: dict, valid: Collection[str], what: str) -> None:
    """Raise ``ValueError`` listing the valid keywords when ``given`` has others (friendlier
    than Python's ``TypeError: unexpected keyword argument``)."""
    unknown = sorted(set(given) - set(valid))
    if unknown:
        raise ValueError(f"{unknown[0]}: not a keyword of {what}; expected one of "
                         f"{sorted(valid)}")


def available_memory() -> int:
    """Bytes of memory available to a new allocation (Linux MemAvailable; else physical)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover - not Linux
        pass
    import os

    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        return 2**62


def require_memory(nbytes: int, name: str, what: str) -> None:
    """Raise ``ValueError`` naming ``name`` when ``what`` needs more than half the memory
    available now (an estimate, with room for the rest of the work: refusing early beats a hang
    in the allocator or a machine driven into swap)."""
    available = available_memory()
    if nbytes > available / 2:
        raise ValueError(f"{name}: too large: {what} would need about {nbytes / 2**30:.3g} GiB, "
                         f"and {available / 2**30:.3g} GiB are available")


def output_file(path: object, name: str) -> Path:
    """``path`` as a file to write: its folder is created; a path that is a directory, runs
    through a file, or has a name longer than the file system allows is a ``ValueError``."""
    require(isinstance(path, (str, Path)) and str(path) != "", name, "a file path", path)
    p = Path(path)
    require(all(len(part.encode()) <= 255 for part in p.parts), name,
            "a path whose names have at most 255 bytes", str(p)[:80] + "...")
    require(not p.is_dir(), name, "a file path (that path is a directory)", str(p))
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"{name}: expected a path whose folder can be created, got {str(p)!r} "
                         f"({err.strerror})") from err
    return p


def output_dir(path: object, name: str) -> Path:
    """``path`` as a directory that can be created or reused: not a file, names the file system
    accepts (checked before any work starts, so a typo costs nothing)."""
    require(isinstance(path, (str, Path)) and str(path) != "", name, "a directory path", path)
    p = Path(path)
    require(all(len(part.encode()) <= 255 for part in p.parts), name,
            "a path whose names have at most 255 bytes", str(p)[:80] + "...")
    require(not p.exists() or p.is_dir(), name, "a directory (that path is a file)", str(p))
    return p
