"""How JFB compares with what a user would otherwise use, under one wall-clock budget.

``jfbgym compare ENV --minutes M`` trains a JFB agent for M minutes, PPO and SAC for
``rl_factor``·M minutes each (1 by default: the same budget; 10 reproduces "ten times JFB's
time"), scores them and the zero-control/heuristic references on the same held-out states, and
computes the open-loop optimum J* on those states (L-BFGS warm-started from JFB and the
heuristic) for the optimality gaps. It writes, under ``--out``: ``results.md``, ``results.csv``,
``results.json``, ``comparison.png`` (bars), ``training.png`` (cost against wall-clock) and a
side-by-side video of JFB and the best other method from one state drawn with the held-out
seed. Inference time is per batched time step over all held-out states (SB3 models: including
the env step).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jfbgym.evaluation import (
    HELD_OUT_SEED,
    Evaluation,
    format_table,
    held_out_states,
    score_methods,
)
from jfbgym.problems import problem_for_env, strip_namespace
from jfbgym.validation import output_dir, positive_float, positive_int, require


@dataclass
class CompareConfig:
    """Settings of one comparison (each a CLI flag)."""

    env_id: str = "QuadSwarm-v0"
    minutes: float = 10.0  # JFB's wall-clock training budget
    rl_factor: float = 1.0  # PPO/SAC budget = rl_factor * minutes each
    algos: tuple[str, ...] = ("ppo", "sac")
    episodes: int = 100  # held-out states
    seed: int = 0  # training seed of every method
    env_kwargs: dict = field(default_factory=dict)
    iters: int = 1_000_000  # JFB iteration cap (the budget normally stops it first)
    batch: int = 50  # JFB minibatch
    openloop_iters: int = 500  # per warm start; 0 skips the open-loop reference
    out: str = "runs/compare"
    video: bool = True

    def validate(self) -> None:
        positive_float(self.minutes, "minutes")
        positive_float(self.rl_factor, "rl_factor")
        positive_int(self.episodes, "episodes")
        positive_int(self.iters, "iters")
        require(isinstance(self.openloop_iters, int) and self.openloop_iters >= 0,
                "openloop_iters", "an integer >= 0", self.openloop_iters)
        require(set(self.algos) <= {"ppo", "sac"}, "algos", "a subset of ('ppo', 'sac')",
                self.algos)
        output_dir(self.out, "out")
        problem_for_env(self.env_id, **self.env_kwargs)  # validates the id and kwargs


def train_jfb(config: CompareConfig, progress: bool = False) -> tuple[Any, float, list]:
    """(agent, training seconds, [(seconds, validation cost)]) under the JFB budget."""
    from jfbgym.agents.train import TrainConfig, train

    result = train(TrainConfig(env_id=config.env_id, problem_kwargs=dict(config.env_kwargs),
                               iters=config.iters, batch=config.batch, seed=config.seed,
                               out=str(Path(config.out) / "jfb"), max_minutes=config.minutes),
                   progress=progress)
    curve = [(row["wall"], row["val_cost"]) for row in result.history]
    seconds = result.history[-1]["wall"] if result.history else 0.0
    return result.agent, seconds, curve


def compare(config: CompareConfig, progress: bool = False) -> list[Evaluation]:
    """Train, evaluate and write everything; returns the table rows (last: the optimum)."""
    from jfbgym.baselines import references, train_baseline
    from jfbgym.render import plot_comparison, plot_training, render_side_by_side

    config.validate()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    env_id = strip_namespace(config.env_id)
    agent, jfb_seconds, jfb_curve = train_jfb(config, progress)
    problem = agent.problem
    curves = {"JFB": jfb_curve}
    # (name, policy, training seconds, where it runs: the problem, or the env for SB3 models)
    methods: list[tuple[str, Any, float | None, Any]] = [("JFB", agent, jfb_seconds, problem)]
    for algo in config.algos:
        model, run = train_baseline(env_id, algo, config.rl_factor * config.minutes,
                                    str(out / algo), config.seed, config.env_kwargs)
        methods.append((algo.upper(), model, run.train_seconds, env_id))
        curves[algo.upper()] = [tuple(p) for p in run.curve]
    refs = references(problem)
    methods += [(name, policy, None, problem) for name, policy in refs.items()]
    x0 = held_out_states(problem, config.episodes)
    rows, reference, seconds = score_methods(methods, problem, x0, config.openloop_iters,
                                             [agent, *list(refs.values())[1:]],
                                             config.env_kwargs)
    policies = {name: policy for name, policy, _, _ in methods}
    write_tables(rows, out, env_id, config, reference, seconds)
    plot_comparison(rows, out / "comparison.png")
    plot_training(curves, out / "training.png",
                  None if reference is None else float(reference.cost.mean()))
    if config.video:
        learned = [r for r in rows if r.name in policies and r.name != "JFB"]
        other = min(learned, key=lambda r: r.mean).name
        render_side_by_side({"JFB": agent, other: policies[other]}, env_id,
                            out / f"jfb_vs_{other.split()[0].lower()}.mp4", seed=HELD_OUT_SEED,
                            env_kwargs=config.env_kwargs)
    return rows


def write_tables(rows: list[Evaluation], out: Path, env_id: str, config: CompareConfig,
                 reference: Any, seconds: float) -> None:
    """results.md (markdown table with the setting), results.csv and results.json."""
    note = ("open-loop optimum: per-state L-BFGS on the control sequence, warm-started from JFB "
            f"and the heuristic, {seconds:.0f} s; stationarity residual max "
            f"{float(reference.residual.max()):.2g} (tol {reference.tol:g}: "
            f"{'converged' if reference.converged else 'NOT converged'}, J* is an upper bound)"
            if reference is not None else "open-loop optimum: skipped (no optimality gap)")
    header = (f"# {env_id}: JFB {config.minutes:g} min, PPO/SAC {config.rl_factor * config.minutes:g}"
              f" min each, {config.episodes} held-out states (seed {HELD_OUT_SEED})\n\n")
    (out / "results.md").write_text(header + format_table(rows) + f"\n\n{note}\n")
    with open(out / "results.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, list(rows[0].row()))
        writer.writeheader()
        writer.writerows(r.row() for r in rows)
    (out / "results.json").write_text(json.dumps(
        {"env_id": env_id, "config": {**config.__dict__, "algos": list(config.algos)},
         "rows": [r.row() for r in rows], "note": note}, indent=2))
