"""The value network's analytic costate and the four gradients of the implicit control layer,
checked in float64 against autograd, finite differences and each other."""

from __future__ import annotations

import pytest
import torch

from jfbgym.agents import JFBAgent, NetworkConfig, PriorConfig, SolverOptions, ValueNetwork
from jfbgym.agents.implicit import control_layer, curvature
from jfbgym.agents.network import log_cosh

F64 = torch.float64


@pytest.mark.parametrize("depth", [2, 3, 4])
def test_costate_matches_autograd(depth: int) -> None:
    torch.manual_seed(depth)
    net = ValueNetwork(7, width=11, depth=depth, rank=3, dtype=F64)
    with torch.no_grad():  # non-zero w and c so every term of ∇Φ is exercised
        net.w.normal_()
        net.c.normal_()
    z = torch.randn(5, 7, dtype=F64, requires_grad=True)
    t = torch.rand(5, dtype=F64)
    (expected,) = torch.autograd.grad(net(t, z).sum(), z)
    torch.testing.assert_close(net.grad_z(t, z), expected, rtol=1e-12, atol=1e-12)


def test_log_cosh_is_stable() -> None:
    x = torch.tensor([-1e4, -30.0, 0.0, 0.5, 30.0, 1e4], dtype=F64)
    expected = torch.log(torch.cosh(x.clamp(-30, 30)))
    expected[[0, -1]] = 1e4 - torch.log(torch.tensor(2.0, dtype=F64))
    torch.testing.assert_close(log_cosh(x), expected, rtol=1e-12, atol=1e-12)


def _agent(solver: SolverOptions, **problem) -> JFBAgent:
    """A small QuadSwarm (N = 2, 6 steps over T = 1 unless ``problem`` overrides) agent."""
    torch.manual_seed(0)
    agent = JFBAgent.build("QuadSwarm-v0", {"n_agents": 2, "n_steps": 6, "horizon": 1.0,
                                            **problem}, NetworkConfig(width=8, depth=3, rank=4),
                           PriorConfig("none", normalise="off"), solver=solver, dtype=F64)
    with torch.no_grad():  # a non-trivial value function so that controls are far from hover
        for p in agent.network.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return agent


def _grad(agent: JFBAgent, x0: torch.Tensor, mode: str) -> torch.Tensor:
    agent.network.zero_grad()
    agent.objective(x0, mode, warn=False).mean().backward()  # convergence: not the point here
    return torch.cat([p.grad.flatten() for p in agent.network.parameters()])


def test_implicit_and_newton_jfb_equal_converged_unrolled() -> None:
    exact = SolverOptions("gradient", None, max_iters=5000, tol=1e-14)
    unrolled = _agent(exact)
    x0 = unrolled.problem.sample_initial_states(4, torch.Generator().manual_seed(1))
    reference = _grad(unrolled, x0, "unrolled")
    for mode in ("implicit", "newton-jfb"):
        agent = _agent(SolverOptions("newton", tol=1e-13))
        g = _grad(agent, x0, mode)
        rel = float((g - reference).norm() / reference.norm())
        assert rel < 1e-6, (mode, rel)
    # jfb is a different direction (not the true gradient), but a descent one
    jfb = _grad(_agent(SolverOptions("newton", tol=1e-13)), x0, "jfb")
    assert float((jfb - reference).norm() / reference.norm()) > 1e-4
    assert float(jfb @ reference) > 0


def test_unrolled_matches_finite_differences() -> None:
    agent = _agent(SolverOptions("gradient", alpha=0.2, max_iters=7, tol=0.0))
    x0 = agent.problem.sample_initial_states(3, torch.Generator().manual_seed(2))
    g = _grad(agent, x0, "unrolled")
    params = list(agent.network.parameters())
    direction = [torch.randn_like(p) for p in params]
    eps = 1e-6

    def loss_at(sign: float) -> float:
        with torch.no_grad():
            for p, d in zip(params, direction):
                p.add_(sign * eps * d)
            # tol = 0 on purpose: every solve stops at max_iters, and the rollout says so once
            with pytest.warns(RuntimeWarning, match=r"18 of 18 inner solves"):  # 3 x 6 steps
                value = float(agent.objective(x0).mean())
            for p, d in zip(params, direction):
                p.sub_(sign * eps * d)
        return value

    fd = (loss_at(1.0) - loss_at(-1.0)) / (2 * eps)
    analytic = float(g @ torch.cat([d.flatten() for d in direction]))
    assert abs(fd - analytic) <= 1e-6 * max(1.0, abs(fd))


