"""What a user would otherwise use: non-learning references and Stable-Baselines3 PPO/SAC.

References are honest, simple controllers, named for what they are: zero control, and the
problem's own hand-written heuristic (``ControlProblem.heuristic``: a cascaded PD hover/position
controller for quadrotors, a steer-toward-the-target law for bicycles, a fixed consumption rate
for ConsumptionSavings). They are batched torch feedbacks ``(t, z) -> u`` with an SB3-style
``predict`` as well (``jfbgym.problems.feedback``).

PPO and SAC (the optional ``rl`` extra, imported only when used) train as a careful practitioner
runs them: on normalised actions (``jfbgym.envs.NormalisedActions``: [−1, 1] mapped onto the
problem's ``action_scale``, e.g. hover thrust ± 2.5; SAC's tanh-squashed Gaussian lands exactly
on it), with ``VecNormalize`` observation and reward normalisation, and hyperparameters from
the RL Baselines3 Zoo (``HYPERPARAMS`` says which), under a wall-clock budget enforced by an SB3
callback. The trained policy is an ``RLPolicy``: SB3's ``predict`` on raw env observations and
env actions, its normalisation statistics saved with it. A baseline directory holds the policy's
weights and statistics (tensors) and a JSON description from which the model is rebuilt: SB3's
own zip and VecNormalize pickles unpickle objects when loaded, so jfbgym neither writes nor
reads them, and loading a directory someone shared executes nothing.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jfbgym import validation
from jfbgym.agents.checkpoint import (
    CheckpointError,
    load_state,
    load_weights,
    read_json,
    require_keys,
    save_json,
    save_state,
)
from jfbgym.envs.normalised import ActionScale, NormalisedActions
from jfbgym.problems import problem_for_env, problem_kwargs, problem_overrides, strip_namespace
from jfbgym.problems.base import ControlProblem
from jfbgym.problems.feedback import FeedbackLaw, ZeroControl
from jfbgym.validation import (
    MAX_WIDTH,
    finite_float,
    integer,
    output_dir,
    positive_float,
    positive_int,
    require,
)

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
GAMMA = 0.999  # the one deviation from the zoo: see HYPERPARAMS
# RL Baselines3 Zoo (hyperparams/ppo.yml, sac.yml), tuned settings of comparable continuous-
# control tasks: PPO as for BipedalWalker-v3 (normalize: true; 32 envs there, 8 here: a 2-core
# machine), SAC as the zoo's tuned PyBullet defaults (HalfCheetahBulletEnv-v0). Both use
# gamma = 0.999 (the zoo's BipedalWalker PPO value) instead of SAC's 0.98: an episode is 160
# undiscounted steps whose largest cost comes at the end, and 0.98^160 = 0.04 would hide it.
HYPERPARAMS: dict[str, dict[str, Any]] = {
    "ppo": {"n_steps": 2048, "batch_size": 64, "gae_lambda": 0.95, "gamma": GAMMA,
            "n_epochs": 10, "ent_coef": 0.0, "learning_rate": 3e-4, "clip_range": 0.18},
    "sac": {"learning_rate": 7.3e-4, "buffer_size": 300_000, "batch_size": 256,
            "ent_coef": "auto", "gamma": GAMMA, "tau": 0.02, "train_freq": 8,
            "gradient_steps": 8, "learning_starts": 10_000, "use_sde": True,
            "policy_kwargs": {"log_std_init": -3.0, "net_arch": [400, 300]}},
}
N_ENVS = {"ppo": 8, "sac": 1}


def _sb3() -> Any:
    try:
        import stable_baselines3
    except ImportError as err:  # pragma: no cover - depends on the install
        raise ImportError("RL baselines need Stable-Baselines3: pip install 'jfbgym[rl]'") from err
    return stable_baselines3


def budget_callback(seconds: float, points: int = 100) -> Any:
    """An SB3 callback that stops training once ``seconds`` of wall-clock have passed, and
    records ``curve``: (elapsed seconds, mean cost J of the recent training episodes, i.e. minus
    their Monitor return, which is the raw one: Monitor sits below VecNormalize) about
    ``points`` times over the budget."""
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
    the SB3 class, JSON as saved)."""

    env_id: str
    algo: str
    train_seconds: float
    timesteps: int
    seed: int
    env_kwargs: dict = field(default_factory=dict)
    path: str | None = None
    curve: list = field(default_factory=list)  # (seconds, mean training-episode cost)
    hyperparams: dict = field(default_factory=dict)
    n_envs: int = 1


POLICY = "policy.pt"  # the SB3 policy's weights and the observation statistics (tensors only)
RUN = "baseline.json"


