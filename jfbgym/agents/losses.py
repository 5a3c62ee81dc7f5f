"""Penalties on the value function along rolled-out trajectories, beside the cost J itself.

Each is dimensionless (divided by the scale of its target) and evaluated at the visited states
treated as data (detached: the penalties shape Φ where the policy goes, not the trajectory):

* ``costate``: ‖∇_zΦ(t_k, z_k) − λ_k‖², λ_k the discrete adjoint of the rollout with its controls
  held fixed (the gradient of the cost-to-go from step k with respect to z_k: PMP's costate,
  equal to ∇V at the optimum). Regressing the costate on it is a policy-evaluation step with a
  target for every state and step, where the cost J gives one number per trajectory.
* ``hjb``: the Hamilton–Jacobi–Bellman residual ∂_tΦ + H(t, z, ∇_zΦ, u*), u* the control the
  policy applied (argmin_u H at that costate, so H's dependence on u is stationary there).
* ``terminal``: Φ(T, z_N) − G(z_N) and ∇_zΦ(T, z_N) − ∇G(z_N).

All three vanish for the exact value function (tested on LinearQuadratic against Riccati).
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from jfbgym.openloop import adjoint
from jfbgym.problems.base import ControlProblem, Trajectory

PENALTIES = ("costate", "hjb", "terminal")


class ValueFunction(Protocol):
    def derivatives(self, t: float | Tensor, z: Tensor, with_time: bool = False
                    ) -> tuple[Tensor, Tensor, Tensor | None]: ...


def costate_targets(problem: ControlProblem, trajectory: Trajectory) -> Tensor:
    """λ_k for k = 0..nt, (B, nt + 1, n): the discrete adjoint of the trajectory, controls
    held fixed (``jfbgym.openloop.adjoint``); no graph."""
    with torch.no_grad():
        return adjoint(problem, trajectory.states.detach(), trajectory.controls.detach())[0]


def _ratio(error: Tensor, target: Tensor) -> Tensor:
    """mean(error²) / mean(target²) over every axis (the denominator floored at tiny)."""
    tiny = torch.finfo(target.dtype).tiny
    return error.pow(2).mean() / target.detach().pow(2).mean().clamp_min(tiny)


def value_penalties(value: ValueFunction, problem: ControlProblem, trajectory: Trajectory,
                    which: tuple[str, ...] = PENALTIES) -> dict[str, Tensor]:
    """The penalties named in ``which`` for ``value`` along ``trajectory`` (see the module
    docstring), each a differentiable scalar."""
    b, nt, m = trajectory.controls.shape
    n = problem.state_dim
    t = trajectory.times[:-1].repeat(b)  # states are flattened sample-major
    z = trajectory.states[:, :-1].detach().reshape(b * nt, n)
    out: dict[str, Tensor] = {}
    if "costate" in which or "hjb" in which:
        _, p, dt = value.derivatives(t, z, with_time="hjb" in which)
        if "costate" in which:
            lam = costate_targets(problem, trajectory)[:, :-1].reshape(b * nt, n)
            out["costate"] = _ratio(p - lam, lam)
        if "hjb" in which:
            u = trajectory.controls.detach().reshape(b * nt, m)
            residual = dt + problem.hamiltonian(t, z, p, u)
            out["hjb"] = _ratio(residual, problem.running_cost(t, z, u))
    if "terminal" in which:
        zT = trajectory.states[:, -1].detach()
        V, g, _ = value.derivatives(problem.horizon, zT)
        G, dG = problem.terminal_cost(zT), problem.grad_terminal_cost(zT)
        out["terminal"] = _ratio(V - G, G) + _ratio(g - dG, dG)
    return out
