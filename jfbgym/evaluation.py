"""How good is a controller: mean J ± 95% CI on a fixed held-out set, and its optimality gap.

Every method is scored on the *same* initial states — ``held_out_states(problem)``, drawn from ρ
with a fixed seed that training never uses — so numbers from different runs and methods are
comparable. The confidence interval is the normal approximation mean ± 1.96·s/√n (n = 100 by
default). The optimality gap is (J̄ − J̄*)/|J̄*| with J̄* the mean open-loop optimum
(``jfbgym.openloop``) over the same states: a ratio of means, so states whose J* is near zero
cannot blow it up. Inference time is the wall-clock of the rollout per time step of the whole
batch (policy plus dynamics), as the user would run it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium
import torch
from torch import Tensor

from jfbgym.openloop import OpenLoopResult, open_loop_optimum
from jfbgym.problems.base import ControlProblem
from jfbgym.rollout import feedback_of, initial_states, resolve_problem, rollout
from jfbgym.validation import positive_int, require

HELD_OUT_SEED = 2_718_281  # never a training seed: training draws from its own generator
Z95 = 1.959963984540054


@dataclass(frozen=True)
class Evaluation:
    """One method's scores on the held-out states (``costs`` float64, one per state)."""

    name: str
    costs: Tensor
    gap: float | None
    seconds_per_step: float
    train_seconds: float | None = None

    @property
    def mean(self) -> float:
        return float(self.costs.mean())

    @property
    def ci95(self) -> float:
        """Half-width of the 95% confidence interval of the mean."""
        n = self.costs.numel()
        return Z95 * float(self.costs.std()) / math.sqrt(n) if n > 1 else float("nan")

    def __repr__(self) -> str:  # the dataclass default would print every per-state cost
        gap = "" if self.gap is None else f", gap={100 * self.gap:+.2f}%"
        return (f"Evaluation({self.name!r}, J={self.mean:.6g} ± {self.ci95:.2g} over "
                f"{self.costs.numel()} states{gap})")

    def row(self) -> dict[str, Any]:
        return {"method": self.name, "J_mean": self.mean, "J_ci95": self.ci95,
                "gap": self.gap, "train_s": self.train_seconds,
                "ms_per_step": 1e3 * self.seconds_per_step, "n_states": self.costs.numel()}


def held_out_states(problem: ControlProblem, n: int = 100, seed: int = HELD_OUT_SEED) -> Tensor:
    """The fixed evaluation set: ``n`` states from ρ drawn with ``seed``."""
    return initial_states(problem, n, seed)


class HeldOutResets(gymnasium.Wrapper):
    """Episode i of the wrapped single env starts from ``x0[i]`` (cycling), so SB3's
    ``evaluate_policy`` and other env-based tools score exactly the held-out set."""

    def __init__(self, env: gymnasium.Env, x0: Tensor) -> None:
        super().__init__(env)
        self.states = x0.detach().cpu().double().numpy()
        self.episode = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> Any:
        state = self.states[self.episode % len(self.states)]
        self.episode += 1
        return self.env.reset(seed=seed, options={**(options or {}), "initial_state": state})


def optimality_gap(costs: Tensor, reference: Tensor) -> float:
    """(J̄ − J̄*)/|J̄*| over the same states."""
    require(costs.shape == reference.shape, "reference", f"shape {tuple(costs.shape)}",
            tuple(reference.shape))
    ref = float(reference.double().mean())
    require(ref != 0.0, "reference", "a nonzero mean optimum", ref)
    return (float(costs.double().mean()) - ref) / abs(ref)


