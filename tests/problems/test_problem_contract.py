"""The contract every problem honours, checked the same way for all of them in float64.

Analytic derivatives against autograd of the scalar functions, the inner solve against its own
optimality conditions, seeded sampling, config round trips and argument validation.
"""

from __future__ import annotations

import pytest
import torch

from jfbgym.problems import PROBLEMS, ControlProblem, make_problem
from jfbgym.problems.interaction import interaction, interaction_grad

F64 = torch.float64
# (name, kwargs): several sizes of each multi-agent problem, kept small so autograd is cheap.
CASES = [
    ("LinearQuadratic", {}),
    ("QuadSwarm", {"n_agents": 1}),
    ("QuadSwarm", {"n_agents": 3}),
    ("QuadSwarm", {"n_agents": 6, "targets": "formation"}),
    ("MultiBicycle", {"n_agents": 1}),
    ("MultiBicycle", {"n_agents": 3}),
    ("MultiBicycle", {"n_agents": 6}),
    ("ConsumptionSavings", {"n_agents": 1}),
    ("ConsumptionSavings", {"n_agents": 3}),
    ("ConsumptionSavings", {"n_agents": 6}),
]
IDS = [f"{n}-{k.get('n_agents', 1)}" for n, k in CASES]


def close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-8) -> bool:
    a, b = a.detach(), b.detach()
    return float((a - b).norm()) <= rel * float(b.norm()) + 1e-12


def point(prob: ControlProblem, batch: int, seed: int) -> tuple[torch.Tensor, ...]:
    """A generic (t, z, p, u): sampled states moved off their special values, a costate near
    ∇G (so inner problems are well posed), feasible random controls."""
    g = torch.Generator().manual_seed(seed)
    z = prob.sample_initial_states(batch, generator=g)
    noise = torch.randn(z.shape, generator=g, dtype=F64)
    if prob.name == "ConsumptionSavings":
        z = z * (1 + 0.2 * noise.abs())  # keeps wealth and habits positive
    else:
        z = z + 0.3 * noise
    p = prob.grad_terminal_cost(z) / max(1.0, float(prob.grad_terminal_cost(z).abs().max()))
    p = p + 0.1 * torch.randn(p.shape, generator=g, dtype=F64)
    u = torch.randn(batch, prob.control_dim, generator=g, dtype=F64)
    if prob.name == "ConsumptionSavings":
        h = z[:, 1:]
        u = h + torch.nn.functional.softplus(u) + 0.1
        p[:, 0] = -p[:, 0].abs() - 0.3  # wealth has value (Merton: ∂V/∂x ≈ −0.5 at x = 25)
    t = torch.rand(batch, generator=g, dtype=F64) * prob.horizon
    return t, z, p, prob.project_control(u)


@pytest.fixture(params=CASES, ids=IDS)
def prob(request) -> ControlProblem:
    name, kwargs = request.param
    return make_problem(name, dtype=F64, **kwargs)


@pytest.mark.parametrize("batch", [1, 5])
def test_hamiltonian_gradients_match_autograd(prob, batch):
    t, z, p, u = point(prob, batch, seed=batch)
    z, u = z.requires_grad_(), u.requires_grad_()
    gz, gu = torch.autograd.grad(prob.hamiltonian(t, z, p, u).sum(), (z, u))
    assert close(prob.grad_u_hamiltonian(t, z, p, u), gu)
    assert close(prob.grad_z_hamiltonian(t, z, p, u), gz)


def test_terminal_gradient_matches_autograd(prob):
    _, z, _, _ = point(prob, 4, seed=1)
    z = z.requires_grad_()
    (g,) = torch.autograd.grad(prob.terminal_cost(z).sum(), z)
    assert close(prob.grad_terminal_cost(z), g)


