"""ConsumptionSavings: m consumption streams with habit formation drawing on one wealth account.

State layout (B, 1 + m) — *not* agent-major blocks: ``z[:, 0]`` is the wealth x and
``z[:, 1:]`` the habit levels h_1..h_m (helpers ``wealth(z)``, ``habits(z)``). Control
(B, m): consumption u_i of good i, feasible when u_i > h_i. Agent i of the multi-agent views
is consumption stream i. Dynamics and costs (``shared/problems.md``, utility as a cost):

    ẋ = r x − Σ_i u_i,      ḣ_i = A_i u_i^η − B_i h_i^θ
    L = −e^{−δt} Σ_i U(u_i − h_i),      G = −ε e^{−δT} U(x(T)),      U(y) = y^{1−γ}/(1−γ)

A and B are diagonal (a scalar or one entry per good; A = B = 0 removes habits).

Feasibility. U is only defined for y > 0 and y^η, h^θ only for y ≥ 0, yet a rollout under a
bad control must get a large, finite, differentiable cost, never NaN. Below an absolute
threshold κ (``kappa``, default 1e-4):

* U is replaced by its second-order Taylor polynomial at κ (so costs are C²). This continuation
  *is* the penalty: it stays concave and increasing, its slope below κ (≥ κ^{−γ}) exceeds U'
  anywhere above κ, and its curvature γκ^{−γ−1} (5·10⁵ at the defaults) makes the cost grow
  quadratically with the violation. So a unit of x(T) below κ costs more than a unit of
  wealth is worth anywhere feasible, and recovering from negative wealth mid-horizon needs
  negative consumption (ẋ = r x − Σu), i.e. margins u − h < −h, deep in the continuation.
  Tests check that overspending never pays, also against an open-loop Adam search that a
  plain clamp lets go broke.
* the powers y^η, h^θ of the dynamics continue linearly (C¹) below κ, so f stays globally
  Lipschitz there and Euler steps stay stable; at y = 0 the continuation is κ^a(1 − a) ≥ 0,
  so habits are pushed back up rather than run away negative.

Inner problem. H separates into one 1-D problem per good in the margin s = u − h:
φ'(s) = −e^{−δt} U'(s) − p_x + p_{h} A η (s + h)^{η−1}. With A ≥ 0 and η ≤ 1 this has
exactly one root when φ'(∞) = −p_x (+ p_h A if η = 1) is positive; ``optimal_control`` brackets
it and runs a safeguarded Newton iteration (Newton in log s on the log of the balance
e^{−δt}s^{−γ} = −p_x + p_h A η u^{η−1}, exact in one step without habits; bisection when a step
leaves the bracket). When φ'(∞) ≤ 0, H is unbounded below in u (consuming is free or pays):
there is no minimiser and we do not pretend — consumption is set to the cap
``max_consumption`` and the sample's residual is reported as ``inf`` (not converged). Closed forms for A = B = 0 and h = 0 (Merton's
problem): ``merton_control``, ``merton_value``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from jfbgym.validation import agent_count, finite_float, positive_float, positive_int, require

from .base import (
    DEFAULT_NEWTON,
    ControlProblem,
    InnerSolution,
    NewtonOptions,
    Time,
    draw_time_series,
)
from .feedback import FeedbackLaw

MAX_GROWTH = 30.0  # |r|·T and |δ|·T at most this: e^{30} growth stays finite in float32
MAX_LEVEL = 1e9  # largest initial wealth or habit magnitude, bequest weight, A or B
MAX_EXPONENT = 10.0  # largest γ and θ: h^θ and κ^(−γ) stay finite in float32
MAX_CURVATURE = 1e30  # largest utility curvature at the feasibility threshold
CURVATURE_FLOOR = 1e-12  # smallest |∂²H/∂u_i²| the PD-modified Hessian solve uses
INITIAL_MARGIN = 1e-2  # initial_control = h + this


def utility(y: Tensor, gamma: float, kappa: float) -> tuple[Tensor, Tensor, Tensor]:
    """(U, U', U'') of U(y) = y^{1−γ}/(1−γ), continued below κ by its Taylor polynomial
    U(κ) + U'(κ)(y − κ) + ½U''(κ)(y − κ)² (C², finite for every y)."""
    ys = y.clamp_min(kappa)  # keeps the untaken branch finite for autograd
    d = (y - kappa).clamp_max(0.0)
    k0 = kappa ** (1.0 - gamma) / (1.0 - gamma)
    k1 = kappa ** (-gamma)
    k2 = -gamma * kappa ** (-gamma - 1.0)
    above = y >= kappa
    value = torch.where(above, ys ** (1.0 - gamma) / (1.0 - gamma), k0 + k1 * d + 0.5 * k2 * d * d)
    first = torch.where(above, ys ** (-gamma), k1 + k2 * d)
    second = torch.where(above, -gamma * ys ** (-gamma - 1.0), torch.full_like(y, k2))
    return value, first, second


def power(y: Tensor, a: float, kappa: float) -> tuple[Tensor, Tensor, Tensor]:
    """(P, P', P'') of P(y) = y^a, continued linearly below κ (C¹, finite for every y)."""
    ys = y.clamp_min(kappa)
    above = y >= kappa
    value = torch.where(above, ys ** a, kappa ** a + a * kappa ** (a - 1.0) * (y - kappa))
    first = torch.where(above, a * ys ** (a - 1.0), torch.full_like(y, a * kappa ** (a - 1.0)))
    second = torch.where(above, a * (a - 1.0) * ys ** (a - 2.0), torch.zeros_like(y))
    return value, first, second


def _diagonal(value: object, m: int, name: str) -> list[float]:
    """A scalar or m entries, each finite and >= 0, as a list of m floats."""
    if isinstance(value, Tensor):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        require(len(value) == m, name, f"a number or a sequence of {m} numbers >= 0", value)
        return [finite_float(v, name, 0.0, maximum=MAX_LEVEL) for v in value]
    return [finite_float(value, name, 0.0, maximum=MAX_LEVEL)] * m


class ConsumptionSavings(ControlProblem):
    """m goods with habit formation and one shared wealth account (see the module docstring).

    Arguments: ``n_agents`` (m goods), ``A``, ``B`` (>= 0, scalar or m entries), ``eta`` (in
    (0, 1], so each good's inner problem has one minimiser), ``theta`` (> 0), ``r``, ``delta``,
    ``gamma`` (> 0, != 1), ``epsilon`` (> 0: without a bequest, overspending at the end would
    be free), ``kappa`` (feasibility threshold), ``max_consumption`` (returned only where H
    has no minimiser; a true minimiser is returned however large; also the top of the env's
    action box, so it must exceed what the optimal policy consumes: with r = 3 wealth grows
    e⁶-fold over T = 2 and the optimum from the default ρ consumes up to 2.6·10³ per good at
    the end, hence 10⁴), ``init_wealth`` +
    ``init_wealth_spread``·U(0, 1), ``init_habit`` + ``init_habit_spread``·U(0, 1) per good,
    ``horizon``, ``n_steps``, ``dtype``, ``device``.
    """

    name = "ConsumptionSavings"
    multi_agent = True

    def __init__(self, n_agents: int = 100, A: float | Sequence[float] = 1.0,
                 B: float | Sequence[float] = 1.0, eta: float = 0.9, theta: float = 0.9,
                 r: float = 3.0, delta: float = 0.1, gamma: float = 0.5, epsilon: float = 0.1,
                 kappa: float = 1e-4, max_consumption: float = 1e4, init_wealth: float = 25.0,
                 init_wealth_spread: float = 0.1, init_habit: float = 0.01,
                 init_habit_spread: float = 0.1, horizon: float = 2.0, n_steps: int = 100,
                 dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> None:
        m = agent_count(n_agents, "n_agents", 3)
        self._A, self._B = _diagonal(A, m, "A"), _diagonal(B, m, "B")
        self.eta = positive_float(eta, "eta")
        require(self.eta <= 1.0, "eta", "a number in (0, 1]", eta)
        self.theta = finite_float(theta, "theta", 0.0, strict=True, maximum=MAX_EXPONENT)
        span = positive_float(horizon, "horizon")
        self.r, self.delta = finite_float(r, "r"), finite_float(delta, "delta")
        for name, rate in (("r", self.r), ("delta", self.delta)):
            require(abs(rate) * span <= MAX_GROWTH, name,
                    f"|{name}|·horizon <= {MAX_GROWTH:g} (growth e^(rate·T) must stay finite "
                    f"in float32; horizon = {span:g})", rate)
        self.gamma = finite_float(gamma, "gamma", 0.0, strict=True, maximum=MAX_EXPONENT)
        require(self.gamma != 1.0, "gamma", "a number > 0 other than 1 (log utility)", gamma)
        self.epsilon = finite_float(epsilon, "epsilon", 0.0, strict=True, maximum=MAX_LEVEL)
        self.kappa = finite_float(kappa, "kappa", 0.0, strict=True, maximum=1.0)
        # U's continuation below κ has curvature γκ^(−γ−1): it must stay finite in float32
        curvature = math.log(self.gamma) - (self.gamma + 1.0) * math.log(self.kappa)
        require(curvature <= math.log(MAX_CURVATURE), "kappa",
                f"a threshold whose utility curvature γκ^(−γ−1) stays below {MAX_CURVATURE:g} "
                f"(with gamma = {self.gamma:g})", kappa)
        self.max_consumption = finite_float(max_consumption, "max_consumption", 1e-3,
                                            maximum=MAX_LEVEL)
        self.init_wealth = finite_float(init_wealth, "init_wealth", -MAX_LEVEL,
                                        maximum=MAX_LEVEL)
        self.init_wealth_spread = finite_float(init_wealth_spread, "init_wealth_spread", 0.0,
                                               maximum=MAX_LEVEL)
        self.init_habit = finite_float(init_habit, "init_habit", -MAX_LEVEL, maximum=MAX_LEVEL)
        self.init_habit_spread = finite_float(init_habit_spread, "init_habit_spread", 0.0,
                                              maximum=MAX_LEVEL)
        super().__init__(state_dim=1 + m, control_dim=m, n_agents=m, horizon=horizon,
                         n_steps=n_steps, dtype=dtype, device=device)
        for name, diag in (("A", self._A), ("B", self._B)):
            self.register_buffer(name, torch.tensor(diag, dtype=torch.float64).to(
                dtype=dtype, device=self._device))

    def config(self) -> dict:
        def compact(diag: list[float]) -> float | list[float]:
            return diag[0] if len(set(diag)) == 1 else list(diag)

        return {"n_agents": self.n_agents, "A": compact(self._A), "B": compact(self._B),
                "eta": self.eta, "theta": self.theta, "r": self.r, "delta": self.delta,
                "gamma": self.gamma, "epsilon": self.epsilon, "kappa": self.kappa,
                "max_consumption": self.max_consumption, "init_wealth": self.init_wealth,
                "init_wealth_spread": self.init_wealth_spread, "init_habit": self.init_habit,
                "init_habit_spread": self.init_habit_spread, "horizon": self.horizon,
                "n_steps": self.n_steps}

    # ------------------------------------------------------------------ layout
    def wealth(self, z: Tensor) -> Tensor:
        """Wealth x, shape (B,)."""
        self.check_inputs(z)
        return z[:, 0]

    def habits(self, z: Tensor) -> Tensor:
        """Habit levels h, shape (B, m)."""
        self.check_inputs(z)
        return z[:, 1:]

    # ----------------------------------------------------- hooks for the adapters
    def agent_observation(self, t: Time, z: Tensor, neighbours: int) -> Tensor:
        """Stream i observes the shared wealth, its own habit, the mean habit, and t."""
        self.check_inputs(z)
        m, wealth, habits = self.n_agents, z[:, :1], z[:, 1:]
        cols = [wealth.expand(-1, m), habits, habits.mean(-1, keepdim=True).expand(-1, m),
                self.time_column(t, z).expand(-1, m)]
        return torch.stack(cols, dim=-1)

    def heuristic(self) -> FixedConsumptionRate:
        return FixedConsumptionRate(self)

    def draw(self, fig: Any, states: np.ndarray, controls: np.ndarray | None,
             times: np.ndarray) -> None:
        """Wealth, consumption and habits against time."""
        panels = [("wealth", times, states[:, :1]), ("habits", times, states[:, 1:])]
        if controls is not None:
            panels.insert(1, ("consumption", times[:len(controls)], controls))
        draw_time_series(fig, panels, self.horizon,
                         f"ConsumptionSavings m={self.control_dim}, t={times[-1]:.2f}")

    def control_from_margin(self, z: Tensor, raw: Tensor, beta: float = 5.0) -> Tensor:
        """u = h + softplus_β(raw): the feasible parameterisation of the reference (β = 5)."""
        self.check_inputs(z, raw)
        return z[:, 1:] + torch.nn.functional.softplus(raw, beta=positive_float(beta, "beta"))

    def _discount(self, t: Time, z: Tensor) -> Tensor:
        """e^{−δt}, shape (B, 1)."""
        return torch.exp(-self.delta * self.time_column(t, z))

    def _terminal_weight(self) -> float:
        return self.epsilon * math.exp(-self.delta * self.horizon)

    # ---------------------------------------------------------------- the maths
    def dynamics(self, t: Time, z: Tensor, u: Tensor) -> Tensor:
        self.check_inputs(z, u)
        x, h = z[:, :1], z[:, 1:]
        habit_rate = self.A * power(u, self.eta, self.kappa)[0] \
            - self.B * power(h, self.theta, self.kappa)[0]
        return torch.cat([self.r * x - u.sum(-1, keepdim=True), habit_rate], dim=-1)

    def running_cost(self, t: Time, z: Tensor, u: Tensor) -> Tensor:
        self.check_inputs(z, u)
        U = utility(u - z[:, 1:], self.gamma, self.kappa)[0]
        return -(self._discount(t, z) * U).sum(-1)

    def terminal_cost(self, z: Tensor) -> Tensor:
        self.check_inputs(z)
        return -self._terminal_weight() * utility(z[:, 0], self.gamma, self.kappa)[0]

    def grad_terminal_cost(self, z: Tensor) -> Tensor:
        self.check_inputs(z)
        dx = -self._terminal_weight() * utility(z[:, :1], self.gamma, self.kappa)[1]
        return torch.cat([dx, torch.zeros_like(z[:, 1:])], dim=-1)

    def grad_u_hamiltonian(self, t: Time, z: Tensor, p: Tensor, u: Tensor) -> Tensor:
        """−e^{−δt} U'(u − h) − p_x + p_h A η u^{η−1} (per good)."""
        self.check_inputs(z, u, p)
        dU = utility(u - z[:, 1:], self.gamma, self.kappa)[1]
        dP = power(u, self.eta, self.kappa)[1]
        return -self._discount(t, z) * dU - p[:, :1] + p[:, 1:] * self.A * dP

    def grad_z_hamiltonian(self, t: Time, z: Tensor, p: Tensor, u: Tensor) -> Tensor:
        """(r p_x, e^{−δt} U'(u − h) − p_h B θ h^{θ−1})."""
        self.check_inputs(z, u, p)
        h = z[:, 1:]
        dU = utility(u - h, self.gamma, self.kappa)[1]
        dP = power(h, self.theta, self.kappa)[1]
        d_h = self._discount(t, z) * dU - p[:, 1:] * self.B * dP
        return torch.cat([self.r * p[:, :1], d_h], dim=-1)

    def _hessian_diagonal(self, t: Time, z: Tensor, p: Tensor, u: Tensor) -> Tensor:
        """∂²H/∂u_i² = −e^{−δt} U''(u_i − h_i) + p_{h_i} A_i P_η''(u_i) (H_uu is diagonal)."""
        d2U = utility(u - z[:, 1:], self.gamma, self.kappa)[2]
        d2P = power(u, self.eta, self.kappa)[2]
        return -self._discount(t, z) * d2U + p[:, 1:] * self.A * d2P

    def hessian_u_matvec(self, t: Time, z: Tensor, p: Tensor, u: Tensor, v: Tensor) -> Tensor:
        self.check_inputs(z, u, p)
        self.check_batch(v, "v", self.control_dim)
        return self._hessian_diagonal(t, z, p, u) * v

    def hessian_u_max_eigenvalue(self, t: Time, z: Tensor, p: Tensor, u: Tensor) -> Tensor:
        """H_uu is diagonal: its largest magnitude."""
        return self._hessian_diagonal(t, z, p, u).abs().amax(-1, keepdim=True)

    def hessian_u_solve(self, t: Time, z: Tensor, p: Tensor, u: Tensor, v: Tensor,
                        damping: float = 0.0) -> Tensor:
        """Divide by max(|∂²H/∂u_i²|, 1e-12) + damping: the true inverse where H is convex in
        u_i (always near the minimiser); where habits make it concave (p_h A > 0, large u),
        |·| keeps Newton directions descending."""
        self.check_inputs(z, u, p)
        self.check_batch(v, "v", self.control_dim)
        require(isinstance(damping, (int, float)) and math.isfinite(damping) and damping >= 0,
                "damping", "a finite number >= 0", damping)
        diag = self._hessian_diagonal(t, z, p, u).abs().clamp_min(CURVATURE_FLOOR)
        return v / (diag + damping)

    def _solve_margins(self, t: Time, z: Tensor, p: Tensor, start: Tensor | None,
                       max_iters: int) -> tuple[Tensor, Tensor, int]:
        """Per good, the root s of φ'(s) = ∂H/∂u at u = h + s (see the module docstring),
        from ``start`` (a margin guess) or, without one, Merton's root (exact when A = 0).

        Returns (s, capped, iterations); ``capped`` marks goods without a minimiser (or one past
        the dtype's range), whose s is max_consumption − h.
        """
        h, px = z[:, 1:], p[:, :1]
        disc = self._discount(t, z)
        coef = p[:, 1:] * self.A
        kappa, gamma, eta = self.kappa, self.gamma, self.eta
        tiny, eps = torch.finfo(z.dtype).tiny, torch.finfo(z.dtype).eps
        huge = torch.finfo(z.dtype).max / 8

        def derivatives(s: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
            """(φ', φ'', the magnitude of φ'’s terms, the habit term p_h A P_η'(u))."""
            _, U1, U2 = utility(s, gamma, kappa)
            _, P1, P2 = power(s + h, eta, kappa)
            own, habit = disc * U1, coef * P1
            return habit - own - px, coef * P2 - disc * U2, own.abs() + px.abs() + habit.abs(), \
                habit

        slope_at_infinity = -px + (coef if eta == 1.0 else torch.zeros_like(coef))
        bounded = slope_at_infinity > 0
        s_cap = (self.max_consumption - h).clamp_min(kappa)
        if start is None:
            start = (disc / slope_at_infinity.clamp_min(tiny)) ** (1.0 / gamma)
        s = torch.where(bounded, start.clamp(kappa, huge), s_cap)
        lo, hi = s.clone(), s.clone()
        for _ in range(400):  # φ' → −∞ as s → −∞ (the continuation of U), so this ends
            grow = bounded & (derivatives(lo)[0] > 0)
            if not bool(grow.any()):
                break
            lo = torch.where(grow, lo - 0.75 * lo.abs() - kappa, lo)
        for _ in range(400):  # φ'(∞) > 0 where bounded; only overflow stops it short
            grow = bounded & (derivatives(hi)[0] < 0) & (hi < huge)
            if not bool(grow.any()):
                break
            hi = torch.where(grow, 4.0 * hi + kappa, hi)
        capped = ~bounded | ~(derivatives(hi)[0] >= 0)
        log_disc = torch.log(disc)
        it = 0
        for it in range(1, max_iters + 1):
            g, curv, terms, habit = derivatives(s)
            lo = torch.where(g < 0, s, lo)
            hi = torch.where(g > 0, s, hi)
            # Above κ, φ' = 0 reads G(y) = γy + log c(e^y) − log e^{−δt} = 0 in y = log s, with
            # c(s) = −p_x + p_h A η (s + h)^{η−1}: linear in y when A = 0, nearly so otherwise,
            # so Newton on G takes few steps. Elsewhere, plain Newton on φ'.
            c = habit - px
            cp = c.clamp_min(tiny)
            sp = s.clamp_min(kappa)
            G = gamma * torch.log(sp) + torch.log(cp) - log_disc
            dG = gamma + sp * (eta - 1.0) * habit / ((s + h).clamp_min(kappa) * cp)
            smooth = (s >= kappa) & (s + h >= kappa) & (c > 0) & (dG > 0)
            log_newton = sp * torch.exp(-G / torch.where(smooth, dG, torch.ones_like(dG)))
            newton = s - g / torch.where(curv > 0, curv, torch.ones_like(curv))
            cand = torch.where(smooth, log_newton, newton)
            valid = smooth | (curv > 0)
            # converged: φ' is zero to the rounding of its terms, or the step is below rounding
            done = (g.abs() <= 8 * eps * terms) \
                | (valid & ((cand - s).abs() <= 2 * eps * s.abs().clamp_min(kappa)))
            inside = valid & (cand > lo) & (cand < hi)
            mid = torch.where(lo > 0, torch.sqrt(lo * hi), 0.5 * (lo + hi))
            s_new = torch.where(inside, cand, mid)
            active = ~capped & ~done & (s_new != s)
            s = torch.where(active, s_new, s)
            if not bool(active.any()):
                break
        return torch.where(capped, s_cap, s), capped, it

    def optimal_control(self, t: Time, z: Tensor, p: Tensor, u0: Tensor | None = None,
                        options: NewtonOptions = DEFAULT_NEWTON) -> InnerSolution:
        """Per-good safeguarded Newton on ∂H/∂u_i = 0 in the margin u_i − h_i, warm-started
        from ``u0`` when given (else from Merton's root); goods without a minimiser get
        ``max_consumption`` and make their sample's residual ``inf``. The residual is relative
        to 1 + ‖∇_u H(u0)‖ (u0 = ``initial_control`` by default)."""
        self.check_inputs(z, u0, p)
        with torch.no_grad():
            z, p = z.detach(), p.detach()
            guess = None if u0 is None else u0.detach() - z[:, 1:]
            s, capped, it = self._solve_margins(t, z, p, guess, options.max_iters)
            sol = self.certify(t, z, p, z[:, 1:] + s, u0, options, it)
        if not bool(capped.any()):
            return sol
        res = torch.where(capped.any(-1), torch.full_like(sol.residual, math.inf), sol.residual)
        return sol._replace(residual=res, converged=False)

    def action_box(self) -> tuple[Tensor, Tensor]:
        """Consumption in [0, ``max_consumption``], the cap the inner solve uses where H is
        unbounded below; consuming below the habit is allowed and penalised by the continuation."""
        high = torch.full((self.control_dim,), self.max_consumption, dtype=self.dtype,
                          device=self.device)
        return torch.zeros_like(high), high

    def initial_control(self, t: Time, z: Tensor) -> Tensor:
        """u = h + 0.01: feasible whatever the state."""
        return z[:, 1:] + INITIAL_MARGIN

    def sample_initial_states(self, batch: int, generator: torch.Generator | None = None
                              ) -> Tensor:
        """x₀ = init_wealth + init_wealth_spread·U(0, 1), h₀ = init_habit +
        init_habit_spread·U(0, 1) per good (one (B, 1 + m) uniform draw in float64 on the
        CPU, then cast)."""
        batch = positive_int(batch, "batch")
        draw = torch.rand(batch, self.state_dim, generator=generator, dtype=torch.float64)
        z = torch.cat([self.init_wealth + self.init_wealth_spread * draw[:, :1],
                       self.init_habit + self.init_habit_spread * draw[:, 1:]], dim=-1)
        return z.to(dtype=self.dtype, device=self.device)

    # ----------------------------------------------------- Merton closed form (A = B = 0)
    def _require_no_habits(self) -> None:
        require(not any(self._A), "A", "A = 0 for Merton's closed form", self._A[0])
        require(not any(self._B), "B", "B = 0 for Merton's closed form", self._B[0])

    def merton_scale(self, t: Time) -> Tensor:
        """g(t) with u_i* = x / g(t) and V = −e^{−δt} g^γ U(x): the solution of
        g' = ρ g − m, g(T) = ε^{1/γ}, ρ = (δ − (1 − γ) r)/γ, i.e.
        g = ε^{1/γ} e^{ρ(t−T)} − m (e^{ρ(t−T)} − 1)/ρ (→ ε^{1/γ} + m (T − t) as ρ → 0)."""
        self._require_no_habits()
        return self._scale(torch.as_tensor(t, dtype=torch.float64))

    def _scale(self, t: Tensor) -> Tensor:
        """Merton's g(t) (see ``merton_scale``), with no check on A and B."""
        rho = (self.delta - (1.0 - self.gamma) * self.r) / self.gamma
        tau = t - self.horizon
        growth = torch.expm1(rho * tau) / rho if rho != 0.0 else tau
        return self.epsilon ** (1.0 / self.gamma) * torch.exp(rho * tau) - self.n_agents * growth

    def value_prior(self, t: Time, z: Tensor) -> tuple[Tensor, Tensor]:
        """Merton's value at the wealth net of the present value of consuming today's habits
        until T: V₀ = −e^{−δt} g(t)^γ U(x − a(t) Σ_i h_i), a(t) = (1 − e^{−r(T−t)})/r, and ∇V₀.

        Exact when A = B = 0 and h = 0. Its costate p_x = −e^{−δt} g^γ U'(·) < 0 has the right
        scale, so the inner problem has a minimiser from the first training iteration; and
        p_h = −a p_x > 0 prices habits as committed spending. U's C² continuation below κ keeps
        V₀ finite (and p_x < 0) when net wealth is not positive.
        """
        self.check_inputs(z)
        tc = self.time_column(t, z)
        remaining = self.horizon - tc
        annuity = -torch.expm1(-self.r * remaining) / self.r if self.r != 0.0 else remaining
        net = z[:, :1] - annuity * z[:, 1:].sum(-1, keepdim=True)
        U, dU, _ = utility(net, self.gamma, self.kappa)
        weight = torch.exp(-self.delta * tc) * self._scale(tc) ** self.gamma
        dx = -weight * dU
        return (-weight * U).squeeze(-1), torch.cat([dx, (-annuity * dx).expand_as(z[:, 1:])],
                                                    dim=-1)

    def merton_control(self, t: Time, z: Tensor) -> Tensor:
        """Merton's feedback u_i = x / g(t) for every good (optimal when A = B = 0, h = 0)."""
        self.check_inputs(z)
        g = self.merton_scale(t).to(dtype=z.dtype, device=z.device).reshape(-1, 1)
        return (z[:, :1] / g).expand(-1, self.control_dim)

    def merton_value(self, t: Time, x: Tensor) -> Tensor:
        """Optimal cost-to-go V(t, x) = −e^{−δt} g(t)^γ x^{1−γ}/(1−γ) (A = B = 0, h = 0),
        the continuous-time limit of ``objective`` under the optimal feedback."""
        g = self.merton_scale(t).to(dtype=x.dtype, device=x.device)
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        return -torch.exp(-self.delta * t) * g ** self.gamma * x ** (1.0 - self.gamma) \
            / (1.0 - self.gamma)


class FixedConsumptionRate(FeedbackLaw):
    """Consume a fixed fraction ``rate`` of wealth per unit time, split evenly over the goods,
    on top of each good's habit level: u_i = h_i + rate·max(x, 0)/m."""

    label = "heuristic (fixed consumption rate)"

    def __init__(self, problem: ConsumptionSavings, rate: float = 1.0) -> None:
        super().__init__(problem)
        self.rate = positive_float(rate, "rate")

    def __call__(self, t: Tensor | float, z: Tensor) -> Tensor:
        wealth, habits = z[:, :1], z[:, 1:]
        return habits + self.rate * wealth.clamp_min(0.0) / habits.shape[1]
