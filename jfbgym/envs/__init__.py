"""Gymnasium, batched torch and PettingZoo environments over the jfbgym problems.

Every env is a thin adapter over a ``ControlProblem``: an episode's return is −J.
"""

from jfbgym.envs.control_env import ControlEnv, ControlVectorEnv, action_bounds
from jfbgym.envs.multiagent import ControlParallelEnv, parallel_env
from jfbgym.envs.normalised import ActionScale, NormalisedActions
from jfbgym.envs.rendering import render_frame
from jfbgym.problems.registry import ENV_SPECS

__all__ = [
    "ENV_SPECS",
    "ActionScale",
    "ControlEnv",
    "ControlParallelEnv",
    "ControlVectorEnv",
    "NormalisedActions",
    "action_bounds",
    "parallel_env",
    "render_frame",
]
