"""References beat doing nothing where they should; SB3 baselines train on a budget and reload."""

import argparse
import json

import numpy as np
import pytest
import torch

from jfbgym.baselines import references
from jfbgym.problems import problem_for_env
from jfbgym.problems.bicycle import SteerToTarget
from jfbgym.problems.consumption import FixedConsumptionRate
from jfbgym.problems.feedback import ZeroControl
from jfbgym.problems.quadswarm import HoverPD
from jfbgym.rollout import rollout


@pytest.mark.parametrize("env_id, kwargs, heuristic", [
    ("QuadSwarm-v0", {"n_agents": 3}, HoverPD),
    ("MultiBicycle-v0", {"n_agents": 3}, SteerToTarget),
    ("ConsumptionSavings-v0", {"n_agents": 5}, FixedConsumptionRate),
])
def test_heuristic_beats_zero_control(env_id, kwargs, heuristic) -> None:
    problem = problem_for_env(env_id, dtype=torch.float64, **kwargs)
    refs = references(problem)
    assert list(refs) == ["zero control", heuristic.label]
    zero = rollout(refs["zero control"], problem, 8, 0).cost
    good = rollout(refs[heuristic.label], problem, 8, 0).cost
    assert bool(torch.isfinite(good).all())
    assert bool((good < zero).all()), (good, zero)


def test_heuristic_laws() -> None:
    quad = problem_for_env("QuadSwarm-v0", n_agents=2, dtype=torch.float64)
    at_target = quad.targets_state.reshape(1, -1).clone()
    u = HoverPD(quad)(0.0, at_target).view(2, 4)
    # at the target and at rest: hover thrust m·g, no angular acceleration
    torch.testing.assert_close(u, torch.tensor([[quad.mass * quad.gravity, 0, 0, 0]] * 2,
                                               dtype=torch.float64))
    cons = problem_for_env("ConsumptionSavings-v0", n_agents=4, dtype=torch.float64)
    z = torch.tensor([[20.0, 0.1, 0.2, 0.3, 0.4]], dtype=torch.float64)
    u = FixedConsumptionRate(cons, rate=0.5)(0.0, z)
    torch.testing.assert_close(u, z[:, 1:] + 0.5 * 20.0 / 4)
    obs = np.concatenate([z[0].numpy(), [0.3]]).astype(np.float32)
    action, _ = FixedConsumptionRate(cons, rate=0.5).predict(obs)
    np.testing.assert_allclose(action, u[0].numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="rate"):
        FixedConsumptionRate(cons, rate=0.0)
    assert not ZeroControl(cons)(0.0, z).any()


@pytest.mark.parametrize("algo", ["ppo", "sac"])
def test_sb3_baseline_trains_saves_and_reloads(tmp_path, algo) -> None:
    pytest.importorskip("stable_baselines3")
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    from jfbgym.baselines import HYPERPARAMS, _vec_env, load_baseline, train_baseline
    from jfbgym.evaluation import evaluate

    kw = {"n_agents": 1, "n_steps": 10}
    # small buffers so that the tiny budget trains at all (the zoo's SAC waits 10,000 steps)
    small = {"ppo": {"n_steps": 32, "batch_size": 16}, "sac": {"learning_starts": 20}}[algo]
    policy, run = train_baseline("Quadrotor-v0", algo, minutes=0.03, out=str(tmp_path / algo),
                                 env_kwargs=kw, n_envs=2, hyperparams=small)
    assert run.timesteps > 0 and run.algo == algo and run.env_kwargs == kw and run.n_envs == 2
    assert run.hyperparams == {**HYPERPARAMS[algo], **small}
    saved = json.loads((tmp_path / algo / "baseline.json").read_text())
    assert saved["env_id"] == "Quadrotor-v0" and saved["timesteps"] == run.timesteps
    # VecNormalize gathered statistics, and they travel with the policy
    assert not np.allclose(policy.obs_mean, 0.0) and not np.allclose(policy.obs_var, 1.0)
    loaded, _ = load_baseline(tmp_path / algo)
    np.testing.assert_array_equal(loaded.obs_mean, policy.obs_mean)
    np.testing.assert_array_equal(loaded.obs_var, policy.obs_var)
    obs = np.random.default_rng(0).normal(size=(4, 13)).astype(np.float32)
    np.testing.assert_allclose(loaded.predict(obs)[0], policy.predict(obs)[0], rtol=1e-6)
    # the normalisation is SB3's own formula
    vec = VecNormalize(DummyVecEnv([lambda: _vec_env("Quadrotor-v0", kw, 1, 0).envs[0]]))
    vec.obs_rms.mean, vec.obs_rms.var = policy.obs_mean, policy.obs_var
    np.testing.assert_allclose(policy.normalise(obs), vec.normalize_obs(obs), rtol=1e-6)
    # evaluating the reloaded baseline gives exactly the in-memory one's costs
    before = evaluate(policy, "Quadrotor-v0", n_episodes=5, env_kwargs=kw)
    after = evaluate(loaded, "Quadrotor-v0", n_episodes=5, env_kwargs=kw)
    assert torch.equal(before.costs, after.costs)
    with pytest.raises(ValueError, match="algo"):
        train_baseline("Quadrotor-v0", "dqn", minutes=0.01)
    with pytest.raises(ValueError, match="minutes"):
        train_baseline("Quadrotor-v0", "ppo", minutes=-1.0)


def test_normalised_actions_are_exact_at_the_box_edges() -> None:
    import gymnasium

    from jfbgym.envs import ActionScale, NormalisedActions

    for env_id in ("Quadrotor-v0", "MultiBicycle-v0", "LinearQuadratic-v0"):
        env = NormalisedActions(gymnasium.make(env_id))
        problem = env.unwrapped.problem
        centre, half = (t.double().numpy() for t in problem.action_scale())
        m = problem.control_dim
        assert env.action_space.shape == (m,) and env.action_space.low.min() == -1.0
        np.testing.assert_array_equal(env.action(np.ones(m)), centre + half)
        np.testing.assert_array_equal(env.action(-np.ones(m)), centre - half)
        np.testing.assert_array_equal(env.action(np.zeros(m)), centre)
        np.testing.assert_array_equal(env.action(5 * np.ones(m)), centre + half)  # clipped
        scale = ActionScale.of(problem)
        np.testing.assert_allclose(scale.action(scale.control(np.full(m, 0.3))), 0.3)
        low, high = env.unwrapped.action_space.low, env.unwrapped.action_space.high
        assert (centre - half >= low - 1e-6).all() and (centre + half <= high + 1e-6).all()
        env.reset(seed=0)
        env.step(env.action_space.high)  # a full step from the edge is a legal env action
    quad = problem_for_env("Quadrotor-v0")
    np.testing.assert_array_equal(ActionScale.of(quad).centre,
                                  [quad.mass * quad.gravity, 0, 0, 0])  # hover


def test_baseline_cli(tmp_path, capsys) -> None:
    pytest.importorskip("stable_baselines3")
    from jfbgym.cli.baseline import add_arguments, main

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["Quadrotor-v0", "--algo", "ppo", "--minutes", "0.02", "--out",
                              str(tmp_path / "ppo"), "--env-kwargs", '{"n_steps": 10}',
                              "--episodes", "4"])
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "PPO" in out and "heuristic (hover PD)" in out and (tmp_path / "ppo/policy.pt").is_file()
