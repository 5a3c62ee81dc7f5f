"""What a user would otherwise use: non-learning references and Stable-Baselines3 PPO/SAC.

References are honest, simple controllers, named for what they are: zero control, and one
hand-written heuristic per problem (a cascaded PD hover/position controller for quadrotors, a
steer-toward-the-target law for bicycles, a fixed consumption rate for ConsumptionSavings).
They are batched torch feedbacks ``(t, z) -> u`` with an SB3-style ``predict`` as well.

PPO and SAC (the optional ``rl`` extra, imported only when used) train on the same Gymnasium env
under a wall-clock budget enforced by an SB3 callback, and are saved as SB3 zip files with a
JSON description beside them. SB3's zip format unpickles parts of itself on load: only load
baselines you trained yourself.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from jfbgym.envs.registry import problem_for_env, strip_namespace
from jfbgym.problems.base import ControlProblem, positive_float, require

# ----------------------------------------------------------------- references


class FeedbackReference:
    """A batched torch feedback with SB3's ``predict`` on observations ``concat(z, t)``."""

    label = "reference"

    def __init__(self, problem: ControlProblem) -> None:
        self.problem = problem

    def __call__(self, t: Tensor | float, z: Tensor) -> Tensor:
        raise NotImplementedError

    def control(self, t: Tensor | float, z: Tensor) -> Tensor:
        return self(t, z)

    def predict(self, observation: np.ndarray, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, None]:
        obs = np.asarray(observation, dtype=np.float64)
        single = obs.ndim == 1
        obs = obs.reshape(-1, self.problem.state_dim + 1)
        z = torch.as_tensor(obs[:, :-1], dtype=self.problem.dtype, device=self.problem.device)
        t = torch.as_tensor(obs[:, -1], dtype=self.problem.dtype, device=self.problem.device)
        with torch.no_grad():
            u = self(t, z).cpu().numpy().astype(np.float32)
        return (u[0] if single else u), None


class ZeroControl(FeedbackReference):
    """u = 0: what the system does if left alone."""

    label = "zero control"

    def __call__(self, t: Tensor | float, z: Tensor) -> Tensor:
        return torch.zeros(z.shape[0], self.problem.control_dim, dtype=z.dtype, device=z.device)


class HoverPD(FeedbackReference):
    """Cascaded PD quadrotor controller: a critically damped position loop asks for an
    acceleration, thrust and pitch/roll set-points deliver it (small-angle, yaw held at 0),
    and a faster PD attitude loop commands the angular accelerations."""

    label = "heuristic (hover PD)"

    def __init__(self, problem: ControlProblem, omega: float = 0.6, omega_att: float = 2.0,
                 max_tilt: float = 0.6) -> None:
        super().__init__(problem)
        self.max_tilt = positive_float(max_tilt, "max_tilt")
        cfg = problem.config()
        self.mass, self.gravity = float(cfg["mass"]), float(cfg["gravity"])
        self.kp, self.kd = omega ** 2, 2 * omega
        self.ka, self.kw = omega_att ** 2, 2 * omega_att
        targets = getattr(problem, "targets_state", None)
        if targets is None:
            targets = torch.zeros(problem.n_agents, 12, dtype=problem.dtype)
            targets[:, :3] = torch.as_tensor(cfg.get("target", (2.0, 2.0, 2.0)))
        self.targets = torch.as_tensor(targets).reshape(problem.n_agents, 12)

    def __call__(self, t: Tensor | float, z: Tensor) -> Tensor:
        s = z.view(z.shape[0], self.problem.n_agents, 12)
        tgt = self.targets.to(dtype=z.dtype, device=z.device)
        q, ang, v, w = s[..., 0:3], s[..., 3:6], s[..., 6:9], s[..., 9:12]
        acc = self.kp * (tgt[:, 0:3] - q) - self.kd * v
        up = (acc[..., 2] + self.gravity).clamp_min(0.1 * self.gravity)
        theta_des = torch.atan2(acc[..., 0], up).clamp(-self.max_tilt, self.max_tilt)
        phi_des = (-torch.atan2(acc[..., 1], up)).clamp(-self.max_tilt, self.max_tilt)
        psi, theta, phi = ang.unbind(-1)
        thrust = self.mass * up / (torch.cos(theta) * torch.cos(phi)).clamp_min(0.5)
        u = torch.stack([thrust,
                         -self.ka * psi - self.kw * w[..., 0],
                         self.ka * (theta_des - theta) - self.kw * w[..., 1],
                         self.ka * (phi_des - phi) - self.kw * w[..., 2]], dim=-1)
        return u.reshape(z.shape[0], -1)


