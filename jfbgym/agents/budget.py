"""What paces and ends a training run: the learning-rate schedule, the budget (iterations, CPU
seconds, wall seconds) and a stop asked for by Ctrl-C or SIGTERM."""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from tqdm import tqdm

from .config import TrainConfig
from .distributed import World

MIN_LR_SCALE = 2.0**-20  # a run backed off this far diverges at any learning rate: it stops


class LearningRate:
    """The learning rate at each iteration: a linear warm-up, then ``cosine`` decay to zero at
    the end of the budget, ``plateau`` halving when validation stops improving for
    ``patience`` validations, or ``constant``; times ``scale``, which every back-off halves."""

    def __init__(self, config: TrainConfig, prior: str) -> None:
        self.peak, self.kind, self.warmup = config.learning_rate(prior), config.schedule, \
            config.warmup
        self.patience = config.lr_patience
        self.scale, self.best, self.bad = 1.0, math.inf, 0

    def value(self, iteration: int, progress: float) -> float:
        warm = min(1.0, (iteration + 1) / self.warmup) if self.warmup else 1.0
        shape = 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))) \
            if self.kind == "cosine" else 1.0
        return self.peak * self.scale * warm * shape

    def observe(self, val_cost: float) -> None:
        """Plateau bookkeeping after a validation."""
        if self.kind != "plateau":
            return
        if not math.isfinite(self.best) or val_cost < self.best - 1e-4 * abs(self.best):
            self.best, self.bad = val_cost, 0
        else:
            self.bad += 1
            if self.bad > self.patience:
                self.scale, self.bad = 0.5 * self.scale, 0

    def state_dict(self) -> dict:
        return {"scale": self.scale, "best": self.best, "bad": self.bad}

    def load_state_dict(self, state: dict) -> None:
        self.scale, self.best, self.bad = state["scale"], state["best"], state["bad"]


class Budget:
    """Iterations, CPU seconds (whole run) and wall seconds (this call) used so far."""

    def __init__(self, config: TrainConfig, iteration: int, cpu: float, wall: float,
                 world: World, stop: StopRequest | None = None) -> None:
        self.world, self.stop = world, stop
        self.iters, self.cpu_budget = config.iteration_budget(), config.budget_seconds()
        self.wall_limit = None if config.max_minutes is None else 60.0 * config.max_minutes
        self.start_iteration, self.cpu0, self.wall0 = iteration, cpu, wall
        self.clock, self.cpu_clock = time.perf_counter(), time.process_time()

    def cpu(self) -> float:
        return self.cpu0 + time.process_time() - self.cpu_clock

    def wall(self) -> float:
        return self.wall0 + time.perf_counter() - self.clock

    def progress(self, iteration: int) -> float:
        """Fraction of the training budget used (the binding one), in [0, 1]."""
        parts = [] if self.iters is None else [iteration / self.iters]
        if self.cpu_budget is not None:
            parts.append(self.cpu() / self.cpu_budget)
        if self.wall_limit is not None:
            parts.append((time.perf_counter() - self.clock) / self.wall_limit)
        return min(1.0, max(parts))

    def exhausted(self, iteration: int) -> str | None:
        """Why training must stop now, or None (a call always makes one iteration first); in a
        distributed run, every rank stops when one must."""
        reason = self._exhausted(iteration)
        if self.world.any(reason is not None):
            return reason or "time budget"
        return None


    def _exhausted(self, iteration: int) -> str | None:
        if self.stop is not None and self.stop.requested:
            return "interrupted"
        if self.iters is not None and iteration >= self.iters:
            return "finished"
        if iteration == self.start_iteration:
            return None
        if self.cpu_budget is not None and self.cpu() >= self.cpu_budget:
            return "time budget"
        if self.wall_limit is not None and time.perf_counter() - self.clock >= self.wall_limit:
            return "time budget"
        return None

    def exclude(self, call: Callable[..., Any], *args: Any) -> Any:
        """Run ``call(*args)`` without charging its time to the budget (a benchmark's
        evaluations)."""
        cpu, wall = time.process_time(), time.perf_counter()
        try:
            return call(*args)
        finally:
            self.cpu_clock += time.process_time() - cpu
            self.clock += time.perf_counter() - wall

    def left(self, iteration: int) -> str:
        """What remains of the binding budget, for the progress bar: '1m23s CPU left',
        '0m40s left' (wall clock) or '140 iterations left'."""
        shares = [] if self.iters is None else \
            [(iteration / self.iters, f"{self.iters - iteration} iterations left")]
        if self.cpu_budget is not None:
            shares.append((self.cpu() / self.cpu_budget,
                           clock(self.cpu_budget - self.cpu()) + " CPU left"))
        if self.wall_limit is not None:
            used = time.perf_counter() - self.clock
            shares.append((used / self.wall_limit, clock(self.wall_limit - used) + " left"))
        return max(shares, key=lambda share: share[0])[1]


class StopRequest:
    """Ctrl-C and SIGTERM during training: the first asks the loop to stop after the iteration
    under way (validated and saved: nothing completed is lost), a second stops at once (the run
    falls back to its last validated state). Installed for the loop, in the main thread."""

    def __init__(self, announce: bool) -> None:
        self.requested, self.announce, self.saving = False, announce, False
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self.previous[s] = signal.signal(s, self.handle)

    def __exit__(self, *exc: object) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    def handle(self, signum: int, frame: Any) -> None:
        if self.saving:
            return
        if self.requested:
            raise KeyboardInterrupt(f"signal {signum}")
        self.requested = True
        if self.announce:
            tqdm.write("stopping after this iteration (saved on the way out); interrupt again "
                       "to stop at once")


def clock(seconds: float) -> str:
    """'1m23s' for a non-negative duration."""
    seconds = max(0.0, seconds)
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
