"""evaluate: held-out scores with CI and gap; agrees with SB3's evaluate_policy; the CLI."""

import argparse
import math

import gymnasium
import numpy as np
import pytest
import torch

import jfbgym  # noqa: F401
from jfbgym.evaluation import HeldOutResets, evaluate, format_table, held_out_states, optimality_gap
from jfbgym.problems import problem_for_env
from jfbgym.problems.feedback import ZeroControl
from jfbgym.problems.quadswarm import HoverPD


def riccati_policy(problem):
    _, gains = problem.discrete_riccati()
    gains = gains.to(problem.dtype)
    return lambda t, z: -z @ gains[round(float(t) / problem.step_size)].T


def test_evaluate_scores_with_ci_and_gap() -> None:
    problem = problem_for_env("LinearQuadratic-v0", dtype=torch.float64)
    x0 = held_out_states(problem, 40)
    assert torch.equal(x0, held_out_states(problem, 40))  # a fixed set
    exact = problem.riccati_cost(x0)
    opt = evaluate(riccati_policy(problem), problem, x0=x0, reference=exact, name="Riccati")
    zero = evaluate(ZeroControl(problem), problem, x0=x0, reference=exact, name="zero")
    assert opt.mean == pytest.approx(float(exact.mean()), rel=1e-12)
    assert abs(opt.gap) < 1e-12
    costs = problem.objective(lambda t, z: torch.zeros(z.shape[0], 2, dtype=z.dtype), x0)
    assert zero.mean == pytest.approx(float(costs.mean()), rel=1e-12)
    assert zero.ci95 == pytest.approx(1.959964 * float(costs.std()) / math.sqrt(40), rel=1e-5)
    assert zero.gap == pytest.approx((zero.mean - float(exact.mean())) / float(exact.mean()))
    assert zero.gap > 0.1
    table = format_table([opt, zero])
    assert "Riccati" in table and "zero" in table and "+0.00%" in table
    with pytest.raises(ValueError, match="reference"):
        optimality_gap(costs, exact[:3])


def test_sb3_evaluate_policy_agrees() -> None:
    sb3 = pytest.importorskip("stable_baselines3")
    from stable_baselines3.common.evaluation import evaluate_policy

    kw = {"n_agents": 1, "n_steps": 30}
    problem = problem_for_env("Quadrotor-v0", **kw)
    x0 = held_out_states(problem, 5)
    env = gymnasium.make("jfbgym:Quadrotor-v0", **kw)
    model = sb3.PPO("MlpPolicy", env, seed=0, device="cpu")
    for policy in (model, HoverPD(problem)):
        ours = evaluate(policy, "Quadrotor-v0", x0=x0, env_kwargs=kw)
        rewards, _ = evaluate_policy(policy, HeldOutResets(env, x0), n_eval_episodes=5,
                                     deterministic=True, return_episode_rewards=True, warn=False)
        np.testing.assert_allclose(-np.asarray(rewards), ours.costs.numpy(), rtol=1e-4)
    env.close()


def test_evaluate_cli_on_a_trained_run(tmp_path, capsys) -> None:
    from jfbgym.agents.config import TrainConfig
    from jfbgym.agents.trainer import train
    from jfbgym.cli.evaluate import add_arguments, main

    train(TrainConfig(env_id="LinearQuadratic-v0", iters=3, batch=8, val_batch=8,
                      out=str(tmp_path / "lq"), checkpoint_every=3), progress=False)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert main(parser.parse_args([str(tmp_path / "lq"), "--episodes", "6",
                                   "--openloop-iters", "200"])) == 0
    out = capsys.readouterr().out
    for name in ("JFB", "zero control", "open-loop optimum"):
        assert name in out


def test_evaluation_repr_summarises() -> None:
    import torch as _torch

    from jfbgym.evaluation import Evaluation

    e = Evaluation("JFB", _torch.linspace(1.0, 3.0, 100, dtype=_torch.float64), 0.0123, 1e-3)
    text = repr(e)
    assert text == "Evaluation('JFB', J=2 ± 0.11 over 100 states, gap=+1.23%)", text
