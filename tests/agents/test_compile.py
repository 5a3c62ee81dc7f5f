"""``JFBAgent.compile`` / ``--compile``: the compiled costate is the eager one, values and
training gradients, for both value networks; a compilation failure falls back to eager."""

from __future__ import annotations

import warnings

import pytest
import torch

from jfbgym.agents import JFBAgent, NetworkConfig
from jfbgym.agents.config import TrainConfig

F64 = torch.float64


def small_agent(network: str) -> JFBAgent:
    torch.manual_seed(0)
    agent = JFBAgent.build("QuadSwarm-v0", {"n_agents": 2, "n_steps": 6},
                           NetworkConfig(network, width=8, depth=2, context=4), dtype=F64)
    with torch.no_grad():  # zero-initialised output layers: make every term count
        for p in agent.network.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return agent


@pytest.mark.slow
@pytest.mark.parametrize("network", ["mlp", "set"])
def test_the_compiled_costate_and_its_training_gradient_are_the_eager_ones(network):
    agent = small_agent(network)
    x0 = agent.problem.sample_initial_states(4, torch.Generator().manual_seed(1))
    params = list(agent.network.parameters())

    def cost_and_gradient():
        cost = agent.rollout(x0, grad="jfb", warn=False).cost.sum()
        return cost.detach(), torch.autograd.grad(cost, params, materialize_grads=True)

    eager_p = agent.costate(0.3, x0)
    eager = cost_and_gradient()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fallback to eager would pass vacuously
        agent.compile()
        compiled_p = agent.costate(0.3, x0)
        compiled = cost_and_gradient()
    assert agent._compiled is not None
    torch.testing.assert_close(compiled_p, eager_p, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(compiled[0], eager[0], rtol=1e-10, atol=1e-12)
    for a, b in zip(compiled[1], eager[1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)
    assert max(float(g.abs().max()) for g in eager[1]) > 1e-6  # not vacuous


def test_a_failed_compilation_warns_and_stays_eager(monkeypatch):
    agent = small_agent("mlp")
    z = agent.problem.sample_initial_states(3, torch.Generator().manual_seed(1))
    expected = agent.costate(0.3, z)

    def broken(fn):
        def call(*args):
            raise RuntimeError("no C++ compiler\nfull traceback")
        return call

    monkeypatch.setattr(torch, "compile", broken)
    agent.compile()
    with pytest.warns(RuntimeWarning, match="compile of the costate failed.*no C\\+\\+ compiler"):
        p = agent.costate(0.3, z)
    torch.testing.assert_close(p, expected)
    assert agent._compiled is None
    with pytest.raises(ValueError, match="z"):  # bad input still names its argument
        agent.compile().costate(0.3, z[:, :5])


def test_compile_is_a_jfb_setting():
    TrainConfig(compile=True).validate()
    with pytest.raises(ValueError, match="compile"):
        TrainConfig(agent="direct", compile=True).validate()
    with pytest.raises(ValueError, match="compile"):
        TrainConfig(compile="yes").validate()
