"""What a user would otherwise use: non-learning references and Stable-Baselines3 PPO/SAC.

References are honest, simple controllers, named for what they are: zero control, and the
problem's own hand-written heuristic (``ControlProblem.heuristic``: a cascaded PD hover/position
controller for quadrotors, a steer-toward-the-target law for bicycles, a fixed consumption rate
for ConsumptionSavings). They are batched torch feedbacks ``(t, z) -> u`` with an SB3-style
``predict`` as well (``jfbgym.problems.feedback``).

PPO and SAC (the optional ``rl`` extra, imported only when used) train on the same Gymnasium env
under a wall-clock budget enforced by an SB3 callback. A baseline directory holds the policy's
weights and a JSON description from which the model is rebuilt: SB3's own zip format unpickles
objects when loaded, so jfbgym neither writes nor reads it, and loading a directory someone
shared executes nothing.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from jfbgym.agents.checkpoint import (
    CheckpointError,
    load_state,
    load_weights,
    read_json,
    require_keys,
    save_json,
    save_state,
)
from jfbgym.problems import problem_for_env, strip_namespace
from jfbgym.problems.base import ControlProblem
from jfbgym.problems.feedback import FeedbackLaw, ZeroControl
from jfbgym.validation import output_dir, positive_float, require

# ----------------------------------------------------------------- references


def references(problem: ControlProblem) -> dict[str, FeedbackLaw]:
    """Zero control and the problem's heuristic (if it has one), keyed by their labels."""
    refs: list[FeedbackLaw] = [ZeroControl(problem)]
    heuristic = problem.heuristic()
    if heuristic is not None:
        refs.append(heuristic)
    return {r.label: r for r in refs}


# ------------------------------------------------------------ SB3 baselines

ALGOS = ("ppo", "sac")


def _sb3() -> Any:
    try:
        import stable_baselines3
    except ImportError as err:  # pragma: no cover - depends on the install
        raise ImportError("RL baselines need Stable-Baselines3: pip install 'jfbgym[rl]'") from err
    return stable_baselines3


def budget_callback(seconds: float, points: int = 100) -> Any:
    """An SB3 callback that stops training once ``seconds`` of wall-clock have passed, and
    records ``curve``: (elapsed seconds, mean cost J of the recent training episodes, i.e. minus
    their Monitor return) about ``points`` times over the budget."""
    from stable_baselines3.common.callbacks import BaseCallback

    class TimeBudget(BaseCallback):
        def _on_training_start(self) -> None:
            self.start = time.perf_counter()
            self.next_point = 0.0
            self.curve: list[tuple[float, float]] = []

        def _on_step(self) -> bool:
            elapsed = time.perf_counter() - self.start
            episodes = self.model.ep_info_buffer
            if elapsed >= self.next_point and episodes:
                self.curve.append((elapsed, -float(np.mean([e["r"] for e in episodes]))))
                self.next_point = elapsed + seconds / points
            return elapsed < seconds

    return TimeBudget()


@dataclass
class BaselineRun:
    """What ``train_baseline`` saved: where, how long it trained, and every setting needed to
    rebuild the model around its saved weights (``hyperparams`` are the keyword arguments of
    the SB3 class)."""

    env_id: str
    algo: str
    train_seconds: float
    timesteps: int
    seed: int
    env_kwargs: dict = field(default_factory=dict)
    path: str | None = None
    curve: list = field(default_factory=list)  # (seconds, mean training-episode cost)
    hyperparams: dict = field(default_factory=dict)


POLICY = "policy.pt"  # the SB3 policy's weights (a state dict: tensors only)
RUN = "baseline.json"


def make_env(env_id: str, env_kwargs: dict | None = None) -> Any:
    import gymnasium

    import jfbgym  # noqa: F401  (registers the ids)

    return gymnasium.make(f"jfbgym:{strip_namespace(env_id)}", **(env_kwargs or {}))


def _model(algo: str, env: Any, seed: int, hyperparams: dict, verbose: int = 0) -> Any:
    sb3 = _sb3()
    cls = sb3.PPO if algo == "ppo" else sb3.SAC
    return cls("MlpPolicy", env, seed=seed, verbose=verbose, device="cpu", **hyperparams)


def train_baseline(env_id: str, algo: str = "ppo", minutes: float = 10.0, out: str | None = None,
                   seed: int = 0, env_kwargs: dict | None = None, n_envs: int = 4,
                   verbose: int = 0) -> tuple[Any, BaselineRun]:
    """Train SB3 ``algo`` on ``env_id`` for at most ``minutes`` of wall-clock; save to ``out``
    (the policy's weights and this run's JSON: nothing that executes code when loaded)."""
    require(algo in ALGOS, "algo", f"one of {ALGOS}", algo)
    seconds = 60.0 * positive_float(minutes, "minutes")
    if out is not None:
        output_dir(out, "out")
    _sb3()
    from stable_baselines3.common.env_util import make_vec_env

    env_id = strip_namespace(env_id)
    problem_for_env(env_id, **(env_kwargs or {}))  # validates the id and kwargs early
    vec = make_vec_env(lambda: make_env(env_id, env_kwargs), n_envs=n_envs if algo == "ppo" else 1,
                       seed=seed)
    hyperparams: dict = {}
    model = _model(algo, vec, seed, hyperparams, verbose)
    budget = budget_callback(seconds)
    start = time.perf_counter()
    model.learn(total_timesteps=10 ** 12, callback=budget)
    run = BaselineRun(env_id, algo, time.perf_counter() - start, int(model.num_timesteps), seed,
                      dict(env_kwargs or {}), curve=[list(p) for p in budget.curve],
                      hyperparams=hyperparams)
    vec.close()
    if out is not None:
        path = Path(out)
        run.path = str(path)
        save_state(path / POLICY, {"policy": model.policy.state_dict()})
        save_json(path / RUN, asdict(run))
    return model, run


def load_baseline(path: str | Path) -> tuple[Any, BaselineRun]:
    """(SB3 model, its ``BaselineRun``) from a directory written by ``train_baseline``.

    The model is rebuilt from ``baseline.json`` and only its policy's weights are read
    (``torch.load(weights_only=True)``): SB3's own ``model.zip`` unpickles objects on load, so
    it is never opened, and a directory that holds only one is refused."""
    path = Path(path)
    values = read_json(path / RUN)
    require_keys(values, ("env_id", "algo", "train_seconds", "timesteps", "seed"),
                 str(path / RUN))
    names = {f.name for f in fields(BaselineRun)}
    if set(values) - names or values["algo"] not in ALGOS:
        raise CheckpointError(f"{path / RUN}: not a baseline description this version writes "
                              f"(keys {sorted(values)}, algo {values['algo']!r})")
    run = BaselineRun(**values)
    if not (path / POLICY).is_file():
        older = " (it holds a pickled model.zip, SB3's own format, which is never loaded: " \
                "retrain it)" if (path / "model.zip").exists() else ""
        raise CheckpointError(f"{path}: expected the policy weights {POLICY}{older}")
    from stable_baselines3.common.env_util import make_vec_env

    env = make_vec_env(lambda: make_env(run.env_id, run.env_kwargs), n_envs=1, seed=run.seed)
    model = _model(run.algo, env, run.seed, dict(run.hyperparams))
    state = load_state(path / POLICY)
    require_keys(state, ("policy",), str(path / POLICY))
    load_weights(model.policy, state["policy"], path / POLICY)
    model.policy.set_training_mode(False)
    return model, run