class RLPolicy:
    """A trained SB3 model behind the env's own interface: ``predict`` takes raw observations
    concat(z, t) and returns env actions (controls u), normalising the observation with the
    statistics ``VecNormalize`` gathered in training (``obs_mean``, ``obs_var``: SB3's formula,
    clip((o − mean)/√(var + ε), ±clip_obs)) and mapping the model's [−1, 1] action onto the
    problem's ``action_scale``. ``model`` is the SB3 model (it acts on normalised inputs)."""

    def __init__(self, model: Any, scale: ActionScale, obs_mean: np.ndarray,
                 obs_var: np.ndarray, clip_obs: float, epsilon: float) -> None:
        self.model, self.scale = model, scale
        self.obs_mean, self.obs_var = np.asarray(obs_mean), np.asarray(obs_var)
        self.clip_obs, self.epsilon = float(clip_obs), float(epsilon)

    def normalise(self, observation: Any) -> np.ndarray:
        obs = np.asarray(observation, dtype=np.float64)
        return np.clip((obs - self.obs_mean) / np.sqrt(self.obs_var + self.epsilon),
                       -self.clip_obs, self.clip_obs).astype(np.float32)

    def predict(self, observation: Any, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, Any]:
        action, state = self.model.predict(self.normalise(observation), state, episode_start,
                                           deterministic)
        return self.scale.control(action).astype(np.float32), state

    def state_dict(self) -> dict:
        return {"policy": self.model.policy.state_dict(),
                "obs_mean": torch.as_tensor(self.obs_mean),
                "obs_var": torch.as_tensor(self.obs_var),
                "clip_obs": torch.tensor(self.clip_obs), "epsilon": torch.tensor(self.epsilon)}


def make_env(env_id: str, env_kwargs: dict | None = None) -> Any:
    import gymnasium

    import jfbgym  # noqa: F401  (registers the ids)

    return gymnasium.make(f"jfbgym:{strip_namespace(env_id)}", **(env_kwargs or {}))


def _vec_env(env_id: str, env_kwargs: dict, n_envs: int, seed: int) -> Any:
    from stable_baselines3.common.env_util import make_vec_env

    return make_vec_env(lambda: NormalisedActions(make_env(env_id, env_kwargs)), n_envs=n_envs,
                        seed=seed)


def _model(algo: str, env: Any, seed: int, hyperparams: dict, verbose: int = 0) -> Any:
    sb3 = _sb3()
    cls = sb3.PPO if algo == "ppo" else sb3.SAC
    kwargs = json.loads(json.dumps(hyperparams))  # a private copy (the JSON form is saved)
    return cls("MlpPolicy", env, seed=seed, verbose=verbose, device="cpu", **kwargs)


def train_baseline(env_id: str, algo: str = "ppo", minutes: float = 10.0, out: str | None = None,
                   seed: int = 0, env_kwargs: dict | None = None, n_envs: int | None = None,
                   verbose: int = 0, hyperparams: dict | None = None
                   ) -> tuple[RLPolicy, BaselineRun]:
    """Train SB3 ``algo`` on ``env_id`` for at most ``minutes`` of wall-clock, with normalised
    actions, observations and rewards and the zoo's hyperparameters (``HYPERPARAMS``, updated
    by ``hyperparams``), ``n_envs`` parallel envs (default ``N_ENVS``); save to ``out`` (the
    policy's weights, its statistics and this run's JSON: nothing that executes code when
    loaded)."""
    require(algo in ALGOS, "algo", f"one of {ALGOS}", algo)
    seconds = 60.0 * positive_float(minutes, "minutes")
    n_envs = N_ENVS[algo] if n_envs is None else positive_int(n_envs, "n_envs")
    if out is not None:
        output_dir(out, "out")
    _sb3()
    from stable_baselines3.common.vec_env import VecNormalize

    env_id = strip_namespace(env_id)
    env_kwargs = dict(env_kwargs or {})
    problem = problem_for_env(env_id, **env_kwargs)  # validates the id and kwargs early
    settings = {**HYPERPARAMS[algo], **dict(hyperparams or {})}
    vec = VecNormalize(_vec_env(env_id, env_kwargs, n_envs, seed), norm_obs=True,
                       norm_reward=True, gamma=settings.get("gamma", GAMMA))
    model = _model(algo, vec, seed, settings, verbose)
    budget = budget_callback(seconds)
    start = time.perf_counter()
    model.learn(total_timesteps=10 ** 12, callback=budget)
    run = BaselineRun(env_id, algo, time.perf_counter() - start, int(model.num_timesteps), seed,
                      env_kwargs, curve=[list(p) for p in budget.curve],
                      hyperparams=settings, n_envs=n_envs)
    policy = RLPolicy(model, ActionScale.of(problem), vec.obs_rms.mean.copy(),
                      vec.obs_rms.var.copy(), vec.clip_obs, vec.epsilon)
    vec.close()
    if out is not None:
        path = Path(out)
        run.path = str(path)
        save_state(path / POLICY, policy.state_dict())
        save_json(path / RUN, asdict(run))
    return policy, run


