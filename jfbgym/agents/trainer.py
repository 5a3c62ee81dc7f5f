"""Training: learn a value network by backpropagating the rolled-out cost through the implicit
control layer (JFB by default); ``agent="direct"`` trains a policy network through the same
rollout instead (``jfbgym.agents.direct``), with everything else shared. Reads top to bottom, CleanRL style::

    train(TrainConfig(env_id="QuadSwarm-v0", n_agents=6, out="runs/quad6"))

``train`` checks the settings and the run directory; ``Trainer`` holds a run's state and its
loop (``Trainer.run``). Every iteration draws a fresh minibatch from ρ (the setting of the
convergence theorem); a fixed held-out validation batch is scored every ``val_every``
iterations. Adam, with a learning-rate schedule over the budget (``jfbgym.agents.budget``: the
schedule, the budget in iterations, CPU or wall seconds, and Ctrl-C). Reports go through one
``RunLog`` (CSV, TensorBoard, progress bar).

Nothing trained is lost: checkpoints are atomic and complete (optimizer, schedule and RNG
states), so ``resume`` continues bit-for-bit under an iteration budget; Ctrl-C, SIGTERM, a dead
rank and the budget save before stopping. Nothing bad is kept: a non-finite loss or gradient restores the last good
state at half the learning rate (a second one in a row stops); a validation cost that is
non-finite or blows up undoes the steps since the last validation and halves the learning rate;
a state with non-finite weights is never written.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

import jfbgym
from jfbgym.problems import problem_for_env, problem_overrides
from jfbgym.validation import is_integer, is_number, require

from .agent import DTYPES, InnerLog, JFBAgent
from .budget import MIN_LR_SCALE, Budget, LearningRate, StopRequest
from .checkpoint import (
    CHECKPOINT,
    CheckpointError,
    RunLock,
    first_line,
    load_config,
    load_state,
    load_weights,
    require_keys,
    save_json,
    save_state,
    snapshot_path,
    state_is_finite,
)
from .config import TrainConfig
from .direct import DirectAgent
from .distributed import PeerLost, World
from .implicit import SolverOptions
from .losses import value_penalties
from .policy import Agent
from .runlog import RunLog

# The exact pairwise interaction's terms a training iteration may evaluate (forward, backward
# and a recomputation: PASSES per step): beyond about this it takes minutes an iteration.
MAX_PAIR_EVALUATIONS = 3e10
PASSES = 3


@dataclass
class TrainResult:
    agent: Agent
    history: list[dict]
    status: str  # "finished", "time budget", "interrupted", "non-finite loss" or "diverged"
    out: Path


def make_agent(config: TrainConfig) -> Agent:
    torch.manual_seed(config.seed)
    if config.agent == "direct":
        return DirectAgent.build(config.env_id, config.env_kwargs(), config.network_config(),
                                 DTYPES[config.dtype], config.device,
                                 normalise=config.normalise != "off", seed=config.seed)
    solver = SolverOptions(config.solver, config.alpha, config.inner_iters, config.inner_tol)
    agent = JFBAgent.build(config.env_id, config.env_kwargs(), config.network_config(),
                           config.prior_config(), solver, DTYPES[config.dtype], config.device,
                           seed=config.seed)
    return agent.compile() if config.compile else agent


def run_config(config: TrainConfig, agent: Agent) -> dict:
    """The JSON written beside the checkpoint: every setting, and the package version."""
    return {"version": jfbgym.__version__, "device": config.device,
            "train": config.to_dict(), "agent": agent.config()}


class Trainer:
    """One run's mutable state: agent, optimizer, schedule, sampler, history; the methods are
    the steps of ``train``."""

    def __init__(self, config: TrainConfig, world: World | None = None) -> None:
        self.config, self.out = config, Path(config.out)
        self.world = world or World()
        self.agent = make_agent(config)
        self.problem, self.net = self.agent.problem, self.agent.network
        self.lr = LearningRate(config, self.agent.prior)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=self.lr.peak)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.x_val = self.problem.sample_initial_states(
            config.val_batch, torch.Generator().manual_seed(config.seed + 7919))
        self.history: list[dict] = []
        self.iteration, self.cpu, self.wall = 0, 0.0, 0.0
        self.best: dict | None = None  # the best validated weights: {val_cost, iteration, model}
        self.log: RunLog | None = None  # while run() runs

    # ------------------------------------------------------------------ state
    def state(self) -> dict:
        return {"model": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
                "lr": self.lr.state_dict(), "generator": self.generator.get_state(),
                "torch_rng": torch.get_rng_state(), "iteration": self.iteration,
                "cpu": self.cpu, "wall": self.wall, "history": self.history, "best": self.best}

    def snapshot(self) -> dict:
        """A deep copy of the state (history rows are never mutated: the list is copied)."""
        state = self.state()
        history = state.pop("history")
        return {**copy.deepcopy(state), "history": list(history)}

    def restore(self, state: dict) -> None:
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr.load_state_dict(state["lr"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.iteration, self.cpu, self.wall = state["iteration"], state["cpu"], state["wall"]
        self.history = list(state["history"])
        self.best = state.get("best")

    def observe_validation(self, cost: float) -> None:
        """Remember the weights if ``cost`` is the best validation cost so far."""
        if self.best is None or cost < self.best["val_cost"]:
            self.best = {"val_cost": cost, "iteration": self.iteration,
                         "model": copy.deepcopy(self.net.state_dict())}

    def back_off(self, state: dict, why: str) -> bool:
        """Return to ``state`` and halve the learning rate from then on (halvings accumulate
        across back-offs); False once it is below ``MIN_LR_SCALE`` (the run diverges)."""
        scale = 0.5 * self.lr.scale
        self.restore(state)
        self.lr.scale = scale
        if self.log is not None:
            self.log.restart(self.history)
            self.log.say(f"iteration {self.iteration}: {why}; back to the last good state, "
                         f"learning rate x{self.lr.scale:g}")
        return scale >= MIN_LR_SCALE

    def resume(self) -> None:
        """Continue the run in ``out`` as ``config.resume`` says."""
        checkpoint = self.out / CHECKPOINT
        if self.config.resume == "never" or (self.config.resume == "if-present"
                                             and not checkpoint.is_file()):
            return
        if not checkpoint.is_file():
            raise CheckpointError(f"resume: expected a run to continue in {str(self.out)!r}, "
                                  f"but it holds no {CHECKPOINT} (use resume='if-present' to "
                                  "start one there)")
        config = load_config(self.out)
        require_keys(config, ("agent",), str(self.out / "config.json"))
        require(isinstance(config["agent"], dict), "resume", f"an agent in {self.out}",
                type(config["agent"]).__name__)
        saved = {"kind": "jfb", **config["agent"]}  # older runs: no kind
        current = json.loads(json.dumps(self.agent.config()))
        if "problem_class" not in saved:  # older runs did not record it
            current.pop("problem_class")
        require(saved == current, "resume",
                f"the agent settings of {self.out} (env, problem, network, solver, dtype)",
                self.agent.config())
        state = load_state(checkpoint, self.problem.device)
        self.check_state(state, checkpoint)
        self.restore(state)

    def check_state(self, state: dict, path: Path) -> None:
        """``CheckpointError`` naming ``path`` unless ``state`` is a checkpoint this run can
        continue: every entry present, of its type and range, weights that fit and are finite,
        an optimizer state that loads and is finite, generator states torch accepts."""
        def bad(what: str) -> CheckpointError:
            return CheckpointError(f"{path}: {what}")

        require_keys(state, ("model", "optimizer", "lr", "generator", "torch_rng", "iteration",
                             "cpu", "wall", "history"), str(path))
        scratch = copy.deepcopy(self.net)
        load_weights(scratch, state["model"], path)
        best = state.get("best")
        if best is not None:
            require_keys(best, ("val_cost", "iteration", "model"), f"{path} [best]")
            load_weights(scratch, best["model"], path)
            if not (isinstance(best["val_cost"], float) and math.isfinite(best["val_cost"])):
                raise bad("best.val_cost must be a finite number")
        if not (is_integer(state["iteration"]) and state["iteration"] >= 0):
            raise bad(f"iteration must be an integer >= 0, got {state['iteration']!r}")
        for key in ("cpu", "wall"):
            if not (is_number(state[key]) and math.isfinite(state[key]) and state[key] >= 0):
                raise bad(f"{key} must be a finite number >= 0, got {state[key]!r}")
        lr = state["lr"]
        require_keys(lr, ("scale", "best", "bad"), f"{path} [lr]")
        if not (is_number(lr["scale"]) and MIN_LR_SCALE / 2 <= lr["scale"] <= 1.0):
            raise bad(f"lr.scale must be a number in [{MIN_LR_SCALE / 2:g}, 1], got "
                      f"{lr['scale']!r}")
        if not (is_number(lr["best"]) and not math.isnan(lr["best"])
                and is_integer(lr["bad"]) and lr["bad"] >= 0):
            raise bad("lr.best must be a number and lr.bad an integer >= 0")
        history = state["history"]
        if not (isinstance(history, list) and all(isinstance(row, dict) for row in history)):
            raise bad("history must be a list of rows")
        for key in ("generator", "torch_rng"):
            value = state[key]
            if not (isinstance(value, torch.Tensor) and value.dtype == torch.uint8
                    and value.shape == torch.get_rng_state().shape):
                raise bad(f"{key} must be a random-number generator state")
        try:
            torch.Generator().set_state(state["generator"])
            optimizer = torch.optim.Adam(scratch.parameters(), lr=self.lr.peak)
            optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError, AttributeError) as err:
            raise bad(f"cannot be restored ({type(err).__name__}: {first_line(err)})") from err
        moments = [v for s in optimizer.state.values() for v in s.values()
                   if isinstance(v, torch.Tensor)]
        if not all(bool(torch.isfinite(v).all()) for v in moments):
            raise bad("the optimizer state holds NaN or inf")

    def save(self, state: dict) -> None:
        """Write ``state`` as the checkpoint (and a weights snapshot); never non-finite ones;
        only rank 0 writes."""
        if not self.world.is_main:
            return
        if not state_is_finite(state["model"]):
            if self.log is not None:
                self.log.say(f"iteration {state['iteration']}: non-finite weights, not saved")
            return
        save_state(self.out / CHECKPOINT, state)
        save_state(snapshot_path(self.out, state["iteration"]), {"model": state["model"]})
        save_json(self.out / "log.json", state["history"])

    # ------------------------------------------------------------------- steps
    def step(self, lr: float) -> tuple[float, dict] | None:
        """One minibatch: the closed-loop cost, its gradient, an Adam step. None when the loss
        or a gradient is not finite (nothing is changed then)."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        batch, world = self.config.batch, self.world
        x0 = self.problem.sample_initial_states(batch, self.generator)[world.shard(batch)]
        share = x0.shape[0] / batch  # this rank's part of the global minibatch
        log = InnerLog()
        trajectory = self.agent.rollout(x0, self.config.grad, log, warn=False,
                                        recompute=self.config.recompute)
        loss = trajectory.cost.sum() / batch  # summed over ranks: the global mean
        total, extra = loss, {}
        global_loss = world.sum(float(loss.detach()))
        weights = self.config.penalty_weights()
        if weights:  # dimensionless penalties, scaled to the cost's magnitude
            penalties = value_penalties(self.net, self.problem, trajectory, tuple(weights))
            total = loss + abs(global_loss) * share * sum(weights[k] * v
                                                          for k, v in penalties.items())
            extra = {k: world.sum(share * float(v.detach())) for k, v in penalties.items()}
        self.optimizer.zero_grad(set_to_none=True)
        if world.any(not bool(torch.isfinite(total))):
            return None
        total.backward()
        world.sum_gradients(self.net.parameters())
        if not all(bool(torch.isfinite(p.grad).all())
                   for p in self.net.parameters() if p.grad is not None):
            return None
        clip = self.config.gradient_clip()
        if clip is not None:  # after the all-reduce: the same on every rank
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), clip)
        self.optimizer.step()
        return global_loss, {**log.summary(), **extra}

    def validate(self) -> float:
        """Mean cost on the fixed validation states (sharded over ranks)."""
        x = self.x_val[self.world.shard(self.x_val.shape[0])]
        with torch.no_grad():
            local = float(self.agent.objective(x, warn=False).double().sum())
        return self.world.sum(local) / self.x_val.shape[0]


    # ------------------------------------------------------------------- the loop
    def run(self, progress: bool = True,
            callback: Callable[[Agent, dict], None] | None = None) -> TrainResult:
        """Train until the budget is spent, a stop is asked for or the run diverges; save and
        return the agent (the best validated one), its history and why it stopped (see
        ``train``)."""
        config, world, out, main = self.config, self.world, self.out, self.world.is_main
        self.resume()
        if main:
            save_json(out / "config.json", run_config(config, self.agent))
        log = self.log = RunLog(out, main, progress, config.tensorboard,
                               f"{config.grad if config.agent == 'jfb' else config.agent} "
                               f"{self.agent.env_id}")
        log.restart(self.history)  # the CSV restarts from the checkpoint
        budget = Budget(config, self.iteration, self.cpu, self.wall, world)
        val_cost = self.history[-1]["val_cost"] if self.history else self.validate()
        if self.best is None:
            self.observe_validation(val_cost)
        require(math.isfinite(val_cost), "config",
                "an initial policy with a finite validation cost (the guard against blow-ups "
                "needs one)", val_cost)
        last_good, strikes, status, validated = self.snapshot(), 0, "finished", self.iteration
        stop = StopRequest(announce=main)
        budget.stop = stop
        try:
            stop.__enter__()
            while (reason := budget.exhausted(self.iteration)) is None:
                # 1. a fresh minibatch, its closed-loop cost and gradient, an Adam step
                lr = self.lr.value(self.iteration, budget.progress(self.iteration))
                tic = time.perf_counter()
                result = self.step(lr)
                # 2. a non-finite loss or gradient: back to the last good state
                if result is None:
                    strikes += 1
                    if strikes >= 2:
                        log.say("non-finite loss again: stopping (last good state saved)")
                        status = "non-finite loss"
                        break
                    self.back_off(last_good, "non-finite loss or gradient")
                    continue
                strikes = 0
                loss, inner = result
                self.iteration += 1
                self.cpu, self.wall = budget.cpu(), budget.wall()
                row = {"iteration": self.iteration, "loss": loss, "val_cost": val_cost, **inner,
                       "lr": lr, "seconds": time.perf_counter() - tic, "wall": self.wall,
                       "cpu": self.cpu}
                # 3. validation on the fixed held-out batch; a blow-up or non-finite cost undoes
                # the steps since the last validation (keeping them would also poison Adam's
                # moments for tens of steps)
                if self.iteration % config.val_every == 0 or budget.exhausted(self.iteration):
                    cost = self.validate()
                    if not (math.isfinite(cost) and cost <= val_cost + config.blowup * abs(val_cost)):
                        if not self.back_off(last_good, f"validation cost {cost:.4g} blew up (was "
                                            f"{val_cost:.4g})"):
                            status = "diverged"
                            break
                        continue
                    val_cost = row["val_cost"] = cost
                    self.observe_validation(cost)
                    validated = self.iteration
                    self.lr.observe(cost)
                    if callback is not None:
                        budget.exclude(callback, self.agent, row)
                self.history.append(row)
                log.add(row)
                if validated == self.iteration:
                    last_good = self.snapshot()
                log.progress(round(100 * budget.progress(self.iteration)),
                             f"iteration {self.iteration}, loss {loss:.5g}, validation "
                             f"{val_cost:.5g}, lr {lr:.2g}, {budget.left(self.iteration)}")
                if self.iteration % config.checkpoint_every == 0:
                    self.save(self.snapshot())
            else:
                status = reason
                if validated != self.iteration:  # the steps since the last validation, checked now
                    cost = self.validate()
                    if math.isfinite(cost) and cost <= val_cost + config.blowup * abs(val_cost):
                        validated = self.iteration
                        self.observe_validation(cost)
                if validated == self.iteration:  # else they blew up: dropped
                    last_good = self.snapshot()
        except KeyboardInterrupt:  # a second Ctrl-C or SIGTERM: stop mid-iteration
            status = "interrupted"
            log.say("interrupted: saving the last validated state")
            self.restore(last_good)
        except PeerLost as err:  # another rank died: save what this one holds
            status = "peer lost"
            log.say(f"{err}: saving the last validated state")
            self.restore(last_good)
        finally:
            stop.saving = True  # from here a signal only waits for the save below
            log.close()
        try:
            self.restore(last_good)
            self.save(last_good)
        finally:
            stop.__exit__()
        best = self.best
        if best is not None and best["val_cost"] < val_cost:
            # a run may drift after its best point (measured: ConsumptionSavings at lr 1e-2 went
            # from -279.5 to -84.9 late in a 10-minute run): the agent is the best one validated;
            # the checkpoint keeps the last state (and this) for --resume
            self.net.load_state_dict(best["model"])
            log.say(f"the agent is the best validated one (iteration {best['iteration']}, "
                    f"validation cost {best['val_cost']:.6g}; the last was {val_cost:.6g})")
        if status not in ("interrupted", "peer lost"):  # a peer may be gone: no collective call
            world.close()
        self.log = None
        return TrainResult(self.agent, self.history, status, out)


