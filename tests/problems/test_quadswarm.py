"""QuadSwarm-specific truths: the spec's dynamics written out by hand, the Lambert-W closed form
of the inner problem against scipy, Newton and perturbations, hand derivatives against
autograd, the reference cut-off, formation targets, argument checks and O(B·N) memory."""

from __future__ import annotations

import json
import math

import pytest
import scipy.special
import torch
from torch.profiler import ProfilerActivity, profile

from jfbgym.problems import ControlProblem, NewtonOptions, make_problem
from jfbgym.problems.lambertw import lambertw
from jfbgym.problems.quadswarm import QuadSwarm

F64 = torch.float64


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach() - b.detach()).norm() / (1e-300 + b.detach().norm()))


def point(prob: QuadSwarm, batch: int, seed: int, p_scale: float = 1.0):
    """Generic (z, p, u): angles and velocities well away from 0, costate of both signs."""
    g = torch.Generator().manual_seed(seed)
    z = prob.sample_initial_states(batch, g) + 0.7 * torch.randn(batch, prob.state_dim,
                                                                 generator=g, dtype=F64)
    p = p_scale * torch.randn(batch, prob.state_dim, generator=g, dtype=F64)
    u = torch.randn(batch, prob.control_dim, generator=g, dtype=F64)
    return z, p, u


# --------------------------------------------------------------------------- Lambert W
def test_lambertw_matches_scipy_float64_and_float32():
    x = torch.cat([torch.zeros(1), torch.logspace(-12, 6, 4001, dtype=F64),
                   torch.linspace(0, 1e6, 4001, dtype=F64)[1:],
                   torch.tensor([1e-300, 1e300], dtype=F64)])
    ref = torch.from_numpy(scipy.special.lambertw(x.numpy()).real)
    w = lambertw(x)
    assert w.dtype == F64
    assert float(((w - ref).abs() / ref.clamp_min(1e-300)).max()) <= 1e-15
    assert float(w[0]) == 0.0
    x32 = x[:-1].float()  # 1e300 is out of float32 range
    w32 = lambertw(x32)
    assert w32.dtype == torch.float32
    ref32 = torch.from_numpy(scipy.special.lambertw(x32.double().numpy()).real)
    assert float(((w32.double() - ref32).abs() / ref32.clamp_min(1e-38)).max()) <= 1e-6


def test_lambertw_derivatives():
    x = torch.tensor([0.0, 1e-9, 0.3, 1.0, 7.0, 2e4], dtype=F64, requires_grad=True)
    w = lambertw(x)
    (g,) = torch.autograd.grad(w.sum(), x)
    assert rel_err(g, w.detach() / (x.detach() * (1 + w.detach())).clamp_min(1e-300)
                   * (x > 0) + (x == 0)) < 1e-14  # W' = W/(x(1+W)), W'(0) = 1
    xs = x[2:].detach().clone().requires_grad_()  # finite differences stay >= 0
    assert torch.autograd.gradcheck(lambertw, (xs,))
    assert torch.autograd.gradgradcheck(lambertw, (xs,))


@pytest.mark.parametrize("bad", [torch.tensor([-1e-3], dtype=F64), torch.tensor([math.nan]),
                                 torch.tensor([math.inf]), torch.tensor([1, 2])])
def test_lambertw_rejects_bad_input(bad):
    with pytest.raises(ValueError, match="x"):
        lambertw(bad)


