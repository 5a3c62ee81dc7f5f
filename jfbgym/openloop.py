"""Open-loop reference: optimise each initial state's control sequence directly.

A feedback policy can do no better on a given initial state x than the best control *sequence*
for x, so minimising the differentiable discrete objective ``problem.objective(U, x)`` over
U ∈ ℝ^{nt×m} gives the yardstick J*(x) against which every policy's optimality gap is measured.
The objective is separable over the batch, so one optimiser over the stacked sequences
minimises every state's J at once (its Hessian is block-diagonal across states).

Stopping rule (the stated tolerance): the per-state residual is the largest stationarity error
``max_k ‖∂J/∂u_k‖_∞ / h`` — i.e. ‖∇_u H‖ along the trajectory, the discrete maximum principle —
and the reference is ``converged`` when every state's residual is ``<= tol``. The optimisation
runs in float64 on a copy of the problem whatever the problem's own dtype. Non-convex problems
can stop in a local minimum: pass warm starts (e.g. a policy's own controls) through ``init``;
the best of all starts is kept per state, so J* never exceeds a warm start's cost.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from jfbgym.problems.base import ControlProblem
from jfbgym.validation import positive_float, positive_int, require

Start = Tensor | Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class OpenLoopResult:
    """Per-state optimal control sequences ``controls (B, nt, m)``, their objective ``cost (B,)``
    (float64), the stationarity ``residual (B,)``, iterations used, and ``converged``."""

    controls: Tensor
    cost: Tensor
    residual: Tensor
    iterations: int
    converged: bool
    tol: float


def _initial_sequence(problem: ControlProblem, x0: Tensor, init: Start | None) -> Tensor:
    """A starting control sequence (B, nt, m) in the problem's dtype: zeros, a given sequence,
    or the controls a feedback policy applies along its own rollout."""
    shape = (x0.shape[0], problem.n_steps, problem.control_dim)
    if init is None:
        return torch.zeros(shape, dtype=x0.dtype, device=x0.device)
    if isinstance(init, Tensor):
        require(tuple(init.shape) == shape, "init", f"shape {shape}", tuple(init.shape))
        return init.detach().to(dtype=x0.dtype, device=x0.device).clone()
    require(callable(init), "init", "a tensor (batch, n_steps, control_dim) or a policy (t, z) -> u",
            type(init).__name__)

    with torch.no_grad():  # in the caller's problem and dtype: the policy was built for those
        return problem.rollout(lambda t, z: init(t, z).to(x0.dtype), x0).controls.detach().clone()


def _residual(problem: ControlProblem, x0: Tensor, U: Tensor) -> tuple[Tensor, Tensor]:
    """(cost (B,), max_k ‖∂J/∂u_k‖_∞ / h per state)."""
    U = U.detach().requires_grad_(True)
    cost = problem.objective(U, x0)
    (grad,) = torch.autograd.grad(cost.sum(), U)
    return cost.detach(), grad.abs().amax(dim=(1, 2)) / problem.step_size


def _optimise(problem: ControlProblem, x0: Tensor, U0: Tensor, method: str, tol: float,
              max_iters: int, lr: float) -> tuple[Tensor, int]:
    U = U0.clone().requires_grad_(True)
    h = problem.step_size
    if method == "lbfgs":
        # Rounds of fresh L-BFGS: its own stopping tests (loss change) can fire before the
        # per-state residual meets ``tol``; a new round restarts the curvature history. Stop
        # when a whole round no longer lowers the total cost (rounding level reached).
        used, best = 0, float("inf")
        while used < max_iters:
            opt = torch.optim.LBFGS([U], lr=1.0, max_iter=min(200, max_iters - used),
                                    tolerance_grad=tol * h, tolerance_change=1e-15,
                                    history_size=50, line_search_fn="strong_wolfe")

            def closure() -> Tensor:
                U.grad = None
                loss = problem.objective(U, x0).sum()
                loss.backward()
                return loss

            opt.step(closure)
            used += max(1, int(opt.state[opt._params[0]]["n_iter"]))
            cost, res = _residual(problem, x0, U)
            total = float(cost.sum())
            if float(res.max()) <= tol or total >= best - 1e-12 * abs(best):
                break
            best = total
        return U.detach(), used
    opt = torch.optim.Adam([U], lr=lr)
    for it in range(1, max_iters + 1):
        opt.zero_grad()
        problem.objective(U, x0).sum().backward()
        if float(U.grad.abs().max()) / h <= tol:
            return U.detach(), it
        opt.step()
    return U.detach(), max_iters


def open_loop_optimum(problem: ControlProblem, x0: Tensor, *, init: Start | Sequence[Start] | None
                      = None, method: str = "lbfgs", tol: float = 1e-5, max_iters: int = 2000,
                      lr: float = 1e-2) -> OpenLoopResult:
    """Minimise ``problem.objective(U, x0)`` over control sequences U, per initial state.

    ``init``: None (zeros), a sequence ``(B, nt, m)``, a feedback policy ``(t, z) -> u`` whose
    rollout supplies the start, or a list of these (each is optimised; the best is kept per
    state). ``method``: ``"lbfgs"`` (strong-Wolfe L-BFGS, the default) or ``"adam"`` (``lr``).
    ``tol`` bounds the stationarity residual (see the module docstring); ``max_iters`` is per
    start.
    """
    require(isinstance(problem, ControlProblem), "problem", "a ControlProblem",
            type(problem).__name__)
    problem.check_batch(x0, "x0", problem.state_dim)
    require(method in ("lbfgs", "adam"), "method", "'lbfgs' or 'adam'", method)
    tol = positive_float(tol, "tol")
    max_iters = positive_int(max_iters, "max_iters")
    lr = positive_float(lr, "lr")
    ref = copy.deepcopy(problem).to(torch.float64)
    x = x0.detach().to(torch.float64)
    starts = list(init) if isinstance(init, (list, tuple)) else [init]
    require(len(starts) >= 1, "init", "at least one start", init)
    best_U = best_cost = best_res = None
    iterations = 0
    for start in starts:
        U0 = _initial_sequence(problem, x0, start).to(torch.float64)
        U, its = _optimise(ref, x, U0, method, tol, max_iters, lr)
        iterations = max(iterations, its)
        cost, res = _residual(ref, x, U)
        if best_U is None:
            best_U, best_cost, best_res = U, cost, res
            continue
        better = cost < best_cost
        best_U = torch.where(better[:, None, None], U, best_U)
        best_cost = torch.where(better, cost, best_cost)
        best_res = torch.where(better, res, best_res)
    require(bool(torch.isfinite(best_cost).all()), "problem",
            "a finite objective along the optimised sequences", best_cost.tolist())
    return OpenLoopResult(best_U, best_cost, best_res, iterations,
                          bool(best_res.max() <= tol), tol)
