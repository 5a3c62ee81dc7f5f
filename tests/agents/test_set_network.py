"""The set-structured value network: its costate is Φ's gradient, Φ is permutation invariant,
one agent acts at any N, checkpoints record the architecture, training runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from jfbgym.agents import JFBAgent, NetworkConfig, PriorConfig
from jfbgym.agents.config import TrainConfig
from jfbgym.agents.set_network import SetValueNetwork
from jfbgym.agents.trainer import train

F64 = torch.float64


def set_agent(n_agents: int = 4, prior: str = "none") -> JFBAgent:
    torch.manual_seed(0)
    agent = JFBAgent.build("QuadSwarm-v0", {"n_agents": n_agents},
                           NetworkConfig("set", width=16, depth=2, context=4), PriorConfig(prior),
                           dtype=F64)
    with torch.no_grad():  # the output layers start at zero: make every term count
        for p in agent.network.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return agent


def states(agent: JFBAgent, batch: int = 5, seed: int = 1) -> torch.Tensor:
    return agent.problem.sample_initial_states(batch, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("prior", ["none", "local"])
def test_costate_and_time_derivative_are_the_gradient_of_phi(prior):
    agent = set_agent(3, prior)
    z = states(agent)
    t = torch.linspace(0.1, 0.9, z.shape[0], dtype=F64)
    value, dz, dt = agent.network.derivatives(t, z, with_time=True)
    zz, tt = z.clone().requires_grad_(), t.clone().requires_grad_()
    phi = agent.network(tt, zz)
    gz, gt = torch.autograd.grad(phi.sum(), (zz, tt))
    torch.testing.assert_close(value, phi.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dz, gz, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(dt, gt, rtol=1e-10, atol=1e-10)
    assert float(dz.detach().abs().max()) > 1e-3  # the check is not vacuous


def test_the_costate_differentiates_in_the_weights_as_autograd_of_autograd():
    """Training differentiates the explicit sweep once: its weight gradient must be the one a
    double backward through ``autograd.grad`` gives."""
    agent = set_agent(3)
    net, z = agent.network, states(agent)
    t = torch.linspace(0.1, 0.9, z.shape[0], dtype=F64)
    weights = torch.randn(z.shape, dtype=F64, generator=torch.Generator().manual_seed(2))
    params = list(net.parameters())
    _, dz, dt = net.derivatives(t, z, with_time=True)
    ours = torch.autograd.grad((weights * dz).sum() + dt.sum(), params, materialize_grads=True)
    zz, tt = z.clone().requires_grad_(), t.clone().requires_grad_()
    gz, gt = torch.autograd.grad(net(tt, zz).sum(), (zz, tt), create_graph=True)
    reference = torch.autograd.grad((weights * gz).sum() + gt.sum(), params,
                                    materialize_grads=True)  # output biases: zero
    for a, b in zip(ours, reference, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert max(float(a.abs().max()) for a in ours) > 1e-3


def test_value_is_permutation_invariant_and_costate_equivariant():
    agent = set_agent(4)
    z, t = states(agent), 0.4
    perm = torch.tensor([2, 0, 3, 1])
    zp = z.view(5, 4, -1)[:, perm].reshape(5, -1)
    v, p, _ = agent.network.derivatives(t, z)
    vp, pp, _ = agent.network.derivatives(t, zp)
    torch.testing.assert_close(vp, v, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(pp, p.view(5, 4, -1)[:, perm].reshape(5, -1), rtol=1e-10,
                               atol=1e-12)


def test_one_agent_acts_at_any_number_of_drones():
    agent = set_agent(4, prior="local")
    for n in (1, 7, 30):
        other = agent.transfer(n_agents=n)
        assert other.problem.n_agents == n and other.network.n_agents == n
        assert other.network is not agent.network
        cost = other.objective(states(other, 3))
        assert cost.shape == (3,) and bool(torch.isfinite(cost).all())
        action, _ = other.predict(np.zeros(other.problem.state_dim + 1))
        assert action.shape == (4 * n,) and np.isfinite(action).all()
    # the same weights: on the original N the transferred agent is the agent
    same = agent.transfer(n_agents=4)
    z = states(agent)
    torch.testing.assert_close(same.network.derivatives(0.2, z)[1],
                               agent.network.derivatives(0.2, z)[1])


def test_a_flat_network_refuses_another_size():
    torch.manual_seed(0)
    flat = JFBAgent.build("QuadSwarm-v0", {"n_agents": 3}, NetworkConfig(width=8, depth=2, rank=2),
                          PriorConfig("none"))
    with pytest.raises(ValueError, match="env_kwargs.*network='set'"):
        flat.transfer(n_agents=5)
    assert flat.transfer(n_agents=3).problem.n_agents == 3


def test_save_load_records_the_architecture(tmp_path):
    agent = set_agent(3, prior="local")
    agent.save(tmp_path / "a")
    loaded = JFBAgent.load(tmp_path / "a")
    assert isinstance(loaded.network, SetValueNetwork)
    assert loaded.network.config() == agent.network.config()
    z = states(agent)
    torch.testing.assert_close(loaded.objective(z), agent.objective(z))
    assert loaded.transfer(n_agents=9).problem.n_agents == 9


def test_set_network_is_refused_where_it_does_not_fit():
    with pytest.raises(ValueError, match="prior"):
        JFBAgent.build("QuadSwarm-v0", {"n_agents": 2}, NetworkConfig("set"),
                       PriorConfig("problem"))
    with pytest.raises(ValueError, match="network"):
        NetworkConfig("graph")
    with pytest.raises(ValueError, match="network"):
        TrainConfig(env_id="QuadSwarm-v0", agent="direct", network="set").validate()


def test_training_a_set_network_lowers_the_cost(tmp_path):
    # from the local prior (the default): the correction must improve on it
    result = train(TrainConfig(env_id="QuadSwarm-v0", n_agents=2, problem_kwargs={"n_steps": 20},
                               network="set", width=16, depth=2, context=4, iters=15, batch=16,
                               val_batch=32, seed=1,
                               out=str(tmp_path / "run")), progress=False)
    first, last = result.history[0], result.history[-1]
    assert isinstance(result.agent.network, SetValueNetwork)
    assert last["val_cost"] < first["val_cost"] - 1e-3, (first["val_cost"], last["val_cost"])
    again = JFBAgent.load(tmp_path / "run")
    assert isinstance(again.network, SetValueNetwork)
    assert again.transfer(n_agents=5).problem.n_agents == 5
