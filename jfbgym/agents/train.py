"""``jfbgym train``: learn a value network by backpropagating the rolled-out cost through the
implicit control layer (JFB by default). Reads top to bottom, CleanRL style:

    jfbgym train QuadSwarm-v0 --n-agents 6 --grad jfb --iters 500 --out runs/quad6

or from Python ``train(TrainConfig(env_id="QuadSwarm-v0", n_agents=6, out="runs/quad6"))``.

Every iteration draws a fresh minibatch from ρ (the setting of the convergence theorem) and
scores a fixed held-out validation batch; Adam with ReduceLROnPlateau on the validation cost.
Checkpoints are atomic and complete (optimizer, scheduler and RNG states), so ``--resume``
continues bit-for-bit; Ctrl-C and the ``--max-minutes`` budget save before stopping; a NaN/inf
loss restores the last good state and halves the learning rate, and a second one in a row stops;
a validation cost that blows up (``--blowup``) undoes that step and halves the learning rate.
"""

from __future__ import annotations

import argparse
import copy
import csv
import dataclasses
import json
import math
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

import jfbgym
from jfbgym.problems.base import require

from .agent import DTYPES, InnerLog, JFBAgent
from .checkpoint import CHECKPOINT, load_config, load_state, save_json, save_state, snapshot_path
from .implicit import GRAD_MODES, SOLVERS, SolverOptions

LOG_FIELDS = ("iteration", "loss", "val_cost", "inner_residual", "inner_iters", "unconverged",
              "lr", "seconds", "wall")


@dataclass
class TrainConfig:
    """Every setting of a training run; each field is a CLI flag (``--field-name``)."""

    env_id: str = "QuadSwarm-v0"
    n_agents: int | None = None  # problem size override (None: the env id's default)
    problem_kwargs: dict = field(default_factory=dict)  # further problem overrides (JSON on CLI)
    grad: str = "jfb"  # one of GRAD_MODES
    solver: str = "newton"  # "newton" (problem.optimal_control) or "gradient" (T iteration)
    alpha: float | None = None  # step of T; None: 1/curvature estimate per sample
    inner_iters: int = 200  # max inner iterations per time step
    inner_tol: float | None = None  # relative residual; None: 1e-5 (float32) / 1e-8 (float64)
    iters: int = 500
    batch: int = 50
    val_batch: int = 100
    val_every: int = 1
    lr: float = 1e-2
    lr_factor: float = 0.5
    lr_patience: int = 10
    blowup: float = 10.0  # a validation cost above prev + blowup·|prev| undoes the step
    width: int = 96
    depth: int = 3
    rank: int = 10
    seed: int = 0
    dtype: str = "float32"
    device: str = "cpu"
    out: str = "runs/jfb"
    checkpoint_every: int = 50
    resume: bool = False
    max_minutes: float | None = None  # wall-clock budget of this call; None: no limit

    def validate(self) -> None:
        require(self.grad in GRAD_MODES, "grad", f"one of {GRAD_MODES}", self.grad)
        require(self.solver in SOLVERS, "solver", f"one of {SOLVERS}", self.solver)
        require(not (self.grad == "unrolled" and self.solver != "gradient"), "solver",
                "'gradient' with grad='unrolled' (it differentiates the gradient iterations)",
                self.solver)
        require(self.dtype in DTYPES, "dtype", f"one of {sorted(DTYPES)}", self.dtype)
        for name in ("iters", "batch", "val_batch", "val_every", "width", "depth", "rank",
                     "checkpoint_every", "inner_iters", "lr_patience"):
            value = getattr(self, name)
            require(isinstance(value, int) and value >= 1, name, "an integer >= 1", value)
        require(self.lr > 0 and math.isfinite(self.lr), "lr", "a finite number > 0", self.lr)
        require(0 < self.lr_factor < 1, "lr_factor", "a number in (0, 1)", self.lr_factor)
        require(self.blowup > 0 and math.isfinite(self.blowup), "blowup", "a finite number > 0",
                self.blowup)
        require(self.max_minutes is None or self.max_minutes > 0, "max_minutes",
                "None or a number > 0", self.max_minutes)
        require(isinstance(self.problem_kwargs, dict), "problem_kwargs", "a dict",
                self.problem_kwargs)

    def env_kwargs(self) -> dict:
        kwargs = dict(self.problem_kwargs)
        if self.n_agents is not None:
            kwargs["n_agents"] = self.n_agents
        return kwargs

    def solver_options(self) -> SolverOptions:
        return SolverOptions(self.solver, self.alpha, self.inner_iters, self.inner_tol)


