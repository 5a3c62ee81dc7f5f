"""``DirectAgent``: a policy network u = π_θ(t, z) trained through the differentiable rollout.

The baseline a differentiable simulator makes natural ("analytic policy gradient", direct
transcription with a neural feedback policy; the papers' code calls it ``DirectControlNets``):
no value function and no inner solve, the rolled-out cost is backpropagated straight into the
policy's weights. It trains with the same trainer, minibatches, optimiser, checkpoints and CLI as
JFB (``jfbgym train ENV --agent direct``), and acts through the same ``Agent`` interfaces.

The network: inputs s = ((z, t) − shift)/scale normalised exactly as the value network's
(``visited_state_normalisation``), a tanh MLP, and a bounded output u = c + h·tanh(·) on the
problem's ``action_scale`` (c its nominal control, e.g. hover thrust). The output layer starts
at zero, so the initial policy is the nominal control. Backpropagation through 160 steps of an
exponential cost is badly conditioned, so the direct policy trains with its gradient norm
clipped to 1 by default (``TrainConfig.grad_clip``; measured on QuadSwarm over 2 minutes: 44
with it, past 10⁵ without) at Adam's 10⁻².
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import pairwise
from typing import Any

import torch
from torch import Tensor, nn

from jfbgym.problems import problem_for_env, problem_overrides
from jfbgym.problems.base import ControlProblem, Time, Trajectory
from jfbgym.validation import layers, positive_int, require

from .config import DEFAULT_NETWORK, NetworkConfig
from .network import copy_normalisation, normalised_inputs
from .policy import Agent, visited_state_normalisation


class PolicyNetwork(nn.Module):
    """u = centre + half·tanh(MLP(s)), s the normalised (z, t); ``depth`` hidden tanh layers of
    ``width``."""

    def __init__(self, state_dim: int, centre: Tensor, half: Tensor, width: int,
                 depth: int) -> None:
        super().__init__()
        self.state_dim = positive_int(state_dim, "state_dim")
        self.width, self.depth = layers(width, depth, state_dim + 1,
                                        torch.finfo(centre.dtype).bits // 8)
        kw = {"dtype": centre.dtype, "device": centre.device}
        sizes = [state_dim + 1] + [width] * depth
        self.hidden = nn.ModuleList(nn.Linear(a, b, **kw) for a, b in pairwise(sizes))
        self.out = nn.Linear(width, centre.numel(), **kw)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.register_buffer("centre", centre.detach().clone())
        self.register_buffer("half_width", half.detach().clone())
        self.register_buffer("shift", torch.zeros(state_dim + 1, **kw))
        self.register_buffer("scale", torch.ones(state_dim + 1, **kw))

    def config(self) -> dict:
        return {"width": self.width, "depth": self.depth}

    def set_normalisation(self, shift: Tensor, scale: Tensor) -> None:
        """Input shift and scale ((n + 1,) each, scale > 0)."""
        copy_normalisation(self, shift, scale)

    def forward(self, t: Time, z: Tensor) -> Tensor:
        h = normalised_inputs(t, z, self.state_dim, self.shift, self.scale)
        for layer in self.hidden:
            h = torch.tanh(layer(h))
        return self.centre + self.half_width * torch.tanh(self.out(h))


class DirectAgent(Agent):
    """A feedback policy network trained by backpropagating the rolled-out cost."""

    kind = "direct"
    prior = "none"  # the trainer's learning-rate default asks every agent for its prior

    def __init__(self, problem: ControlProblem, network: PolicyNetwork, env_id: str = "",
                 env_kwargs: Mapping[str, Any] | None = None) -> None:
        super().__init__(problem, network, env_id, env_kwargs)
        require(network.state_dim == problem.state_dim, "network",
                f"a policy network for state_dim {problem.state_dim}", network.state_dim)

    @classmethod
    def build(cls, env_id: str, env_kwargs: Mapping[str, Any] | None = None,
              network: NetworkConfig = DEFAULT_NETWORK, dtype: torch.dtype = torch.float32,
              device: str | torch.device = "cpu", normalise: bool = True,
              seed: int = 0) -> DirectAgent:
        """A fresh agent (weights from the global torch RNG; ``network``'s width and depth)
        whose inputs are normalised by the states its initial policy, the nominal control,
        visits."""
        require(isinstance(network, NetworkConfig) and network.kind == "mlp", "network",
                "a NetworkConfig of kind 'mlp' (the direct policy is a plain MLP)", network)
        problem = problem_for_env(env_id, dtype=dtype, device=device,
                                  **problem_overrides(env_kwargs or {}, "env_kwargs"))
        agent = cls._assemble(problem, network.width, network.depth, env_id, env_kwargs)
        if normalise:
            shift, scale, _ = visited_state_normalisation(agent, seed=seed)
            agent.network.set_normalisation(shift, scale)
        return agent

    @classmethod
    def _assemble(cls, problem: ControlProblem, width: int, depth: int, env_id: str,
                  env_kwargs: Mapping[str, Any] | None) -> DirectAgent:
        centre, half = problem.action_scale()
        net = PolicyNetwork(problem.state_dim, centre.to(problem.dtype), half.to(problem.dtype),
                            width, depth)
        return cls(problem, net, env_id, env_kwargs)

    def network_config(self) -> dict:
        return {"network": self.network.config()}

    @classmethod
    def _build(cls, cfg: Mapping[str, Any], problem: ControlProblem) -> DirectAgent:
        require(isinstance(cfg.get("network"), dict), "agent", "'network' settings", sorted(cfg))
        net = cfg["network"]
        return cls._assemble(problem, net["width"], net["depth"], cfg["env_id"],
                             cfg["env_kwargs"])

    def _control(self, t: Tensor, z: Tensor, grad: bool) -> Tensor:
        """u = π_θ(t, z), batched."""
        with torch.set_grad_enabled(grad):
            return self.network(t, z)

    def rollout(self, x0: Tensor, grad: str | None = None, log: Any = None,
                warn: bool = True, recompute: bool = False) -> Trajectory:
        """The closed-loop trajectory from ``x0``; differentiable in the weights when ``grad``
        is given (any mode: there is no inner solve to differentiate through)."""
        require(not recompute, "recompute", "False for the direct policy (it has no per-step "
                "value-network graph to rebuild)", recompute)
        self.problem.check_batch(x0, "x0", self.problem.state_dim)
        with torch.set_grad_enabled(grad is not None and torch.is_grad_enabled()), \
                self.problem.trusted():
            return self.problem.rollout(self.network, x0)
