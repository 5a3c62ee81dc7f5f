"""A value network over the swarm as a set: the same weights for any number of agents.

    Φ(t, z) = V₀(t, z) + c · [ (1/N) Σ_i φ(s_i, m) + ρ(t, m) ],   m = (1/N) Σ_j ψ(s_j)

with s_i = ((z_i − o_i, t) − shift)/scale agent i's state in its own frame (o_i its target's
offset from the shared one, ``ControlProblem.agent_decomposition``), normalised per component
over all agents; ψ embeds each agent into a ``context``-dimensional summary and m, their mean,
is the mean-field context every agent sees; φ and ρ are tanh MLPs with zero-initialised output
layers, so Φ starts as the prior V₀ (the lifted local expansion, whose size does not depend on
N either). The means make Φ permutation invariant and of the same scale at every N (the
problems' costs are averages over agents).

The costate ∇_zΦ is written out as a reverse sweep through φ, ρ and ψ in plain torch ops
(``tanh_mlp_vjp``), as the flat network's is, so training differentiates it once instead of
running a double backward through ``autograd.grad``: no faster eager (measured), but
``torch.compile`` cannot differentiate a double backward, and ``JFBAgent.compile`` needs this.
O(N) per sample, as every term is a mean over agents. ``relift(problem)`` moves the network to a problem with
another N (shared targets: the prior's single nominal trajectory serves every agent).
"""

from __future__ import annotations

import copy
from itertools import pairwise

import torch
from torch import Tensor, nn

from jfbgym.problems.base import ControlProblem, Time
from jfbgym.validation import MAX_WIDTH, integer, layers, positive_int, require

from .network import batch_times, check_states, copy_normalisation
from .prior import LocalValue


def mlp(sizes: list[int], dtype: torch.dtype, device: torch.device | str) -> nn.Sequential:
    """tanh MLP; the output layer starts at zero."""
    layers: list[nn.Module] = []
    for a, b in pairwise(sizes):
        layers += [nn.Linear(a, b, dtype=dtype, device=device), nn.Tanh()]
    net = nn.Sequential(*layers[:-1])
    nn.init.zeros_(net[-1].weight)
    nn.init.zeros_(net[-1].bias)
    return net


def tanh_mlp_vjp(net: nn.Sequential, x: Tensor, grad_out: Tensor) -> tuple[Tensor, Tensor]:
    """(net(x), grad_outᵀ ∂net/∂x) for an ``mlp`` (Linear, Tanh, ..., Linear) by one forward
    and one explicit reverse sweep, differentiable in the weights."""
    linears = [layer for layer in net if isinstance(layer, nn.Linear)]
    hidden = []
    for layer in linears[:-1]:
        x = torch.tanh(layer(x))
        hidden.append(x)
    out = linears[-1](x)
    g = grad_out @ linears[-1].weight
    for layer, h in zip(reversed(linears[:-1]), reversed(hidden)):
        g = (g * (1.0 - h * h)) @ layer.weight
    return out, g


def agent_offsets(problem: ControlProblem) -> Tensor:
    """o (N, d): each agent's frame shift (zeros where the problem has no decomposition)."""
    decomposition = problem.agent_decomposition()
    d = problem.state_dim // problem.n_agents
    if decomposition is None:
        return torch.zeros(problem.n_agents, d, dtype=problem.dtype, device=problem.device)
    return decomposition[2].to(dtype=problem.dtype, device=problem.device)


