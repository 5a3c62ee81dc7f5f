"""ConsumptionSavings: Merton's closed form, derivatives vs autograd (also in the feasibility
continuation), the per-good inner solve, and that overspending never pays."""

from __future__ import annotations

import json
import math

import pytest
import torch
from checks import assert_derivatives_match_autograd, rel_err

from jfbgym.problems import consumption, make_problem
from jfbgym.problems.consumption import ConsumptionSavings, power, utility

F64 = torch.float64


def merton(m: int, **kwargs) -> ConsumptionSavings:
    return make_problem("ConsumptionSavings", n_agents=m, A=0.0, B=0.0, dtype=F64, **kwargs)


def no_habits(prob: ConsumptionSavings, batch: int, seed: int = 0) -> torch.Tensor:
    z = prob.sample_initial_states(batch, generator=torch.Generator().manual_seed(seed))
    z[:, 1:] = 0.0
    return z


# ----------------------------------------------------------------- Merton (A = B = 0, h = 0)
@pytest.mark.parametrize("m, batch", [(1, 1), (3, 4), (10, 2)])
@pytest.mark.parametrize("kwargs", [{}, {"r": 0.2, "delta": 0.1}, {"gamma": 2.0}],
                         ids=["defaults", "rho=0", "gamma=2"])
def test_inner_solve_with_merton_costate_gives_merton_feedback(m, batch, kwargs):
    prob = merton(m, **kwargs)
    z = no_habits(prob, batch)
    z[:, 0] *= torch.linspace(0.5, 2.0, batch, dtype=F64)
    for t in (0.0, 0.7, prob.horizon):
        x = z[:, 0].clone().requires_grad_()
        (Vx,) = torch.autograd.grad(prob.merton_value(t, x).sum(), x)
        p = torch.zeros_like(z)
        p[:, 0] = Vx
        sol = prob.optimal_control(t, z, p)
        assert sol.converged
        assert rel_err(sol.control, prob.merton_control(t, z)) < 1e-8
        # and the feedback really is x / g(t) with g(T) = ε^{1/γ}
    g_T = prob.merton_scale(prob.horizon)
    assert abs(float(g_T) - prob.epsilon ** (1 / prob.gamma)) < 1e-15


@pytest.mark.parametrize("m", [1, 3, 100])
@pytest.mark.parametrize("kwargs", [{}, {"r": 0.2, "delta": 0.1}], ids=["defaults", "rho=0"])
def test_merton_feedback_rollout_converges_to_the_value_at_first_order(m, kwargs):
    """J(h) − V(0, x0) = O(h): halving the step halves the gap, and the gap is small."""
    gaps = []
    for nt in (100, 200):
        prob = merton(m, n_steps=nt, **kwargs)
        x0 = no_habits(prob, 3)
        J = prob.objective(prob.merton_control, x0)
        V = prob.merton_value(0.0, x0[:, 0])
        gaps.append(((J - V) / V.abs()).abs().max())
    assert float(gaps[0]) < 0.06 and float(gaps[1]) < 0.03
    assert 1.9 < float(gaps[0] / gaps[1]) < 2.1


def test_merton_helpers_refuse_habits():
    prob = make_problem("ConsumptionSavings", n_agents=2, dtype=F64)
    with pytest.raises(ValueError, match="A"):
        prob.merton_scale(0.0)


# ------------------------------------------------------------- derivatives vs autograd
def general_point(prob: ConsumptionSavings, batch: int, seed: int, infeasible: bool):
    g = torch.Generator().manual_seed(seed)
    z = prob.sample_initial_states(batch, generator=g)
    p = 0.3 * torch.randn(z.shape, generator=g, dtype=F64)
    u = z[:, 1:] + torch.rand(batch, prob.control_dim, generator=g, dtype=F64) + 0.05
    if infeasible:  # wealth, habits, consumption and margins below κ, some negative
        z = z * torch.where(torch.rand(z.shape, generator=g, dtype=F64) < 0.5, -1.0, 1e-6)
        u = u * torch.where(torch.rand(u.shape, generator=g, dtype=F64) < 0.5, -3.0, 1e-5)
    t = torch.rand(batch, generator=g, dtype=F64) * prob.horizon
    return t, z, p, u


