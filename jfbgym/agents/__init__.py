"""The agents: JFB (value network Φ_θ, implicit control layer), the direct policy baseline,
their shared trainer and diagnostics.

Names resolve lazily (PEP 562), so the torch-free ``jfbgym.agents.config`` imports without
torch (the command line parses its arguments before anything heavy loads).
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {"Agent": ".policy", "DirectAgent": ".direct", "load_agent": ".policy",
         "InnerLog": ".agent", "JFBAgent": ".agent", "GRAD_MODES": ".implicit",
         "SOLVERS": ".implicit", "SolverOptions": ".implicit", "control_layer": ".implicit",
         "ValueNetwork": ".network", "TrainConfig": ".config", "NetworkConfig": ".config",
         "PriorConfig": ".config", "train": ".trainer"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["GRAD_MODES", "SOLVERS", "Agent", "DirectAgent", "InnerLog", "JFBAgent",
           "NetworkConfig", "PriorConfig", "SolverOptions", "TrainConfig", "ValueNetwork",
           "control_layer", "load_agent", "train"]
