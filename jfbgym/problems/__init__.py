"""The control problems as batched, differentiable PyTorch backends (pure maths, no envs)."""

from __future__ import annotations

import importlib

import torch

from .base import ControlProblem, InnerSolution, NewtonOptions, Trajectory

# name -> "module:Class"; imported on first use so one broken optional import cannot hide the rest.
PROBLEMS: dict[str, str] = {
    "QuadSwarm": "jfbgym.problems.quadswarm:QuadSwarm",
    "MultiBicycle": "jfbgym.problems.bicycle:MultiBicycle",
    "ConsumptionSavings": "jfbgym.problems.consumption:ConsumptionSavings",
    "LinearQuadratic": "jfbgym.problems.linear_quadratic:LinearQuadratic",
}


def problem_class(name: str) -> type[ControlProblem]:
    """The class registered under ``name``."""
    if name not in PROBLEMS:
        raise ValueError(f"name: expected one of {sorted(PROBLEMS)}, got {name!r}")
    module, cls = PROBLEMS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def make_problem(name: str, *, dtype: torch.dtype = torch.float32,
                 device: str | torch.device = "cpu", **kwargs) -> ControlProblem:
    """Build a problem by name with the defaults of ``shared/problems.md``, any overridden.

    >>> prob = make_problem("QuadSwarm", n_agents=6, dtype=torch.float64)
    """
    return problem_class(name)(dtype=dtype, device=device, **kwargs)


__all__ = [
    "PROBLEMS",
    "ControlProblem",
    "InnerSolution",
    "NewtonOptions",
    "Trajectory",
    "make_problem",
    "problem_class",
]
