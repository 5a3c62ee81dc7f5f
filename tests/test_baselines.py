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
    from jfbgym.baselines import load_baseline, train_baseline

    kw = {"n_agents": 1, "n_steps": 10}
    model, run = train_baseline("Quadrotor-v0", algo, minutes=0.03, out=str(tmp_path / algo),
                                env_kwargs=kw, n_envs=2)
    assert run.timesteps > 0 and run.algo == algo and run.env_kwargs == kw
    saved = json.loads((tmp_path / algo / "baseline.json").read_text())
    assert saved["env_id"] == "Quadrotor-v0" and saved["timesteps"] == run.timesteps
    loaded, _ = load_baseline(tmp_path / algo)
    obs = np.random.default_rng(0).normal(size=(4, 13)).astype(np.float32)
    np.testing.assert_allclose(loaded.predict(obs, deterministic=True)[0],
                               model.predict(obs, deterministic=True)[0], rtol=1e-6)
    with pytest.raises(ValueError, match="algo"):
        train_baseline("Quadrotor-v0", "dqn", minutes=0.01)
    with pytest.raises(ValueError, match="minutes"):
        train_baseline("Quadrotor-v0", "ppo", minutes=-1.0)


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
