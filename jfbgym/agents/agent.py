"""``JFBAgent``: a value network plus the implicit control layer, as a feedback policy.

The trainer differentiates its ``objective``; ``control(t, z)`` is a batched feedback law
usable with ``problem.rollout``; ``predict``, ``predict_parallel``, ``save``, ``load`` and
``pretrained`` come from ``jfbgym.agents.policy.Agent``, which every agent kind shares.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from jfbgym.problems import problem_for_env, problem_overrides
from jfbgym.problems.base import ControlProblem, Time, Trajectory
from jfbgym.validation import one_of, require

from .config import DEFAULT_NETWORK, DEFAULT_PRIOR, PRIORS, NetworkConfig, PriorConfig
from .implicit import SolverOptions, StepStats, control_layer, grad_mode
from .network import CORRECTION_SCALE, ValueNetwork
from .policy import DTYPES, Agent, input_normalisation, visited_states
from .prior import LocalValue, build_local_value
from .set_network import SetValueNetwork, agent_offsets

__all__ = ["DTYPES", "InnerLog", "JFBAgent"]
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


def fit_normalisation(agent: JFBAgent, batch: int = 256, seed: int = 0) -> None:
    """Set the network's input normalisation from the states the initial policy visits
    (``input_normalisation``; for a set network over every agent's state in its own frame)
    and the additive correction's value scale c = mean |V₀(0, x₀)| (1 without a local
    prior)."""
    states, x0 = visited_states(agent, batch, seed)
    if isinstance(agent.network, SetValueNetwork):
        states = agent.network.frames(states).reshape(-1, agent.network.agent_dim)
    shift, scale = input_normalisation(states, agent.problem.horizon)
    value = 1.0
    if agent.network.local is not None:
        with torch.no_grad():
            value = max(float(agent.network.local(0.0, x0)[0].abs().mean()), 1e-6)
    agent.network.set_normalisation(shift, scale, value)


class JFBAgent(Agent):
    """A trained (or training) JFB value-function agent for one problem: the control is the
    fixed point u* = argmin_u H(t, z, ∇_zΦ_θ, u) of the implicit layer."""

    kind = "jfb"

    def __init__(self, problem: ControlProblem, network: ValueNetwork,
                 solver: SolverOptions = DEFAULT_SOLVER, env_id: str = "",
                 env_kwargs: Mapping[str, Any] | None = None) -> None:
        super().__init__(problem, network, env_id, env_kwargs)
        require(network.state_dim == problem.state_dim, "network",
                f"a value network for state_dim {problem.state_dim}", network.state_dim)
        self.solver = solver
        self._compiled: Any = None  # ``compile()``: the costate through torch.compile
        self.prior = network.composition if network.composition != "relative" else "problem"
        if self.prior == "additive":
            self.prior = "local"

    # ------------------------------------------------------------ construction
    @classmethod
    def build(cls, env_id: str, env_kwargs: Mapping[str, Any] | None = None,
              network: NetworkConfig = DEFAULT_NETWORK, prior: PriorConfig = DEFAULT_PRIOR,
              solver: SolverOptions = DEFAULT_SOLVER, dtype: torch.dtype = torch.float32,
              device: str | torch.device = "cpu", seed: int = 0,
              correction_scale: float = CORRECTION_SCALE) -> JFBAgent:
        """A fresh agent for an env id (or a problem's import path), weights drawn from the
        global torch RNG, e.g. ``JFBAgent.build("QuadSwarm-v0", network=NetworkConfig(width=64))``.

        The network (``NetworkConfig``: ``mlp`` over the flat state, or ``set``, the same
        weights at every N) starts from the value prior of ``PriorConfig`` (``resolve_prior``;
        a local prior, the least of at most ``branches`` expansions, costs open-loop Newton
        solves from states drawn from ρ, once per process) and normalises its inputs by the
        states its initial policy visits (``fit_normalisation``) as ``prior.normalise`` says."""
        require(isinstance(network, NetworkConfig), "network", "a NetworkConfig", network)
        require(isinstance(prior, PriorConfig), "prior", "a PriorConfig", prior)
        problem = problem_for_env(env_id, dtype=dtype, device=device,
                                  **problem_overrides(env_kwargs or {}, "env_kwargs"))
        kind = resolve_prior(problem, prior.kind)
        local = build_local_value(problem, max_branches=prior.branches) \
            if kind == "local" else None
        agent = cls._assemble(problem, kind, local, network, solver, correction_scale, env_id,
                              env_kwargs)
        if prior.normalise == "on" or (prior.normalise == "auto" and kind != "problem"):
            fit_normalisation(agent, seed=seed)
        return agent

    @classmethod
    def _assemble(cls, problem: ControlProblem, prior: str, local: LocalValue | None,
                  network: NetworkConfig, solver: SolverOptions, correction_scale: float,
                  env_id: str, env_kwargs: Mapping[str, Any] | None) -> JFBAgent:
        net: ValueNetwork | SetValueNetwork
        if network.kind == "set":
            require(prior != "problem", "prior", "local or none with network='set' (a "
                    "problem's relative prior is for the flat network)", prior)
            net = SetValueNetwork(problem.state_dim // problem.n_agents, problem.n_agents,
                                  network.width, network.depth, network.context,
                                  agent_offsets(problem), local, problem.dtype, problem.device)
        else:
            net = ValueNetwork(problem.state_dim, network.width, network.depth, network.rank,
                               dtype=problem.dtype, device=problem.device,
                               prior=problem.value_prior if prior == "problem" else None,
                               correction_scale=correction_scale, local=local)
        agent = cls(problem, net, solver, env_id, env_kwargs)
        agent.prior = prior
        return agent

    def network_config(self) -> dict:
        return {"network": self.network.config(), "solver": dataclasses.asdict(self.solver),
                "prior": self.prior}

    @classmethod
    def _build(cls, cfg: Mapping[str, Any], problem: ControlProblem) -> JFBAgent:
        require(isinstance(cfg.get("network"), dict) and isinstance(cfg.get("solver"), dict),
                "agent", "'network' and 'solver' settings", sorted(cfg))
        net_cfg = dict(cfg["network"])
        solver = SolverOptions(**cfg["solver"])
        kind = one_of(cfg.get("prior", "none"), "prior", PRIORS)
        local = None
        if kind == "local":  # its tensors come with the weights
            require(isinstance(net_cfg.get("local"), dict), "network.local",
                    "the local prior's shape", net_cfg.get("local"))
            local = LocalValue(**net_cfg["local"], dtype=problem.dtype, device=problem.device)
        defaults = NetworkConfig()  # files from before a setting existed hold its default
        network = NetworkConfig(net_cfg.get("kind", defaults.kind), net_cfg["width"],
                                net_cfg["depth"], net_cfg.get("rank") or defaults.rank,
                                net_cfg.get("context", defaults.context))  # (set: rank 0)
        return cls._assemble(problem, kind, local, network, solver,
                             net_cfg.get("correction_scale", CORRECTION_SCALE),
                             cfg["env_id"], cfg["env_kwargs"])

    def transfer(self, **env_kwargs: Any) -> JFBAgent:
        """This agent (same weights) on the problem its env id builds with ``env_kwargs``
        overriding its own, e.g. ``agent.transfer(n_agents=100)``: a set network acts at any N;
        a flat one only on a problem of its own size."""
        kwargs = {**self.env_kwargs, **env_kwargs}
        problem = problem_for_env(self.env_id, dtype=self.problem.dtype,
                                  device=self.problem.device, **kwargs)
        if isinstance(self.network, SetValueNetwork):
            net = self.network.relift(problem)
        else:
            require(problem.state_dim == self.problem.state_dim, "env_kwargs",
                    f"a problem of state_dim {self.problem.state_dim} for a flat value network "
                    "(train with network='set' to act at any N)", problem.state_dim)
            net = self.network
        agent = JFBAgent(problem, net, self.solver, self.env_id, kwargs)
        agent.prior = self.prior
        return agent

    # ----------------------------------------------------------------- control
    def costate(self, t: Time, z: Tensor) -> Tensor:
        """p = ∇_zΦ_θ(t, z) (computed once per time step by every caller)."""
        if self._compiled is None:
            return self.network.grad_z(t, z)
        try:  # t as a tensor: a Python float would be a constant, recompiled every step
            return self._compiled(torch.as_tensor(t, dtype=z.dtype, device=z.device), z)
        except Exception as err:  # noqa: BLE001 - compilation failures have no common type
            p = self.network.grad_z(t, z)  # bad input raises its own error here
            warnings.warn(f"torch.compile of the costate failed ({type(err).__name__}: "
                          f"{str(err).splitlines()[0] if str(err) else ''}); it runs eagerly "
                          "from now on", RuntimeWarning, stacklevel=2)
            self._compiled = None
            return p

    def compile(self) -> JFBAgent:
        """Run the costate (value network and prior: most of a step's framework overhead)
        through ``torch.compile``; where compilation fails (no C++ compiler, an unsupported
        platform) it warns once and stays eager. The first calls at each batch size and grad
        mode compile (seconds each). Returns the agent."""
        self._compiled = torch.compile(self.network.grad_z)
        return self

    def feedback(self, grad: str | None = None, log: InnerLog | None = None,
                 recompute: bool = False):
        """A stateful policy ``(t, z) -> u`` for one ``problem.rollout``: warm-starts each
        inner solve at the previous step's control and records the solve statistics. With
        ``grad`` (a mode of GRAD_MODES) u carries that gradient; without, u is detached.
        ``recompute``: solve without a graph, then rebuild the step's graph (costate and the
        layer's differentiable map at the solution) in the backward pass, so a rollout keeps
        O(one step) of activations instead of O(nt); the gradient is the same."""
        carries_graph = grad is not None and grad_mode(grad).carries_graph
        require(not (recompute and carries_graph), "recompute",
                f"False with grad={grad!r} (its graph runs through the warm starts)", recompute)
        previous: list[Tensor | None] = [None]

        def layer(t: Time, z: Tensor, warm: Tensor | None) -> tuple[Tensor, Tensor, StepStats]:
            return control_layer(self.problem, t, z, self.costate(t, z), warm, self.solver,
                                 grad or "jfb")

        def policy(t: Time, z: Tensor) -> Tensor:
            warm = previous[0]
            if warm is not None and warm.shape[0] != z.shape[0]:
                warm = None
            differentiable = grad is not None and torch.is_grad_enabled()
            if differentiable and recompute:  # the backward pass runs the step once more
                u, u_star, stats = checkpoint(layer, t, z, warm, use_reentrant=False)
            else:
                with torch.set_grad_enabled(differentiable):
                    u, u_star, stats = layer(t, z, warm)
            previous[0] = u if carries_graph else u_star
            if log is not None:
                log.add(stats)
            return u

        return policy

    def rollout(self, x0: Tensor, grad: str | None = None, log: InnerLog | None = None,
                warn: bool = True, recompute: bool = False) -> Trajectory:
        """The closed-loop trajectory from ``x0`` (differentiable when ``grad`` is given;
        ``recompute``: see ``feedback``). With ``warn``, inner solves that missed their
        tolerance raise one warning with the count (their controls are still the best the
        solver found)."""
        log = InnerLog() if log is None else log
        before = len(log.steps)
        self.problem.check_batch(x0, "x0", self.problem.state_dim)
        with self.problem.trusted():  # the policy's tensors are the library's own
            traj = self.problem.rollout(self.feedback(grad, log, recompute), x0)
        missed = sum(s.unconverged for s in log.steps[before:])
        if warn and missed:
            warnings.warn(f"{missed} of {x0.shape[0] * self.problem.n_steps} inner solves "
                          f"({self.problem.name}) did not reach their tolerance",
                          RuntimeWarning, stacklevel=2)
        return traj

    def _control(self, t: Tensor, z: Tensor, grad: bool) -> Tensor:
        """u*(t, z) = argmin_u H(t, z, ∇_zΦ, u), batched (cold start every call, so it is
        stateless)."""
        with torch.set_grad_enabled(grad):
            p = self.costate(t, z)
            u, _, _ = control_layer(self.problem, t, z, p, None, self.solver, "implicit")
        return u
