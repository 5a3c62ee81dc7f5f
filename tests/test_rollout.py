"""A rollout equals stepping the env by hand, for feedback and for predict-only policies."""

import gymnasium
import numpy as np
import pytest
import torch

import jfbgym  # noqa: F401
from jfbgym.problems import problem_for_env
from jfbgym.problems.feedback import ZeroControl
from jfbgym.problems.quadswarm import HoverPD
from jfbgym.rollout import feedback_of, initial_states, rollout

KW = {"n_agents": 2, "n_steps": 20}


class PredictOnly:
    """Hides the feedback: only SB3's predict is left, as for an SB3 model."""

    def __init__(self, policy):
        self._policy = policy

    def predict(self, obs, state=None, episode_start=None, deterministic=True):
        return self._policy.predict(obs, state, episode_start, deterministic)


def by_hand(policy, x0: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """One episode of the single Gymnasium env, stepped manually: (states, actions, return)."""
    env = gymnasium.make("jfbgym:QuadSwarm-v0", **KW)
    obs, _ = env.reset(options={"initial_state": x0})
    states, actions, ret, done = [obs[:-1]], [], 0.0, False
    while not done:
        action, _ = policy.predict(obs)
        obs, reward, terminated, truncated, _ = env.step(action)
        states.append(obs[:-1])
        actions.append(action)
        ret += reward
        done = terminated or truncated
    env.close()
    return np.stack(states), np.stack(actions), ret


@pytest.mark.parametrize("predict_only", [False, True])
def test_rollout_equals_stepping_the_env(predict_only: bool) -> None:
    problem = problem_for_env("QuadSwarm-v0", **KW)
    heuristic = HoverPD(problem)
    policy = PredictOnly(heuristic) if predict_only else heuristic
    assert (feedback_of(policy) is None) == predict_only
    traj = rollout(policy, "QuadSwarm-v0", n_episodes=3, seed=5, env_kwargs=KW)
    assert traj.states.shape == (3, 21, 24) and traj.controls.shape == (3, 20, 8)
    x0 = initial_states(problem, 3, 5)
    torch.testing.assert_close(traj.states[:, 0], x0)
    for i in range(3):
        states, actions, ret = by_hand(heuristic, x0[i].numpy())
        np.testing.assert_allclose(traj.states[i].numpy(), states, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(traj.controls[i].numpy(), actions, rtol=1e-4, atol=1e-5)
        assert float(traj.cost[i]) == pytest.approx(-ret, rel=1e-5)
    assert bool((traj.cost > 0).all())


def test_rollout_is_seeded_and_matches_the_objective() -> None:
    problem = problem_for_env("LinearQuadratic-v0", dtype=torch.float64)
    _, gains = problem.discrete_riccati()
    riccati = lambda t, z: -z @ gains[round(float(t) / problem.step_size)].T
    a = rollout(riccati, problem, n_episodes=4, seed=1)
    b = rollout(riccati, problem, n_episodes=4, seed=1)
    torch.testing.assert_close(a.states, b.states, rtol=0, atol=0)
    torch.testing.assert_close(a.cost, problem.riccati_cost(a.states[:, 0]), rtol=1e-12, atol=0)
    assert not torch.equal(a.states, rollout(riccati, problem, n_episodes=4, seed=2).states)


def test_bad_policies_raise() -> None:
    with pytest.raises(ValueError, match="policy"):
        rollout(object(), "LinearQuadratic-v0", n_episodes=2)
    problem = problem_for_env("LinearQuadratic-v0")
    with pytest.raises(ValueError, match="env_or_id"):
        rollout(PredictOnly(ZeroControl(problem)), problem, n_episodes=2)
    with pytest.raises(ValueError, match="n_episodes"):
        rollout(ZeroControl(problem), problem, n_episodes=0)
    with pytest.raises(ValueError, match="env_or_id"):
        rollout(ZeroControl(problem), 3.0)