@dataclass
class TrainResult:
    agent: JFBAgent
    history: list[dict]
    status: str  # "finished", "time budget", "interrupted" or "non-finite loss"
    out: Path


def make_agent(config: TrainConfig) -> JFBAgent:
    torch.manual_seed(config.seed)
    return JFBAgent.build(config.env_id, config.env_kwargs(), config.width, config.depth,
                          config.rank, config.solver_options(), DTYPES[config.dtype],
                          config.device)


def run_config(config: TrainConfig, agent: JFBAgent) -> dict:
    """The JSON written beside the checkpoint: every setting, and the package version."""
    return {"version": jfbgym.__version__, "device": config.device,
            "train": dataclasses.asdict(config), "agent": agent.config()}


def training_state(agent: JFBAgent, optimizer, scheduler, generator: torch.Generator,
                   iteration: int, history: list[dict]) -> dict:
    return {"model": agent.network.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "generator": generator.get_state(),
            "torch_rng": torch.get_rng_state(), "iteration": iteration, "history": history}


def save_run(out: Path, agent: JFBAgent, state: dict) -> None:
    save_state(out / CHECKPOINT, state)
    save_state(snapshot_path(out, state["iteration"]), {"model": state["model"]})
    save_json(out / "log.json", state["history"])


def gradients_finite(parameters) -> bool:
    return all(bool(torch.isfinite(p.grad).all()) for p in parameters if p.grad is not None)