# --------------------------------------------------------------------------- the maths
def reference_dynamics(prob: QuadSwarm, z: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """problems.md's equations, one drone and one float at a time."""
    out = torch.empty_like(z)
    m, g = prob.mass, prob.gravity
    for b in range(z.shape[0]):
        for i in range(prob.n_agents):
            psi, th, phi, vx, vy, vz, vpsi, vth, vphi = z[b, 12 * i + 3:12 * i + 12].tolist()
            u1, u2, u3, u4 = u[b, 4 * i:4 * i + 4].tolist()
            sps, cps, sth, cth = math.sin(psi), math.cos(psi), math.sin(th), math.cos(th)
            sph, cph = math.sin(phi), math.cos(phi)
            out[b, 12 * i:12 * i + 12] = torch.tensor([
                vx, vy, vz, vpsi, vth, vphi,
                u1 / m * (sps * sph + cps * sth * cph),
                u1 / m * (-cps * sph + sps * sth * cph),
                u1 / m * (cth * cph) - g, u2, u3, u4], dtype=z.dtype)
    return out


@pytest.mark.parametrize("n", [1, 3])
def test_dynamics_follow_the_spec(n):
    prob = QuadSwarm(n_agents=n, mass=0.7, gravity=1.3, dtype=F64)
    z, _, u = point(prob, 3, seed=n)
    assert rel_err(prob.dynamics(0.0, z, u), reference_dynamics(prob, z, u)) < 1e-14


def test_hover_thrust_holds_a_level_drone():
    prob = QuadSwarm(n_agents=4, dtype=F64)
    z = torch.zeros(2, prob.state_dim, dtype=F64)
    u = prob.initial_control(0.0, z)
    assert torch.equal(u.view(2, 4, 4)[..., 0], torch.full((2, 4), 0.5, dtype=F64))
    assert float(prob.dynamics(0.0, z, u).abs().max()) == 0.0


def test_terminal_cost_closed_form():
    prob = QuadSwarm(n_agents=3, dtype=F64)
    z = prob.targets_state.reshape(1, -1).repeat(2, 1)
    assert float(prob.terminal_cost(z).abs().max()) == 0.0
    z[1, 12 + 7] += 0.3  # v_y of drone 2
    assert float(prob.terminal_cost(z)[1]) == pytest.approx(1000 * 0.5 * 0.09 / 6, rel=1e-14)


@pytest.mark.parametrize("n, batch", [(1, 1), (1, 17), (3, 4), (6, 1), (6, 9)])
@pytest.mark.parametrize("cutoff", [None, 2.0])
def test_hand_derivatives_match_autograd(n, batch, cutoff):
    prob = QuadSwarm(n_agents=n, interaction_cutoff=cutoff, targets="formation", dtype=F64)
    z, p, u = point(prob, batch, seed=10 * n + batch)
    u = 0.3 * u  # keeps e^{s} moderate so relative errors are meaningful
    zg, ug = z.clone().requires_grad_(), u.clone().requires_grad_()
    gz, gu = torch.autograd.grad(prob.hamiltonian(0.0, zg, p, ug).sum(), (zg, ug))
    assert rel_err(prob.grad_z_hamiltonian(0.0, z, p, u), gz) < 1e-12
    assert rel_err(prob.grad_u_hamiltonian(0.0, z, p, u), gu) < 1e-12
    (gG,) = torch.autograd.grad(prob.terminal_cost(zg).sum(), zg)
    assert rel_err(prob.grad_terminal_cost(z), gG) < 1e-12
    v = torch.randn(u.shape, generator=torch.Generator().manual_seed(1), dtype=F64)
    (gu,) = torch.autograd.grad(prob.hamiltonian(0.0, z, p, ug).sum(), ug, create_graph=True)
    (hv,) = torch.autograd.grad((gu * v).sum(), ug)
    assert rel_err(prob.hessian_u_matvec(0.0, z, p, u, v), hv) < 1e-12
    for damping in (0.0, 0.5):
        x = prob.hessian_u_solve(0.0, z, p, u, v, damping=damping)
        back = prob.hessian_u_matvec(0.0, z, p, u, x) + damping * x
        assert rel_err(back, v) < 1e-12


def test_hessian_solve_takes_the_limit_when_the_exponent_overflows():
    prob = QuadSwarm(n_agents=2)
    z, p, _ = point(prob, 2, seed=0)
    z, p = z.float(), p.float()
    u = torch.full((2, 8), 10.0)  # s = 200: e^{s} is inf in float32, the inverse is ~0
    v = torch.ones(2, 8)
    x = prob.hessian_u_solve(0.0, z, p, u, v)
    assert bool(torch.isfinite(x).all()) and float(x.abs().max()) < 1e-30


# ------------------------------------------------------------------ the inner problem
@pytest.mark.parametrize("n", [1, 3, 6])
@pytest.mark.parametrize("p_scale", [1e-3, 1.0, 300.0])
def test_closed_form_is_stationary(n, p_scale):
    prob = QuadSwarm(n_agents=n, dtype=F64)
    z, p, _ = point(prob, 8, seed=n, p_scale=p_scale)
    sol = prob.optimal_control(0.0, z, p)
    q = prob.control_matrix_transpose(z, p).reshape(8, -1)
    g = prob.grad_u_hamiltonian(0.0, z, p, sol.control)
    assert float((g.norm(dim=-1) / q.norm(dim=-1)).max()) < 1e-10
    assert sol.converged and sol.residual.shape == (8,)
    assert torch.equal(sol.residual, prob.stationarity_residual(
        0.0, z, p, sol.control, 1 + prob.grad_u_hamiltonian(
            0.0, z, p, prob.initial_control(0.0, z)).norm(dim=-1)))
    w = torch.from_numpy(scipy.special.lambertw((n * (q * q).sum(-1)).numpy()).real)
    assert rel_err((sol.control ** 2).sum(-1), n * w) < 1e-12  # ‖u*‖² = N w


@pytest.mark.parametrize("n", [1, 3])
def test_closed_form_agrees_with_damped_newton(n):
    prob = QuadSwarm(n_agents=n, dtype=F64)
    z, p, _ = point(prob, 6, seed=20 + n, p_scale=3.0)
    closed = prob.optimal_control(0.0, z, p)
    # Armijo on H values stalls at 1e-9..1e-8 relative residual (H differences reach rounding)
    newton = ControlProblem.optimal_control(prob, 0.0, z, p, options=NewtonOptions(tol=1e-7))
    assert newton.converged and newton.iterations > 1
    assert rel_err(newton.control, closed.control) < 1e-6
    H_newton, H_closed = (prob.hamiltonian(0.0, z, p, s.control) for s in (newton, closed))
    assert bool((H_closed <= H_newton + 1e-13 * H_newton.abs()).all())


@pytest.mark.parametrize("n", [1, 6])
def test_closed_form_beats_random_perturbations(n):
    prob = QuadSwarm(n_agents=n, alpha_int=0.5, dtype=F64)
    z, p, _ = point(prob, 5, seed=30 + n, p_scale=2.0)
    u = prob.optimal_control(0.0, z, p).control
    H = prob.hamiltonian(0.0, z, p, u)
    g = torch.Generator().manual_seed(0)
    for scale in (1e-4, 1e-2, 1.0):
        for _ in range(20):
            du = scale * torch.randn(u.shape, generator=g, dtype=F64)
            assert bool((prob.hamiltonian(0.0, z, p, u + du) > H).all())


def test_closed_form_control_is_differentiable():
    prob = QuadSwarm(n_agents=2, dtype=F64)
    z, p, _ = point(prob, 2, seed=5)
    assert torch.autograd.gradcheck(lambda zz, pp: prob.closed_form_control(0.0, zz, pp),
                                    (z.requires_grad_(), p.requires_grad_()))


# ------------------------------------------------------------- interaction and targets
def test_interaction_cutoff_reproduces_the_reference_indicator():
    g = torch.Generator().manual_seed(3)
    n, alpha = 5, 0.3
    ref = QuadSwarm(n_agents=n, alpha_int=alpha, interaction_cutoff=2.0, dtype=F64)
    smooth = QuadSwarm(n_agents=n, alpha_int=alpha, dtype=F64)
    z = torch.zeros(4, ref.state_dim, dtype=F64)
    z.view(4, n, 12)[..., :3] = 1.5 * torch.randn(4, n, 3, generator=g, dtype=F64)
    u = torch.randn(4, ref.control_dim, generator=g, dtype=F64)
    q = ref.positions(z)
    brute = torch.zeros(4, dtype=F64)
    n_cut = 0
    for b in range(4):
        for i in range(n):
            for j in range(i + 1, n):
                dist = float((q[b, i] - q[b, j]).norm())
                n_cut += dist >= 2.0
                brute[b] += math.exp(-dist ** 2 / 2) * (dist < 2.0) / (2 * n)
    assert n_cut > 0  # the configuration exercises the indicator
    expected = torch.exp(0.5 * (u * u).sum(-1) / n) + alpha * brute
    assert rel_err(ref.running_cost(0.0, z, u), expected) < 1e-14
    assert bool((smooth.running_cost(0.0, z, u) > ref.running_cost(0.0, z, u)).any())


@pytest.mark.parametrize("n", [1, 2, 6, 7, 100])
def test_formation_targets_are_distinct_grid_points_around_the_target(n):
    prob = QuadSwarm(n_agents=n, targets="formation", radius=1.5, dtype=F64)
    goal = prob.targets_state
    assert goal.shape == (n, 12) and float(goal[:, 3:].abs().max()) == 0.0
    pos = goal[:, :3]
    assert torch.equal(pos[:, 2], torch.full((n,), 2.0, dtype=F64))
    centre = (pos.max(0).values + pos.min(0).values) / 2
    assert torch.allclose(centre, torch.tensor([2.0, 2.0, 2.0], dtype=F64))
    if n > 1:
        dist = torch.cdist(pos, pos) + torch.diag(torch.full((n,), math.inf, dtype=F64))
        assert float(dist.min()) == pytest.approx(3.0)  # spacing 2r, all distinct
    shared = QuadSwarm(n_agents=n, dtype=F64).targets_state
    assert torch.equal(shared[:, :3], torch.full((n, 3), 2.0, dtype=F64))


# ------------------------------------------------------------- sampling and arguments
def test_sampling_draws_float64_then_casts():
    p64, p32 = QuadSwarm(n_agents=3, dtype=F64), QuadSwarm(n_agents=3)
    a = p64.sample_initial_states(4000, torch.Generator().manual_seed(0))
    b = p32.sample_initial_states(4000, torch.Generator().manual_seed(0))
    assert b.dtype == torch.float32 and torch.equal(a.float(), b)
    agents = a.view(4000, 3, 12)
    assert float(agents[..., 6:].abs().max()) == 0.0
    assert float(agents[..., :6].std()) == pytest.approx(0.1, rel=0.03)


@pytest.mark.parametrize("n", [7, 100])
def test_formation_starts_spread_with_n_around_their_slots(n):
    ball = QuadSwarm(n_agents=n, dtype=F64)
    grid = QuadSwarm(n_agents=n, starts="formation", targets="formation", dtype=F64)
    a = ball.sample_initial_states(200, torch.Generator().manual_seed(0)).view(200, n, 12)
    b = grid.sample_initial_states(200, torch.Generator().manual_seed(0)).view(200, n, 12)
    slots = grid.targets_state[:, :3] - torch.tensor([2.0, 2.0, 2.0], dtype=F64)
    assert torch.allclose(b[..., :3] - a[..., :3], slots.expand(200, n, 3))  # same noise
    assert torch.equal(b[..., 3:], a[..., 3:])
    footprint = float((b[0, :, :2].max(0).values - b[0, :, :2].min(0).values).max())
    assert footprint > 2.0 * (math.ceil(math.sqrt(n)) - 1) - 1.0  # grows as √N·2r
    assert "starts" not in ball.config() and grid.config()["starts"] == "formation"


def test_config_is_json_and_rebuilds():
    prob = QuadSwarm(n_agents=4, targets="formation", interaction_cutoff=2.0, mass=0.6,
                     target=(1.0, 0.0, 3.0), starts="formation", dtype=F64)
    clone = make_problem("QuadSwarm", dtype=F64, **json.loads(json.dumps(prob.config())))
    assert torch.equal(clone.targets_state, prob.targets_state)
    assert clone.config() == prob.config()


@pytest.mark.parametrize("kwargs, arg", [
    ({"n_agents": 1.5}, "n_agents"), ({"mass": 0.0}, "mass"), ({"gravity": math.nan}, "gravity"),
    ({"alpha_int": -0.1}, "alpha_int"), ({"radius": 0}, "radius"),
    ({"interaction_cutoff": -2.0}, "interaction_cutoff"), ({"alpha_G": math.inf}, "alpha_G"),
    ({"targets": "circle"}, "targets"), ({"target": (1.0, 2.0)}, "target"),
    ({"target": (1.0, "a", 2.0)}, "target"), ({"init_std": -1.0}, "init_std"),
    ({"starts": "grid"}, "starts"),
    ({"dtype": torch.float16}, "dtype")])
def test_bad_arguments_raise(kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        QuadSwarm(**kwargs)


def test_bad_call_arguments_raise():
    prob = QuadSwarm(n_agents=2, dtype=F64)
    z, p, u = point(prob, 2, seed=0)
    with pytest.raises(ValueError, match="damping"):
        prob.hessian_u_solve(0.0, z, p, u, u, damping=-1.0)
    with pytest.raises(ValueError, match="batch"):
        prob.sample_initial_states(0)
    with pytest.raises(ValueError, match="v"):
        prob.hessian_u_matvec(0.0, z, p, u, u[:, :-1])


# ------------------------------------------------------------------------- memory
def peak_bytes(fn) -> int:
    """Peak net CPU allocation during ``fn()``, from the profiler's per-op allocation records."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    current = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        current += event.self_cpu_memory_usage
        peak = max(peak, current)
    return peak


def test_one_step_at_n100_needs_no_dense_blocks():
    mb = 1 << 20
    assert peak_bytes(lambda: torch.zeros(50, 400, 400)) >= 30 * mb  # the meter sees 32 MB
    prob = QuadSwarm(n_agents=100)
    z = prob.sample_initial_states(50, torch.Generator().manual_seed(0))
    p = torch.randn(50, prob.state_dim, generator=torch.Generator().manual_seed(1))
    u = prob.initial_control(0.0, z)

    def step() -> None:
        prob.dynamics(0.0, z, u)
        prob.grad_u_hamiltonian(0.0, z, p, u)
        sol = prob.optimal_control(0.0, z, p)
        prob.grad_z_hamiltonian(0.0, z, p, sol.control)

    # one dense (1200 x 1200) float32 block per sample would be 288 MB
    assert peak_bytes(step) < 30 * mb
