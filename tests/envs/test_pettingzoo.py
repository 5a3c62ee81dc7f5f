"""PettingZoo parallel envs: the three API tests, returns summing to −J, observations."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from checks import assert_only_allowed_warnings
from pettingzoo.test import api_test, parallel_api_test, parallel_seed_test
from pettingzoo.utils.conversions import parallel_to_aec

from jfbgym.envs import parallel_env
from jfbgym.problems.base import nearest_relative_positions

MULTI = {"QuadSwarm-v0": {"n_agents": 3}, "Quadrotor-v0": {}, "MultiBicycle-v0": {},
         "ConsumptionSavings-v0": {"n_agents": 4}}
SHORT = {"n_steps": 5}


# PettingZoo's by-design warnings for unbounded observations; any other warning fails.
ALLOWED_WARNINGS = [r"observation space value is -?infinity"]


def _checked(fn, *args, **kwargs) -> None:
    assert_only_allowed_warnings(ALLOWED_WARNINGS, fn, *args, **kwargs)


def _make(env_id: str, **extra):
    return parallel_env(env_id, **MULTI[env_id], **SHORT, **extra)


@pytest.mark.parametrize("env_id", sorted(MULTI))
def test_pettingzoo_api_tests(env_id):
    _checked(parallel_api_test, _make(env_id), num_cycles=10)
    _checked(parallel_seed_test, lambda: _make(env_id), num_cycles=10)
    _checked(api_test, parallel_to_aec(_make(env_id)), num_cycles=10)


@pytest.mark.parametrize("env_id", sorted(MULTI))
def test_agent_returns_sum_to_minus_objective(env_id):
    env = _make(env_id)
    env.reset(seed=2)
    problem = env.problem
    x0 = torch.as_tensor(env.env.state, dtype=problem.dtype)[None]
    np.testing.assert_array_equal(env.state(), np.append(env.env.state, 0.0).astype(np.float32))
    returns = dict.fromkeys(env.possible_agents, 0.0)
    joint = []
    for i, agent in enumerate(env.possible_agents):
        env.action_space(agent).seed(10 + i)
    while env.agents:
        actions = {a: env.action_space(a).sample() for a in env.agents}
        joint.append(np.concatenate([actions[a] for a in env.possible_agents]))
        _, rewards, terms, _, _ = env.step(actions)
        for a, r in rewards.items():
            returns[a] += r
    assert len(joint) == SHORT["n_steps"] and all(terms.values()) and env.agents == []
    J = float(problem.objective(torch.as_tensor(np.stack(joint), dtype=problem.dtype)[None],
                                x0)[0])
    assert sum(returns.values()) == pytest.approx(-J, rel=1e-5)
    shares = list(returns.values())
    assert shares == pytest.approx([shares[0]] * len(shares))


def test_quadswarm_observation_layout():
    env = parallel_env("QuadSwarm-v0", n_agents=4, targets="formation", neighbours=2, **SHORT)
    obs, _ = env.reset(seed=0)
    z = env.env.state.reshape(4, 12)
    targets = env.problem.targets_state[:, :3].double().numpy()
    for i, agent in enumerate(env.possible_agents):
        o = obs[agent]
        assert o.shape == env.observation_space(agent).shape == (12 + 3 + 2 * 3 + 1,)
        np.testing.assert_allclose(o[:12], z[i], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(o[12:15], targets[i], rtol=1e-6)
        dist = np.linalg.norm(z[:, :3] - z[i, :3], axis=1)
        dist[i] = np.inf
        nearest = np.argsort(dist)[:2]
        np.testing.assert_allclose(o[15:21].reshape(2, 3), z[nearest, :3] - z[i, :3],
                                   rtol=1e-5, atol=1e-6)
        assert o[-1] == 0.0
    assert env.action_space("agent_1").shape == (4,)


def test_consumption_observation_layout():
    env = parallel_env("ConsumptionSavings-v0", n_agents=3, **SHORT)
    obs, _ = env.reset(seed=0)
    z = env.env.state
    for i, agent in enumerate(env.possible_agents):
        np.testing.assert_allclose(obs[agent], [z[0], z[1 + i], z[1:].mean(), 0.0], rtol=1e-6)
        assert env.action_space(agent).shape == (1,) and env.action_space(agent).low[0] == 0


def test_nearest_relative_positions_brute_force():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(7, 3))
    rel = nearest_relative_positions(torch.as_tensor(q)[None], 3)[0].numpy()
    for i in range(7):
        others = sorted((j for j in range(7) if j != i), key=lambda j: np.linalg.norm(q[j] - q[i]))
        np.testing.assert_allclose(rel[i], q[others[:3]] - q[i])


def test_bad_input_and_pickle():
    env = parallel_env("MultiBicycle-v0", n_agents=2, **SHORT)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="actions"):
        env.step({"agent_0": np.zeros(2)})  # agent_1 missing
    with pytest.raises(ValueError, match="shape"):
        env.step({"agent_0": np.zeros(2), "agent_1": np.zeros(3)})
    with pytest.raises(ValueError, match="finite"):
        env.step({"agent_0": np.zeros(2), "agent_1": np.array([np.nan, 0.0])})
    with pytest.raises(ValueError, match="env_id"):
        parallel_env("LinearQuadratic-v0")
    with pytest.raises(ValueError, match="neighbours"):
        parallel_env("QuadSwarm-v0", n_agents=3, neighbours=3)
    clone = pickle.loads(pickle.dumps(env))
    action = {"agent_0": np.array([0.1, 0.5]), "agent_1": np.array([-0.2, 1.0])}
    o1, r1, *_ = env.step(action)
    o2, r2, *_ = clone.step(action)
    assert r1 == r2 and all(np.array_equal(o1[a], o2[a]) for a in o1)