class SteerToTarget(FeedbackReference):
    """Kinematic bicycle law: turn toward the target at a yaw rate proportional to the heading
    error (steering from ψ̇ = v tan δ / l, clamped to the limit) and track the speed that
    would cover the remaining distance by the horizon."""

    label = "heuristic (steer to target)"

    def __init__(self, problem: ControlProblem, k_heading: float = 2.0, k_speed: float = 2.0
                 ) -> None:
        super().__init__(problem)
        cfg = problem.config()
        self.length = float(cfg.get("length", cfg.get("wheelbase", 0.05)))
        self.target = torch.as_tensor(cfg.get("target", (1.0, 1.0)), dtype=torch.float64)
        bounds = problem.control_bounds
        self.limit = float(bounds[1][0]) if bounds is not None else math.pi / 2 - 0.25
        self.k_heading, self.k_speed = k_heading, k_speed

    def __call__(self, t: Tensor | float, z: Tensor) -> Tensor:
        s = z.view(z.shape[0], self.problem.n_agents, 4)
        x, y, psi, v = s.unbind(-1)
        tgt = self.target.to(dtype=z.dtype, device=z.device)
        dx, dy = tgt[0] - x, tgt[1] - y
        err = torch.remainder(torch.atan2(dy, dx) - psi + math.pi, 2 * math.pi) - math.pi
        speed = v.abs().clamp_min(0.05)
        delta = torch.atan(self.length * self.k_heading * err / speed).clamp(-self.limit,
                                                                              self.limit)
        remaining = torch.as_tensor(self.problem.horizon - t, dtype=z.dtype, device=z.device)
        v_des = torch.hypot(dx, dy) / remaining.clamp_min(self.problem.step_size).reshape(-1, 1)
        accel = self.k_speed * (v_des - v)
        return torch.stack([delta, accel], dim=-1).reshape(z.shape[0], -1)


class FixedConsumptionRate(FeedbackReference):
    """Consume a fixed fraction ``rate`` of wealth per unit time, split evenly over the goods,
    on top of each good's habit level: u_i = h_i + rate·max(x, 0)/m."""

    label = "heuristic (fixed consumption rate)"

    def __init__(self, problem: ControlProblem, rate: float = 1.0) -> None:
        super().__init__(problem)
        self.rate = positive_float(rate, "rate")

    def __call__(self, t: Tensor | float, z: Tensor) -> Tensor:
        wealth, habits = z[:, :1], z[:, 1:]
        return habits + self.rate * wealth.clamp_min(0.0) / habits.shape[1]


HEURISTICS: dict[str, type[FeedbackReference]] = {
    "QuadSwarm": HoverPD, "MultiBicycle": SteerToTarget, "ConsumptionSavings": FixedConsumptionRate,
}


def references(problem: ControlProblem) -> dict[str, FeedbackReference]:
    """Zero control and the problem's heuristic (if it has one), keyed by their labels."""
    refs: list[FeedbackReference] = [ZeroControl(problem)]
    if problem.name in HEURISTICS:
        refs.append(HEURISTICS[problem.name](problem))
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("env_id", help="a registered env id, e.g. QuadSwarm-v0")
    parser.add_argument("--algo", choices=ALGOS, default="ppo")
    parser.add_argument("--minutes", type=float, default=10.0, help="wall-clock budget")
    parser.add_argument("--out", default=None, help="directory for model.zip + baseline.json")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--env-kwargs", type=json.loads, default={},
                        help="problem overrides as JSON, e.g. '{\"n_agents\": 2}'")
    parser.add_argument("--episodes", type=int, default=100, help="held-out states to evaluate")


def main(args: argparse.Namespace) -> int:
    from jfbgym.evaluation import evaluate, format_table

    out = args.out if args.out is not None else f"runs/{args.algo}-{strip_namespace(args.env_id)}"
    model, run = train_baseline(args.env_id, args.algo, args.minutes, out, args.seed,
                                args.env_kwargs, verbose=1)
    print(f"trained {args.algo.upper()} for {run.train_seconds:.1f} s "
          f"({run.timesteps} env steps), saved to {out}")
    problem = problem_for_env(args.env_id, **args.env_kwargs)
    rows = [evaluate(model, args.env_id, n_episodes=args.episodes, name=args.algo.upper(),
                     env_kwargs=args.env_kwargs, train_seconds=run.train_seconds)]
    rows += [evaluate(p, problem, n_episodes=args.episodes, name=n)
             for n, p in references(problem).items()]
    print(format_table(rows))
    return 0
