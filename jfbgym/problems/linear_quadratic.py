"""LinearQuadratic: ż = Az + Bu, L = ½uᵀRu + ½zᵀQz, G = ½zᵀQ_f z — the problem with a known answer.

H is explicit here (u* = −R⁻¹Bᵀp), which is the point: the implicit machinery must reproduce
the Riccati solution. Two references are provided: ``riccati_cost`` solves the *discrete*
Riccati recursion of the Euler-discretised objective (exact for ``objective``, to rounding) and
``continuous_riccati`` integrates the Riccati ODE Ṗ = −(Q + AᵀP + PA − PBR⁻¹BᵀP), P(T) = Q_f.

Default **[jfbgym]**: a planar double integrator (state (x, y, vx, vy), control (ax, ay)),
Q = I, R = I, Q_f = 10 I, T = 1, nt = 50, ρ = 𝒩(0, I).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from jfbgym.validation import WEIGHT, integer, require, spread

from .base import DEFAULT_NEWTON, ControlProblem, InnerSolution, NewtonOptions, Time

Matrix = Sequence[Sequence[float]] | Tensor
BOX_GRID = 400  # RK4 steps of the Riccati ODE behind the action box


def _double_integrator(dim: int) -> tuple[Tensor, Tensor]:
    eye, zero = torch.eye(dim), torch.zeros(dim, dim)
    return torch.cat([torch.cat([zero, eye], 1), torch.cat([zero, zero], 1)]), torch.cat([zero, eye])


def _matrix(value: Matrix | None, name: str, default: Tensor) -> Tensor:
    """``value`` (nested lists or a tensor; None: ``default``) as a float64 tensor."""
    if value is None:
        return default
    try:
        return torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{name}: expected a matrix of numbers, got {value!r}") from err


class LinearQuadratic(ControlProblem):
    """Linear dynamics, quadratic costs; ``n_agents`` is always 1."""

    name = "LinearQuadratic"

    def __init__(self, A: Matrix | None = None, B: Matrix | None = None, Q: Matrix | None = None,
                 R: Matrix | None = None, Q_f: Matrix | None = None, horizon: float = 1.0,
                 n_steps: int = 50, init_std: float = 1.0, n_agents: int = 1,
                 dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> None:
        integer(n_agents, "n_agents", 1, 1)  # LinearQuadratic is single-agent
        A0, B0 = _double_integrator(2)
        A, B = _matrix(A, "A", A0), _matrix(B, "B", B0)
        require(A.dim() == 2 and A.shape[0] == A.shape[1], "A", "a square matrix", tuple(A.shape))
        n = A.shape[0]
        require(B.dim() == 2 and B.shape[0] == n, "B", f"shape ({n}, m)", tuple(B.shape))
        m = B.shape[1]
        Q = _matrix(Q, "Q", torch.eye(n, dtype=torch.float64))
        R = _matrix(R, "R", torch.eye(m, dtype=torch.float64))
        Q_f = _matrix(Q_f, "Q_f", 10 * torch.eye(n, dtype=torch.float64))
        for M, name in ((A, "A"), (B, "B"), (Q, "Q"), (R, "R"), (Q_f, "Q_f")):
            require(bool(torch.isfinite(M).all()) and (M.numel() == 0 or float(M.abs().max()) <= WEIGHT),
                    name, f"a matrix of finite numbers of magnitude <= {WEIGHT:g}", M.tolist())
        for M, name, k in ((Q, "Q", n), (Q_f, "Q_f", n), (R, "R", m)):
            require(M.shape == (k, k) and torch.allclose(M, M.T), name,
                    f"a symmetric ({k}, {k}) matrix", tuple(M.shape))
        require(bool(torch.linalg.eigvalsh(R).min() > 0), "R", "a positive-definite matrix",
                R.tolist())
        for M, name in ((Q, "Q"), (Q_f, "Q_f")):
            require(bool(torch.linalg.eigvalsh(M).min() > -1e-12), name,
                    "a positive-semidefinite matrix", M.tolist())
        init_std = spread(init_std, "init_std")
        super().__init__(state_dim=n, control_dim=m, n_agents=1, horizon=horizon,
                         n_steps=n_steps, dtype=dtype, device=device)
        self.init_std = init_std
        for name, M in (("A", A), ("B", B), ("Q", Q), ("R", R), ("Q_f", Q_f)):
            self.register_buffer(name, M.to(dtype=dtype, device=self._device))
        self.register_buffer("R_chol", torch.linalg.cholesky(self.R))

    def config(self) -> dict:
        return {"A": self.A.tolist(), "B": self.B.tolist(), "Q": self.Q.tolist(),
                "R": self.R.tolist(), "Q_f": self.Q_f.tolist(), "horizon": self.horizon,
                "n_steps": self.n_steps, "init_std": self.init_std}

    # ---------------------------------------------------------------- the maths
    def dynamics(self, t: Time, z: Tensor, u: Tensor) -> Tensor:
        self.check_inputs(z, u)
        return z @ self.A.T + u @ self.B.T

    def running_cost(self, t: Time, z: Tensor, u: Tensor) -> Tensor:
        self.check_inputs(z, u)
        return 0.5 * ((u @ self.R) * u).sum(-1) + 0.5 * ((z @ self.Q) * z).sum(-1)

    def terminal_cost(self, z: Tensor) -> Tensor:
        self.check_inputs(z)
        return 0.5 * ((z @ self.Q_f) * z).sum(-1)

    def grad_terminal_cost(self, z: Tensor) -> Tensor:
        self.check_inputs(z)
        return z @ self.Q_f

    def grad_u_hamiltonian(self, t: Time, z: Tensor, p: Tensor, u: Tensor) -> Tensor:
        self.check_inputs(z, u, p)
        return u @ self.R + p @ self.B

    def grad_z_hamiltonian(self, t: Time, z: Tensor, p: Tensor, u: Tensor) -> Tensor:
        self.check_inputs(z, u, p)
        return z @ self.Q + p @ self.A

    def hessian_u_matvec(self, t: Time, z: Tensor, p: Tensor, u: Tensor, v: Tensor) -> Tensor:
        return v @ self.R

    def hessian_u_max_eigenvalue(self, t: Time, z: Tensor, p: Tensor, u: Tensor) -> Tensor:
        """λ_max(R), the same for every sample."""
        return torch.linalg.eigvalsh(self.R)[-1].expand(z.shape[0], 1)

    def hessian_u_solve(self, t: Time, z: Tensor, p: Tensor, u: Tensor, v: Tensor,
                        damping: float = 0.0) -> Tensor:
        if damping:
            eye = torch.eye(self.control_dim, dtype=v.dtype, device=v.device)
            return torch.linalg.solve(self.R + damping * eye, v.T).T
        return torch.cholesky_solve(v.T, self.R_chol).T

    def optimal_control(self, t: Time, z: Tensor, p: Tensor, u0: Tensor | None = None,
                        options: NewtonOptions = DEFAULT_NEWTON) -> InnerSolution:
        """Closed form u* = −R⁻¹Bᵀp (one linear solve; residual reported as for Newton)."""
        self.check_inputs(z, u0, p)
        with torch.no_grad():
            zero = torch.zeros(z.shape[0], self.control_dim, dtype=z.dtype, device=z.device)
            u = -self.hessian_u_solve(t, z, p, zero, p @ self.B)
        return self.certify(t, z, p, u, u0, options, 1)

    def sample_initial_states(self, batch: int, generator: torch.Generator | None = None
                              ) -> Tensor:
        x = torch.randn(batch, self.state_dim, generator=generator, dtype=torch.float64)
        return (self.init_std * x).to(dtype=self.dtype, device=self.device)

    def action_box(self) -> tuple[Tensor, Tensor]:
        """|u_j| ≤ 10·max(σ₀, 1)·max_t ‖K(t)‖_∞ (K = R⁻¹BᵀP the continuous-time Riccati gains,
        on a fixed grid: the cost does not grow with n_steps): the optimal feedback u = −K z for
        any |z|_∞ ≤ 10 σ₀ (σ₀ = ``init_std``), and at least 1. The discrete gains of the Euler
        scheme are within O(h) of these, far inside the factor 10."""
        P = self._riccati_path(BOX_GRID)
        gains = torch.cholesky_solve(self.B.double().T, self.R_chol.double()) @ P
        bound = max(1.0, 10.0 * max(self.init_std, 1.0) * float(gains.abs().sum(-1).max()))
        high = torch.full((self.control_dim,), bound, dtype=self.dtype, device=self.device)
        return -high, high

    # --------------------------------------------------------------- references
    def discrete_riccati(self) -> tuple[Tensor, Tensor]:
        """(P_k for k = 0..nt, shape (nt+1, n, n); gains K_k, shape (nt, m, n)) of the
        Euler-discretised problem, in float64: u_k = −K_k z_k is optimal for ``objective``."""
        h = self.step_size
        A, B, Q, R = (M.double() for M in (self.A, self.B, self.Q, self.R))
        Ad = torch.eye(self.state_dim, dtype=torch.float64, device=A.device) + h * A
        Bd = h * B
        P, Ps, Ks = self.Q_f.double(), [self.Q_f.double()], []
        for _ in range(self.n_steps):
            K = torch.linalg.solve(h * R + Bd.T @ P @ Bd, Bd.T @ P @ Ad)
            P = h * Q + Ad.T @ P @ (Ad - Bd @ K)
            P = 0.5 * (P + P.T)
            Ps.append(P)
            Ks.append(K)
        return torch.stack(Ps[::-1]), torch.stack(Ks[::-1])

    def riccati_cost(self, x0: Tensor) -> Tensor:
        """Optimal value ½ x0ᵀP_0 x0 of the discrete objective, shape (B,), float64."""
        P0 = self.discrete_riccati()[0][0]
        x = x0.double()
        return 0.5 * ((x @ P0) * x).sum(-1)

    def continuous_riccati(self, n_substeps: int = 20) -> Tensor:
        """P(t_k) of the continuous problem on the grid t_k (RK4 backwards), shape (nt+1, n, n)."""
        return self._riccati_path(self.n_steps * n_substeps)[::n_substeps]

    def _riccati_path(self, steps: int) -> Tensor:
        """P of the Riccati ODE Ṗ = −(Q + AᵀP + PA − PBR⁻¹BᵀP), P(T) = Q_f, at ``steps + 1``
        equally spaced times from 0 to T (RK4 backwards), float64, (steps + 1, n, n)."""
        A, B, Q = self.A.double(), self.B.double(), self.Q.double()
        BRB = B @ torch.cholesky_solve(B.T, self.R_chol.double())

        def rhs(P: Tensor) -> Tensor:  # dP/d(T − t)
            return Q + A.T @ P + P @ A - P @ BRB @ P

        P, Ps = self.Q_f.double(), [self.Q_f.double()]
        dt = self.horizon / steps
        for _ in range(steps):
            k1 = rhs(P)
            k2 = rhs(P + dt / 2 * k1)
            k3 = rhs(P + dt / 2 * k2)
            k4 = rhs(P + dt * k3)
            P = P + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
            Ps.append(P)
        return torch.stack(Ps[::-1])