def test_jfb_direction_descends_on_quadswarm_n2() -> None:
    agent = _agent(SolverOptions("newton"), n_steps=160, horizon=4.5)  # the reference grid
    x0 = agent.problem.sample_initial_states(16, torch.Generator().manual_seed(3))
    true = _grad(agent, x0, "implicit")
    jfb = _grad(agent, x0, "jfb")
    cosine = float(jfb @ true / (jfb.norm() * true.norm()))
    assert cosine > 0.0, cosine


def test_layer_is_u_star_without_grad_and_solvers_agree() -> None:
    agent = _agent(SolverOptions("gradient", tol=1e-12, max_iters=5000))
    problem = agent.problem
    z = problem.sample_initial_states(5, torch.Generator().manual_seed(4))
    p = agent.costate(0.3, z).detach()
    u_grad, u_star, stats = control_layer(problem, 0.3, z, p, None, agent.solver, "jfb")
    assert torch.equal(u_grad, u_star) and stats.unconverged == 0
    closed = problem.closed_form_control(0.3, z, p)
    torch.testing.assert_close(u_star, closed, rtol=1e-9, atol=1e-9)
    lam, _ = curvature(problem, 0.3, z, p, u_star, iters=50)
    exact = torch.linalg.eigvalsh(torch.func.vmap(torch.func.jacrev(
        lambda u, zz, pp: problem.grad_u_hamiltonian(0.3, zz[None], pp[None], u[None])[0]))(
        u_star, z, p)).max(-1).values
    torch.testing.assert_close(lam.squeeze(-1), exact, rtol=1e-6, atol=0)


def test_unconverged_solves_are_counted() -> None:
    agent = _agent(SolverOptions("gradient", alpha=1e-3, max_iters=2, tol=1e-10))
    problem = agent.problem
    z = problem.sample_initial_states(5, torch.Generator().manual_seed(5))
    _, _, stats = control_layer(problem, 0.0, z, agent.costate(0.0, z).detach(), None,
                                agent.solver, "jfb")
    assert stats.unconverged == 5 and stats.iterations == 2 and stats.residual > 1e-10


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="solver"):
        SolverOptions("bfgs")
    with pytest.raises(ValueError, match="alpha"):
        SolverOptions("gradient", alpha=-1.0)
    agent = _agent(SolverOptions("newton"))
    z = agent.problem.sample_initial_states(2)
    with pytest.raises(ValueError, match="grad"):
        control_layer(agent.problem, 0.0, z, agent.costate(0.0, z), None, agent.solver, "ad")
    with pytest.raises(ValueError, match="solver"):  # unrolled needs the gradient iteration
        agent.objective(z, "unrolled").sum().backward()
    with pytest.raises(ValueError, match="depth"):
        ValueNetwork(3, 8, depth=1, rank=2)
    with pytest.raises(ValueError, match="z"):
        agent.network.grad_z(0.0, torch.zeros(2, 5, dtype=F64))


@pytest.mark.parametrize("network", ["mlp", "set"])
@pytest.mark.parametrize("mode", ["jfb", "implicit", "newton-jfb"])
def test_recomputed_steps_give_the_same_gradient(network: str, mode: str) -> None:
    """``recompute`` (activation checkpointing per time step) changes memory, not the gradient;
    with another minibatch the gradient differs, so the comparison can fail."""
    torch.manual_seed(0)
    agent = JFBAgent.build("QuadSwarm-v0", {"n_agents": 2, "n_steps": 6, "horizon": 1.0},
                           NetworkConfig(network, width=8, depth=3, rank=4, context=3),
                           PriorConfig("none", normalise="off"), dtype=F64,
                           solver=SolverOptions("newton", tol=1e-13))
    with torch.no_grad():
        for p in agent.network.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x0 = agent.problem.sample_initial_states(4, torch.Generator().manual_seed(1))

    def gradient(recompute: bool, x: torch.Tensor) -> torch.Tensor:
        agent.network.zero_grad()
        agent.rollout(x, mode, warn=False, recompute=recompute).cost.mean().backward()
        return torch.cat([(torch.zeros_like(p) if p.grad is None else p.grad).flatten()
                          for p in agent.network.parameters()])  # ρ(t) alone: no costate

    plain = gradient(False, x0)
    assert plain.norm() > 0
    torch.testing.assert_close(gradient(True, x0), plain, rtol=1e-10, atol=1e-12)
    other = gradient(True, agent.problem.sample_initial_states(4, torch.Generator().manual_seed(2)))
    assert (other - plain).norm() > 1e-3 * plain.norm()


def test_recompute_is_refused_where_the_graph_spans_steps() -> None:
    agent = _agent(SolverOptions("gradient", None, max_iters=50))
    x0 = agent.problem.sample_initial_states(2, torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match="recompute"):
        agent.rollout(x0, "unrolled", recompute=True)
