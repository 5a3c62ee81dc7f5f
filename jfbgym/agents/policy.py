"""``Agent``: what every trained feedback policy of jfbgym shares, whatever computes its control.

A subclass says how a control is computed (``control``, the differentiable ``rollout``) and
what rebuilds it (``config``, ``_build``); this class gives every one of them the same life
cycle and interfaces: ``save``/``load`` (files checked, nothing executed), ``pretrained``, the
compatibility checks, the closed-loop ``objective`` the trainer differentiates, SB3's
``predict`` for the Gymnasium envs and ``predict_parallel`` for PettingZoo. ``load_agent``
reads any saved agent or run directory and builds the kind it holds (``config["agent"]["kind"]``:
``jfb``, ``jfbgym.agents.agent.JFBAgent``, or ``direct``, ``jfbgym.agents.direct.DirectAgent``).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from jfbgym.problems import (
    ENV_SPECS,
    problem_for_env,
    problem_kwargs,
    problem_overrides,
    strip_namespace,
)
from jfbgym.problems.base import ControlProblem, Time, Trajectory, real_tensor
from jfbgym.problems.registry import is_import_path
from jfbgym.validation import require

from .checkpoint import (
    CHECKPOINT,
    CheckpointError,
    load_config,
    load_state,
    load_weights,
    read_json,
    require_keys,
    save_json,
    save_state,
    state_is_finite,
)
from .pretrained import AGENT_JSON, WEIGHTS, is_saved_agent, shipped_path

DTYPES = {"float32": torch.float32, "float64": torch.float64}
NORMALISATION_FLOOR = 0.05  # smallest input scale, as a fraction of the largest
KINDS = {"jfb": ".agent:JFBAgent", "direct": ".direct:DirectAgent"}  # agent kind -> class


class Agent:
    """A feedback policy ``u = control(t, z)`` for one problem, with a ``network`` of
    parameters. ``env_id`` and ``env_kwargs`` (problem overrides) name the problem, as in
    ``jfbgym.problems.problem_for_env``."""

    kind: ClassVar[str] = ""

    def __init__(self, problem: ControlProblem, network: nn.Module, env_id: str = "",
                 env_kwargs: Mapping[str, Any] | None = None) -> None:
        require(isinstance(problem, ControlProblem), "problem", "a ControlProblem",
                type(problem).__name__)
        self.problem = problem
        self.network = network
        self.env_id = strip_namespace(env_id) if env_id else ""
        self.env_kwargs = dict(env_kwargs or {})

    # ------------------------------------------------------------ what a kind defines
    def _control(self, t: Tensor, z: Tensor, grad: bool) -> Tensor:
        """The batched feedback u(t, z), (B, m), for checked times (B,) and states (B, n)."""
        raise NotImplementedError

    def rollout(self, x0: Tensor, grad: str | None = None, log: Any = None,
                warn: bool = True, recompute: bool = False) -> Trajectory:
        """The closed-loop trajectory from ``x0``, differentiable when ``grad`` is given
        (``recompute``: rebuild each step's graph in the backward pass, where a kind has one)."""
        raise NotImplementedError

    def network_config(self) -> dict:
        """The settings of this kind beyond the problem's (``config`` adds those)."""
        raise NotImplementedError

    @classmethod
    def _build(cls, cfg: Mapping[str, Any], problem: ControlProblem) -> Agent:
        """The agent that ``cfg`` (a config's ``agent`` part) describes on ``problem``, with
        fresh weights; ``TypeError``/``ValueError`` when it cannot be built."""
        raise NotImplementedError

    # ---------------------------------------------------------------- config
    def config(self) -> dict:
        """The settings that rebuild this agent (the ``agent`` part of a run's config.json)."""
        cls = type(self.problem)
        return {"kind": self.kind, "env_id": self.env_id, "env_kwargs": self.env_kwargs,
                "problem_name": self.problem.name, "problem": self.problem.config(),
                "problem_class": f"{cls.__module__}:{cls.__qualname__}",
                "dtype": str(self.problem.dtype).replace("torch.", ""),
                **self.network_config()}

    @classmethod
    def from_config(cls, config: Mapping[str, Any], device: str | torch.device | None = None,
                    where: str = "config") -> Agent:
        """The agent a run's config describes (fresh weights); ``CheckpointError`` naming
        ``where`` when the config is incomplete, of another kind, or describes something this
        version cannot build."""
        require_keys(config, ("agent",), where)
        cfg = config["agent"]
        require_keys(cfg, ("env_id", "env_kwargs", "problem_name", "problem", "dtype"),
                     f"{where} [agent]")
        kind = cfg.get("kind", "jfb")  # files written before there were kinds hold JFB agents
        for key in ("env_id", "problem_name", "dtype"):
            if not isinstance(cfg[key], str):
                raise CheckpointError(f"{where}: [agent] {key} must be a string, got "
                                      f"{type(cfg[key]).__name__}")
        if kind != cls.kind:
            raise CheckpointError(f"{where}: holds a {kind!r} agent, not a {cls.kind!r} one "
                                  "(jfbgym.agents.load_agent reads any kind)")
        if cfg["dtype"] not in DTYPES:
            raise CheckpointError(f"{where}: dtype must be one of {sorted(DTYPES)}, got "
                                  f"{cfg['dtype']!r}")
        device = device or config.get("device", "cpu")
        try:
            env, kwargs = rebuild_spec(cfg)
            problem = problem_for_env(env, dtype=DTYPES[cfg["dtype"]], device=device, **kwargs)
            agent = cls._build(cfg, problem)
        except (TypeError, ValueError, KeyError, IndexError, AttributeError) as err:
            raise CheckpointError(f"{where}: cannot build the agent it describes: {err}") \
                from err
        if agent.problem.name != cfg["problem_name"]:
            raise CheckpointError(f"{where}: problem {cfg['problem_name']!r} does not match "
                                  f"what {cfg['env_id']!r} builds ({agent.problem.name})")
        # the env id's defaults may have changed since training: the problem must not have
        rebuilt = json.loads(json.dumps(agent.problem.config()))
        if rebuilt != cfg["problem"]:
            raise CheckpointError(f"{where}: the agent was trained on {cfg['problem']}, and "
                                  f"{cfg['env_id']!r} now builds {rebuilt}")
        return agent

    # ------------------------------------------------------------- files
    @classmethod
    def load(cls, path: str | Path, device: str | torch.device | None = None) -> Agent:
        """The agent in ``path``: a training run directory (config.json + checkpoint.pt; the
        best validated weights when the run kept them) or a saved agent (agent.json +
        weights.pt, ``save``). Every file is checked; nothing in it is executed."""
        path = Path(path)
        if is_saved_agent(path):
            config, weights = read_json(path / AGENT_JSON), path / WEIGHTS
            agent = cls.from_config(config, device, where=str(path / AGENT_JSON))
            model = load_state(weights, agent.problem.device)
        else:
            weights = path / CHECKPOINT
            agent = cls.from_config(load_config(path), device, where=str(path / "config.json"))
            state = load_state(weights, agent.problem.device)
            require_keys(state, ("model",), str(weights))
            best = state.get("best")
            model = best["model"] if isinstance(best, dict) and "model" in best else \
                state["model"]
        load_weights(agent.network, model, weights)
        agent.network.eval()
        return agent

    @classmethod
    def pretrained(cls, name: str, device: str | torch.device | None = None) -> Agent:
        """A trained agent shipped with the package, e.g. ``JFBAgent.pretrained("QuadSwarm-v0")``
        (names: ``jfbgym.agents.pretrained.available()``; what each scored:
        ``pretrained.record(name)``)."""
        return cls.load(shipped_path(name), device)

    def save(self, path: str | Path, record: Mapping[str, Any] | None = None) -> Path:
        """Save weights and config (no optimiser state) to directory ``path``, with ``record``
        (how it was trained, what it scored) in its JSON; ``load`` reads it back."""
        require(state_is_finite(self.network.state_dict()), "agent",
                "finite weights (this agent's hold NaN or inf)", "non-finite weights")
        path = Path(path)
        save_state(path / WEIGHTS, {k: v.detach().cpu() for k, v in
                                    self.network.state_dict().items()})
        save_json(path / AGENT_JSON, {"agent": self.config(), "record": dict(record or {})})
        return path

    # -------------------------------------------------------------- compatibility
    def check_problem(self, problem: ControlProblem) -> None:
        """Raise ``ValueError`` unless ``problem`` is the problem this agent was trained on."""
        require(isinstance(problem, ControlProblem), "problem", "a ControlProblem",
                type(problem).__name__)
        require(problem.name == self.problem.name, "problem",
                f"a {self.problem.name} problem (this agent's)", problem.name)
        for attr in ("n_agents", "state_dim", "control_dim", "n_steps"):
            require(getattr(problem, attr) == getattr(self.problem, attr), "problem",
                    f"{attr} = {getattr(self.problem, attr)} (this agent's)",
                    getattr(problem, attr))

    def check_env(self, env: Any) -> None:
        """Raise ``ValueError`` unless ``env`` (Gymnasium or PettingZoo, wrapped or not) wraps
        this agent's problem; falls back to the env id when no problem is exposed."""
        base = getattr(env, "unwrapped", env)
        problem = getattr(base, "problem", None)
        if problem is not None:
            self.check_problem(problem)
            return
        spec = getattr(env, "spec", None)
        if spec is not None and getattr(spec, "id", None):
            name, _ = problem_kwargs(strip_namespace(spec.id))
            require(name == self.problem.name, "env", f"an env of {self.problem.name}",
                    spec.id)

    # ------------------------------------------------------------- control
    def control(self, t: Time, z: Tensor, grad: bool = False) -> Tensor:
        """The batched feedback u(t, z), (B, m): a feedback law for
        ``problem.rollout(agent.control, x0)``. ``t`` is a time in [0, T] or one per state;
        ``z`` (B, n) is checked as every outside state is (``ControlProblem.user_states``:
        finite, within the problem's ``state_limit``); ``grad``: u carries a graph."""
        z = self.problem.user_states(z, "z")
        return self._control(self.problem.user_times(t, z.shape[0]), z, grad)

    # ------------------------------------------------------------- objective
    def objective(self, x0: Tensor, grad: str | None = None, log: Any = None,
                  warn: bool = True) -> Tensor:
        """Closed-loop discrete cost J per sample, shape (B,)."""
        return self.rollout(x0, grad, log, warn).cost

    # --------------------------------------------------------- env interfaces
    def predict(self, observation: Any, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, None]:
        """SB3-style ``(action, state)`` for Gymnasium observations concat(z, t), shape
        (n + 1,) or (K, n + 1); the action is the control u (shape (m,) or (K, m))."""
        n = self.problem.state_dim
        obs = real_tensor(observation, "observation")
        require(obs.dim() in (1, 2) and obs.shape[-1] == n + 1 and obs.numel() > 0,
                "observation", f"shape ({n + 1},) or (K, {n + 1}) = concat(z, t) of "
                f"{self.problem.name} with state_dim {n}, K >= 1", tuple(obs.shape))
        single = obs.dim() == 1
        obs = obs.reshape(-1, n + 1)
        z = self.problem.user_states(obs[:, :n], "observation")
        t = self.problem.user_times(obs[:, n], z.shape[0], "observation (its time, last)")
        with torch.no_grad():
            u = self._control(t, z.contiguous(), False)
        action = u.cpu().numpy().astype(np.float32)
        return (action[0] if single else action), None

    def predict_parallel(self, observations: Any, time: float | None = None
                         ) -> dict[str, np.ndarray]:
        """Every agent's action ``{"agent_i": control block i}`` from the global state.

        The policy needs the joint state, while a PettingZoo agent observes only its
        neighbourhood, so pass ``env.state()`` (concat(z, t), shape (n + 1,)), a bare state z
        (n,) with ``time``, or the env itself (its ``state()`` is read and only its live
        ``agents`` get actions). Agent i's action is u.view(N, m/N)[i] (ConsumptionSavings:
        the consumption of good i).
        """
        N, n = self.problem.n_agents, self.problem.state_dim
        names = [f"agent_{i}" for i in range(N)]
        if hasattr(observations, "state") and callable(observations.state):
            self.check_env(observations)
            names = list(getattr(observations, "agents", names)) or names
            observations = observations.state()
        require(not isinstance(observations, Mapping), "observations",
                "the global state env.state() (per-agent observations are local and do not "
                "determine the joint control)", type(observations).__name__)
        obs = real_tensor(observations, "observations").detach().cpu().double()
        if tuple(obs.shape) == (n,):
            require(time is not None, "time", "the time t when given a bare state z", time)
            t = self.problem.user_times(time, 1, "time").double().cpu()
            obs = torch.cat([obs, t])
        require(tuple(obs.shape) == (n + 1,), "observations",
                f"the global state concat(z, t) of shape ({n + 1},)", tuple(obs.shape))
        blocks = self.predict(obs)[0].reshape(N, -1)
        index = {name: i for i, name in enumerate(f"agent_{i}" for i in range(N))}
        for name in names:
            require(name in index, "agents", f"names among agent_0..agent_{N - 1}", name)
        return {name: blocks[index[name]].copy() for name in names}


def visited_states(agent: Agent, batch: int = 256, seed: int = 0) -> tuple[Tensor, Tensor]:
    """(every finite state the agent's current policy visits from ``batch`` draws x₀ of ρ,
    (S, n); x₀)."""
    problem = agent.problem
    x0 = problem.sample_initial_states(batch, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        states = agent.rollout(x0, warn=False).states.reshape(-1, problem.state_dim)
    return states[torch.isfinite(states).all(-1)], x0


def input_normalisation(states: Tensor, horizon: float, floor: float = NORMALISATION_FLOOR
                        ) -> tuple[Tensor, Tensor]:
    """(shift, scale) of s = (z, t) from sample states (S, n): per component the mean and the
    standard deviation, floored at ``floor`` times the largest one; time mapped onto [−1, 1].
    State components differ by orders of magnitude (positions against angles, wealth 25
    against habits 0.01): a raw-input network spends its first iterations rescaling them."""
    std = states.std(0) if states.shape[0] > 1 else torch.ones_like(states[0])
    std = torch.nan_to_num(std, nan=1.0).clamp_min(floor * float(std.max()) + 1e-12)
    half = torch.full((1,), 0.5 * horizon, dtype=states.dtype, device=states.device)
    shift = torch.cat([states.mean(0) if states.shape[0] else torch.zeros_like(std), half])
    return shift, torch.cat([std, half])


def visited_state_normalisation(agent: Agent, batch: int = 256, seed: int = 0
                                ) -> tuple[Tensor, Tensor, Tensor]:
    """(shift, scale, x₀): ``input_normalisation`` of the states ``agent``'s current policy
    visits (``visited_states``)."""
    states, x0 = visited_states(agent, batch, seed)
    return (*input_normalisation(states, agent.problem.horizon), x0)


def rebuild_spec(cfg: Mapping[str, Any]) -> tuple[str, dict]:
    """(env id or import path, problem keywords) that rebuild the problem of a saved agent's
    ``cfg``: its env id where this process knows it, else the problem's class by its import
    path (a problem registered by the user's code in the training process) with the saved
    problem settings."""
    env_id, kwargs = cfg["env_id"], problem_overrides(cfg["env_kwargs"], "env_kwargs")
    known = is_import_path(env_id) or strip_namespace(env_id) in ENV_SPECS
    path = cfg.get("problem_class")
    if known or not isinstance(path, str):
        return env_id, kwargs
    return path, problem_overrides(cfg["problem"], "problem")


def agent_class(kind: str) -> type[Agent]:
    """The class of agent ``kind`` (``KINDS``)."""
    require(kind in KINDS, "kind", f"one of {sorted(KINDS)}", kind)
    module, name = KINDS[kind].split(":")
    return getattr(importlib.import_module(module, __package__), name)


def load_agent(path: str | Path, device: str | torch.device | None = None) -> Agent:
    """Whatever agent ``path`` holds (a run directory or a saved agent), of its own kind."""
    path = Path(path)
    config = read_json(path / AGENT_JSON) if is_saved_agent(path) else load_config(path)
    cfg = config.get("agent") if isinstance(config, Mapping) else None
    kind = cfg.get("kind", "jfb") if isinstance(cfg, Mapping) else "jfb"
    if not isinstance(kind, str) or kind not in KINDS:
        raise CheckpointError(f"{path}: holds an agent of unknown kind {kind!r} (this version "
                              f"reads {sorted(KINDS)})")
    return agent_class(kind).load(path, device)
