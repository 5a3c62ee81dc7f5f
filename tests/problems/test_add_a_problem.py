"""docs/adding-a-problem.md, followed with a tiny problem defined here: one class, two register
calls, and every adapter works without being told about it."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from checks import (
    GYM_ALLOWED_WARNINGS,
    assert_derivatives_match_autograd,
    assert_only_allowed_warnings,
)
from gymnasium.utils.env_checker import check_env
from pettingzoo.test import parallel_api_test
from torch import Tensor

from jfbgym.problems import ENV_SPECS, PROBLEMS, make_problem, register_env, register_problem
from jfbgym.problems.base import ControlProblem
from jfbgym.problems.feedback import FeedbackLaw
from jfbgym.validation import positive_int


class Spring(FeedbackLaw):
    label = "heuristic (spring)"

    def __call__(self, t, z: Tensor) -> Tensor:
        return -z


class Tiny(ControlProblem):
    """N particles on a line: ż = u, L = Σ(cosh u_i − 1) + ½|z|², G = 5|z|². The cosh cost makes
    the inner problem implicit (∇_uH = sinh u + p), so the base Newton solve is used."""

    name = "Tiny"
    multi_agent = True

    def __init__(self, n_agents: int = 3, horizon: float = 1.0, n_steps: int = 10,
                 dtype: torch.dtype = torch.float32, device: str = "cpu") -> None:
        n = positive_int(n_agents, "n_agents")
        super().__init__(state_dim=n, control_dim=n, n_agents=n, horizon=horizon,
                         n_steps=n_steps, dtype=dtype, device=device)

    def config(self) -> dict:
        return {"n_agents": self.n_agents, "horizon": self.horizon, "n_steps": self.n_steps}

    def dynamics(self, t, z, u):
        return u

    def running_cost(self, t, z, u):
        return (torch.cosh(u) - 1).sum(-1) + 0.5 * (z * z).sum(-1)

    def terminal_cost(self, z):
        return 5.0 * (z * z).sum(-1)

    def grad_terminal_cost(self, z):
        return 10.0 * z

    def grad_u_hamiltonian(self, t, z, p, u):
        return torch.sinh(u) + p

    def grad_z_hamiltonian(self, t, z, p, u):
        return z.clone()

    def hessian_u_matvec(self, t, z, p, u, v):
        return torch.cosh(u) * v

    def hessian_u_solve(self, t, z, p, u, v, damping=0.0):
        return v / (torch.cosh(u) + damping)

    def sample_initial_states(self, batch, generator=None):
        x = torch.randn(positive_int(batch, "batch"), self.state_dim, generator=generator,
                        dtype=torch.float64)
        return x.to(dtype=self.dtype, device=self.device)

    def action_box(self):
        """Every component in [−5, 5]: the optimal |u| = asinh|p| stays below 3 here."""
        high = torch.full((self.control_dim,), 5.0, dtype=self.dtype, device=self.device)
        return -high, high

    def positions(self, z):
        return self.agents(z)

    def target_positions(self):
        return torch.zeros(self.n_agents, 1, dtype=self.dtype, device=self.device)

    def heuristic(self):
        return Spring(self)


@pytest.fixture
def tiny():
    register_problem("Tiny", Tiny)
    register_env("Tiny-v0", "Tiny", n_agents=3)
    yield
    PROBLEMS.pop("Tiny")
    ENV_SPECS.pop("Tiny-v0")
    gym.registry.pop("Tiny-v0")


def test_a_new_problem_works_everywhere(tiny, tmp_path) -> None:
    from jfbgym.agents.config import TrainConfig
    from jfbgym.agents.trainer import train
    from jfbgym.baselines import references
    from jfbgym.envs import parallel_env, render_frame
    from jfbgym.evaluation import evaluate

    prob = make_problem("Tiny", dtype=torch.float64)
    z = prob.sample_initial_states(4, torch.Generator().manual_seed(0))
    p, u = torch.randn_like(z), torch.randn_like(z)
    assert_derivatives_match_autograd(prob, 0.3, z, p, u)
    sol = prob.optimal_control(0.0, z, p)
    assert sol.converged
    torch.testing.assert_close(sol.control, -torch.asinh(p))

    env = gym.make("Tiny-v0")
    assert_only_allowed_warnings(GYM_ALLOWED_WARNINGS, check_env, env.unwrapped)
    venv = gym.make_vec("Tiny-v0", num_envs=5, vectorization_mode="vector_entry_point")
    obs, _ = venv.reset(seed=0)
    assert obs.shape == (5, 4)
    assert_only_allowed_warnings([r"infinity"], parallel_api_test, parallel_env("Tiny-v0"),
                                 num_cycles=5)

    result = train(TrainConfig(env_id="Tiny-v0", iters=30, batch=16, val_batch=16, width=8,
                               lr=3e-2, out=str(tmp_path / "tiny")), progress=False)
    assert result.history[-1]["val_cost"] < result.history[0]["val_cost"]
    refs = references(result.agent.problem)
    assert list(refs) == ["zero control", "heuristic (spring)"]
    jfb = evaluate(result.agent, "Tiny-v0", n_episodes=32)
    zero = evaluate(refs["zero control"], "Tiny-v0", n_episodes=32)
    assert jfb.mean < zero.mean
    frame = render_frame(prob, np.zeros((3, 3)), np.zeros((2, 3)))
    assert frame.shape == (480, 480, 3) and frame.std() > 0
