"""Registered environment ids and the problem each one wraps.

The single source of truth for ``id -> (problem name, default keyword arguments)``: the Gymnasium
registration, the PettingZoo constructor, the agents and the rollout tools all resolve ids here.
"""

from __future__ import annotations

import torch

from jfbgym.problems import ControlProblem, make_problem

# id -> (problem name, default problem kwargs, max_episode_steps follows the problem's n_steps)
ENV_SPECS: dict[str, tuple[str, dict]] = {
    "Quadrotor-v0": ("QuadSwarm", {"n_agents": 1}),
    "QuadSwarm-v0": ("QuadSwarm", {"n_agents": 6}),
    "MultiBicycle-v0": ("MultiBicycle", {"n_agents": 5}),
    "ConsumptionSavings-v0": ("ConsumptionSavings", {"n_agents": 10}),
    "LinearQuadratic-v0": ("LinearQuadratic", {}),
}


def strip_namespace(env_id: str) -> str:
    """``"jfbgym:QuadSwarm-v0"`` -> ``"QuadSwarm-v0"``."""
    return env_id.split(":", 1)[1] if env_id.startswith("jfbgym:") else env_id


def problem_kwargs(env_id: str, **overrides) -> tuple[str, dict]:
    """The problem name and keyword arguments an env id stands for, ``overrides`` applied."""
    env_id = strip_namespace(env_id)
    if env_id not in ENV_SPECS:
        raise ValueError(f"env_id: expected one of {sorted(ENV_SPECS)}, got {env_id!r}")
    name, defaults = ENV_SPECS[env_id]
    return name, {**defaults, **overrides}


def problem_for_env(env_id: str, *, dtype: torch.dtype = torch.float32,
                    device: str | torch.device = "cpu", **overrides) -> ControlProblem:
    """Build the problem behind an env id (defaults of the id, ``overrides`` applied)."""
    name, kwargs = problem_kwargs(env_id, **overrides)
    return make_problem(name, dtype=dtype, device=device, **kwargs)