def test_hessian_matvec_matches_autograd_and_solve_inverts_it(prob):
    t, z, p, u = point(prob, 4, seed=2)
    p = 1e-3 * p  # near the running cost's (convex) curvature, where no PD-fix is applied
    v = torch.randn(u.shape, dtype=F64, generator=torch.Generator().manual_seed(3))
    u = u.requires_grad_()
    (gu,) = torch.autograd.grad(prob.hamiltonian(t, z, p, u).sum(), u, create_graph=True)
    (hv,) = torch.autograd.grad((gu * v).sum(), u)
    assert close(prob.hessian_u_matvec(t, z, p, u, v), hv)
    Hv = prob.hessian_u_matvec(t, z, p, u.detach(), v)
    assert close(prob.hessian_u_solve(t, z, p, u.detach(), Hv), v, rel=1e-7)


def test_dense_second_order_information_matches_autograd(prob):
    """dynamics_jacobian, hamiltonian_hessian and terminal_hessian (the open-loop Newton solver's
    inputs; analytic for QuadSwarm, torch.func elsewhere) against plain autograd rows."""
    t, z, p, u = point(prob, 3, seed=6)
    fz, fu = prob.dynamics_jacobian(t, z, u)
    hzz, hzu, huu = prob.hamiltonian_hessian(t, z, p, u)
    gzz = prob.terminal_hessian(z)
    for b in range(3):
        zb, ub = z[b:b + 1].clone().requires_grad_(), u[b:b + 1].clone().requires_grad_()
        tb, pb = t[b:b + 1], p[b:b + 1]
        jac = torch.autograd.functional.jacobian(
            lambda zz, uu, tb=tb: prob.dynamics(tb, zz, uu)[0], (zb, ub))
        assert close(fz[b], jac[0][:, 0]) and close(fu[b], jac[1][:, 0])
        H = torch.autograd.functional.hessian(
            lambda zz, uu, tb=tb, pb=pb: prob.hamiltonian(tb, zz, pb, uu)[0], (zb, ub))
        assert close(hzz[b], H[0][0][0, :, 0]) and close(hzu[b], H[0][1][0, :, 0])
        assert close(huu[b], H[1][1][0, :, 0])
        G = torch.autograd.functional.hessian(lambda zz: prob.terminal_cost(zz)[0], zb)
        assert close(gzz[b], G[0, :, 0])


def test_largest_curvature_matches_the_dense_hessian(prob):
    """The closed-form largest |eigenvalue| of H_uu (the JFB step 1/λ) where a problem has
    one, and the power-iteration estimate used otherwise."""
    from jfbgym.agents.implicit import curvature

    t, z, p, u = point(prob, 4, seed=7)
    dense = prob.hamiltonian_hessian(t, z, p, u)[2]
    exact = torch.linalg.eigvalsh(dense).abs().amax(-1, keepdim=True)
    closed = prob.hessian_u_max_eigenvalue(t, z, p, u)
    assert closed is not None and close(closed, exact, rel=1e-10)
    prob.hessian_u_max_eigenvalue = lambda *args: None  # as for a problem without one
    estimate, _ = curvature(prob, t, z, p, u, iters=200)
    assert bool((estimate <= exact * (1 + 1e-9)).all()) and close(estimate, exact, rel=1e-3)


def test_optimal_control_is_stationary_and_beats_perturbations(prob):
    t, z, p, _ = point(prob, 6, seed=4)
    sol = prob.optimal_control(t, z, p)
    assert sol.converged, f"residual {sol.residual.max():.3e} after {sol.iterations} iterations"
    u = sol.control
    assert float(prob.stationarity_residual(t, z, p, u).max()) < 1e-6
    H = prob.hamiltonian(t, z, p, u)
    g = torch.Generator().manual_seed(5)
    for scale in (1e-3, 1e-2, 1e-1):
        du = scale * torch.randn(20, *u.shape, generator=g, dtype=F64)
        cand = prob.project_control(u + du)
        Hc = torch.stack([prob.hamiltonian(t, z, p, c) for c in cand])
        assert bool((Hc >= H - 1e-10 * (1 + H.abs())).all())


def test_sampling_is_seeded_and_shaped(prob):
    a = prob.sample_initial_states(7, generator=torch.Generator().manual_seed(11))
    b = prob.sample_initial_states(7, generator=torch.Generator().manual_seed(11))
    c = prob.sample_initial_states(7, generator=torch.Generator().manual_seed(12))
    assert a.shape == (7, prob.state_dim) and a.dtype == F64
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_config_rebuilds_the_same_problem(prob):
    clone = make_problem(prob.name, dtype=F64, **prob.config())
    t, z, p, u = point(prob, 3, seed=6)
    assert torch.equal(prob.hamiltonian(t, z, p, u), clone.hamiltonian(t, z, p, u))
    assert torch.equal(prob.terminal_cost(z), clone.terminal_cost(z))


