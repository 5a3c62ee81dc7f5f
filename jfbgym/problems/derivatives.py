"""``check_derivatives``: a problem's own derivatives against ``torch.func`` of its maths.

A problem may override the derivatives ``ControlProblem`` derives from ``dynamics``,
``running_cost`` and ``terminal_cost`` (``grad_terminal_cost``, ``grad_u_hamiltonian``,
``grad_z_hamiltonian``, ``hessian_u_matvec``, ``hessian_u_solve``) with analytic ones for
speed; a wrong override trains a wrong controller without any error. This compares each
override with the default, in float64, at states drawn from ρ, costates drawn at random and
controls near the problem's nominal one. The shipped problems' tests use it; so can yours.
"""

from __future__ import annotations

import copy

import torch

from .base import ControlProblem

DERIVATIVES = ("grad_terminal_cost", "grad_u_hamiltonian", "grad_z_hamiltonian",
               "hessian_u_matvec", "hessian_u_solve")


def overridden(problem: ControlProblem) -> list[str]:
    """The derivatives ``problem``'s class writes itself (the rest use the defaults)."""
    return [name for name in DERIVATIVES
            if getattr(type(problem), name) is not getattr(ControlProblem, name)]


def check_derivatives(problem: ControlProblem, batch: int = 8, t: float | None = None,
                      seed: int = 0, rel: float = 1e-8) -> dict[str, float]:
    """The relative error ‖analytic − torch.func‖ / ‖torch.func‖ of every overridden
    derivative at ``batch`` random points (time ``t``, default a third of the horizon), in
    float64; ``AssertionError`` listing each one above ``rel``. ``hessian_u_solve`` is checked
    where the Hessian is positive definite (elsewhere a problem documents its own
    positive-definite modification)."""
    p64 = copy.deepcopy(problem).to(torch.float64)  # (Module.to works in place)
    g = torch.Generator().manual_seed(seed)
    t = problem.horizon / 3 if t is None else float(t)
    z = p64.sample_initial_states(batch, g)
    u = p64.project_control(p64.initial_control(t, z)
                            + 0.1 * torch.randn(batch, p64.control_dim, dtype=torch.float64,
                                                generator=g))
    p = torch.randn(batch, p64.state_dim, dtype=torch.float64, generator=g)
    v = torch.randn(batch, p64.control_dim, dtype=torch.float64, generator=g)
    base = ControlProblem
    pairs = {
        "grad_terminal_cost": (p64.grad_terminal_cost(z), base.grad_terminal_cost(p64, z)),
        "grad_u_hamiltonian": (p64.grad_u_hamiltonian(t, z, p, u),
                               base.grad_u_hamiltonian(p64, t, z, p, u)),
        "grad_z_hamiltonian": (p64.grad_z_hamiltonian(t, z, p, u),
                               base.grad_z_hamiltonian(p64, t, z, p, u)),
        "hessian_u_matvec": (p64.hessian_u_matvec(t, z, p, u, v),
                             base.hessian_u_matvec(p64, t, z, p, u, v)),
    }
    errors = {}
    for name in overridden(p64):
        if name == "hessian_u_solve":
            errors[name] = _solve_error(p64, t, z, p, u, v)
            continue
        mine, reference = pairs[name]
        errors[name] = _rel(mine, reference)
    bad = {k: e for k, e in errors.items() if not e <= rel}
    assert not bad, (f"{type(problem).__name__}: derivatives that disagree with torch.func of "
                     f"its dynamics and costs (relative error above {rel:g}): {bad}")
    return errors


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach() - b.detach()).norm() / b.detach().norm().clamp_min(1e-300))


def _solve_error(problem: ControlProblem, t: float, z: torch.Tensor, p: torch.Tensor,
                 u: torch.Tensor, v: torch.Tensor, damping: float = 0.1) -> float:
    """‖(H + damping) x − v‖ / ‖v‖ for x the problem's solve, over the samples whose H_uu
    (from the default matvec) is positive definite."""
    eye = torch.eye(problem.control_dim, dtype=u.dtype)
    H = torch.stack([ControlProblem.hessian_u_matvec(problem, t, z, p, u, e.expand_as(u))
                     for e in eye], dim=-1)
    convex = torch.linalg.eigvalsh(0.5 * (H + H.transpose(1, 2)))[:, 0] > 0
    if not bool(convex.any()):
        return 0.0
    x = problem.hessian_u_solve(t, z, p, u, v, damping)
    residual = (H @ x.unsqueeze(-1)).squeeze(-1) + damping * x - v
    return float(residual[convex].norm() / v[convex].norm().clamp_min(1e-300))
