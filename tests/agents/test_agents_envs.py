"""The agent as a drop-in policy: SB3's ``evaluate_policy`` on the Gymnasium env scores it at
exactly −J, and ``predict_parallel`` drives the PettingZoo env to the same cost."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3.common.evaluation import evaluate_policy

from jfbgym.agents import JFBAgent
from jfbgym.agents.config import TrainConfig
from jfbgym.agents.trainer import train
from jfbgym.envs import parallel_env


class _RecordStart(gym.Wrapper):
    """Keeps the first observation of every episode (SB3 resets on its own, and again at the
    end of an episode)."""

    starts: tuple = ()

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self.starts = (*self.starts, obs.copy())
        return obs, info


def _trained(tmp_path, env_id: str, **kwargs) -> JFBAgent:
    result = train(TrainConfig(env_id=env_id, iters=2, batch=4, val_batch=4, width=8,
                               dtype="float64", out=str(tmp_path / env_id), **kwargs),
                   progress=False)
    return JFBAgent.load(result.out)


def test_evaluate_policy_scores_minus_objective(tmp_path) -> None:
    agent = _trained(tmp_path, "LinearQuadratic-v0")
    env = _RecordStart(gym.make("jfbgym:LinearQuadratic-v0"))
    agent.check_env(env)
    returns, lengths = evaluate_policy(agent, env, n_eval_episodes=1, return_episode_rewards=True,
                                       warn=False)
    x0 = torch.as_tensor(env.starts[0][:-1], dtype=agent.problem.dtype).unsqueeze(0)
    with torch.no_grad():
        cost = float(agent.objective(x0))
    assert lengths == [agent.problem.n_steps]
    assert returns[0] == pytest.approx(-cost, rel=1e-5)
    with pytest.raises(ValueError, match="QuadSwarm|LinearQuadratic"):
        agent.check_env(gym.make("jfbgym:Quadrotor-v0"))


def test_predict_parallel_drives_pettingzoo(tmp_path) -> None:
    agent = _trained(tmp_path, "QuadSwarm-v0", n_agents=2, problem_kwargs={"n_steps": 10})
    env = parallel_env("QuadSwarm-v0", n_agents=2, n_steps=10)
    env.reset(seed=5)
    x0 = torch.as_tensor(env.state()[:-1], dtype=torch.float64).unsqueeze(0)
    total = 0.0
    while env.agents:
        actions = agent.predict_parallel(env)
        assert set(actions) == set(env.agents) and actions["agent_1"].shape == (4,)
        _, rewards, _, _, _ = env.step(actions)
        total += sum(rewards.values())
    with torch.no_grad():
        cost = float(agent.objective(x0))
    assert total == pytest.approx(-cost, rel=1e-4)
    with pytest.raises(ValueError, match="n_agents"):
        agent.predict_parallel(parallel_env("QuadSwarm-v0", n_agents=3, n_steps=10))
    assert isinstance(agent.predict_parallel(np.zeros(24), time=0.0)["agent_0"], np.ndarray)