class SetValueNetwork(nn.Module):
    """Φ_θ(t, z) for a problem of ``n_agents`` agents of ``agent_dim`` state components each;
    ``width`` and ``depth`` of φ, ``context`` the size of the pooled summary m."""

    kind = "set"

    def __init__(self, agent_dim: int, n_agents: int, width: int, depth: int, context: int,
                 offsets: Tensor | None = None,
                 local: LocalValue | None = None, dtype: torch.dtype = torch.float32,
                 device: str | torch.device = "cpu") -> None:
        super().__init__()
        self.agent_dim, self.n_agents = positive_int(agent_dim, "agent_dim"), \
            positive_int(n_agents, "n_agents")
        self.context = integer(context, "context", 1, MAX_WIDTH)
        self.width, self.depth = layers(width, depth, agent_dim + 1 + self.context,
                                        torch.finfo(dtype).bits // 8)
        self.local = local
        d = agent_dim + 1
        self.embed = nn.Sequential(nn.Linear(d, width, dtype=dtype, device=device), nn.Tanh(),
                                   nn.Linear(width, context, dtype=dtype, device=device))
        self.phi = mlp([d + context] + [width] * depth + [1], dtype, device)
        self.rho = mlp([context + 1, width, 1], dtype, device)
        kw = {"dtype": dtype, "device": device}
        self.register_buffer("offsets", torch.zeros(n_agents, agent_dim, **kw)
                             if offsets is None else offsets.detach().clone().to(**kw))
        self.register_buffer("shift", torch.zeros(d, **kw))
        self.register_buffer("scale", torch.ones(d, **kw))
        self.register_buffer("value_scale", torch.ones((), **kw))

    @property
    def state_dim(self) -> int:
        return self.agent_dim * self.n_agents

    @property
    def composition(self) -> str:
        return "additive" if self.local is not None else "none"

    prior = None  # a problem's relative prior is not supported: see JFBAgent._assemble

    def config(self) -> dict:
        return {"kind": self.kind, "state_dim": self.state_dim, "width": self.width,
                "depth": self.depth, "rank": 0, "context": self.context,
                "composition": self.composition,
                "local": None if self.local is None else self.local.config()}

    def set_normalisation(self, shift: Tensor, scale: Tensor, value_scale: float = 1.0) -> None:
        """Per-agent input shift and scale ((d + 1,) each, over agents' own frames and t) and
        the correction's value scale c."""
        copy_normalisation(self, shift, scale)
        with torch.no_grad():
            self.value_scale.fill_(float(value_scale))

    def frames(self, z: Tensor) -> Tensor:
        """Each agent's state in its own frame, (B, N, d)."""
        check_states(z, self.state_dim)
        return z.view(z.shape[0], self.n_agents, self.agent_dim) - self.offsets

    def _inputs(self, t: Tensor, z: Tensor) -> Tensor:
        """s (B, N, d + 1): each agent's normalised (state in its own frame, t)."""
        e = self.frames(z)
        b, n = e.shape[:2]
        return (torch.cat([e, t.reshape(b, 1, 1).expand(b, n, 1)], dim=-1) - self.shift) \
            / self.scale

    def correction(self, t: Tensor, z: Tensor) -> Tensor:
        """(1/N) Σ_i φ(s_i, m) + ρ(t, m), shape (B,); ``t`` a (B,) tensor."""
        s = self._inputs(t, z)
        m = self.embed(s).mean(1)  # (B, context)
        per_agent = self.phi(torch.cat([s, m.unsqueeze(1).expand(-1, s.shape[1], -1)], dim=-1))
        pooled = self.rho(torch.cat([m, s[:, 0, -1:]], dim=-1))
        return per_agent.squeeze(-1).mean(1) + pooled.squeeze(-1)

    def _gradient(self, t: Tensor, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(correction (B,), its ∂/∂z (B, n), ∂/∂t (B,)) by the explicit reverse sweep."""
        s = self._inputs(t, z)
        b, n, d = s.shape
        hidden = torch.tanh(self.embed[0](s))  # ψ = embed[2](tanh(embed[0](s)))
        m = self.embed[2](hidden).mean(1)
        x = torch.cat([s, m.unsqueeze(1).expand(b, n, -1)], dim=-1)
        per_agent, g_phi = tanh_mlp_vjp(self.phi, x, s.new_full((b, n, 1), 1.0 / n))
        pooled, g_rho = tanh_mlp_vjp(self.rho, torch.cat([m, s[:, 0, -1:]], dim=-1),
                                     s.new_ones(b, 1))
        g_m = g_phi[..., d:].sum(1) + g_rho[:, :-1]  # (B, context)
        g_hidden = (g_m / n) @ self.embed[2].weight  # the same for every agent: m is a mean
        g_s = g_phi[..., :d] + (g_hidden.unsqueeze(1) * (1.0 - hidden * hidden)) \
            @ self.embed[0].weight
        g_s = g_s / self.scale
        value = per_agent.squeeze(-1).mean(1) + pooled.squeeze(-1)
        dt = g_s[..., -1].sum(1) + g_rho[:, -1] / self.scale[-1]
        return value, g_s[..., :-1].reshape(b, -1), dt

    def forward(self, t: Time, z: Tensor) -> Tensor:
        """Φ(t, z), shape (B,)."""
        value = self.value_scale * self.correction(batch_times(t, z), z)
        if self.local is not None:
            value = value + self.local(t, z)[0]
        return value

    def grad_z(self, t: Time, z: Tensor) -> Tensor:
        """p = ∇_zΦ(t, z), shape (B, n) (differentiable in θ while grad mode is on)."""
        return self.derivatives(t, z)[1]

    def derivatives(self, t: Time, z: Tensor, with_time: bool = False
                    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """(Φ (B,), ∇_zΦ (B, n), ∂_tΦ (B,) if ``with_time``) from one sweep."""
        c = self.value_scale
        corr, dz, dt = self._gradient(batch_times(t, z), z)
        value, dz, dt = c * corr, c * dz, c * dt
        if self.local is not None:
            V, dV, dtV = self.local(t, z, with_time)
            value, dz = V + value, dV + dz
            dt = dt + dtV if with_time else dt
        return value, dz, dt if with_time else None

    def relift(self, problem: ControlProblem) -> SetValueNetwork:
        """This network (a copy, same weights) for ``problem``, which may have another N."""
        require(problem.state_dim % problem.n_agents == 0
                and problem.state_dim // problem.n_agents == self.agent_dim, "problem",
                f"agents of {self.agent_dim} state components", problem.state_dim)
        local = None
        if self.local is not None:
            require(bool((self.local.group == self.local.group[0]).all()), "problem",
                    "shared targets (a formation's frames each have their own nominal "
                    "trajectories: retrain, or build the prior for this problem)",
                    "agents in several frames")
            decomposition = problem.agent_decomposition()
            require(decomposition is not None, "problem", "an agent decomposition", problem.name)
            local = LocalValue(self.local.states.shape[0], self.agent_dim, problem.n_agents,
                               self.local.n_steps, self.local.horizon, decomposition[1],
                               problem.dtype, problem.device, self.local.group.shape[1])
            for name in ("states", "costates", "hessians", "values"):
                getattr(local, name).copy_(getattr(self.local, name))
            local.group.copy_(self.local.group[:1].expand_as(local.group))
            local.offsets.copy_(decomposition[2])
        net = SetValueNetwork(self.agent_dim, problem.n_agents, self.width, self.depth,
                              self.context, agent_offsets(problem), local, problem.dtype,
                              problem.device)
        state = {k: v for k, v in copy.deepcopy(self.state_dict()).items()
                 if k != "offsets" and not k.startswith("local.")}
        net.load_state_dict(state, strict=False)
        return net
