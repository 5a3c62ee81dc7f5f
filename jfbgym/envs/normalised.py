"""Normalised actions: a ∈ [−1, 1]ᵐ mapped onto the problem's sensible control range.

RL algorithms assume an action box of order one centred on a reasonable action (SAC squashes a
Gaussian through tanh onto it, PPO's initial Gaussian has unit scale). The envs' own action
space is the problem's ``action_box``, which must contain every control an optimal policy
might use for any costate and is far wider (QuadSwarm: ±6, where exp(½‖u‖²/N) reaches e^72).
``ActionScale`` is the affine map u = centre + half·a of ``ControlProblem.action_scale`` (hover
thrust ± 2.5 for quadrotors, documented per problem); ``NormalisedActions`` applies it to a
Gymnasium env.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from jfbgym.problems.base import ControlProblem
from jfbgym.validation import require


@dataclass(frozen=True)
class ActionScale:
    """u = centre + half·clip(a, −1, 1), per component (float64 arrays of shape (m,))."""

    centre: np.ndarray
    half: np.ndarray

    @classmethod
    def of(cls, problem: ControlProblem) -> ActionScale:
        centre, half = problem.action_scale()
        low, high = problem.action_box()
        centre, half = (centre.detach().cpu().double().numpy(),
                        half.detach().cpu().double().numpy())
        require(bool(np.all(half > 0)), "action_scale", "positive half-widths", half)
        require(bool(np.all(centre - half >= low.cpu().double().numpy() - 1e-9)
                     and np.all(centre + half <= high.cpu().double().numpy() + 1e-9)),
                "action_scale", f"a range inside the action box of {problem.name}",
                (centre - half, centre + half))
        return cls(centre, half)

    def control(self, action: Any) -> np.ndarray:
        """The control u of normalised actions (…, m)."""
        return self.centre + self.half * np.clip(np.asarray(action, dtype=np.float64), -1, 1)

    def action(self, control: Any) -> np.ndarray:
        """The normalised action of controls u (the inverse map, not clipped)."""
        return (np.asarray(control, dtype=np.float64) - self.centre) / self.half


class NormalisedActions(gymnasium.ActionWrapper):
    """A jfbgym env whose action space is [−1, 1]ᵐ (float32), mapped by ``ActionScale``."""

    def __init__(self, env: gymnasium.Env) -> None:
        super().__init__(env)
        problem = getattr(env.unwrapped, "problem", None)
        require(isinstance(problem, ControlProblem), "env", "a jfbgym env (with a .problem)",
                type(env).__name__)
        self.scale = ActionScale.of(problem)
        m = problem.control_dim
        self.action_space = spaces.Box(-1.0, 1.0, shape=(m,), dtype=np.float32)

    def action(self, action: Any) -> np.ndarray:
        return self.scale.control(action)