def load_baseline(path: str | Path) -> tuple[RLPolicy, BaselineRun]:
    """(``RLPolicy``, its ``BaselineRun``) from a directory written by ``train_baseline``.

    The model is rebuilt from ``baseline.json`` and only tensors are read from ``policy.pt``
    (``torch.load(weights_only=True)``): SB3's own ``model.zip`` and VecNormalize's pickle
    unpickle objects on load, so they are never opened, and a directory that holds only one is
    refused."""
    path = Path(path)
    values = read_json(path / RUN)
    require_keys(values, ("env_id", "algo", "train_seconds", "timesteps", "seed"),
                 str(path / RUN))
    names = {f.name for f in fields(BaselineRun)}
    if set(values) - names or not isinstance(values["algo"], str) or values["algo"] not in ALGOS:
        raise CheckpointError(f"{path / RUN}: not a baseline description this version writes "
                              f"(keys {sorted(values)}, algo {values['algo']!r})")
    try:
        run = check_run(BaselineRun(**values))
    except ValueError as err:
        raise CheckpointError(f"{path / RUN}: {err}") from err
    if not (path / POLICY).is_file():
        older = " (it holds a pickled model.zip, SB3's own format, which is never loaded: " \
                "retrain it)" if (path / "model.zip").exists() else ""
        raise CheckpointError(f"{path}: expected the policy weights {POLICY}{older}")
    state = load_state(path / POLICY)
    require_keys(state, ("policy", "obs_mean", "obs_var", "clip_obs", "epsilon"),
                 str(path / POLICY))
    try:
        env = _vec_env(run.env_id, run.env_kwargs, 1, run.seed)
        model = _model(run.algo, env, run.seed, dict(run.hyperparams))
    except (TypeError, ValueError, KeyError, AssertionError) as err:  # SB3 asserts settings
        raise CheckpointError(f"{path / RUN}: cannot build the model it describes "
                              f"({type(err).__name__}: {err})") from err
    load_weights(model.policy, state["policy"], path / POLICY)
    model.policy.set_training_mode(False)
    n_obs = env.observation_space.shape[0]
    mean, var = state["obs_mean"].double().numpy(), state["obs_var"].double().numpy()
    if mean.shape != (n_obs,) or var.shape != (n_obs,) or not (np.isfinite(mean).all()
                                                                and (var >= 0).all()):
        raise CheckpointError(f"{path / POLICY}: expected finite observation statistics of "
                              f"shape ({n_obs},), got {mean.shape} and {var.shape}")
    scalars = [state[k] for k in ("clip_obs", "epsilon")]
    if not all(isinstance(s, torch.Tensor) and s.numel() == 1 and bool(torch.isfinite(s).all())
               and float(s) > 0 for s in scalars):
        raise CheckpointError(f"{path / POLICY}: clip_obs and epsilon must be positive numbers")
    problem = env.envs[0].unwrapped.problem
    env.close()
    return RLPolicy(model, ActionScale.of(problem), mean, var, float(state["clip_obs"]),
                    float(state["epsilon"])), run


def check_run(run: BaselineRun) -> BaselineRun:
    """``run`` if every field has its type and range (the settings that size the model
    included), else ``ValueError`` naming the field."""
    problem_kwargs(strip_namespace(run.env_id))  # a registered id
    finite_float(run.train_seconds, "train_seconds", 0.0)
    integer(run.timesteps, "timesteps", 0)
    validation.seed(run.seed)
    problem_overrides(run.env_kwargs, "env_kwargs")
    integer(run.n_envs, "n_envs", 1, 1024)
    require(isinstance(run.curve, list), "curve", "a list", type(run.curve).__name__)
    require(isinstance(run.hyperparams, dict), "hyperparams", "a dict of SB3 settings",
            type(run.hyperparams).__name__)
    sizes = dict(run.hyperparams.get("policy_kwargs") or {}).get("net_arch", [])
    require(isinstance(sizes, list) and len(sizes) <= 16, "hyperparams.policy_kwargs.net_arch",
            "a list of at most 16 layer widths", sizes)
    for width in sizes:
        integer(width, "hyperparams.policy_kwargs.net_arch", 1, MAX_WIDTH)
    for key in ("n_steps", "batch_size", "buffer_size", "n_epochs", "train_freq",
                "gradient_steps", "learning_starts"):
        if key in run.hyperparams:
            integer(run.hyperparams[key], f"hyperparams.{key}", 0 if key == "learning_starts"
                    else 1, 10**7)
    return run