RUN_FILES = ("config.json", CHECKPOINT, "log.csv", "log.json")


def prepare_output(config: TrainConfig) -> Path:
    out = Path(config.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"out: expected a directory that can be created, got "
                         f"{str(out)!r} ({err.strerror})") from err
    for name in RUN_FILES:
        require(not (out / name).is_dir(), "out", f"a run directory whose {name} is a file "
                "(it is a directory there)", str(out))
    return out



def train(config: TrainConfig, progress: bool = True,
          callback: Callable[[Agent, dict], None] | None = None) -> TrainResult:
    """Train an agent (``config.agent``: JFB, or the direct policy) as ``config`` says; returns the agent, its history and why it stopped.

    ``callback(agent, row)`` runs after every validation, its time not charged to the budget
    (``bench/quality.py`` scores held-out states there)."""
    config.validate()
    problem = problem_for_env(config.env_id, dtype=DTYPES[config.dtype], device=config.device,
                              **problem_overrides(config.env_kwargs(), "problem_kwargs"))
    problem.batch_size(config.batch, "batch")  # refused before anything is built
    problem.batch_size(config.val_batch, "val_batch")
    pairs = PASSES * problem.n_steps * problem.pair_evaluations(config.batch)
    require(pairs <= MAX_PAIR_EVALUATIONS, "n_agents", f"a swarm whose exact pairwise "
            f"interaction fits a training iteration: {problem.n_agents} agents and batch "
            f"{config.batch} evaluate about {pairs:.1e} pair terms an iteration (minutes each, "
            f"the limit is {MAX_PAIR_EVALUATIONS:.0e}); use {problem.scaling_advice()}",
            problem.n_agents)
    out = prepare_output(config)
    world = World.from_environment(config.device)
    require(config.batch >= world.size and config.val_batch >= world.size, "batch",
            f"at least one state per rank ({world.size} ranks)", config.batch)
    say = tqdm.write if progress and world.is_main else (lambda text: None)
    with RunLock(out) if world.is_main else contextlib.nullcontext():
        say(f"{config.env_id}: building the agent (value prior, input normalisation)")
        setup, wall = time.process_time(), time.perf_counter()
        run = Trainer(config, world)
        run.cpu = time.process_time() - setup  # the prior's open-loop solve is training time
        say(f"built in {time.perf_counter() - wall:.1f} s; validating the initial policy on "
            f"{config.val_batch} states")
        return run.run(progress, callback)