def evaluate(policy: Any, env_or_id: Any, *, n_episodes: int = 100, seed: int = HELD_OUT_SEED,
             x0: Tensor | None = None, reference: Tensor | OpenLoopResult | None = None,
             name: str | None = None, env_kwargs: dict | None = None,
             train_seconds: float | None = None) -> Evaluation:
    """Score ``policy`` (any policy ``jfbgym.rollout`` accepts) on the held-out states.

    ``x0`` overrides the held-out set; ``reference`` (per-state J*, or an ``OpenLoopResult``)
    gives the optimality gap.
    """
    _, problem = resolve_problem(env_or_id, env_kwargs)
    if x0 is None:
        x0 = held_out_states(problem, positive_int(n_episodes, "n_episodes"), seed)
    target = env_or_id if feedback_of(policy) is None else problem
    start = time.perf_counter()
    traj = rollout(policy, target, x0=x0, env_kwargs=env_kwargs)
    elapsed = time.perf_counter() - start
    costs = traj.cost.double()
    # A policy that blows up has J = inf, an honest score; NaN would be a bug somewhere.
    require(not bool(torch.isnan(costs).any()), "policy", "no NaN costs", costs.tolist())
    ref = reference.cost if isinstance(reference, OpenLoopResult) else reference
    gap = None if ref is None else optimality_gap(costs, ref)
    label = name if name is not None else type(policy).__name__
    return Evaluation(label, costs, gap, elapsed / problem.n_steps, train_seconds)


def open_loop_reference(problem: ControlProblem, x0: Tensor, warm_starts: Sequence[Any] = (),
                        tol: float = 1e-5, max_iters: int = 2000) -> OpenLoopResult:
    """J*(x) per state: L-BFGS from each warm-start policy's controls (zero controls if none);
    the best result per state is kept."""
    starts = [feedback_of(p) for p in warm_starts if feedback_of(p) is not None] or [None]
    return open_loop_optimum(problem, x0, init=starts, tol=tol, max_iters=max_iters)


def score_methods(methods: Sequence[tuple[str, Any, float | None, Any]], problem: ControlProblem,
                  x0: Tensor, openloop_iters: int = 0, warm_starts: Sequence[Any] = (),
                  env_kwargs: dict | None = None
                  ) -> tuple[list[Evaluation], OpenLoopResult | None, float]:
    """Every method on the same states ``x0``, for a table: (rows, J* reference, its seconds).

    ``methods``: (name, policy, training seconds or None, where it runs: ``problem``, or an env
    id for policies that act through the env, which get ``env_kwargs``). With
    ``openloop_iters`` > 0 the open-loop optimum, warm-started from ``warm_starts``, gives every
    row its gap and is appended as the last row.
    """
    reference, optimum, seconds = None, [], 0.0
    if openloop_iters > 0:
        start = time.perf_counter()
        reference = open_loop_reference(problem, x0, warm_starts, max_iters=openloop_iters)
        seconds = time.perf_counter() - start
        optimum = [Evaluation("open-loop optimum", reference.cost, 0.0, float("nan"))]
    rows = [evaluate(policy, where, x0=x0, name=name, reference=reference,
                     env_kwargs=env_kwargs if isinstance(where, str) else None,
                     train_seconds=train_seconds)
            for name, policy, train_seconds, where in methods]
    return rows + optimum, reference, seconds


def _percent(gap: float | None) -> str:
    if gap is None:
        return "—"
    return f"{100 * gap:+.2f}%" if abs(gap) < 10 else f"{100 * gap:+.3g}%"


def format_table(rows: Sequence[Evaluation], markdown: bool = True) -> str:
    """A markdown (or plain) table: method, J mean ± CI, gap, training time, ms per step."""
    header = ["method", "J (mean ± 95% CI)", "optimality gap", "train time (s)", "ms / step"]
    lines = []
    for e in rows:
        lines.append([e.name, f"{e.mean:.4g} ± {e.ci95:.2g}",
                      _percent(e.gap),
                      "—" if e.train_seconds is None else f"{e.train_seconds:.1f}",
                      "—" if math.isnan(e.seconds_per_step)
                      else f"{1e3 * e.seconds_per_step:.3g}"])
    widths = [max(len(h), *(len(r[i]) for r in lines)) for i, h in enumerate(header)]

    def fmt(cells: list[str]) -> str:
        body = " | ".join(c.ljust(w) for c, w in zip(cells, widths))
        return f"| {body} |" if markdown else body

    out = [fmt(header)]
    if markdown:
        out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    out += [fmt(r) for r in lines]
    return "\n".join(out)
