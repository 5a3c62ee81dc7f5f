"""The `rl` extra: Stable-Baselines3's own checker on every single env, PPO on QuadSwarm-v0."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import jfbgym  # noqa: F401  (registers the ids)
from jfbgym.envs import ENV_SPECS

sb3 = pytest.importorskip("stable_baselines3")
from stable_baselines3.common.env_checker import check_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor


@pytest.mark.parametrize("env_id", sorted(ENV_SPECS))
def test_sb3_check_env(env_id):
    with pytest.warns(UserWarning, match="symmetric and normalized Box action space") as record:
        check_env(gym.make(env_id, n_steps=5), warn=True)
    # the only advice SB3 gives is to normalise the physical action units (a documented choice)
    assert all("symmetric and normalized" in str(w.message) for w in record)


def test_ppo_runs_a_few_hundred_steps_on_quadswarm():
    env = gym.make("QuadSwarm-v0", n_agents=2, n_steps=16)
    model = sb3.PPO("MlpPolicy", env, n_steps=64, batch_size=32, n_epochs=1, seed=0,
                    device="cpu", policy_kwargs={"net_arch": [32]})
    model.learn(total_timesteps=256)
    assert model.num_timesteps == 256
    mean, std = evaluate_policy(model, Monitor(env), n_eval_episodes=2)
    assert np.isfinite(mean) and mean < 0 and np.isfinite(std)
    action, _ = model.predict(env.reset(seed=0)[0], deterministic=True)
    assert env.action_space.contains(action.astype(np.float32))


def test_ppo_shared_policy_on_pettingzoo_swarm_via_supersuit():
    ss = pytest.importorskip("supersuit")
    from jfbgym.envs import parallel_env

    env = parallel_env("QuadSwarm-v0", n_agents=3, n_steps=16)
    venv = ss.concat_vec_envs_v1(ss.pettingzoo_env_to_vec_env_v1(env), 1,
                                 base_class="stable_baselines3")
    assert venv.num_envs == 3  # one row per drone, one shared policy
    # no seed=: SuperSuit's ConcatVecEnv lacks the seed() that SB3's seeding calls
    model = sb3.PPO("MlpPolicy", venv, n_steps=32, batch_size=48, n_epochs=1, device="cpu",
                    policy_kwargs={"net_arch": [32]})
    model.learn(total_timesteps=96)
    assert model.num_timesteps == 96
    venv.close()
