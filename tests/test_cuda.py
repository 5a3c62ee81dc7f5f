"""The GPU path: train, evaluate, render and the vector env on CUDA, matching the CPU. CPU-only
machines (and CI) skip these with the reason; run them wherever a GPU is available."""

import numpy as np
import pytest
import torch

from jfbgym.agents import JFBAgent
from jfbgym.agents.config import TrainConfig
from jfbgym.agents.trainer import train
from jfbgym.evaluation import evaluate
from jfbgym.problems import problem_for_env

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA device (torch.cuda.is_available() is False)")


def test_training_on_cuda_matches_cpu_to_float64_rounding(tmp_path) -> None:
    settings = {"env_id": "QuadSwarm-v0", "n_agents": 2, "problem_kwargs": {"n_steps": 20},
                "iters": 3, "batch": 8, "val_batch": 8, "width": 16, "depth": 2,
                "dtype": "float64", "prior": "none", "normalise": "off", "val_every": 1}
    runs = {d: train(TrainConfig(**settings, device=d, out=str(tmp_path / d)), progress=False)
            for d in ("cpu", "cuda")}
    assert next(runs["cuda"].agent.network.parameters()).is_cuda
    for a, b in zip(runs["cpu"].history, runs["cuda"].history):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-9)
    agent = JFBAgent.load(runs["cuda"].out, device="cuda")
    cpu_eval = evaluate(runs["cpu"].agent, runs["cpu"].agent.problem, n_episodes=8)
    cuda_eval = evaluate(agent, agent.problem, n_episodes=8)
    assert cuda_eval.mean == pytest.approx(cpu_eval.mean, rel=1e-9)


def test_vector_env_on_cuda_steps_like_cpu() -> None:
    import gymnasium

    envs = {d: gymnasium.make_vec("QuadSwarm-v0", num_envs=4,
                                  vectorization_mode="vector_entry_point", n_agents=2, device=d)
            for d in ("cpu", "cuda")}
    obs = {d: e.reset(seed=0)[0] for d, e in envs.items()}
    np.testing.assert_allclose(obs["cpu"], obs["cuda"], rtol=1e-6)
    action = np.zeros(envs["cpu"].action_space.shape, dtype=np.float32)
    steps = {d: e.step(action) for d, e in envs.items()}
    np.testing.assert_allclose(steps["cpu"][0], steps["cuda"][0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(steps["cpu"][1], steps["cuda"][1], rtol=1e-5, atol=1e-6)


def test_problem_rollout_on_cuda() -> None:
    problem = problem_for_env("Quadrotor-v0", device="cuda")
    x0 = problem.sample_initial_states(4, torch.Generator().manual_seed(0)).to("cuda")
    cost = problem.rollout(problem.heuristic().control, x0).cost
    assert cost.is_cuda and bool(torch.isfinite(cost).all())
