"""ConsumptionSavings trains: the value network starts from the problem's Merton prior
(``value_prior``), learns a relative correction, beats the prior and ends near the open-loop
optimum; the prior and the network's costate are checked against autograd in float64."""

from __future__ import annotations

import torch

from jfbgym.agents import JFBAgent, NetworkConfig, ValueNetwork
from jfbgym.agents.config import TrainConfig
from jfbgym.agents.trainer import train
from jfbgym.openloop import open_loop_optimum
from jfbgym.problems.consumption import ConsumptionSavings

F64 = torch.float64


def _states(problem: ConsumptionSavings) -> torch.Tensor:
    """Wealth from below κ (net wealth negative: the continuation) to large, habits 0..2."""
    g = torch.Generator().manual_seed(3)
    x = torch.tensor([-1.0, 1e-5, 0.3, 5.0, 40.0, 900.0], dtype=F64).unsqueeze(-1)
    h = 2.0 * torch.rand(x.shape[0], problem.n_agents, generator=g, dtype=F64)
    return torch.cat([x, h], dim=-1)


def test_value_prior_gradient_matches_autograd() -> None:
    problem = ConsumptionSavings(n_agents=3, dtype=F64)
    z = _states(problem).requires_grad_(True)
    t = torch.tensor([0.0, 0.3, 0.9, 1.5, 1.99, 2.0], dtype=F64)
    value, grad = problem.value_prior(t, z)
    (expected,) = torch.autograd.grad(value.sum(), z)
    torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-12)
    assert bool((grad[:, 0] < 0).all())  # wealth always has a price: a minimiser exists


def test_value_prior_is_merton_without_habits() -> None:
    problem = ConsumptionSavings(n_agents=4, A=0.0, B=0.0, dtype=F64)
    x = torch.tensor([[3.0], [25.0]], dtype=F64)
    z = torch.cat([x, torch.zeros(2, 4, dtype=F64)], dim=-1)
    for t in (0.0, 1.2):
        torch.testing.assert_close(problem.value_prior(t, z)[0],
                                   problem.merton_value(t, x[:, 0]), rtol=1e-13, atol=0.0)


def test_costate_with_prior_matches_autograd() -> None:
    problem = ConsumptionSavings(n_agents=3, dtype=F64)
    torch.manual_seed(0)
    net = ValueNetwork(4, width=9, depth=3, rank=3, dtype=F64, prior=problem.value_prior,
                       correction_scale=0.1)
    assert float(net.A.detach().abs().max()) == 0.0  # Φ starts as the prior exactly
    with torch.no_grad():  # every term of Φ = V₀(1 + σΨ) non-zero
        for p in net.parameters():
            p.normal_()
    z = _states(problem).requires_grad_(True)
    t = torch.rand(z.shape[0], dtype=F64)
    (expected,) = torch.autograd.grad(net(t, z).sum(), z)
    torch.testing.assert_close(net.grad_z(t, z), expected, rtol=1e-11, atol=1e-11)


def test_problems_without_prior_learn_from_scratch() -> None:
    agent = JFBAgent.build("LinearQuadratic-v0")
    assert agent.network.prior is None and float(agent.network.A.detach().abs().max()) > 0


def test_training_beats_prior_and_nears_open_loop(tmp_path) -> None:
    config = TrainConfig(env_id="ConsumptionSavings-v0", n_agents=3,
                         problem_kwargs={"n_steps": 20}, iters=100, batch=16, val_batch=16,
                         width=16, depth=3, rank=4, seed=0, out=str(tmp_path / "cs"),
                         checkpoint_every=100)
    result = train(config, progress=False)
    assert result.status == "finished"
    agent = result.agent
    prior = JFBAgent.build("ConsumptionSavings-v0", config.env_kwargs(),
                           NetworkConfig(width=16, depth=3, rank=4))
    problem = agent.problem
    x = problem.sample_initial_states(64, torch.Generator().manual_seed(2024))
    with torch.no_grad():
        trained = agent.objective(x)
        untrained = prior.objective(x)
    assert bool(torch.isfinite(trained).all()) and bool(torch.isfinite(untrained).all())
    assert all(bool(torch.isfinite(torch.tensor(r["loss"]))) for r in result.history)
    reference = open_loop_optimum(problem, x, init=[agent.control, prior.control], tol=1e-6,
                                  max_iters=300).cost
    j_trained, j_prior, j_star = (float(c.double().mean()) for c in (trained, untrained,
                                                                      reference))
    gap, prior_gap = ((j - j_star) / abs(j_star) for j in (j_trained, j_prior))
    assert j_star <= j_trained + 1e-6 * abs(j_star)  # open loop is the better of the starts
    assert gap < 0.01 and gap < 0.5 * prior_gap, (j_trained, j_prior, j_star)


def test_blown_up_validation_undoes_the_step(tmp_path, monkeypatch) -> None:
    """A step after which the validation cost explodes is undone at half the learning rate."""
    calls = {"validation": 0}
    objective = JFBAgent.objective

    def spiking(self, x0, grad=None, log=None, warn=True):
        cost = objective(self, x0, grad, log, warn)
        if grad is None:  # validation: the initial one, then one after each iteration
            calls["validation"] += 1
            if calls["validation"] == 4:  # after iteration 3
                return cost.abs() * 1e6
        return cost

    monkeypatch.setattr(JFBAgent, "objective", spiking)
    config = TrainConfig(env_id="LinearQuadratic-v0", iters=4, batch=4, val_batch=4, width=8,
                         rank=2, lr=1e-2, seed=0, out=str(tmp_path / "lq"), checkpoint_every=4,
                         val_every=1, schedule="plateau", warmup=0)  # counted step by step
    history = train(config, progress=False).history
    assert [row["iteration"] for row in history] == [1, 2, 3, 4]
    assert [row["lr"] for row in history] == [1e-2, 1e-2, 5e-3, 5e-3]
    assert max(row["val_cost"] for row in history) < 1e3
