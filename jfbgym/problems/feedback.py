"""Feedback laws: batched torch controllers ``(t, z) -> u`` with SB3's ``predict`` as well.

A problem's heuristic (``ControlProblem.heuristic``) and zero control are feedback laws, so they
run through ``problem.rollout`` (the exact discrete objective, all states in one batch) and, by
``predict`` on observations ``concat(z, t)``, through any tool written for Stable-Baselines3.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:  # pragma: no cover
    from .base import ControlProblem


class FeedbackLaw:
    """A batched feedback ``u = law(t, z)`` for one problem; ``label`` names it in tables."""

    label = "feedback"

    def __init__(self, problem: ControlProblem) -> None:
        self.problem = problem

    def __call__(self, t: Tensor | float, z: Tensor) -> Tensor:
        raise NotImplementedError

    def control(self, t: Tensor | float, z: Tensor) -> Tensor:
        """The feedback itself (the method ``jfbgym.rollout`` looks for)."""
        return self(t, z)

    def predict(self, observation: np.ndarray, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, None]:
        """SB3's interface: ``(action, None)`` for observations concat(z, t), (n + 1,) or
        (K, n + 1)."""
        obs = np.asarray(observation, dtype=np.float64)
        single = obs.ndim == 1
        obs = obs.reshape(-1, self.problem.state_dim + 1)
        z = torch.as_tensor(obs[:, :-1], dtype=self.problem.dtype, device=self.problem.device)
        t = torch.as_tensor(obs[:, -1], dtype=self.problem.dtype, device=self.problem.device)
        with torch.no_grad():
            u = self(t, z).cpu().numpy().astype(np.float32)
        return (u[0] if single else u), None


class ZeroControl(FeedbackLaw):
    """u = 0: what the system does if left alone."""

    label = "zero control"

    def __call__(self, t: Tensor | float, z: Tensor) -> Tensor:
        return torch.zeros(z.shape[0], self.problem.control_dim, dtype=z.dtype, device=z.device)