@pytest.mark.parametrize("m, batch", [(1, 3), (4, 1), (7, 5), (30, 2)])
@pytest.mark.parametrize("infeasible", [False, True])
def test_derivatives_match_autograd(m, batch, infeasible):
    prob = make_problem("ConsumptionSavings", n_agents=m, dtype=F64,
                        A=[0.5 + 0.1 * i for i in range(m)], B=0.7, eta=0.8, theta=1.3)
    t, z, p, u = general_point(prob, batch, seed=m + batch, infeasible=infeasible)
    assert_derivatives_match_autograd(prob, t, z, p, u)


def test_continuations_are_c2_for_utility_and_c1_for_powers():
    kappa = 1e-4
    for gamma in (0.5, 2.0):
        below = utility(torch.tensor([kappa * (1 - 1e-9)], dtype=F64), gamma, kappa)
        above = utility(torch.tensor([kappa * (1 + 1e-9)], dtype=F64), gamma, kappa)
        for lo, hi in zip(below, above):
            assert abs(float(lo - hi)) <= 1e-6 * abs(float(hi))
        # concave and increasing far below κ: large, finite, ordered
        U = utility(torch.tensor([-1e6, -1.0, 0.0, kappa], dtype=F64), gamma, kappa)[0]
        assert bool(torch.isfinite(U).all()) and bool((U.diff() > 0).all())
    below = power(torch.tensor([kappa * (1 - 1e-9)], dtype=F64), 0.9, kappa)
    above = power(torch.tensor([kappa * (1 + 1e-9)], dtype=F64), 0.9, kappa)
    for lo, hi in zip(below[:2], above[:2]):
        assert abs(float(lo - hi)) <= 1e-6 * abs(float(hi))


def test_hessian_solve_modifies_only_where_habits_make_h_concave():
    prob = make_problem("ConsumptionSavings", n_agents=4, dtype=F64)
    z = prob.sample_initial_states(2, generator=torch.Generator().manual_seed(0))
    p = torch.zeros_like(z)
    p[:, 0], p[:, 1:] = -0.5, 2.0  # a strong habit costate: concave in u for large u
    u = z[:, 1:] + torch.tensor([1e-2, 1.0, 10.0, 100.0], dtype=F64)
    v = torch.randn(u.shape, dtype=F64, generator=torch.Generator().manual_seed(1))
    curvature = prob.hessian_u_matvec(0.3, z, p, u, torch.ones_like(u))
    assert bool((curvature[:, 0] > 0).all()) and bool((curvature[:, -1] < 0).all())
    solved = prob.hessian_u_solve(0.3, z, p, u, prob.hessian_u_matvec(0.3, z, p, u, v))
    assert torch.allclose(solved, v * curvature.sign(), rtol=1e-12, atol=0)
    g = prob.grad_u_hamiltonian(0.3, z, p, u)
    assert bool(((prob.hessian_u_solve(0.3, z, p, u, g) * g).sum(-1) > 0).all())


# ------------------------------------------------------------------------ inner solve
@pytest.mark.parametrize("m", [1, 5, 40])
def test_inner_solve_is_stationary_unique_and_global_per_good(m):
    prob = make_problem("ConsumptionSavings", n_agents=m, dtype=F64)
    t, z, p, _ = general_point(prob, 4, seed=m, infeasible=False)
    p[:, 0] = -p[:, 0].abs() - 0.02
    sol = prob.optimal_control(t, z, p)
    assert sol.converged and float(sol.residual.max()) < 1e-8
    u = sol.control
    assert bool((u > z[:, 1:]).all())
    # warm starts (the solution itself, or far from it) land on the same root
    again = prob.optimal_control(t, z, p, u0=u)
    assert again.iterations <= 2 and rel_err(again.control, u) < 1e-12
    far = prob.optimal_control(t, z, p, u0=z[:, 1:] + 50.0 * torch.rand(u.shape, dtype=F64))
    assert far.converged and rel_err(far.control, u) < 1e-10
    # H is separable: compare each good against a dense grid of its own 1-D problem
    h = z[:, 1:]
    s = torch.logspace(-6, 5, 5001, dtype=F64).reshape(-1, 1, 1)
    best = torch.stack([per_good_hamiltonian(prob, t, z, p, h + chunk).min(0).values
                        for chunk in s.split(500)]).min(0).values
    own = per_good_hamiltonian(prob, t, z, p, u)
    assert bool((own <= best + 1e-12 * (1 + best.abs())).all())