def test_float32_outputs_and_objective(prob):
    p32 = make_problem(prob.name, **prob.config())
    x0 = p32.sample_initial_states(3, generator=torch.Generator().manual_seed(0))
    J = p32.objective(lambda t, z: p32.initial_control(t, z), x0)
    assert J.shape == (3,) and J.dtype == torch.float32 and bool(torch.isfinite(J).all())


def test_objective_is_left_point_euler(prob):
    """J equals h Σ L(t_k, z_k, u_k) + G(z_nt) computed by hand for a control sequence."""
    x0 = prob.sample_initial_states(2, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    us = prob.initial_control(0.0, x0).unsqueeze(1).repeat(1, prob.n_steps, 1)
    us = prob.project_control(us + 0.05 * torch.randn(us.shape, generator=g, dtype=F64))
    z, J, h = x0, torch.zeros(2, dtype=F64), prob.step_size
    for k in range(prob.n_steps):
        t = k * h
        J = J + h * prob.running_cost(t, z, us[:, k])
        z = z + h * prob.dynamics(t, z, us[:, k])
    J = J + prob.terminal_cost(z)
    assert close(prob.objective(us, x0), J, rel=1e-12)


@pytest.mark.parametrize("name", sorted(PROBLEMS))
@pytest.mark.parametrize("kwargs, arg", [({"n_steps": 0}, "n_steps"), ({"horizon": -1.0}, "horizon"),
                                         ({"horizon": float("nan")}, "horizon")])
def test_bad_arguments_name_themselves(name, kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        make_problem(name, **kwargs)


@pytest.mark.parametrize("name", ["QuadSwarm", "MultiBicycle", "ConsumptionSavings"])
def test_bad_agent_count(name):
    with pytest.raises(ValueError, match="n_agents"):
        make_problem(name, n_agents=0)


def test_bad_tensors_are_rejected(prob):
    t, z, p, u = point(prob, 3, seed=7)
    with pytest.raises(ValueError, match="z"):
        prob.dynamics(t, z[:, :-1], u)
    with pytest.raises(ValueError, match="u"):
        prob.running_cost(t, z, u.float())
    with pytest.raises(ValueError, match="p"):
        prob.grad_u_hamiltonian(t, z, p[:2], u)
    with pytest.raises(ValueError, match="controls"):
        prob.objective(torch.zeros(3, prob.n_steps + 1, prob.control_dim, dtype=F64), z)


def test_unknown_problem_name():
    with pytest.raises(ValueError, match="name"):
        make_problem("CartPole")


def test_interaction_matches_pairwise_sum_and_its_gradient():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(4, 5, 3, generator=g, dtype=F64).requires_grad_()
    brute = sum(torch.exp(-((q[:, i] - q[:, j]) ** 2).sum(-1) / 2)
                for i in range(5) for j in range(i + 1, 5)) / 10
    assert close(interaction(q), brute, rel=1e-12)
    (gq,) = torch.autograd.grad(interaction(q).sum(), q)
    assert close(interaction_grad(q), gq, rel=1e-12)
    cut = sum(torch.exp(-((q[:, i] - q[:, j]) ** 2).sum(-1) / 2)
              * (((q[:, i] - q[:, j]) ** 2).sum(-1) < 4) for i in range(5) for j in range(i + 1, 5))
    assert close(interaction(q, cutoff=2.0), cut / 10, rel=1e-12)


def test_action_box_is_finite_and_contains_the_optimal_controls(prob):
    low, high = prob.action_box()
    assert low.shape == high.shape == (prob.control_dim,)
    assert bool(torch.isfinite(low).all() and torch.isfinite(high).all() and (low < high).all())
    t, z, p, _ = point(prob, 8, seed=9)
    u = prob.optimal_control(t, z, p).control
    assert bool(((u >= low) & (u <= high)).all())
