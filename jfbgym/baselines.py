"""What a user would otherwise use: non-learning references and Stable-Baselines3 PPO/SAC.

References are honest, simple controllers, named for what they are: zero control, and the
problem's own hand-written heuristic (``ControlProblem.heuristic``: a cascaded PD hover/position
controller for quadrotors, a steer-toward-the-target law for bicycles, a fixed consumption rate
for ConsumptionSavings). They are batched torch feedbacks ``(t, z) -> u`` with an SB3-style
``predict`` as well (``jfbgym.problems.feedback``).

PPO and SAC (the optional ``rl`` extra, imported only when used) train on the same Gymnasium env
under a wall-clock budget enforced by an SB3 callback, and are saved as SB3 zip files with a
JSON description beside them. SB3's zip format unpickles parts of itself on load: only load
baselines you trained yourself.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jfbgym.problems import problem_for_env, strip_namespace
from jfbgym.problems.base import ControlProblem
from jfbgym.problems.feedback import FeedbackLaw, ZeroControl
from jfbgym.validation import positive_float, require

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
    """What ``train_baseline`` saved: where, and how long it trained."""

    env_id: str
    algo: str
    train_seconds: float
    timesteps: int
    seed: int
    env_kwargs: dict = field(default_factory=dict)
    path: str | None = None
    curve: list = field(default_factory=list)  # (seconds, mean training-episode cost)


def make_env(env_id: str, env_kwargs: dict | None = None) -> Any:
    import gymnasium

    import jfbgym  # noqa: F401  (registers the ids)

    return gymnasium.make(f"jfbgym:{strip_namespace(env_id)}", **(env_kwargs or {}))


def train_baseline(env_id: str, algo: str = "ppo", minutes: float = 10.0, out: str | None = None,
                   seed: int = 0, env_kwargs: dict | None = None, n_envs: int = 4,
                   verbose: int = 0) -> tuple[Any, BaselineRun]:
    """Train SB3 ``algo`` on ``env_id`` for at most ``minutes`` of wall-clock; save to ``out``."""
    require(algo in ALGOS, "algo", f"one of {ALGOS}", algo)
    seconds = 60.0 * positive_float(minutes, "minutes")
    sb3 = _sb3()
    from stable_baselines3.common.env_util import make_vec_env

    env_id = strip_namespace(env_id)
    problem_for_env(env_id, **(env_kwargs or {}))  # validates the id and kwargs early
    vec = make_vec_env(lambda: make_env(env_id, env_kwargs), n_envs=n_envs if algo == "ppo" else 1,
                       seed=seed)
    cls = sb3.PPO if algo == "ppo" else sb3.SAC
    model = cls("MlpPolicy", vec, seed=seed, verbose=verbose, device="cpu")
    budget = budget_callback(seconds)
    start = time.perf_counter()
    model.learn(total_timesteps=10 ** 12, callback=budget)
    run = BaselineRun(env_id, algo, time.perf_counter() - start, int(model.num_timesteps), seed,
                      dict(env_kwargs or {}), curve=[list(p) for p in budget.curve])
    vec.close()
    if out is not None:
        path = Path(out)
        path.mkdir(parents=True, exist_ok=True)
        model.save(path / "model.zip")
        run.path = str(path)
        (path / "baseline.json").write_text(json.dumps(asdict(run), indent=2))
    return model, run


def load_baseline(path: str | Path) -> tuple[Any, BaselineRun]:
    """(SB3 model, its ``BaselineRun``) from a directory written by ``train_baseline``."""
    path = Path(path)
    require((path / "baseline.json").is_file(), "path", "a directory with baseline.json",
            str(path))
    run = BaselineRun(**json.loads((path / "baseline.json").read_text()))
    sb3 = _sb3()
    cls = sb3.PPO if run.algo == "ppo" else sb3.SAC
    return cls.load(path / "model.zip", device="cpu"), run
