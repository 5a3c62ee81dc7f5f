"""LinearQuadratic against the Riccati solutions it exists to provide."""

from __future__ import annotations

import pytest
import torch

from jfbgym.problems import make_problem

F64 = torch.float64


def test_discrete_riccati_feedback_attains_riccati_cost_and_is_optimal():
    prob = make_problem("LinearQuadratic", dtype=F64)
    x0 = prob.sample_initial_states(16, generator=torch.Generator().manual_seed(0))
    _, K = prob.discrete_riccati()
    h = prob.step_size
    J = prob.objective(lambda t, z: -z @ K[round(float(t) / h)].T, x0)
    V = prob.riccati_cost(x0)
    torch.testing.assert_close(J, V, rtol=1e-10, atol=0)
    # Any perturbation of the optimal open-loop sequence costs more.
    traj = prob.rollout(lambda t, z: -z @ K[round(float(t) / h)].T, x0)
    du = 0.01 * torch.randn(traj.controls.shape, dtype=F64, generator=torch.Generator().manual_seed(1))
    assert bool((prob.objective(traj.controls + du, x0) > V).all())


def test_hamiltonian_minimiser_with_next_costate_is_the_riccati_control():
    """Discrete minimum principle: u_k = argmin_u H(t_k, z_k, p_{k+1}, u) with p_{k+1} = P_{k+1} z_{k+1}."""
    prob = make_problem("LinearQuadratic", dtype=F64)
    x0 = prob.sample_initial_states(8, generator=torch.Generator().manual_seed(2))
    P, K = prob.discrete_riccati()
    traj = prob.rollout(lambda t, z: -z @ K[round(float(t) / prob.step_size)].T, x0)
    for k in (0, prob.n_steps // 2, prob.n_steps - 1):
        p_next = traj.states[:, k + 1] @ P[k + 1]
        sol = prob.optimal_control(k * prob.step_size, traj.states[:, k], p_next)
        assert sol.converged
        torch.testing.assert_close(sol.control, traj.controls[:, k], rtol=1e-9, atol=1e-12)


def test_continuous_feedback_converges_to_continuous_riccati_at_first_order():
    """u = argmin H with p = P(t) z: the Euler objective approaches ½ x0ᵀP(0)x0 like O(h)."""
    x0 = make_problem("LinearQuadratic", dtype=F64).sample_initial_states(
        8, generator=torch.Generator().manual_seed(3))
    gaps = []
    for nt in (50, 200):
        prob = make_problem("LinearQuadratic", dtype=F64, n_steps=nt)
        Pc = prob.continuous_riccati()
        V = 0.5 * ((x0 @ Pc[0]) * x0).sum(-1)
        def feedback(t, z, prob=prob, Pc=Pc):
            return prob.optimal_control(t, z, z @ Pc[round(float(t) / prob.step_size)]).control

        J = prob.objective(feedback, x0)
        gaps.append(float(((J - V) / V).abs().mean()))
    assert gaps[1] < 0.35 * gaps[0] and gaps[1] < 5e-3


def test_rk4_option_runs_and_is_closer_to_the_continuous_flow():
    osc = [[0.0, 1.0, 0.0, 0.0], [-1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0], [0.0, 0.0, -1.0, 0.0]]
    prob = make_problem("LinearQuadratic", dtype=F64, n_steps=20, A=osc)  # Euler is not exact here
    x0 = prob.sample_initial_states(4, generator=torch.Generator().manual_seed(4))
    u = torch.zeros(4, 20, 2, dtype=F64)
    exact = torch.linalg.matrix_exp(prob.A * prob.horizon)
    zT = x0 @ exact.T
    err = {m: float((prob.rollout(u, x0, method=m).states[:, -1] - zT).norm()) for m in ("euler", "rk4")}
    assert err["rk4"] < 1e-3 * err["euler"]
    with pytest.raises(ValueError, match="method"):
        prob.objective(u, x0, method="midpoint")


@pytest.mark.parametrize("kwargs, arg", [({"R": [[1.0, 0.0], [0.0, -1.0]]}, "R"),
                                         ({"B": [[1.0], [0.0]]}, "B"),
                                         ({"A": [[1.0, 2.0]]}, "A"),
                                         ({"n_agents": 2}, "n_agents")])
def test_bad_matrices(kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        make_problem("LinearQuadratic", **kwargs)
