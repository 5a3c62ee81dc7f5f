"""The direct policy: its gradient is the rollout's, it trains with the shared trainer and CLI,
and it saves, loads and acts like any agent."""

import json

import numpy as np
import pytest
import torch

from jfbgym.agents import DirectAgent, JFBAgent, NetworkConfig, TrainConfig, load_agent, train
from jfbgym.agents.checkpoint import CheckpointError
from jfbgym.cli import main as cli
from jfbgym.evaluation import evaluate
from jfbgym.problems import problem_for_env


def test_gradient_equals_finite_differences_of_the_rollout_cost() -> None:
    torch.manual_seed(0)
    agent = DirectAgent.build("Quadrotor-v0", {"n_steps": 12}, NetworkConfig(width=8, depth=2),
                              dtype=torch.float64)
    with torch.no_grad():  # away from the zero-initialised output layer: a generic point
        for p in agent.network.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x0 = agent.problem.sample_initial_states(5, torch.Generator().manual_seed(1))
    params = list(agent.network.parameters())
    grads = torch.autograd.grad(agent.objective(x0, grad="jfb").mean(), params)
    direction = [torch.randn_like(p) for p in params]
    analytic = sum(float((g * d).sum()) for g, d in zip(grads, direction))

    def cost(step: float) -> float:
        with torch.no_grad():
            for p, d in zip(params, direction):
                p.add_(step * d)
            value = float(agent.objective(x0).mean())
            for p, d in zip(params, direction):
                p.sub_(step * d)
        return value

    eps = 1e-6
    numeric = (cost(eps) - cost(-eps)) / (2 * eps)
    assert analytic == pytest.approx(numeric, rel=1e-6)
    assert abs(analytic) > 1e-3  # a real gradient, not a vanishing one


def test_output_is_bounded_by_the_action_scale_and_starts_at_the_nominal_control() -> None:
    agent = DirectAgent.build("Quadrotor-v0", {"n_steps": 8}, NetworkConfig(width=8),
                              dtype=torch.float64)
    centre, half = agent.problem.action_scale()
    z = 5.0 * torch.randn(16, agent.problem.state_dim, dtype=torch.float64)
    torch.testing.assert_close(agent.control(0.0, z), centre.expand(16, -1))  # hover
    with torch.no_grad():
        agent.network.out.bias.fill_(50.0)
    torch.testing.assert_close(agent.control(0.0, z), (centre + half).expand(16, -1))


def test_direct_trains_saves_loads_and_acts(tmp_path) -> None:
    out = tmp_path / "direct"
    config = TrainConfig(env_id="Quadrotor-v0", agent="direct", problem_kwargs={"n_steps": 20},
                         iters=30, batch=16, val_batch=16, val_every=10, width=16, out=str(out))
    result = train(config, progress=False)
    first, last = result.history[0]["val_cost"], result.history[-1]["val_cost"]
    assert result.status == "finished" and last < 0.7 * first
    saved = json.loads((out / "config.json").read_text())
    assert saved["agent"]["kind"] == "direct" and saved["train"]["agent"] == "direct"
    loaded = load_agent(out)
    assert isinstance(loaded, DirectAgent)
    x0 = loaded.problem.sample_initial_states(8, torch.Generator().manual_seed(3))
    torch.testing.assert_close(loaded.objective(x0), result.agent.objective(x0))
    with pytest.raises(CheckpointError, match="'direct' agent"):
        JFBAgent.load(out)
    # the standard interfaces: predict on env observations, the agent saved and reloaded
    obs = np.concatenate([x0[0].numpy(), [0.0]]).astype(np.float32)
    action, _ = loaded.predict(obs)
    assert action.shape == (4,) and np.isfinite(action).all()
    again = load_agent(loaded.save(tmp_path / "saved"))
    np.testing.assert_allclose(again.predict(obs)[0], action)
    row = evaluate(again, "Quadrotor-v0", n_episodes=4, env_kwargs={"n_steps": 20})
    assert np.isfinite(row.mean)


def test_direct_from_the_command_line(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert cli(["train", "LinearQuadratic-v0", "--agent", "direct", "--iters", "4", "--batch",
                "8", "--val-batch", "8", "--width", "8", "--out", str(out)]) == 0
    assert cli(["evaluate", str(out), "--episodes", "4", "--no-openloop"]) == 0
    assert "direct policy" in capsys.readouterr().out


def test_jfb_settings_are_refused_for_the_direct_policy(tmp_path) -> None:
    for name, value in (("grad", "unrolled"), ("costate_weight", 1.0), ("prior", "none")):
        config = TrainConfig(agent="direct", out=str(tmp_path), **{name: value})
        with pytest.raises(ValueError, match=name):
            config.validate()
    with pytest.raises(ValueError, match="agent"):
        TrainConfig(agent="ppo", out=str(tmp_path)).validate()


def test_problem_action_scales_lie_in_their_boxes_and_cover_the_shipped_controls() -> None:
    from jfbgym.evaluation import held_out_states

    for env_id in ("Quadrotor-v0", "QuadSwarm-v0", "MultiBicycle-v0"):
        problem = problem_for_env(env_id)
        centre, half = problem.action_scale()
        low, high = problem.action_box()
        assert bool((half > 0).all() and (centre - half >= low).all()
                    and (centre + half <= high).all())
        # the documented claim: a near-optimal agent's controls lie inside the range
        agent = JFBAgent.pretrained(env_id)
        with torch.no_grad():
            u = agent.rollout(held_out_states(agent.problem, 20), warn=False).controls
        assert bool(((u - centre).abs() <= half).all()), env_id


def test_gradient_clipping_bounds_the_step(tmp_path) -> None:
    from jfbgym.agents.trainer import Trainer

    assert TrainConfig(agent="direct").gradient_clip() == 1.0
    assert TrainConfig().gradient_clip() is None
    assert TrainConfig(grad_clip=0.5).gradient_clip() == 0.5
    norms = {}
    for clip in (1e-3, 1e3):
        run = Trainer(TrainConfig(env_id="Quadrotor-v0", agent="direct", grad_clip=clip,
                                  problem_kwargs={"n_steps": 10}, batch=4, val_batch=4,
                                  width=8, out=str(tmp_path / str(clip))))
        run.optimizer = torch.optim.SGD(run.net.parameters(), lr=1.0)  # step = the gradient
        before = [p.detach().clone() for p in run.net.parameters()]
        assert run.step(1.0) is not None
        norms[clip] = float(torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in
                                           zip(run.net.parameters(), before))))
    assert norms[1e-3] == pytest.approx(1e-3, rel=1e-4) and norms[1e3] > 1e-2
