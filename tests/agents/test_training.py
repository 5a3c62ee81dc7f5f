"""Training: LinearQuadratic reaches the Riccati optimum; checkpoints round-trip; resume is
bit-for-bit; the NaN guard; the policy interfaces; bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import jfbgym.agents.agent as agent_module
from jfbgym.agents import JFBAgent
from jfbgym.agents.checkpoint import CHECKPOINT, load_state, snapshot_paths
from jfbgym.agents.config import DEFAULT_ITERS, TrainConfig
from jfbgym.agents.trainer import train
from jfbgym.cli.train import add_arguments, config_from_args


def lq_config(tmp_path, **overrides) -> TrainConfig:
    settings = {"env_id": "LinearQuadratic-v0", "iters": 200, "batch": 32, "val_batch": 64,
                "width": 16, "depth": 3, "rank": 4, "lr": 3e-2, "seed": 0,
                "out": str(tmp_path / "lq"), "checkpoint_every": 100,
                # the mechanics below count validations and learning rates step by step
                "val_every": 1, "schedule": "plateau", "warmup": 0}
    return TrainConfig(**{**settings, **overrides})


def test_linear_quadratic_reaches_riccati(tmp_path) -> None:
    result = train(lq_config(tmp_path), progress=False)
    assert result.status == "finished" and len(result.history) == 200
    agent = JFBAgent.load(result.out)
    x = agent.problem.sample_initial_states(2000, torch.Generator().manual_seed(12345))
    with torch.no_grad():
        cost = float(agent.objective(x).mean())
    optimum = float(agent.problem.riccati_cost(x).mean())
    assert optimum <= cost * (1 + 1e-6)  # nothing beats the discrete Riccati optimum
    assert cost <= 1.02 * optimum, (cost, optimum)
    # the feedback law works with the problem's own rollout and the checkpoint round-trips
    with torch.no_grad():
        torch.testing.assert_close(agent.problem.objective(agent.control, x[:64]),
                                   result.agent.objective(x[:64]))
    assert [it for it, _ in snapshot_paths(result.out)] == [100, 200]
    log = json.loads((result.out / "log.json").read_text())
    assert log == result.history and log[-1]["unconverged"] == 0
    assert (result.out / "log.csv").read_text().count("\n") == 201


def test_resume_is_bit_for_bit(tmp_path) -> None:
    settings = {"iters": 4, "batch": 8, "val_batch": 8, "width": 8, "checkpoint_every": 1,
                "schedule": "cosine"}  # a schedule that depends on the budget
    straight = train(lq_config(tmp_path, out=str(tmp_path / "a"), **settings), progress=False)

    def crash_at_2(agent, row) -> None:  # the same run, cut short (the schedule knows iters=4)
        if row["iteration"] == 2:
            raise KeyboardInterrupt

    cut = train(lq_config(tmp_path, out=str(tmp_path / "b"), **settings), progress=False,
                callback=crash_at_2)
    assert cut.status == "interrupted" and cut.history[-1]["iteration"] == 1  # last whole one
    resumed = train(lq_config(tmp_path, out=str(tmp_path / "b"), resume=True, **settings),
                    progress=False)
    a, b = (load_state(r.out / CHECKPOINT) for r in (straight, resumed))
    assert a["iteration"] == b["iteration"] == 4
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    strip = [{k: v for k, v in row.items() if k not in ("seconds", "wall", "cpu")}
             for row in (straight.history, resumed.history) for row in row]
    assert strip[:4] == strip[4:]
    with pytest.raises(ValueError, match="resume"):  # another network cannot resume this run
        train(lq_config(tmp_path, out=str(tmp_path / "b"), resume=True,
                        **{**settings, "width": 9, "iters": 5}), progress=False)


def test_nan_guard_restores_then_stops(tmp_path, monkeypatch, capsys) -> None:
    real = agent_module.JFBAgent.rollout
    calls = {"n": 0}

    def poisoned(self, x0, grad=None, log=None, warn=True, recompute=False):
        traj = real(self, x0, grad, log, warn, recompute)
        if grad is not None:  # training calls only
            calls["n"] += 1
            if calls["n"] in (3, 5, 6):
                return traj._replace(terminal_cost=traj.terminal_cost * float("nan"))
        return traj

    monkeypatch.setattr(agent_module.JFBAgent, "rollout", poisoned)
    result = train(lq_config(tmp_path, iters=10, batch=8, val_batch=8, width=8),
                   progress=False)
    out = capsys.readouterr().out + capsys.readouterr().err
    assert result.status == "non-finite loss"
    assert [row["iteration"] for row in result.history] == [1, 2, 3]
    lrs = [row["lr"] for row in result.history]
    assert lrs == [3e-2, 3e-2, 1.5e-2]  # halved once after the first NaN
    saved = load_state(result.out / CHECKPOINT)
    assert saved["iteration"] == 3
    for value in saved["model"].values():
        assert torch.isfinite(value).all()
    assert "non-finite" in out


def test_predict_interfaces_and_size_checks(tmp_path) -> None:
    result = train(TrainConfig(env_id="QuadSwarm-v0", n_agents=2,
                               problem_kwargs={"n_steps": 8}, iters=1, batch=4, val_batch=4,
                               width=8, out=str(tmp_path / "q2")), progress=False)
    agent = JFBAgent.load(result.out)
    assert agent.env_id == "QuadSwarm-v0" and agent.env_kwargs == {"n_steps": 8, "n_agents": 2}
    z = agent.problem.sample_initial_states(3, torch.Generator().manual_seed(0))
    obs = np.concatenate([z.numpy(), np.full((3, 1), 0.25)], axis=1).astype(np.float32)
    batched, state = agent.predict(obs)
    single, _ = agent.predict(obs[1])
    assert state is None and batched.shape == (3, 8) and single.shape == (8,)
    np.testing.assert_allclose(single, batched[1], rtol=1e-6)
    expected = agent.control(0.25, torch.as_tensor(obs[:, :-1])).numpy()
    # a time per row against one shared time: the prior's tables are gathered per sample or
    # built once, the same sums in another order (float32: absolute 1e-7 on controls of O(1))
    np.testing.assert_allclose(batched, expected, rtol=1e-6, atol=1e-6)
    per_agent = agent.predict_parallel(obs[1])
    assert list(per_agent) == ["agent_0", "agent_1"]
    np.testing.assert_allclose(np.concatenate(list(per_agent.values())), single)
    with pytest.raises(ValueError, match="observation"):
        agent.predict(np.zeros(13))  # a Quadrotor (N = 1) observation
    with pytest.raises(ValueError, match="observations"):
        agent.predict_parallel({"agent_0": obs[0, :10]})
    from jfbgym.problems import problem_for_env
    with pytest.raises(ValueError, match="n_agents"):
        agent.check_problem(problem_for_env("QuadSwarm-v0", n_agents=3, n_steps=8))
    with pytest.raises(ValueError, match="LinearQuadratic|QuadSwarm"):
        agent.check_problem(problem_for_env("LinearQuadratic-v0"))
    with pytest.raises(ValueError, match="run directory"):
        JFBAgent.load(tmp_path / "nothing")


def test_bad_config_and_cli(tmp_path) -> None:
    for bad in ({"grad": "autodiff"}, {"grad": "unrolled", "solver": "newton"},
                {"dtype": "float16"}, {"iters": 0}, {"lr": -1.0}, {"env_id": "Nope-v0"}):
        with pytest.raises(ValueError):
            train(lq_config(tmp_path, **bad), progress=False)
    import argparse
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["QuadSwarm-v0", "--n-agents", "6", "--grad", "newton-jfb",
                              "--problem-kwargs", '{"targets": "formation"}', "--resume",
                              "--max-minutes", "1.5"])
    config = config_from_args(args)
    assert (config.env_id, config.n_agents, config.grad, config.resume, config.max_minutes) \
        == ("QuadSwarm-v0", 6, "newton-jfb", "always", 1.5)
    assert config.env_kwargs() == {"targets": "formation", "n_agents": 6}


def test_ctrl_c_and_time_budget_save_before_stopping(tmp_path, monkeypatch) -> None:
    real = agent_module.JFBAgent.rollout
    calls = {"n": 0}

    def interrupted(self, x0, grad=None, log=None, warn=True, recompute=False):
        if grad is not None:
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt
        return real(self, x0, grad, log, warn, recompute)

    monkeypatch.setattr(agent_module.JFBAgent, "rollout", interrupted)
    result = train(lq_config(tmp_path, iters=10, batch=8, val_batch=8, width=8,
                             checkpoint_every=100), progress=False)
    assert result.status == "interrupted" and len(result.history) == 2
    assert load_state(result.out / CHECKPOINT)["iteration"] == 2
    monkeypatch.undo()
    budget = train(lq_config(tmp_path, out=str(tmp_path / "budget"), iters=1000, batch=8,
                             val_batch=8, width=8, max_minutes=1e-9), progress=False)
    assert budget.status == "time budget" and len(budget.history) == 1
    assert load_state(budget.out / CHECKPOINT)["iteration"] == 1


@pytest.mark.parametrize("env_id, n_agents", [("Quadrotor-v0", 1), ("QuadSwarm-v0", 2)])
def test_quadswarm_cost_falls(tmp_path, env_id: str, n_agents: int) -> None:
    # from scratch (the prior would start it near the optimum, with nothing to halve)
    result = train(TrainConfig(env_id=env_id, n_agents=n_agents, problem_kwargs={"n_steps": 20},
                               iters=15, batch=16, val_batch=32, width=16, seed=1,
                               prior="none", normalise=False, out=str(tmp_path / env_id)),
                   progress=False)
    first, last = result.history[0], result.history[-1]
    assert last["val_cost"] < 0.5 * first["val_cost"], (first["val_cost"], last["val_cost"])
    assert sum(row["unconverged"] for row in result.history) == 0


def test_cli_train_then_load(tmp_path) -> None:
    from jfbgym.cli import main as cli
    out = tmp_path / "cli"
    assert cli(["train", "LinearQuadratic-v0", "--iters", "2", "--batch", "4", "--val-batch",
                "4", "--width", "8", "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["iters"] == 2 and config["agent"]["problem_name"] == "LinearQuadratic"
    assert "version" in config and config["agent"]["solver"]["solver"] == "newton"
    assert JFBAgent.load(out).env_id == "LinearQuadratic-v0"
    assert cli(["train", "LinearQuadratic-v0", "--grad", "unrolled", "--out", str(out)]) == 2


def test_load_refuses_a_changed_problem(tmp_path) -> None:
    result = train(lq_config(tmp_path, iters=1, batch=4, val_batch=4, width=8), progress=False)
    config = json.loads((result.out / "config.json").read_text())
    config["agent"]["problem"]["horizon"] = 2.0  # trained on T = 2, the env id now means T = 1
    (result.out / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="trained on"):
        JFBAgent.load(result.out)


def test_the_agent_is_the_best_validated_one(tmp_path, monkeypatch) -> None:
    """A run that drifts after its best validation returns (and loads as) the best weights,
    while its checkpoint keeps the last state for --resume."""
    calls = {"n": 0}
    objective = agent_module.JFBAgent.objective

    def drifting(self, x0, grad=None, log=None, warn=True):
        cost = objective(self, x0, grad, log, warn)
        if grad is None:  # validations: the last two look 50% worse than they are
            calls["n"] += 1
            if calls["n"] >= 4:
                return cost + 0.5 * cost.abs()
        return cost

    monkeypatch.setattr(agent_module.JFBAgent, "objective", drifting)
    result = train(lq_config(tmp_path, iters=4, batch=8, val_batch=8, width=8), progress=False)
    monkeypatch.undo()
    state = load_state(result.out / CHECKPOINT)
    best = state["best"]
    assert state["iteration"] == 4 and best["iteration"] <= 2  # before the drift
    assert best["val_cost"] == min([best["val_cost"]] + [r["val_cost"] for r in result.history])
    assert best["val_cost"] < result.history[-1]["val_cost"]
    for key, value in state["best"]["model"].items():
        assert torch.equal(result.agent.network.state_dict()[key], value)
    assert not all(torch.equal(state["model"][k], v) for k, v in best["model"].items())
    loaded = JFBAgent.load(result.out)
    for key, value in state["best"]["model"].items():
        assert torch.equal(loaded.network.state_dict()[key], value)


def test_a_time_budget_binds_unless_an_iteration_cap_is_given(tmp_path, monkeypatch):
    """``iters`` defaults to 500 on its own, and to no cap beside a time budget: a CPU budget a
    default cap cut short would silently not bind."""
    from jfbgym.agents.budget import Budget
    from jfbgym.agents.distributed import World

    assert TrainConfig().iteration_budget() == DEFAULT_ITERS == 500
    assert TrainConfig(cpu_minutes=10).iteration_budget() is None
    assert TrainConfig(max_minutes=10).iteration_budget() is None
    assert TrainConfig(cpu_minutes=10, iters=50).iteration_budget() == 50
    budget = Budget(lq_config(tmp_path, iters=None, cpu_minutes=1.0), 0, 0.0, 0.0, World())
    monkeypatch.setattr(budget, "cpu_clock", budget.cpu_clock - 14.5)  # 14.5 s of 60 gone
    assert budget._exhausted(10**6) is None  # far past the old 500-iteration default
    assert budget.left(10**6) == "0m45s CPU left"
    assert budget.progress(10**6) == pytest.approx(14.5 / 60, abs=0.01)
    monkeypatch.setattr(budget, "cpu_clock", budget.cpu_clock - 60.0)
    assert budget._exhausted(10**6) == "time budget"
    with pytest.raises(ValueError, match="iters"):
        TrainConfig(iters=0, cpu_minutes=1.0).validate()


def test_progress_bar_reports_the_binding_budget(tmp_path, monkeypatch):
    from jfbgym.agents.budget import Budget
    from jfbgym.agents.distributed import World

    budget = Budget(lq_config(tmp_path, iters=1_000_000, max_minutes=2.0), 0, 0.0, 0.0, World())
    monkeypatch.setattr(budget, "clock", budget.clock - 30.5)  # 30.5 s of 120 gone
    assert budget.left(10) == "1m29s left"
    budget = Budget(lq_config(tmp_path, iters=200, max_minutes=60.0), 0, 0.0, 0.0, World())
    assert budget.left(150) == "50 iterations left"
