"""MultiBicycle: the global steering minimiser against a dense grid, the inner solve against the
base class's local Newton, derivatives vs autograd in float64, and construction checks."""

from __future__ import annotations

import json
import math

import pytest
import torch
from checks import assert_derivatives_match_autograd

from jfbgym.problems import ControlProblem, make_problem
from jfbgym.problems.bicycle import MultiBicycle, steering_minimiser

F64 = torch.float64
LIMIT = math.pi / 2 - 0.25


def phi(delta: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    return 0.5 * delta**2 + c * torch.tan(delta)


def test_steering_minimiser_is_global_against_a_dense_grid():
    c = torch.cat([torch.linspace(-4.0, 4.0, 161, dtype=F64),
                   torch.linspace(0.2, 0.3, 41, dtype=F64),  # both basins, either may win
                   torch.tensor([0.0, 1e-12, -1e-12, 1 / 128, 50.0, -1e3], dtype=F64)])
    delta, iterations = steering_minimiser(c, LIMIT)
    assert iterations <= 20
    assert bool((delta.abs() <= LIMIT).all())
    grid = torch.linspace(-LIMIT, LIMIT, 200001, dtype=F64)
    for part, d in zip(c.split(25), delta.split(25)):
        values = phi(grid, part.unsqueeze(-1))
        best, where = values.min(-1)
        own = phi(d, part)
        assert bool((own <= best + 1e-12 * (1 + best.abs())).all())
        # the grid's argmin is within a grid step of ours unless two basins tie
        second = torch.where((grid - d.unsqueeze(-1)).abs() > 0.05, values,
                             torch.inf).min(-1).values
        clear = second > best + 1e-6
        assert bool(((grid[where] - d).abs()[clear] < 2e-5).all())


def test_local_newton_from_zero_can_miss_the_global_minimum():
    """The reason for the global solve: for c in (0.23, 0.3) Newton from δ = 0 stops in the
    interior basin while the box end −δ_max is lower."""
    prob = make_problem("MultiBicycle", n_agents=1, dtype=F64)
    c = torch.linspace(0.2, 0.3, 21, dtype=F64)
    z = torch.zeros(c.numel(), 4, dtype=F64)
    z[:, 3] = 1.0  # v = 1, so c = p_ψ / l
    p = torch.zeros_like(z)
    p[:, 2] = c * prob.wheelbase
    t = torch.zeros(c.numel(), dtype=F64)
    local = ControlProblem.optimal_control(prob, t, z, p)
    ours = prob.optimal_control(t, z, p)
    H_local, H_ours = prob.hamiltonian(t, z, p, local.control), prob.hamiltonian(t, z, p,
                                                                                   ours.control)
    assert bool((H_ours <= H_local + 1e-12).all())
    assert bool((H_ours < H_local - 1e-3).any())
    assert bool((ours.control[:, 0] == -LIMIT).any()) and ours.converged


def random_point(prob: MultiBicycle, batch: int, seed: int, steering: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    z = prob.sample_initial_states(batch, generator=g)
    z = z + 0.5 * torch.randn(z.shape, generator=g, dtype=F64)
    p = torch.randn(z.shape, generator=g, dtype=F64)
    u = steering * torch.randn(batch, prob.control_dim, generator=g, dtype=F64)
    t = torch.rand(batch, generator=g, dtype=F64) * prob.horizon
    return t, z, p, u


@pytest.mark.parametrize("n, batch", [(1, 7), (4, 3), (12, 2)])
def test_inner_solve_is_box_stationary_and_beats_local_newton_and_perturbations(n, batch):
    prob = make_problem("MultiBicycle", n_agents=n, dtype=F64)
    t, z, p, _ = random_point(prob, batch, seed=n)
    p[:, 2::4] *= 0.05  # |c| = |p_ψ v| / l of order 1: both basins occur
    sol = prob.optimal_control(t, z, p)
    assert sol.converged and float(prob.stationarity_residual(t, z, p, sol.control).max()) < 1e-10
    assert torch.equal(sol.control[:, 1::2], -p[:, 3::4])
    H = prob.hamiltonian(t, z, p, sol.control)
    local = ControlProblem.optimal_control(prob, t, z, p)
    assert bool((H <= prob.hamiltonian(t, z, p, local.control) + 1e-12).all())
    g = torch.Generator().manual_seed(0)
    for scale in (1e-4, 1e-2, 1.0):
        for _ in range(10):
            du = scale * torch.randn(sol.control.shape, generator=g, dtype=F64)
            cand = prob.project_control(sol.control + du)
            assert bool((prob.hamiltonian(t, z, p, cand) >= H - 1e-12).all())


@pytest.mark.parametrize("n, batch", [(2, 1), (5, 4), (10, 3)])
@pytest.mark.parametrize("kwargs", [{}, {"interaction_cutoff": 2.0, "alpha_int": 1.0}],
                         ids=["default", "cutoff"])
def test_derivatives_match_autograd(n, batch, kwargs):
    target = [[0.1 * i, 1.0 - 0.2 * i] for i in range(n)]
    prob = make_problem("MultiBicycle", n_agents=n, dtype=F64, target=target, **kwargs)
    t, z, p, u = random_point(prob, batch, seed=10 * n + batch, steering=1.2)
    u[0, 0] = LIMIT  # exactly on the box boundary (one-sided: the inside formula)
    assert_derivatives_match_autograd(prob, t, z, p, u)


def test_hessian_solve_is_a_descent_preserving_modification():
    prob = make_problem("MultiBicycle", n_agents=3, dtype=F64)
    t, z, p, u = random_point(prob, 4, seed=3)
    u = prob.project_control(u)
    v = torch.randn(u.shape, dtype=F64, generator=torch.Generator().manual_seed(2))
    curvature = prob.hessian_u_matvec(t, z, p, u, torch.ones_like(u))
    assert bool((curvature < -1e-3).any())  # the point has concave steering entries
    solved = prob.hessian_u_solve(t, z, p, u, prob.hessian_u_matvec(t, z, p, u, v))
    mask = curvature.abs() > 1e-3
    assert torch.allclose(solved[mask], (v * curvature.sign())[mask], rtol=1e-12, atol=0)
    g = prob.grad_u_hamiltonian(t, z, p, u)
    assert bool(((prob.hessian_u_solve(t, z, p, u, g) * g).sum(-1) > 0).all())
    damped = prob.hessian_u_solve(t, z, p, u, v, damping=2.0)
    assert torch.allclose(damped, v / (curvature.abs().clamp_min(1e-3) + 2.0), rtol=1e-12)


def test_dynamics_clamp_the_steering_and_cost_charges_the_raw_control():
    prob = make_problem("MultiBicycle", n_agents=2, dtype=F64)
    z = prob.sample_initial_states(3, generator=torch.Generator().manual_seed(0))
    u = torch.tensor([[3.0, 0.5, -3.0, 0.0]], dtype=F64).expand(3, -1)
    at_limit = torch.tensor([[LIMIT, 0.5, -LIMIT, 0.0]], dtype=F64).expand(3, -1)
    assert torch.equal(prob.dynamics(0.0, z, u), prob.dynamics(0.0, z, at_limit))
    assert bool((prob.running_cost(0.0, z, u) > prob.running_cost(0.0, z, at_limit)).all())
    low, high = prob.control_bounds
    assert torch.equal(high, torch.tensor([LIMIT, math.inf] * 2, dtype=F64))
    assert torch.equal(low, -high)


def test_terminal_cost_and_positions_follow_the_layout():
    prob = make_problem("MultiBicycle", n_agents=2, dtype=F64, alpha_G=2.0)
    z = torch.tensor([[1.0, 1.0, 0.3, 0.2, 4.0, -3.0, 0.0, 0.0]], dtype=F64)
    assert torch.equal(prob.positions(z), torch.tensor([[[1.0, 1.0], [4.0, -3.0]]], dtype=F64))
    assert float(prob.terminal_cost(z)) == pytest.approx(0.5 * 2.0 * (9.0 + 16.0), rel=1e-15)


def test_sampling_constants_and_config_round_trip():
    prob = make_problem("MultiBicycle", n_agents=3, dtype=F64, interaction_cutoff=2.0,
                        target=[[0.0, 1.0], [1.0, 0.0], [2.0, 2.0]], init_speed=0.3)
    z = prob.sample_initial_states(2000, generator=torch.Generator().manual_seed(0))
    per_agent = z.reshape(2000, 3, 4)
    assert bool((per_agent[..., 2] == 0.1).all()) and bool((per_agent[..., 3] == 0.3).all())
    assert abs(float(per_agent[..., :2].std()) - 0.1) < 0.005
    clone = make_problem("MultiBicycle", dtype=F64, **json.loads(json.dumps(prob.config())))
    assert torch.equal(clone.targets_xy, prob.targets_xy)
    assert clone.config() == prob.config()


@pytest.mark.parametrize("kwargs, arg", [
    ({"max_steering": math.pi / 2}, "max_steering"), ({"max_steering": 0.0}, "max_steering"),
    ({"wheelbase": 0.0}, "wheelbase"), ({"target": (1.0, 1.0, 1.0)}, "target"),
    ({"target": [[0.0, 0.0]] * 4}, "target"), ({"alpha_int": -0.1}, "alpha_int"),
    ({"init_std": -1.0}, "init_std"), ({"interaction_cutoff": 0.0}, "interaction_cutoff")])
def test_bad_arguments_name_themselves(kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        make_problem("MultiBicycle", n_agents=3, **kwargs)
