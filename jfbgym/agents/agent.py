"""``JFBAgent``: a value network plus the implicit control layer, as a feedback policy.

The agent is the object every consumer shares: the trainer differentiates ``objective``;
``control(t, z)`` is a batched feedback law usable with ``problem.rollout``; ``predict`` is the
Stable-Baselines3 interface for the Gymnasium envs (observation = concat(z, t)); and
``predict_parallel`` maps a PettingZoo observation dict or the global state to every agent's
action (agent i's action is its control block). ``JFBAgent.load(path)`` rebuilds it from a
run directory or a saved agent and refuses weights that do not fit;
``JFBAgent.pretrained(env_id)`` loads one shipped with the package.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from jfbgym.problems import problem_for_env, problem_kwargs, strip_namespace
from jfbgym.problems.base import ControlProblem, Time, Trajectory
from jfbgym.validation import one_of, require

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
from .config import NORMALISE, PRIORS
from .implicit import SolverOptions, StepStats, control_layer, grad_mode
from .network import CORRECTION_SCALE, ValueNetwork
from .pretrained import AGENT_JSON, WEIGHTS, is_saved_agent, shipped_path
from .prior import LocalValue, build_local_value

DTYPES = {"float32": torch.float32, "float64": torch.float64}
NORMALISATION_FLOOR = 0.05  # smallest input scale, as a fraction of the largest
DEFAULT_SOLVER = SolverOptions()


class InnerLog:
    """Accumulates the inner-solve statistics of one rollout (for the training log)."""

    def __init__(self) -> None:
        self.steps: list[StepStats] = []

    def add(self, stats: StepStats) -> None:
        self.steps.append(stats)

    def summary(self) -> dict:
        if not self.steps:
            return {"inner_residual": 0.0, "inner_iters": 0.0, "unconverged": 0}
        return {"inner_residual": max(s.residual for s in self.steps),
                "inner_iters": sum(s.iterations for s in self.steps) / len(self.steps),
                "unconverged": sum(s.unconverged for s in self.steps)}


def resolve_prior(problem: ControlProblem, kind: str) -> str:
    """Which prior ``kind`` means for ``problem``: ``"auto"`` is the problem's own
    ``value_prior`` when its class supplies one (a global value: Merton's for
    ConsumptionSavings), else ``"local"`` (``jfbgym.agents.prior``); ``"problem"`` requires
    one; ``"none"`` learns from scratch."""
    one_of(kind, "prior", PRIORS)
    has_prior = type(problem).value_prior is not ControlProblem.value_prior
    if kind == "problem":
        require(has_prior, "prior", f"a problem with a value_prior ({problem.name} has none)",
                kind)
    if kind == "auto":
        return "problem" if has_prior else "local"
    return kind


def fit_normalisation(agent: JFBAgent, batch: int = 256, seed: int = 0,
                      floor: float = NORMALISATION_FLOOR) -> None:
    """Set the network's input normalisation from the states the initial policy visits from
    ``batch`` draws of ρ (per component: mean and standard deviation over every step, the
    deviation floored at ``floor`` times the largest one), time mapped onto [−1, 1], and the
    additive correction's value scale c = mean |V₀(0, x₀)| (1 without a local prior)."""
    problem, net = agent.problem, agent.network
    x0 = problem.sample_initial_states(batch, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        states = agent.rollout(x0, warn=False).states.reshape(-1, problem.state_dim)
        finite = states[torch.isfinite(states).all(-1)]
        std = finite.std(0) if finite.shape[0] > 1 else torch.ones_like(states[0])
        std = torch.nan_to_num(std, nan=1.0).clamp_min(floor * float(std.max()) + 1e-12)
        half = torch.full((1,), 0.5 * problem.horizon, dtype=states.dtype, device=states.device)
        shift = torch.cat([finite.mean(0) if finite.shape[0] else torch.zeros_like(std), half])
        scale = torch.cat([std, half])
        value = 1.0
        if net.local is not None:
            value = max(float(net.local(0.0, x0)[0].abs().mean()), 1e-6)
    net.set_normalisation(shift, scale, value)


class JFBAgent:
    """A trained (or training) JFB value-function agent for one problem.

    ``env_id`` and ``env_kwargs`` (problem overrides) name the problem, as in
    ``jfbgym.problems.problem_for_env``.
    """

    def __init__(self, problem: ControlProblem, network: ValueNetwork,
                 solver: SolverOptions = DEFAULT_SOLVER, env_id: str = "",
                 env_kwargs: Mapping[str, Any] | None = None) -> None:
        require(isinstance(problem, ControlProblem), "problem", "a ControlProblem",
                type(problem).__name__)
        require(network.state_dim == problem.state_dim, "network",
                f"a value network for state_dim {problem.state_dim}", network.state_dim)
        self.problem = problem
        self.network = network
        self.solver = solver
        self.env_id = strip_namespace(env_id) if env_id else ""
        self.env_kwargs = dict(env_kwargs or {})
        self.prior = network.composition if network.composition != "relative" else "problem"
        if self.prior == "additive":
            self.prior = "local"

    # ------------------------------------------------------------ construction
    @classmethod
    def build(cls, env_id: str, env_kwargs: Mapping[str, Any] | None = None,
              width: int = 96, depth: int = 3, rank: int = 10,
              solver: SolverOptions = DEFAULT_SOLVER, dtype: torch.dtype = torch.float32,
              device: str | torch.device = "cpu",
              correction_scale: float = CORRECTION_SCALE, prior: str = "auto",
              normalise: bool | str = "auto", seed: int = 0) -> JFBAgent:
        """A fresh agent for a registered env id (weights drawn from the global torch RNG).

        The network starts from the value prior ``prior`` (``resolve_prior``; a local prior
        costs one open-loop Newton solve) and, with ``normalise``, normalises its inputs by
        the states its initial policy visits (``fit_normalisation``)."""
        if not isinstance(normalise, bool):
            one_of(normalise, "normalise", NORMALISE)
        problem = problem_for_env(env_id, dtype=dtype, device=device, **dict(env_kwargs or {}))
        kind = resolve_prior(problem, prior)
        local = build_local_value(problem) if kind == "local" else None
        agent = cls._assemble(problem, kind, local, width, depth, rank, solver,
                              correction_scale, env_id, env_kwargs)
        if normalise is True or normalise == "on" or (normalise == "auto" and kind != "problem"):
            fit_normalisation(agent, seed=seed)
        return agent

    @classmethod
    def _assemble(cls, problem: ControlProblem, prior: str, local: LocalValue | None,
                  width: int, depth: int, rank: int, solver: SolverOptions,
                  correction_scale: float, env_id: str,
                  env_kwargs: Mapping[str, Any] | None) -> JFBAgent:
        net = ValueNetwork(problem.state_dim, width, depth, rank, dtype=problem.dtype,
                           device=problem.device,
                           prior=problem.value_prior if prior == "problem" else None,
                           correction_scale=correction_scale, local=local)
        agent = cls(problem, net, solver, env_id, env_kwargs)
        agent.prior = prior
        return agent

    def config(self) -> dict:
        """The settings that rebuild this agent (the ``agent`` part of a run's config.json)."""
        return {"env_id": self.env_id, "env_kwargs": self.env_kwargs,
                "problem_name": self.problem.name, "problem": self.problem.config(),
                "network": self.network.config(), "solver": dataclasses.asdict(self.solver),
                "dtype": str(self.problem.dtype).replace("torch.", ""), "prior": self.prior}

    @classmethod
    def from_config(cls, config: Mapping[str, Any], device: str | torch.device | None = None,
                    where: str = "config") -> JFBAgent:
        """The agent a run's config describes (fresh weights); ``CheckpointError`` naming
        ``where`` when the config is incomplete or describes something this version cannot
        build."""
        require_keys(config, ("agent",), where)
        cfg = config["agent"]
        require_keys(cfg, ("env_id", "env_kwargs", "problem_name", "problem", "network",
                           "solver", "dtype"), f"{where} [agent]")
        require_keys(cfg["network"], ("width", "depth", "rank"), f"{where} [agent.network]")
        if cfg["dtype"] not in DTYPES:
            raise CheckpointError(f"{where}: dtype must be one of {sorted(DTYPES)}, got "
                                  f"{cfg['dtype']!r}")
        device = device or config.get("device", "cpu")
        net_cfg = dict(cfg["network"])
        try:
            solver = SolverOptions(**cfg["solver"])
            problem = problem_for_env(cfg["env_id"], dtype=DTYPES[cfg["dtype"]], device=device,
                                      **dict(cfg["env_kwargs"]))
            kind = one_of(cfg.get("prior", "none"), "prior", PRIORS)
            local = None
            if kind == "local":  # its tensors come with the weights
                require(isinstance(net_cfg.get("local"), dict), "network.local",
                        "the local prior's shape", net_cfg.get("local"))
                local = LocalValue(**net_cfg["local"], dtype=problem.dtype,
                                   device=problem.device)
            agent = cls._assemble(problem, kind, local, net_cfg["width"], net_cfg["depth"],
                                  net_cfg["rank"], solver,
                                  net_cfg.get("correction_scale", CORRECTION_SCALE),
                                  cfg["env_id"], cfg["env_kwargs"])
        except (TypeError, ValueError) as err:
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

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device | None = None) -> JFBAgent:
        """The agent in ``path``: a training run directory (config.json + checkpoint.pt) or a
        saved agent (agent.json + weights.pt, ``save``). Every file is checked; nothing in it
        is executed."""
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
            best = state.get("best")  # the best validated weights, when the run kept them
            model = best["model"] if isinstance(best, dict) and "model" in best else \
                state["model"]
        load_weights(agent.network, model, weights)
        agent.network.eval()
        return agent

    @classmethod
    def pretrained(cls, name: str, device: str | torch.device | None = None) -> JFBAgent:
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

    # ----------------------------------------------------------------- control
    def costate(self, t: Time, z: Tensor) -> Tensor:
        """p = ∇_zΦ_θ(t, z) (computed once per time step by every caller)."""
        return self.network.grad_z(t, z)

    def feedback(self, grad: str | None = None, log: InnerLog | None = None):
        """A stateful policy ``(t, z) -> u`` for one ``problem.rollout``: warm-starts each
        inner solve at the previous step's control and records the solve statistics. With
        ``grad`` (a mode of GRAD_MODES) u carries that gradient; without, u is detached."""
        carries_graph = grad is not None and grad_mode(grad).carries_graph
        previous: list[Tensor | None] = [None]

        def policy(t: Time, z: Tensor) -> Tensor:
            with torch.set_grad_enabled(grad is not None and torch.is_grad_enabled()):
                p = self.costate(t, z)
                warm = previous[0]
                if warm is not None and warm.shape[0] != z.shape[0]:
                    warm = None
                u, u_star, stats = control_layer(self.problem, t, z, p, warm, self.solver,
                                                 grad or "jfb")
            previous[0] = u if carries_graph else u_star
            if log is not None:
                log.add(stats)
            return u

        return policy

    def rollout(self, x0: Tensor, grad: str | None = None, log: InnerLog | None = None,
                warn: bool = True) -> Trajectory:
        """The closed-loop trajectory from ``x0`` (differentiable when ``grad`` is given).
        With ``warn``, inner solves that missed their tolerance raise one warning with the
        count (their controls are still the best the solver found)."""
        log = InnerLog() if log is None else log
        before = len(log.steps)
        self.problem.check_batch(x0, "x0", self.problem.state_dim)
        with self.problem.trusted():  # the policy's tensors are the library's own
            traj = self.problem.rollout(self.feedback(grad, log), x0)
        missed = sum(s.unconverged for s in log.steps[before:])
        if warn and missed:
            warnings.warn(f"{missed} of {x0.shape[0] * self.problem.n_steps} inner solves "
                          f"({self.problem.name}) did not reach their tolerance",
                          RuntimeWarning, stacklevel=2)
        return traj

    def objective(self, x0: Tensor, grad: str | None = None, log: InnerLog | None = None,
                  warn: bool = True) -> Tensor:
        """Closed-loop discrete cost J per sample, shape (B,)."""
        return self.rollout(x0, grad, log, warn).cost

    def control(self, t: Time, z: Tensor, grad: bool = False) -> Tensor:
        """u*(t, z) = argmin_u H(t, z, ∇_zΦ, u), batched; a feedback law for
        ``problem.rollout(agent.control, x0)`` (cold start every call, so it is stateless)."""
        self.problem.check_batch(z, "z", self.problem.state_dim)
        with torch.set_grad_enabled(grad):
            p = self.costate(t, z)
            u, _, _ = control_layer(self.problem, t, z, p, None, self.solver, "implicit")
        return u

    # --------------------------------------------------------- env interfaces
    def predict(self, observation: Any, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, None]:
        """SB3-style ``(action, state)`` for Gymnasium observations concat(z, t), shape
        (n + 1,) or (K, n + 1); the action is the control u (shape (m,) or (K, m))."""
        n = self.problem.state_dim
        obs = np.asarray(observation)
        require(obs.ndim in (1, 2) and obs.shape[-1] == n + 1, "observation",
                f"shape ({n + 1},) or (K, {n + 1}) = concat(z, t) of {self.problem.name} "
                f"with state_dim {n}", obs.shape)
        single = obs.ndim == 1
        x = torch.as_tensor(np.atleast_2d(obs), dtype=self.problem.dtype,
                            device=self.problem.device)
        u = self.control(x[:, n], x[:, :n].contiguous())
        action = u.cpu().numpy().astype(np.float32)
        return (action[0] if single else action), None

    def predict_parallel(self, observations: Any, time: float | None = None
                         ) -> dict[str, np.ndarray]:
        """Every agent's action ``{"agent_i": control block i}`` from the global state.

        The value function needs the joint state, while a PettingZoo agent observes only its
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
        obs = np.asarray(observations, dtype=np.float64)
        if obs.shape == (n,):
            require(time is not None, "time", "the time t when given a bare state z", time)
            obs = np.concatenate([obs, [float(time)]])
        require(obs.shape == (n + 1,), "observations",
                f"the global state concat(z, t) of shape ({n + 1},)", obs.shape)
        blocks = self.predict(obs)[0].reshape(N, -1)
        index = {name: i for i, name in enumerate(f"agent_{i}" for i in range(N))}
        for name in names:
            require(name in index, "agents", f"names among agent_0..agent_{N - 1}", name)
        return {name: blocks[index[name]].copy() for name in names}
