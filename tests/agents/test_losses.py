"""The value penalties vanish for the exact value function and not for a perturbed one; the
costate targets are the gradients of the rolled-out cost-to-go."""

from __future__ import annotations

import torch

from jfbgym.agents.losses import costate_targets, value_penalties
from jfbgym.problems import make_problem

F64 = torch.float64


class Riccati:
    """V(t, z) = ½ zᵀP(t)z on the grid: the discrete Riccati P_k (exact cost-to-go of the Euler
    objective) or the continuous P(t_k) with Ṗ from the Riccati ODE (exact HJB), scaled."""

    def __init__(self, problem, discrete: bool, scale: float = 1.0) -> None:
        self.problem = problem
        P = problem.discrete_riccati()[0] if discrete else problem.continuous_riccati(50)
        A, B, Q, R = problem.A, problem.B, problem.Q, problem.R
        BRB = B @ torch.linalg.solve(R, B.T)
        self.P, self.dP = scale * P, -scale * (Q + A.T @ P + P @ A - P @ BRB @ P)

    def _k(self, t) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=F64).reshape(-1)
        return torch.round(t / self.problem.step_size).long()

    def derivatives(self, t, z, with_time=False):
        k = self._k(t).expand(z.shape[0])
        Pz = (self.P[k] @ z.unsqueeze(-1)).squeeze(-1)
        dt = 0.5 * (z * (self.dP[k] @ z.unsqueeze(-1)).squeeze(-1)).sum(-1) if with_time else None
        return 0.5 * (z * Pz).sum(-1), Pz, dt

    def policy(self, t, z):
        return self.problem.optimal_control(t, z, self.derivatives(t, z)[1]).control


def _lq():
    prob = make_problem("LinearQuadratic", n_steps=40, dtype=F64)
    return prob, prob.sample_initial_states(8, torch.Generator().manual_seed(0))


def test_costate_penalty_vanishes_for_the_discrete_riccati_value() -> None:
    prob, x0 = _lq()
    _, K = prob.discrete_riccati()
    optimal = prob.rollout(lambda t, z: -(K[round(float(t) / prob.step_size)] @ z.T).T, x0)
    exact = value_penalties(Riccati(prob, discrete=True), prob, optimal, ("costate", "terminal"))
    assert float(exact["costate"]) < 1e-20 and float(exact["terminal"]) < 1e-20
    off = value_penalties(Riccati(prob, discrete=True, scale=1.1), prob, optimal, ("costate",))
    assert float(off["costate"]) > 1e-3


def test_hjb_residual_vanishes_for_the_continuous_riccati_value() -> None:
    prob, x0 = _lq()
    exact_value = Riccati(prob, discrete=False)
    trajectory = prob.rollout(exact_value.policy, x0)
    assert float(value_penalties(exact_value, prob, trajectory, ("hjb",))["hjb"]) < 1e-20
    perturbed = Riccati(prob, discrete=False, scale=1.1)
    off = value_penalties(perturbed, prob, prob.rollout(perturbed.policy, x0), ("hjb",))
    assert float(off["hjb"]) > 1e-4


def test_costate_targets_are_gradients_of_the_cost_to_go() -> None:
    prob = make_problem("QuadSwarm", n_agents=2, n_steps=12, dtype=F64)
    g = torch.Generator().manual_seed(1)
    x0 = prob.sample_initial_states(3, g)
    U = prob.initial_control(0.0, x0)[:, None] + 0.3 * torch.randn(3, 12, 8, generator=g,
                                                                     dtype=F64)
    trajectory = prob.rollout(U, x0)
    lam = costate_targets(prob, trajectory)
    for k in (0, 5, 11, 12):
        rest = make_problem("QuadSwarm", n_agents=2, n_steps=max(12 - k, 1),
                            horizon=max(12 - k, 1) * prob.step_size, dtype=F64)
        zk = trajectory.states[:, k].clone().requires_grad_()
        cost = rest.terminal_cost(zk) if k == 12 else rest.objective(U[:, k:], zk)
        (grad,) = torch.autograd.grad(cost.sum(), zk)
        torch.testing.assert_close(lam[:, k], grad, rtol=1e-10, atol=1e-12)
