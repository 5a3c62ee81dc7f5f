"""The control problems as batched, differentiable PyTorch backends (pure maths, no envs).

Names resolve lazily (PEP 562): importing this package, or its torch-free ``registry``, does not
import torch until a problem class or the base contract is asked for.
"""

from __future__ import annotations

import importlib
from typing import Any

from .registry import (
    ENV_SPECS,
    PROBLEMS,
    make_problem,
    problem_class,
    problem_for_env,
    problem_kwargs,
    problem_overrides,
    register_env,
    register_problem,
    strip_namespace,
)

_LAZY = {name: ".base" for name in ("ControlProblem", "InnerSolution", "NewtonOptions",
                                     "Trajectory")}
_LAZY["check_derivatives"] = ".derivatives"


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ENV_SPECS",
    "PROBLEMS",
    "ControlProblem",
    "InnerSolution",
    "NewtonOptions",
    "Trajectory",
    "check_derivatives",
    "make_problem",
    "problem_class",
    "problem_for_env",
    "problem_kwargs",
    "problem_overrides",
    "register_env",
    "register_problem",
    "strip_namespace",
]