def per_good_hamiltonian(prob: ConsumptionSavings, t: torch.Tensor, z: torch.Tensor,
                         p: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The u-dependent part of H for each good, −e^{−δt}U(u − h) − p_x u + p_h A u^η,
    broadcasting over leading dimensions of u (..., B, m)."""
    disc = torch.exp(-prob.delta * t).unsqueeze(-1)
    return (-disc * utility(u - z[:, 1:], prob.gamma, prob.kappa)[0] - p[:, :1] * u
            + p[:, 1:] * prob.A * power(u, prob.eta, prob.kappa)[0])


def test_no_minimiser_is_reported_not_hidden():
    prob = make_problem("ConsumptionSavings", n_agents=3, dtype=F64, max_consumption=500.0)
    t, z, p, _ = general_point(prob, 3, seed=2, infeasible=False)
    p[:, 0] = -p[:, 0].abs() - 0.02
    p[1, 0] = 0.3  # consuming pays: H is unbounded below in u for this sample
    sol = prob.optimal_control(t, z, p)
    assert not sol.converged
    assert math.isinf(float(sol.residual[1])) and float(sol.residual[[0, 2]].max()) < 1e-8
    assert torch.equal(sol.control[1], torch.full((3,), 500.0, dtype=F64))
    assert float(prob.hamiltonian(t, z, p, 2 * sol.control)[1]) < float(
        prob.hamiltonian(t, z, p, sol.control)[1])  # indeed no minimum at the cap


# ------------------------------------------------------------------ overspending never pays
def feasible_start(prob: ConsumptionSavings, x0: torch.Tensor, rate: float) -> torch.Tensor:
    """A feasible open-loop sequence: margin rate·x/m above the habits (checked: x stays > 0)."""
    traj = prob.rollout(lambda t, z: z[:, 1:] + rate * z[:, :1].clamp_min(0) / prob.n_agents, x0)
    assert bool((traj.states[:, :, 0] > 0).all())
    return traj.controls.detach()


def test_overspending_sequences_cost_more_than_feasible_ones():
    prob = make_problem("ConsumptionSavings", n_agents=4, n_steps=40, dtype=F64)
    x0 = prob.sample_initial_states(3, generator=torch.Generator().manual_seed(0))
    u = feasible_start(prob, x0, rate=1.0)
    base = prob.rollout(u, x0)
    J, x = base.cost, base.states[:, :, 0]
    h, m = prob.step_size, prob.n_agents
    for factor in (1.5, 3.0, 30.0):
        late, early = u.clone(), u.clone()
        # spend factor × the wealth there is over the last 5 steps (x(T) < 0) or the first 10
        # (wealth negative mid-horizon, habits inflated; later steps as before)
        late[:, -5:] += (factor * x[:, -1] / (5 * h * m)).reshape(-1, 1, 1)
        early[:, :10] += (factor * x[:, :10].max(1).values / (10 * h * m)).reshape(-1, 1, 1)
        for cand in (late, early):
            traj = prob.rollout(cand, x0)
            assert bool((traj.states[:, :, 0].min(1).values < 0).all())
            assert bool(torch.isfinite(traj.cost).all()) and bool((traj.cost > J).all())


def adam_from_feasible(prob: ConsumptionSavings, x0: torch.Tensor, steps: int, lr: float
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Adam on the raw control sequence; returns (J per iterate, min wealth per iterate, J0)."""
    u = feasible_start(prob, x0, rate=2.0).clone().requires_grad_()
    opt = torch.optim.Adam([u], lr=lr)
    costs, lows = [], []
    for _ in range(steps):
        traj = prob.rollout(u, x0)
        costs.append(traj.cost.detach())
        lows.append(traj.states[:, :, 0].detach().min(1).values)
        opt.zero_grad()
        traj.cost.sum().backward()
        opt.step()
    return torch.stack(costs), torch.stack(lows), costs[0]


@pytest.mark.slow
@pytest.mark.parametrize("cost", ["continuation", "clamp"])
def test_open_loop_adam_never_gains_by_going_broke(cost, monkeypatch):
    """The continuation: no Adam iterate with negative wealth beats the feasible start, while
    the optimiser still improves J. The control experiment ("clamp", U(max(y, κ)) as in the
    reference) shows the same run does find a broke 'improvement' there, so the check bites."""
    if cost == "clamp":
        extended = consumption.utility
        monkeypatch.setattr(consumption, "utility",
                            lambda y, gamma, kappa: extended(y.clamp_min(kappa), gamma, kappa))
    prob = make_problem("ConsumptionSavings", n_agents=1, n_steps=10, dtype=F64)
    x0 = prob.sample_initial_states(4, generator=torch.Generator().manual_seed(0))
    costs, lows, J0 = adam_from_feasible(prob, x0, steps=450, lr=10.0)
    assert bool(torch.isfinite(costs).all())
    broke_and_better = (lows < 0) & (costs < J0)
    if cost == "clamp":
        assert bool(broke_and_better.any())
    else:
        assert not bool(broke_and_better.any())
        assert bool((costs.min(0).values < J0 - 10.0).all())


def test_float32_costs_stay_finite_under_absurd_controls():
    prob = make_problem("ConsumptionSavings", n_agents=5)
    x0 = prob.sample_initial_states(2, generator=torch.Generator().manual_seed(0))
    for value in (1e3, -1e3, 0.0):
        u = torch.full((2, prob.n_steps, 5), value)
        J = prob.objective(u.requires_grad_(), x0)
        (g,) = torch.autograd.grad(J.sum(), u)
        assert bool(torch.isfinite(J).all()) and bool(torch.isfinite(g).all())
        assert bool((J > 0).all())  # all infeasible: positive costs (feasible ones are < 0)


# ----------------------------------------------------------------------- construction
def test_layout_helpers_sampling_and_config_round_trip():
    prob = make_problem("ConsumptionSavings", n_agents=3, dtype=F64, A=[0.0, 0.5, 1.0], B=0.2)
    z = prob.sample_initial_states(5, generator=torch.Generator().manual_seed(3))
    assert prob.wealth(z).shape == (5,) and prob.habits(z).shape == (5, 3)
    assert bool(((prob.wealth(z) >= 25) & (prob.wealth(z) <= 25.1)).all())
    assert bool(((prob.habits(z) >= 0.01) & (prob.habits(z) <= 0.11)).all())
    clone = make_problem("ConsumptionSavings", dtype=F64, **json.loads(json.dumps(prob.config())))
    assert torch.equal(clone.A, prob.A) and torch.equal(clone.B, prob.B)
    u = prob.control_from_margin(z, torch.zeros(5, 3, dtype=F64))
    assert bool((u > prob.habits(z)).all())
    assert bool((prob.initial_control(0.0, z) > prob.habits(z)).all())


@pytest.mark.parametrize("kwargs, arg", [
    ({"gamma": 1.0}, "gamma"), ({"gamma": -0.5}, "gamma"), ({"eta": 1.5}, "eta"),
    ({"epsilon": 0.0}, "epsilon"), ({"A": [1.0, 2.0]}, "A"), ({"B": -1.0}, "B"),
    ({"kappa": 0.0}, "kappa"), ({"r": math.inf}, "r"), ({"max_consumption": -1.0},
                                                        "max_consumption")])
def test_bad_arguments_name_themselves(kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        make_problem("ConsumptionSavings", n_agents=3, **kwargs)
