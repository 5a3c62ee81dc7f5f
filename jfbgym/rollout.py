"""Roll any policy out on a registered problem and get its trajectories back.

A *policy* is any of: a batched torch feedback ``(t, z) -> u`` (a plain callable, or an object
with a ``control`` method such as ``JFBAgent``), or an object with SB3's
``predict(obs, state=None, episode_start=None, deterministic=True) -> (action, state)`` only
(an SB3 model). Feedback policies run through ``problem.rollout`` (exactly the discrete objective,
all states in one batch); predict-only policies step the environment itself, all episodes at once
in the torch-batched vector env, because for them the env (its action box, its observation
layout) *is* the interface. Both return the problem's ``Trajectory``, so everything downstream
(evaluation, plots, videos) treats them alike.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from jfbgym import validation
from jfbgym.problems import problem_for_env, problem_overrides, strip_namespace
from jfbgym.problems.base import ControlProblem, Trajectory
from jfbgym.validation import require

Feedback = Callable[[Tensor, Tensor], Tensor]


def feedback_of(policy: Any) -> Feedback | None:
    """The batched torch feedback of ``policy`` (its ``control`` method, or the policy itself
    if callable); ``None`` for predict-only policies."""
    control = getattr(policy, "control", None)
    if callable(control):
        return control
    return policy if callable(policy) else None


def resolve_problem(env_or_id: Any, env_kwargs: dict | None = None,
                    dtype: torch.dtype = torch.float32) -> tuple[str | None, ControlProblem]:
    """(env id or None, problem) from an env id, a ``ControlProblem`` or an env wrapping one."""
    if isinstance(env_or_id, ControlProblem):
        return None, env_or_id
    if isinstance(env_or_id, str):
        overrides = problem_overrides(env_kwargs or {}, "env_kwargs")
        return strip_namespace(env_or_id), problem_for_env(env_or_id, dtype=dtype, **overrides)
    problem = getattr(getattr(env_or_id, "unwrapped", env_or_id), "problem", None)
    require(isinstance(problem, ControlProblem), "env_or_id",
            "an env id, a ControlProblem or an env with a .problem", type(env_or_id).__name__)
    spec = getattr(env_or_id, "spec", None)
    return (strip_namespace(spec.id) if spec is not None else None), problem


def initial_states(problem: ControlProblem, n_episodes: int, seed: int) -> Tensor:
    """``n_episodes`` initial states drawn from ρ with a generator seeded by ``seed``."""
    n_episodes = problem.batch_size(n_episodes, "n_episodes")
    seed = validation.seed(seed)
    return problem.sample_initial_states(n_episodes, torch.Generator().manual_seed(seed))


def rollout(policy: Any, env_or_id: Any, n_episodes: int = 16, seed: int = 0, *,
            x0: Tensor | None = None, env_kwargs: dict | None = None) -> Trajectory:
    """Trajectories of ``policy`` from ``n_episodes`` seeded initial states (or from ``x0``).

    ``env_or_id``: a registered env id (``env_kwargs`` override its problem), a
    ``ControlProblem``, or a Gymnasium env wrapping one. Gradients are off.
    """
    env_id, problem = resolve_problem(env_or_id, env_kwargs)
    if x0 is None:
        x0 = initial_states(problem, n_episodes, seed)
    problem.check_batch(x0, "x0", problem.state_dim)
    feedback = feedback_of(policy)
    if feedback is not None:
        with torch.no_grad():
            return problem.rollout(lambda t, z: feedback(t, z).to(problem.dtype), x0)
    require(callable(getattr(policy, "predict", None)), "policy",
            "a callable (t, z) -> u, an object with .control, or one with .predict",
            type(policy).__name__)
    require(env_id is not None, "env_or_id", "an env id for a predict-only policy", env_or_id)
    return env_rollout(policy, env_id, x0, env_kwargs=env_kwargs)


def env_rollout(policy: Any, env_id: str, x0: Tensor, env_kwargs: dict | None = None
                ) -> Trajectory:
    """Step the batched vector env of ``env_id`` from the states ``x0`` with
    ``policy.predict(obs, deterministic=True)``, one episode per state; the controls are the
    ones the env applied (clipped onto its action box) and the costs the env's own."""
    import gymnasium

    import jfbgym  # noqa: F401  (registers the ids)

    n_envs = x0.shape[0]
    env = gymnasium.make_vec(f"jfbgym:{strip_namespace(env_id)}", num_envs=n_envs,
                             vectorization_mode="vector_entry_point",
                             **problem_overrides(env_kwargs or {}, "env_kwargs"))
    try:
        problem: ControlProblem = env.unwrapped.problem
        n = problem.state_dim
        obs, _ = env.reset(options={"initial_state": x0.detach().cpu().numpy()})
        states, controls, running = [obs[:, :n]], [], []
        for _ in range(problem.n_steps):
            action, _ = policy.predict(obs, deterministic=True)
            obs, _, terminated, truncated, info = env.step(
                np.asarray(action).reshape(n_envs, problem.control_dim))
            states.append(obs[:, :n])
            controls.append(info["applied_action"])
            running.append(info["running_cost"])
        require(bool(np.all(terminated)) and not bool(np.any(truncated)), "env",
                f"episodes that end after n_steps = {problem.n_steps}", (terminated, truncated))
        terminal = info["terminal_cost"]
    finally:
        env.close()

    def tensor(a: Any) -> Tensor:
        return torch.as_tensor(np.asarray(a), dtype=problem.dtype)

    return Trajectory(problem.times(), tensor(np.stack(states, 1)), tensor(np.stack(controls, 1)),
                      tensor(np.stack(running, 1)), tensor(terminal))


def load_policy(run_dir: str | Path) -> tuple[Any, str, dict]:
    """(policy, env id, env kwargs) of an agent's run directory (JFB or direct) or an SB3
    baseline directory; loading either executes nothing from its files."""
    run_dir = Path(run_dir)
    if (run_dir / "baseline.json").is_file():
        from jfbgym.baselines import load_baseline

        model, run = load_baseline(run_dir)
        return model, run.env_id, run.env_kwargs
    from jfbgym.agents import load_agent

    agent = load_agent(run_dir)
    return agent, agent.env_id, agent.env_kwargs
