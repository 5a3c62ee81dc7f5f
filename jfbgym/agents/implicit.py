"""The implicit control layer u*(t, z, p) = argmin_u H and its four gradients.

Forward: an inner solve, either the papers' gradient-step iteration T(u) = Π(u − α∇_uH)
(``solver="gradient"``) or the problem's own ``optimal_control`` (closed form or damped Newton,
``solver="newton"``), warm-started from the previous time step. Every call returns the residual,
the iteration count and how many samples missed the tolerance, so nothing fails silently.

Backward (``grad``), with p = ∇_zΦ_θ carrying the dependence on θ:

* ``jfb``: one differentiable application of T at the detached fixed point (the papers' method);
* ``unrolled``: autograd through every gradient iteration, warm start included (the papers'
  AD baseline; an automatic α is treated as a constant);
* ``implicit``: the implicit-function-theorem gradient −H_uu⁻¹ ∂(∇_uH)/∂(z, p), by a backward
  hook that solves with the problem's per-agent Hessian blocks (never a dense Jacobian);
* ``newton-jfb``: u* − H_uu⁻¹∇_uH(u*) with H_uu detached: its Jacobian in u vanishes at the
  fixed point, so its gradient *is* the implicit one, at the cost of one solve.

Step size α of T: a fixed number, or (``alpha=None``, the default) α = 1/λ̂ per sample with λ̂
a few power iterations' estimate of the largest |eigenvalue| of H_uu at the current point
(detached). Any λ̂ ∈ (λ_max/2, λ_max] keeps T contractive for convex H; the papers use a fixed α,
which cannot suit the exponential control cost of QuadSwarm whose curvature grows with ‖u‖.
With box bounds on u, ``implicit``/``newton-jfb`` zero the gradient of components at a bound;
they are exact when no bound is active.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from jfbgym.problems.base import ControlProblem, InnerSolution, NewtonOptions, Time
from jfbgym.validation import finite_float, one_of, optional, positive_int, require

SOLVERS = ("newton", "gradient")


@dataclass(frozen=True)
class SolverOptions:
    """How the inner problem is solved: ``solver`` in SOLVERS, step ``alpha`` of T (None: auto),
    ``max_iters`` and relative tolerance ``tol`` (None: the problem's default)."""

    solver: str = "newton"
    alpha: float | None = None
    max_iters: int = 200
    tol: float | None = None
    power_iters: int = 6

    def __post_init__(self) -> None:
        one_of(self.solver, "solver", SOLVERS)
        optional(finite_float, self.alpha, "alpha", 0.0, True)
        positive_int(self.max_iters, "max_iters")
        optional(finite_float, self.tol, "tol", 0.0)
        positive_int(self.power_iters, "power_iters")


class StepStats(NamedTuple):
    """What one inner solve reports: worst residual, iterations, samples not converged."""

    residual: float
    iterations: int
    unconverged: int


def _probe(m: int, like: Tensor) -> Tensor:
    """A fixed, generic start vector for power iteration (no RNG, so runs stay reproducible)."""
    v = torch.sin(torch.arange(1, m + 1, dtype=like.dtype, device=like.device) * 1.618) + 0.5
    return (v / v.norm()).expand(like.shape[0], m).clone()


def curvature(problem: ControlProblem, t: Time, z: Tensor, p: Tensor, u: Tensor,
              iters: int = 6, v: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(λ̂ (B, 1), last vector): the largest |eigenvalue| of H_uu at u per sample, detached:
    the problem's closed form where it has one (the vector is then None), else a power-iteration
    estimate (≤ the true one, converging to it)."""
    with torch.no_grad():
        z, p, u = z.detach(), p.detach(), u.detach()
        exact = problem.hessian_u_max_eigenvalue(t, z, p, u)
        if exact is not None:
            return exact.clamp_min(torch.finfo(u.dtype).eps), None
        v = _probe(u.shape[1], u) if v is None else v
        lam = torch.ones(u.shape[0], 1, dtype=u.dtype, device=u.device)
        for _ in range(max(iters, 1)):
            hv = problem.hessian_u_matvec(t, z, p, u, v)
            lam = hv.norm(dim=-1, keepdim=True)
            v = hv / lam.clamp_min(torch.finfo(u.dtype).tiny)
        return lam.clamp_min(torch.finfo(u.dtype).eps), v


def step_size(problem: ControlProblem, t: Time, z: Tensor, p: Tensor, u: Tensor,
              options: SolverOptions) -> Tensor | float:
    """α of T at u: the fixed ``options.alpha`` or 1/λ̂ per sample (detached)."""
    if options.alpha is not None:
        return float(options.alpha)
    return 1.0 / curvature(problem, t, z, p, u, options.power_iters)[0]


def gradient_iteration(problem: ControlProblem, t: Time, z: Tensor, p: Tensor, u0: Tensor,
                       options: SolverOptions) -> InnerSolution:
    """Iterate T(u) = Π(u − α∇_uH) from u0 until the relative residual is below tolerance.

    Runs under whatever grad mode the caller set: under ``torch.no_grad`` it is the forward
    solver, with grad enabled (and z, p attached) it is the ``unrolled`` baseline.
    """
    tol = _tol(problem, options)
    u = problem.project_control(u0)
    g = problem.grad_u_hamiltonian(t, z, p, u)
    scale = 1.0 + g.detach().norm(dim=-1)
    v = None
    it = 0
    while True:
        res = problem.projected_gradient_norm(u.detach(), g.detach()) / scale
        if it >= options.max_iters or bool(res.max() <= tol):
            break
        if options.alpha is None:
            lam, v = curvature(problem, t, z, p, u, options.power_iters if v is None else 2, v)
            alpha: Tensor | float = 1.0 / lam
        else:
            alpha = float(options.alpha)
        u = problem.project_control(u - alpha * g)
        g = problem.grad_u_hamiltonian(t, z, p, u)
        it += 1
    return InnerSolution(u, res, it, bool(res.max() <= tol))


def solve(problem: ControlProblem, t: Time, z: Tensor, p: Tensor, u0: Tensor | None,
          options: SolverOptions) -> InnerSolution:
    """The forward inner solve (no graph): argmin_u H(t, z, p, u), warm-started at u0."""
    z, p = z.detach(), p.detach()
    if options.solver == "newton":
        newton = NewtonOptions(tol=options.tol, max_iters=options.max_iters)
        return problem.optimal_control(t, z, p, None if u0 is None else u0.detach(), newton)
    with torch.no_grad():
        start = problem.initial_control(t, z) if u0 is None else u0.detach()
        return gradient_iteration(problem, t, z, p, start, options)


def _free(problem: ControlProblem, u: Tensor) -> Tensor | None:
    """Mask of components strictly inside the control box (None when unconstrained)."""
    bounds = problem.control_bounds
    if bounds is None:
        return None
    return ((u > bounds[0]) & (u < bounds[1])).to(u.dtype)


class _ImplicitControl(torch.autograd.Function):
    """Identity on u* forward; backward w = H_uu⁻¹ ḡ, then (z̄, p̄) = −(∂∇_uH/∂(z, p))ᵀ w."""

    @staticmethod
    def forward(ctx, z: Tensor, p: Tensor, u_star: Tensor, problem: ControlProblem,
                t: Time, free: Tensor | None) -> Tensor:
        ctx.save_for_backward(z, p, u_star)
        ctx.problem, ctx.t, ctx.free = problem, t, free
        return u_star.clone()

    @staticmethod
    def backward(ctx, grad_u: Tensor):
        z, p, u_star = ctx.saved_tensors
        problem, t, free = ctx.problem, ctx.t, ctx.free
        rhs = grad_u if free is None else grad_u * free
        w = problem.hessian_u_solve(t, z, p, u_star, rhs)
        w = w if free is None else w * free
        with torch.enable_grad():
            zz = z.detach().requires_grad_(ctx.needs_input_grad[0])
            pp = p.detach().requires_grad_(ctx.needs_input_grad[1])
            g = problem.grad_u_hamiltonian(t, zz, pp, u_star)
            wanted = [x for x in (zz, pp) if x.requires_grad]
            grads = iter(torch.autograd.grad(g, wanted, -w, allow_unused=True)) if wanted else iter(())
        gz = next(grads) if zz.requires_grad else None
        gp = next(grads) if pp.requires_grad else None
        return gz, gp, None, None, None, None


Layer = Callable[[ControlProblem, Time, Tensor, Tensor, "Tensor | None", SolverOptions],
                 "tuple[Tensor, InnerSolution]"]


def _jfb(problem: ControlProblem, t: Time, z: Tensor, p: Tensor, u0: Tensor | None,
         options: SolverOptions) -> tuple[Tensor, InnerSolution]:
    sol = solve(problem, t, z, p, u0, options)
    u_star = sol.control
    alpha = step_size(problem, t, z, p, u_star, options)
    return problem.project_control(u_star - alpha * problem.grad_u_hamiltonian(t, z, p, u_star)), \
        sol


def _unrolled(problem: ControlProblem, t: Time, z: Tensor, p: Tensor, u0: Tensor | None,
              options: SolverOptions) -> tuple[Tensor, InnerSolution]:
    start = problem.initial_control(t, z) if u0 is None else u0  # graph kept: plain AD
    sol = gradient_iteration(problem, t, z, p, start, options)
    return sol.control, sol._replace(control=sol.control.detach())


def _implicit(problem: ControlProblem, t: Time, z: Tensor, p: Tensor, u0: Tensor | None,
              options: SolverOptions) -> tuple[Tensor, InnerSolution]:
    sol = solve(problem, t, z, p, u0, options)
    u_star = sol.control
    return _ImplicitControl.apply(z, p, u_star, problem, t, _free(problem, u_star)), sol


def _newton_jfb(problem: ControlProblem, t: Time, z: Tensor, p: Tensor, u0: Tensor | None,
                options: SolverOptions) -> tuple[Tensor, InnerSolution]:
    sol = solve(problem, t, z, p, u0, options)
    u_star = sol.control
    free = _free(problem, u_star)
    g = problem.grad_u_hamiltonian(t, z, p, u_star)
    g = g if free is None else g * free
    d = problem.hessian_u_solve(t, z.detach(), p.detach(), u_star, g)
    return u_star - (d if free is None else d * free), sol


@dataclass(frozen=True)
class GradMode:
    """How the implicit layer is differentiated: ``layer`` returns (u carrying the gradient,
    the inner solution); ``solver`` is the inner solver it requires (None: either), and
    ``carries_graph`` says whether the warm start of the next step keeps the graph."""

    name: str
    summary: str
    layer: Layer
    solver: str | None = None
    carries_graph: bool = False


GRAD_MODES: dict[str, GradMode] = {mode.name: mode for mode in (
    GradMode("jfb", "one differentiable application of T at the detached fixed point", _jfb),
    GradMode("unrolled", "autograd through every gradient iteration", _unrolled,
             solver="gradient", carries_graph=True),
    GradMode("implicit", "the implicit-function theorem with the per-agent Hessian blocks",
             _implicit),
    GradMode("newton-jfb", "one differentiable Newton step at the fixed point (exact)",
             _newton_jfb),
)}


def grad_mode(name: str) -> GradMode:
    """The registered gradient mode ``name``."""
    return GRAD_MODES[one_of(name, "grad", GRAD_MODES)]


def control_layer(problem: ControlProblem, t: Time, z: Tensor, p: Tensor, u0: Tensor | None,
                  options: SolverOptions, grad: str = "jfb") -> tuple[Tensor, Tensor, StepStats]:
    """(u with the gradient of mode ``grad``, the detached fixed point u*, stats).

    Without grad enabled, or when neither z nor p needs a gradient, u is u* itself.
    """
    mode = grad_mode(grad)
    if torch.is_grad_enabled() and (z.requires_grad or p.requires_grad):
        require(mode.solver in (None, options.solver), "solver",
                f"{mode.solver!r} for grad={mode.name!r}", options.solver)
        u, sol = mode.layer(problem, t, z, p, u0, options)
    else:
        sol = solve(problem, t, z, p, u0, options)
        u = sol.control
    stats = StepStats(float(sol.residual.max()), int(sol.iterations),
                      int((sol.residual > _tol(problem, options)).sum()))
    return u, sol.control, stats


def _tol(problem: ControlProblem, options: SolverOptions) -> float:
    return options.tol if options.tol is not None else problem.default_tol()
