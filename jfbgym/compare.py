"""How JFB compares with what a user would otherwise use, under one wall-clock budget.

``jfbgym compare ENV --minutes M`` trains a JFB agent and the direct policy (a policy network
trained through the same differentiable rollout, ``jfbgym.agents.direct``) for M minutes each,
PPO and SAC for ``rl_factor``·M minutes each (1 by default: the same budget; 10 reproduces "ten
times JFB's time") split over ``rl_seeds`` seeds (the seed that scores best on separate
validation states is "best"; "mean" is the cost averaged over the seeds' policies), scores
them and the zero-control/heuristic references on the same held-out states, and computes the
open-loop optimum J* on those states (L-BFGS warm-started from JFB and the heuristic) for the
optimality gaps. It writes, under ``--out``: ``results.md``, ``results.csv``,
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

import numpy as np
import torch

from jfbgym.evaluation import (
    HELD_OUT_SEED,
    Evaluation,
    format_table,
    held_out_states,
    optimality_gap,
    score_methods,
)
from jfbgym.problems import problem_for_env, strip_namespace
from jfbgym.validation import output_dir, positive_float, positive_int, require


@dataclass
class CompareConfig:
    """Settings of one comparison (each a CLI flag)."""

    env_id: str = "QuadSwarm-v0"
    minutes: float = 10.0  # JFB's wall-clock training budget
    rl_factor: float = 1.0  # PPO/SAC budget = rl_factor * minutes each, over all seeds
    algos: tuple[str, ...] = ("ppo", "sac")
    rl_seeds: int = 3  # seeds of each RL algorithm, sharing its budget
    direct: bool = True  # also train the direct policy (JFB's budget)
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
        positive_int(self.rl_seeds, "rl_seeds")
        positive_int(self.iters, "iters")
        require(isinstance(self.openloop_iters, int) and self.openloop_iters >= 0,
                "openloop_iters", "an integer >= 0", self.openloop_iters)
        require(set(self.algos) <= {"ppo", "sac"}, "algos", "a subset of ('ppo', 'sac')",
                self.algos)
        output_dir(self.out, "out")
        problem_for_env(self.env_id, **self.env_kwargs)  # validates the id and kwargs


VALIDATION_SEED = 314_159  # RL seeds are chosen on these states, never on the held-out ones


def train_agent(config: CompareConfig, kind: str, progress: bool = False
                ) -> tuple[Any, float, list]:
    """(agent, training seconds, [(seconds, validation cost)]) of agent ``kind`` ("jfb" or
    "direct") under the JFB budget."""
    from jfbgym.agents.trainer import TrainConfig, train

    result = train(TrainConfig(env_id=config.env_id, agent=kind,
                               problem_kwargs=dict(config.env_kwargs), iters=config.iters,
                               batch=config.batch, seed=config.seed,
                               out=str(Path(config.out) / kind), max_minutes=config.minutes),
                   progress=progress)
    curve = [(row["wall"], row["val_cost"]) for row in result.history]
    seconds = result.history[-1]["wall"] if result.history else 0.0
    return result.agent, seconds, curve


@dataclass
class SeedSweep:
    """One RL algorithm trained with several seeds: the policies, their runs, and which one
    scored best on the validation states."""

    algo: str
    policies: list
    runs: list
    validation: list[float]
    held_out: list[float] = field(default_factory=list)  # each seed's J on the held-out states

    @property
    def best(self) -> int:
        return min(range(len(self.validation)), key=lambda k: self.validation[k])

    @property
    def seconds(self) -> float:
        return sum(run.train_seconds for run in self.runs)


def sweep(config: CompareConfig, algo: str, x_val: Any) -> SeedSweep:
    """Train ``algo`` with seeds seed, seed + 1, ... sharing ``rl_factor``·minutes."""
    from jfbgym.baselines import train_baseline
    from jfbgym.evaluation import evaluate

    minutes = config.rl_factor * config.minutes / config.rl_seeds
    env_id = strip_namespace(config.env_id)
    found = SeedSweep(algo, [], [], [])
    for k in range(config.rl_seeds):
        policy, run = train_baseline(env_id, algo, minutes, str(Path(config.out) / f"{algo}-{k}"),
                                     config.seed + k, config.env_kwargs)
        found.policies.append(policy)
        found.runs.append(run)
        found.validation.append(evaluate(policy, env_id, x0=x_val,
                                         env_kwargs=config.env_kwargs).mean)
    return found


def compare(config: CompareConfig, progress: bool = False) -> list[Evaluation]:
    """Train, evaluate and write everything; returns the table rows (last: the optimum)."""
    from jfbgym.baselines import references
    from jfbgym.render import plot_comparison, plot_training, render_side_by_side

    config.validate()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    env_id = strip_namespace(config.env_id)
    agent, jfb_seconds, jfb_curve = train_agent(config, "jfb", progress)
    problem = agent.problem
    curves = {"JFB": jfb_curve}
    # (name, policy, training seconds, where it runs: the problem, or the env for SB3 models)
    methods: list[tuple[str, Any, float | None, Any]] = [("JFB", agent, jfb_seconds, problem)]
    if config.direct:
        direct, seconds, curves["direct policy"] = train_agent(config, "direct", progress)
        methods.append(("direct policy", direct, seconds, problem))
    x_val = held_out_states(problem, config.episodes, VALIDATION_SEED)
    sweeps = [sweep(config, algo, x_val) for algo in config.algos]
    refs = references(problem)
    x0 = held_out_states(problem, config.episodes)
    for found in sweeps:
        name = f"{found.algo.upper()} (best of {config.rl_seeds})"
        methods.append((name, found.policies[found.best], found.seconds, env_id))
        # RL's curve is its stochastic training episodes' mean cost; the others' are validation
        label = f"{found.algo.upper()} (best seed, training episodes)"
        curves[label] = [tuple(p) for p in found.runs[found.best].curve]
    methods += [(name, policy, None, problem) for name, policy in refs.items()]
    rows, reference, seconds = score_methods(methods, problem, x0, config.openloop_iters,
                                             [agent, *list(refs.values())[1:]],
                                             config.env_kwargs)
    for found in sweeps:  # the mean of the seeds, after each best-of row
        per_seed = score_methods([(str(k), p, None, env_id) for k, p in
                                  enumerate(found.policies)], problem, x0,
                                 env_kwargs=config.env_kwargs)[0]
        found.held_out = [r.mean for r in per_seed]
        costs = torch.stack([r.costs for r in per_seed]).mean(0)
        gap = None if reference is None else optimality_gap(costs, reference.cost)
        where = next(i for i, r in enumerate(rows) if r.name.startswith(found.algo.upper()))
        rows.insert(where + 1, Evaluation(f"{found.algo.upper()} (mean of {config.rl_seeds})",
                                          costs, gap, float(np.mean([r.seconds_per_step
                                                                     for r in per_seed])),
                                          found.seconds))
    policies = {name: policy for name, policy, _, _ in methods}
    write_tables(rows, out, env_id, config, reference, seconds, sweeps)
    plot_comparison(rows, out / "comparison.png")
    (out / "curves.json").write_text(json.dumps({k: [list(p) for p in v]
                                                 for k, v in curves.items()}))
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
                 reference: Any, seconds: float, sweeps: list[SeedSweep]) -> None:
    """results.md (markdown table with the setting), results.csv and results.json."""
    note = ("open-loop optimum: per-state L-BFGS on the control sequence, warm-started from JFB "
            f"and the heuristic, {seconds:.0f} s; stationarity residual max "
            f"{float(reference.residual.max()):.2g} (tol {reference.tol:g}: "
            f"{'converged' if reference.converged else 'NOT converged'}, J* is an upper bound)"
            if reference is not None else "open-loop optimum: skipped (no optimality gap)")
    from jfbgym.baselines import HYPERPARAMS

    direct = " and the direct policy" if config.direct else ""
    header = (f"# {env_id}: JFB{direct} {config.minutes:g} min each, "
              f"{'/'.join(a.upper() for a in config.algos) or 'no RL'} "
              f"{config.rl_factor * config.minutes:g} min each over {config.rl_seeds} seeds, "
              f"{config.episodes} held-out states (seed {HELD_OUT_SEED})\n\n")
    rl = "".join(f"\n{f.algo.upper()}: {f.runs[0].n_envs} envs, seeds "
                 f"{[r.seed for r in f.runs]}, {[r.timesteps for r in f.runs]} env steps, "
                 f"validation J {[round(v, 4) for v in f.validation]} (best: seed "
                 f"{f.runs[f.best].seed}); RL Baselines3 Zoo settings {HYPERPARAMS[f.algo]}, "
                 "VecNormalize (observations and rewards), actions normalised onto the "
                 "problem's action_scale\n" for f in sweeps)
    (out / "results.md").write_text(header + format_table(rows) + f"\n\n{note}\n{rl}")
    with open(out / "results.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, list(rows[0].row()))
        writer.writeheader()
        writer.writerows(r.row() for r in rows)
    (out / "results.json").write_text(json.dumps(
        {"env_id": env_id, "config": {**config.__dict__, "algos": list(config.algos)},
         "rows": [r.row() for r in rows], "note": note,
         "rl": [{"algo": f.algo, "validation": f.validation, "held_out": f.held_out,
                 "best_seed": f.runs[f.best].seed,
                 "runs": [dict(r.__dict__, curve=None) for r in f.runs]} for f in sweeps]},
        indent=2))