def train(config: TrainConfig, progress: bool = True) -> TrainResult:
    """Train a JFB agent as ``config`` says; returns the agent, its history and why it stopped."""
    config.validate()
    out = Path(config.out)
    agent = make_agent(config)
    problem, net = agent.problem, agent.network
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=config.lr_factor, patience=config.lr_patience)
    generator = torch.Generator().manual_seed(config.seed)
    x_val = problem.sample_initial_states(config.val_batch,
                                          torch.Generator().manual_seed(config.seed + 7919))
    history: list[dict] = []
    start = 0

    # --- resume: same agent settings required, everything else continues from the checkpoint
    if config.resume and (out / CHECKPOINT).is_file():
        saved = load_config(out)["agent"]
        require(saved == json.loads(json.dumps(agent.config())), "resume",
                f"the agent settings of {out} (env, problem, network, solver, dtype)",
                agent.config())
        state = load_state(out / CHECKPOINT, problem.device)
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        start, history = int(state["iteration"]), list(state["history"])
    save_json(out / "config.json", run_config(config, agent))
    with open(out / "log.csv", "w", newline="") as fh:  # the CSV restarts from the checkpoint
        csv.DictWriter(fh, LOG_FIELDS).writeheader()
        csv.DictWriter(fh, LOG_FIELDS).writerows(history)

    def snapshot(iteration: int) -> dict:  # history rows are never mutated: copy the list only
        state = training_state(agent, optimizer, scheduler, generator, iteration, [])
        return {**copy.deepcopy(state), "history": list(history)}

    last_good = snapshot(start)
    status, strikes, iteration = "finished", 0, start
    wall0 = history[-1]["wall"] if history else 0.0
    clock = time.perf_counter()
    val_cost = history[-1]["val_cost"] if history else float("nan")
    # Under a time budget the bar measures seconds of that budget (the iteration cap is then
    # only a cap, and "12/100000 it" would say nothing about when training ends).
    budget = None if config.max_minutes is None else 60.0 * config.max_minutes
    bar = tqdm(total=config.iters if budget is None else round(budget),
               initial=start if budget is None else 0, unit="it" if budget is None else "s",
               disable=not progress, dynamic_ncols=True, desc=f"{config.grad} {agent.env_id}")
    try:
        while iteration < config.iters:
            tic = time.perf_counter()
            # 1. a fresh minibatch from ρ, the closed-loop cost, its gradient
            x0 = problem.sample_initial_states(config.batch, generator)
            log = InnerLog()
            loss = agent.objective(x0, config.grad, log).mean()
            optimizer.zero_grad(set_to_none=True)
            ok = bool(torch.isfinite(loss))
            if ok:
                loss.backward()
                ok = gradients_finite(net.parameters())
            # 2. NaN/inf guard: back to the last good state at half the learning rate
            if not ok:
                strikes += 1
                restore(agent, optimizer, scheduler, last_good)
                for group in optimizer.param_groups:
                    group["lr"] *= 0.5
                tqdm.write(f"iteration {iteration}: non-finite loss or gradient; restored the "
                           f"last good state, lr -> {optimizer.param_groups[0]['lr']:.3g}")
                if strikes >= 2:
                    tqdm.write("non-finite again: stopping (last good state saved)")
                    status = "non-finite loss"
                    break
                continue
            strikes = 0
            optimizer.step()
            iteration += 1
            seconds = time.perf_counter() - tic  # the training step alone, validation excluded
            # 3. validation on the fixed held-out batch drives the learning-rate schedule
            if iteration % config.val_every == 0 or iteration == config.iters:
                previous = val_cost
                with torch.no_grad():
                    val_cost = float(agent.objective(x_val).mean())
                # 4. blow-up guard: one step can move the policy to where a few rollouts go
                # catastrophically wrong (ConsumptionSavings: the costate near zero, wealth
                # spent, a penalty 10⁴× the optimum). Keeping it would also poison Adam's
                # moments for tens of steps, so undo the step and halve the learning rate.
                if math.isfinite(previous) and not val_cost <= previous + config.blowup * abs(
                        previous):
                    tqdm.write(f"iteration {iteration}: validation cost {val_cost:.4g} blew up "
                               f"(was {previous:.4g}); undid the step, lr -> "
                               f"{0.5 * optimizer.param_groups[0]['lr']:.3g}")
                    restore(agent, optimizer, scheduler, last_good)
                    for group in optimizer.param_groups:
                        group["lr"] *= 0.5
                    iteration, val_cost = iteration - 1, previous
                    continue
                scheduler.step(val_cost)
            row = {"iteration": iteration, "loss": float(loss.detach()), "val_cost": val_cost,
                   **log.summary(), "lr": optimizer.param_groups[0]["lr"], "seconds": seconds,
                   "wall": wall0 + time.perf_counter() - clock}
            history.append(row)
            with open(out / "log.csv", "a", newline="") as fh:
                csv.DictWriter(fh, LOG_FIELDS).writerow(row)
            if budget is None:
                bar.update(1)
            else:
                bar.n = min(round(time.perf_counter() - clock), bar.total)
            bar.set_postfix(it=iteration, loss=f"{row['loss']:.4g}", val=f"{val_cost:.4g}",
                            res=f"{row['inner_residual']:.1e}", unconv=row["unconverged"],
                            lr=f"{row['lr']:.1e}")
            last_good = snapshot(iteration)
            if iteration % config.checkpoint_every == 0:
                save_run(out, agent, last_good)
            if budget is not None and time.perf_counter() - clock >= budget:
                status = "time budget"
                break
    except KeyboardInterrupt:
        status = "interrupted"
        tqdm.write("interrupted: saving the last good state")
        restore(agent, optimizer, scheduler, last_good)
    finally:
        bar.close()
    save_run(out, agent, last_good)
    return TrainResult(agent, history, status, out)


def restore(agent: JFBAgent, optimizer, scheduler, state: dict) -> None:
    agent.network.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])


# ------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field; the env id is also accepted positionally."""
    parser.add_argument("env", nargs="?", default=None, help="env id, e.g. QuadSwarm-v0")
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING \
            else f.default
        hint = hints[f.name]
        if hint is bool:
            parser.add_argument(flag, action="store_true", default=default)
        elif hint is dict:
            parser.add_argument(flag, type=json.loads, default=default, metavar="JSON")
        else:
            kind = next(a for a in typing.get_args(hint) or (hint,) if a is not type(None))
            choices = {"grad": GRAD_MODES, "solver": SOLVERS, "dtype": tuple(DTYPES)}
            parser.add_argument(flag, type=kind, default=default, choices=choices.get(f.name))


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    if args.env is not None:
        values["env_id"] = args.env
    return TrainConfig(**values)


def main(args: argparse.Namespace) -> int:
    result = train(config_from_args(args))
    last = result.history[-1] if result.history else {}
    print(f"{result.status} after {last.get('iteration', 0)} iterations: "
          f"val cost {last.get('val_cost', float('nan')):.6g}; saved to {result.out}")
    return {"finished": 0, "time budget": 0, "interrupted": 130}.get(result.status, 1)
