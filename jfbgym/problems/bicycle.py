"""MultiBicycle: N kinematic bicycles driving to a target; tan(steering) makes H implicit.

Per agent the state is (x, y, ψ heading, v speed) and the control is (δ steering, a
acceleration); the joint state (B, 4N) and control (B, 2N) are agent-major. Dynamics
(``shared/problems.md``), with the steering clamped to |δ| ≤ δ_max = π/2 − 0.25 as in the
reference:

    ẋ = v cos ψ,   ẏ = v sin ψ,   ψ̇ = (v / l) tan(clip δ),   v̇ = a,        l = 0.05

Costs: L = ½‖u‖² + α_int W(x, y) (W the planar pairwise Gaussian of ``interaction.py``; the
control cost is on the *unclipped* u, so controls outside the box only cost more), and
G = α_G · ½ Σ_i ‖(x_i, y_i)(T) − target_i‖².

Inner problem. H separates into one 1-D problem per agent and control entry:
a* = −p_v, and with c = p_ψ v / l the steering minimises φ(δ) = ½δ² + c tan δ on
[−δ_max, δ_max]. φ is not convex (φ'' = 1 + 2c tan δ sec²δ), and may have an interior local
minimum *and* a better one at the box end, so a local Newton solve is not enough.
``optimal_control`` returns the global minimiser (see ``steering_minimiser``); the Hessian
solve, for Newton methods elsewhere, uses the positive-definite modification
max(|φ''|, 1e-3) so that Newton directions descend.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from jfbgym.validation import (
    SCALE,
    SPREAD,
    agent_count,
    coordinate,
    finite_float,
    optional,
    positive_int,
    require,
    scale,
    spread,
    weight,
)

from .base import DEFAULT_NEWTON, ControlProblem, InnerSolution, NewtonOptions, Time
from .feedback import FeedbackLaw
from .interaction import interaction, interaction_grad, kernel_bytes
from .quadswarm import equal_limits

AGENT_STATE, AGENT_CONTROL = 4, 2
CURVATURE_FLOOR = 1e-3  # smallest |φ''| the PD-modified Hessian solve uses


def steering_minimiser(c: Tensor, max_steering: float, max_iters: int = 100
                       ) -> tuple[Tensor, int]:
    """Global minimiser of φ(δ) = ½δ² + c tan δ on [−δ_max, δ_max], element-wise in ``c``,
    and the number of Newton iterations taken.

    Why it is global: φ is odd-symmetric in (c, δ), so take c ≥ 0 and write δ = −w,
    ψ(w) = φ(−w) = ½w² − c tan w on [0, δ_max] (for δ > 0, φ' > 0, so no minimiser there).
    ψ'' = 1 − 2c tan w sec²w decreases in w, so ψ' is increasing on [0, w_m] and decreasing
    on [w_m, δ_max], where w_m is the inflection point (tan w_m is the real root of
    τ³ + τ = 1/(2c), Cardano's formula) or δ_max if there is none. Since ψ'(0) = −c ≤ 0:

    * if ψ'(w_m) < 0, ψ' < 0 throughout and the minimiser is the box end δ_max;
    * otherwise ψ' has exactly one root w* in [0, w_m], the only interior local minimum, and
      Newton from w = 0 reaches it monotonically (ψ' is concave and increasing there, so the
      iterates never overshoot); the box end is the only other candidate, and the smaller of
      ψ(w*) and ψ(δ_max) wins.
    """
    limit = max_steering
    sign = torch.where(c < 0, 1.0, -1.0).to(c.dtype)  # δ = sign · w
    k = c.abs()
    tan_l = math.tan(limit)
    sec2_l = 1.0 / math.cos(limit) ** 2
    inflects = 2.0 * k * tan_l * sec2_l > 1.0  # ψ''(δ_max) < 0: an inflection inside the box
    q = 1.0 / (4.0 * torch.where(inflects, k, torch.ones_like(k)))  # τ³ + τ = 2q
    a = torch.pow(q + torch.sqrt(q * q + 1.0 / 27.0), 1.0 / 3.0)
    tau = 2.0 * q / (a * a + 1.0 / 3.0 + 1.0 / (9.0 * a * a))  # Cardano without cancellation
    w_m = torch.where(inflects, torch.atan(tau).clamp(max=limit), torch.full_like(k, limit))

    def dpsi(w: Tensor) -> Tensor:
        return w - k / torch.cos(w) ** 2

    def psi(v: Tensor) -> Tensor:
        return 0.5 * v * v - k * torch.tan(v)

    end = torch.full_like(k, limit)
    psi_end = psi(end)
    active = dpsi(w_m) >= 0  # an interior minimum exists
    w = torch.zeros_like(k)
    eps = torch.finfo(c.dtype).eps
    it = 0
    for it in range(1, max_iters + 1):
        g = dpsi(w)
        # ψ' ∈ [ψ'(w), 0] on [w, w*], so ψ(w*) ≥ ψ(w) + ψ'(w)(w_m − w): once that exceeds
        # ψ(δ_max) the interior basin cannot win and its (possibly slow, near a double root)
        # Newton iteration stops.
        active = active & (psi(w) + g * (w_m - w) <= psi_end)
        curv = (1.0 - 2.0 * k * torch.tan(w) / torch.cos(w) ** 2).clamp_min(eps)
        w_new = torch.where(active, torch.minimum(w - g / curv, w_m), w)
        moved = (w_new - w).abs() > 4 * eps * (1.0 + w.abs())
        w = w_new
        if not bool(moved.any()):
            break
    w = torch.where(active & (psi(w) <= psi_end), w, end)
    return sign * w, it


class MultiBicycle(ControlProblem):
    """N kinematic bicycles steering to a target (``shared/problems.md``), agent-major layout.

    Arguments: ``n_agents`` (N), ``wheelbase`` (l), ``max_steering`` (δ_max, in (0, π/2)),
    ``alpha_int``, ``radius`` (r of W), ``interaction_cutoff`` (None: no cut-off),
    ``alpha_G``, ``target`` (a point (2,) shared by all agents, or one per agent (N, 2)),
    ``init_std`` (std of the initial x, y), ``init_heading``, ``init_speed`` (constants),
    ``horizon``, ``n_steps``, ``dtype``, ``device``.
    """

    name = "MultiBicycle"
    multi_agent = True

    def __init__(self, n_agents: int = 5, wheelbase: float = 0.05,
                 max_steering: float = math.pi / 2 - 0.25, alpha_int: float = 0.1,
                 radius: float = 1.0, interaction_cutoff: float | None = None,
                 alpha_G: float = 500.0,
                 target: Sequence[float] | Sequence[Sequence[float]] = (1.0, 1.0),
                 init_std: float = 0.1, init_heading: float = 0.1, init_speed: float = 0.1,
                 horizon: float = 4.0, n_steps: int = 60, dtype: torch.dtype = torch.float32,
                 device: str | torch.device = "cpu") -> None:
        n = agent_count(n_agents, "n_agents", AGENT_STATE + AGENT_CONTROL)
        self.wheelbase = scale(wheelbase, "wheelbase")
        self.max_steering = finite_float(max_steering, "max_steering", SCALE[0])
        require(self.max_steering < math.pi / 2, "max_steering", "a number in (0, π/2)",
                max_steering)
        self.alpha_int = weight(alpha_int, "alpha_int")
        self.radius = scale(radius, "radius")
        self.interaction_cutoff = optional(scale, interaction_cutoff, "interaction_cutoff")
        self.alpha_G = weight(alpha_G, "alpha_G")
        if isinstance(target, Tensor):
            target = target.tolist()
        expected = f"a point (2,) or one point per agent ({n}, 2)"
        require(isinstance(target, (list, tuple)), "target", expected, target)
        if len(target) == 2 and not any(isinstance(v, (list, tuple)) for v in target):
            self.target: list = [coordinate(v, "target") for v in target]
            goal = [self.target] * n
        else:
            require(len(target) == n and all(isinstance(row, (list, tuple)) and len(row) == 2
                                             for row in target), "target", expected, target)
            self.target = [[coordinate(v, "target") for v in row] for row in target]
            goal = self.target
        self.init_std = spread(init_std, "init_std")
        self.init_heading = coordinate(init_heading, "init_heading")
        self.init_speed = coordinate(init_speed, "init_speed", SPREAD)
        super().__init__(state_dim=AGENT_STATE * n, control_dim=AGENT_CONTROL * n, n_agents=n,
                         horizon=horizon, n_steps=n_steps, dtype=dtype, device=device)
        self.register_buffer("targets_xy", torch.tensor(goal, dtype=torch.float64).to(
            dtype=dtype, device=self._device))
        high = torch.tensor([self.max_steering, math.inf], dtype=dtype,
                            device=self._device).repeat(n)
        self.register_buffer("_control_high", high, persistent=False)

    def config(self) -> dict:
        return {"n_agents": self.n_agents, "wheelbase": self.wheelbase,
                "max_steering": self.max_steering, "alpha_int": self.alpha_int,
                "radius": self.radius, "interaction_cutoff": self.interaction_cutoff,
                "alpha_G": self.alpha_G, "target": self.target, "init_std": self.init_std,
                "init_heading": self.init_heading, "init_speed": self.init_speed,
                "horizon": self.horizon, "n_steps": self.n_steps}

    @property
    def control_bounds(self) -> tuple[Tensor, Tensor]:
        """(low, high), each (2N,): ±δ_max for steering, ±inf for acceleration."""
        return -self._control_high, self._control_high

    # ------------------------------------------------------------------ layout

    def action_box(self) -> tuple[Tensor, Tensor]:
        """Steering within δ_max (the dynamics' own box), acceleration in [−10, 10]: the optimal
        acceleration is O(0.1–1), a unit distance covered in T = 4."""
        low, high = self.control_bounds
        return low.clamp_min(-10.0), high.clamp_max(10.0)

    def action_scale(self) -> tuple[Tensor, Tensor]:
        """Centred at zero: the full steering range ±δ_max, acceleration ±1 (a = 1 held for
        T = 4 covers ½aT² = 8, nearly six times the distance to the target; measured, the
        shipped near-optimal agent's |a| stays below 0.3 on the held-out states)."""
        _, high = self.action_box()
        half = high.clone().view(self.n_agents, 2)
        half[:, 1] = 1.0
        return torch.zeros_like(high), half.reshape(-1)

    def positions(self, z: Tensor) -> Tensor:
        """Bicycle positions (B, N, 2)."""
        self.check_inputs(z)
        return self.agents(z)[..., :2]

    def target_positions(self) -> Tensor:
        """Each bicycle's target (N, 2)."""
        return self.targets_xy

    def step_bytes(self, batch: int) -> int:
        return super().step_bytes(batch) + (kernel_bytes(batch, self.n_agents)
                                            if self.alpha_int else 0)

    def pair_evaluations(self, batch: int) -> int:
        return batch * self.n_agents**2 if self.alpha_int else 0

    def agent_decomposition(self) -> tuple[MultiBicycle, float, Tensor]:
        """One bicycle with the same parameters and no interaction, w = 1: the costs are sums
        over bicycles. Offsets move each bicycle's target onto the first one."""
        first = self.targets_xy[0].tolist()
        single = MultiBicycle(n_agents=1, wheelbase=self.wheelbase,
                              max_steering=self.max_steering, alpha_int=0.0, radius=self.radius,
                              alpha_G=self.alpha_G, target=first, init_std=self.init_std,
                              init_heading=self.init_heading, init_speed=self.init_speed,
                              horizon=self.horizon, n_steps=self.n_steps, dtype=self.dtype,
                              device=self.device)
        offsets = torch.zeros(self.n_agents, AGENT_STATE, dtype=self.dtype, device=self.device)
        offsets[:, :2] = self.targets_xy - self.targets_xy[0]
        return single, 1.0, offsets

    def heuristic(self) -> SteerToTarget:
        return SteerToTarget(self)

    def draw(self, fig: Any, states: np.ndarray, controls: np.ndarray | None,
             times: np.ndarray) -> None:
        """Trails in the plane, headings as arrows, the targets as stars."""
        n = self.n_agents
        agents = states.reshape(len(states), n, -1)  # (T, N, 4): x, y, heading, speed
        goals = self.targets_xy.detach().cpu().double().numpy()
        ax = fig.add_subplot()
        for i in range(n):
            ax.plot(agents[:, i, 0], agents[:, i, 1], lw=0.8, alpha=0.6)
        now = agents[-1]
        ax.quiver(now[:, 0], now[:, 1], np.cos(now[:, 2]), np.sin(now[:, 2]), color="tab:blue",
                  angles="xy", scale_units="width", scale=15, width=0.006)
        ax.scatter(goals[:, 0], goals[:, 1], s=80, c="tab:red", marker="*", label="targets")
        lo, hi = equal_limits(np.concatenate([agents[..., :2].reshape(-1, 2), goals]))
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
        ax.set_aspect("equal")
        ax.set_xlabel("x")
        ax.set_ylabel("y")
        ax.legend(loc="upper left", fontsize=8)
        ax.set_title(f"MultiBicycle N={n}, t={times[-1]:.2f}")

    def raster(self, kit: Any, states: np.ndarray, controls: np.ndarray | None,
               times: np.ndarray, size: tuple[int, int]) -> Any:
        """Each bicycle in its own colour: trail, body along its heading, and its target."""
        n = self.n_agents
        agents = states.reshape(len(states), n, -1)  # (T, N, 4): x, y, heading, speed
        goals = self.targets_xy.detach().cpu().double().numpy()
        box = np.concatenate([agents[0, :, :2], goals])
        lo, hi = box.min(0), box.max(0)
        pad = np.maximum(0.15 * (hi - lo).max(), 0.5)
        canvas = kit.Canvas(size, kit.View(lo - pad, hi + pad, size))
        length = 0.5 * max(self.wheelbase, 0.06 * float((hi - lo).max()))
        now = agents[-1]
        shared = bool(np.allclose(goals, goals[0]))
        for i in range(n):
            rgb = kit.colour(i)
            canvas.cross(goals[i], 6, kit.INK if shared else rgb, 2)
            canvas.polyline(agents[:, i, :2], kit.faded(rgb, 0.45), 2)
            heading = np.array([np.cos(now[i, 2]), np.sin(now[i, 2])])
            canvas.segment(now[i, :2] - length * heading, now[i, :2] + length * heading, rgb, 5)
            canvas.dot(now[i, :2] + length * heading, 3, kit.INK)
        canvas.text((10, 8), f"MultiBicycle, N = {n}    t = {times[-1]:.2f} / {self.horizon:g}")
        canvas.text((10, 26), f"× {'target' if shared else 'targets'} · bar: body along the "
                    "heading, dot: front wheel", small=True)
        return canvas

    def _steering_terms(self, z: Tensor, p: Tensor, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(δ, c = p_ψ v / l, inside-box mask), each (B, N)."""
        delta = self.agents(u)[..., 0]
        c = self.agents(p)[..., 2] * self.agents(z)[..., 3] / self.wheelbase
        return delta, c, delta.abs() <= self.max_steering

    def _steering_curvature(self, z: Tensor, p: Tensor, u: Tensor) -> Tensor:
        """φ''(δ) = 1 + 2c tan δ sec²δ inside the box, 1 outside (where tan is clamped)."""
        delta, c, inside = self._steering_terms(z, p, u)
        sec2 = 1.0 / torch.cos(delta) ** 2
        return torch.where(inside, 1.0 + 2.0 * c * torch.tan(delta) * sec2, torch.ones_like(c))

    # ---------------------------------------------------------------- the maths
    def dynamics(self, t: Time, z: Tensor, u: Tensor) -> Tensor:
        self.check_inputs(z, u)
        Z, U = self.agents(z), self.agents(u)
        psi, v = Z[..., 2], Z[..., 3]
        delta = U[..., 0].clamp(-self.max_steering, self.max_steering)
        return torch.stack([v * torch.cos(psi), v * torch.sin(psi),
                            v / self.wheelbase * torch.tan(delta), U[..., 1]],
                           dim=-1).reshape(z.shape)

    def running_cost(self, t: Time, z: Tensor, u: Tensor) -> Tensor:
        self.check_inputs(z, u)
        cost = 0.5 * (u * u).sum(-1)
        if self.alpha_int:
            cost = cost + self.alpha_int * interaction(self.agents(z)[..., :2], self.radius,
                                                       self.interaction_cutoff)
        return cost

    def terminal_cost(self, z: Tensor) -> Tensor:
        self.check_inputs(z)
        diff = self.agents(z)[..., :2] - self.targets_xy
        return 0.5 * self.alpha_G * (diff * diff).sum((1, 2))

    def grad_terminal_cost(self, z: Tensor) -> Tensor:
        self.check_inputs(z)
        Z = self.agents(z)
        pos = self.alpha_G * (Z[..., :2] - self.targets_xy)
        return torch.cat([pos, torch.zeros_like(Z[..., 2:])], dim=-1).reshape(z.shape)

    def grad_u_hamiltonian(self, t: Time, z: Tensor, p: Tensor, u: Tensor) -> Tensor:
        """Per agent (δ + c sec²δ [inside the box], a + p_v), c = p_ψ v / l."""
        self.check_inputs(z, u, p)
        delta, c, inside = self._steering_terms(z, p, u)
        g_delta = delta + torch.where(inside, c / torch.cos(delta) ** 2, torch.zeros_like(c))
        g_accel = self.agents(u)[..., 1] + self.agents(p)[..., 3]
        return torch.stack([g_delta, g_accel], dim=-1).reshape(u.shape)

    def grad_z_hamiltonian(self, t: Time, z: Tensor, p: Tensor, u: Tensor) -> Tensor:
        """Per agent (α_int ∇_{x,y}W, v(p_y cos ψ − p_x sin ψ),
        p_x cos ψ + p_y sin ψ + p_ψ tan(clip δ) / l)."""
        self.check_inputs(z, u, p)
        Z, P = self.agents(z), self.agents(p)
        psi, v = Z[..., 2], Z[..., 3]
        delta = self.agents(u)[..., 0].clamp(-self.max_steering,
                                                            self.max_steering)
        cos, sin = torch.cos(psi), torch.sin(psi)
        d_psi = v * (P[..., 1] * cos - P[..., 0] * sin)
        d_v = P[..., 0] * cos + P[..., 1] * sin + P[..., 2] * torch.tan(delta) / self.wheelbase
        if self.alpha_int:
            pos = self.alpha_int * interaction_grad(Z[..., :2], self.radius,
                                                    self.interaction_cutoff)
        else:
            pos = torch.zeros_like(Z[..., :2])
        return torch.cat([pos, d_psi.unsqueeze(-1), d_v.unsqueeze(-1)],
                         dim=-1).reshape(z.shape)

    def hessian_u_matvec(self, t: Time, z: Tensor, p: Tensor, u: Tensor, v: Tensor) -> Tensor:
        """Diagonal per agent: (φ''(δ), 1)."""
        self.check_inputs(z, u, p)
        self.check_batch(v, "v", self.control_dim)
        diag = torch.stack([self._steering_curvature(z, p, u),
                            torch.ones_like(u[:, ::2])], dim=-1).reshape(u.shape)
        return diag * v

    def hessian_u_max_eigenvalue(self, t: Time, z: Tensor, p: Tensor, u: Tensor) -> Tensor:
        """The diagonal's largest magnitude: max(|φ''(δ_i)|, 1) over the agents."""
        return self._steering_curvature(z, p, u).abs().amax(-1, keepdim=True).clamp_min(1.0)

    def hessian_u_solve(self, t: Time, z: Tensor, p: Tensor, u: Tensor, v: Tensor,
                        damping: float = 0.0) -> Tensor:
        """Divide by the PD-modified diagonal (max(|φ''|, 1e-3) + damping, 1 + damping).

        Equal to the true inverse wherever φ'' ≥ 1e-3; where H is concave in δ, |φ''| keeps the
        Newton direction a descent direction with the local curvature's step length.
        """
        self.check_inputs(z, u, p)
        self.check_batch(v, "v", self.control_dim)
        require(isinstance(damping, (int, float)) and math.isfinite(damping) and damping >= 0,
                "damping", "a finite number >= 0", damping)
        steer = self._steering_curvature(z, p, u).abs().clamp_min(CURVATURE_FLOOR)
        diag = torch.stack([steer, torch.ones_like(steer)], dim=-1).reshape(u.shape)
        return v / (diag + damping)

    def optimal_control(self, t: Time, z: Tensor, p: Tensor, u0: Tensor | None = None,
                        options: NewtonOptions = DEFAULT_NEWTON) -> InnerSolution:
        """The global minimiser: a = −p_v and δ from ``steering_minimiser`` (``u0`` is not
        needed; it only sets the residual's scale 1 + ‖∇_u H(u0)‖, u0 = 0 by default)."""
        self.check_inputs(z, u0, p)
        with torch.no_grad():
            z, p = z.detach(), p.detach()
            c = self.agents(p)[..., 2] * self.agents(z)[..., 3] / self.wheelbase
            delta, it = steering_minimiser(c, self.max_steering, options.max_iters)
            u = torch.stack([delta, -self.agents(p)[..., 3]], dim=-1).reshape(
                z.shape[0], self.control_dim)
        return self.certify(t, z, p, u, u0, options, it)

    def sample_initial_states(self, batch: int, generator: torch.Generator | None = None
                              ) -> Tensor:
        """x, y ~ init_std·𝒩(0, 1), heading ``init_heading``, speed ``init_speed`` (drawn in
        float64 on the CPU, then cast)."""
        batch = positive_int(batch, "batch")
        xy = self.init_std * torch.randn(batch, self.n_agents, 2, generator=generator,
                                         dtype=torch.float64)
        rest = torch.tensor([self.init_heading, self.init_speed], dtype=torch.float64)
        z = torch.cat([xy, rest.expand(batch, self.n_agents, 2)], dim=-1)
        return z.reshape(batch, self.state_dim).to(dtype=self.dtype, device=self.device)


class SteerToTarget(FeedbackLaw):
    """Kinematic bicycle law: turn toward the target at a yaw rate proportional to the heading
    error (steering from ψ̇ = v tan δ / l, clamped to the limit) and track the speed that
    would cover the remaining distance by the horizon."""

    label = "heuristic (steer to target)"

    def __init__(self, problem: MultiBicycle, k_heading: float = 2.0, k_speed: float = 2.0
                 ) -> None:
        super().__init__(problem)
        self.k_heading = finite_float(k_heading, "k_heading")
        self.k_speed = finite_float(k_speed, "k_speed")

    def __call__(self, t: Tensor | float, z: Tensor) -> Tensor:
        problem = self.problem
        s = z.view(z.shape[0], problem.n_agents, AGENT_STATE)
        x, y, psi, v = s.unbind(-1)
        tgt = problem.targets_xy.to(dtype=z.dtype, device=z.device)
        dx, dy = tgt[:, 0] - x, tgt[:, 1] - y
        err = torch.remainder(torch.atan2(dy, dx) - psi + math.pi, 2 * math.pi) - math.pi
        speed = v.abs().clamp_min(0.05)
        limit = problem.max_steering
        delta = torch.atan(problem.wheelbase * self.k_heading * err / speed).clamp(-limit, limit)
        remaining = torch.as_tensor(problem.horizon - t, dtype=z.dtype, device=z.device)
        v_des = torch.hypot(dx, dy) / remaining.clamp_min(problem.step_size).reshape(-1, 1)
        accel = self.k_speed * (v_des - v)
        return torch.stack([delta, accel], dim=-1).reshape(z.shape[0], -1)
