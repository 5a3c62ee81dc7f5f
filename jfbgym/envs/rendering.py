"""One RGB frame of a (prefix of a) trajectory, drawn by the problem's own ``draw`` hook.

The envs draw their own episode history with this, and video code elsewhere draws frames
straight from a stored ``Trajectory`` without an env::

    frame = render_frame(problem, traj.states[0, :k + 1], traj.controls[0, :k])

The last row of ``states`` is "now"; earlier rows are the trail. Frames have a fixed size (so a
video's frames agree) and are drawn headless (``jfbgym.figures``).
"""

from __future__ import annotations

import numpy as np
import torch

import jfbgym.envs.raster as raster  # noqa: PLR0402 (not via jfbgym.envs: a cycle)
from jfbgym.figures import agg_figure, to_rgb
from jfbgym.problems.base import ControlProblem

FRAME_SIZE = (480, 480)  # (width, height) in pixels, even so H.264 accepts them
_DPI = 80


def _numpy(x: np.ndarray | torch.Tensor | None) -> np.ndarray | None:
    if x is None:
        return None
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def render_frame(problem: ControlProblem, states: np.ndarray | torch.Tensor,
                 controls: np.ndarray | torch.Tensor | None = None, *,
                 size: tuple[int, int] = FRAME_SIZE, caption: str | None = None) -> np.ndarray:
    """Draw one sample's trajectory prefix as an RGB frame ``(height, width, 3)`` uint8.

    ``states`` is ``(k + 1, n)`` (z_0..z_k, the last one is drawn as "now"); ``controls`` is
    ``(k, m)`` or ``None``; ``caption`` (the policy, its cost so far) goes at the bottom. The
    picture is the problem's: its fast ``raster`` hook, else its matplotlib ``draw``.
    """
    states = _numpy(states)
    controls = _numpy(controls)
    if states is None or states.ndim != 2 or states.shape[1] != problem.state_dim \
            or len(states) == 0:
        raise ValueError(f"states: expected shape (k + 1, {problem.state_dim}), got "
                         f"{None if states is None else states.shape}")
    if controls is not None and (controls.ndim != 2 or controls.shape[1] != problem.control_dim
                                 or len(controls) > len(states)):
        raise ValueError(f"controls: expected shape (k <= {len(states)}, "
                         f"{problem.control_dim}), got {controls.shape}")
    if not (isinstance(size, tuple) and len(size) == 2 and all(
            isinstance(s, int) and s >= 32 and s % 2 == 0 for s in size)):
        raise ValueError(f"size: expected (width, height), even integers >= 32, got {size!r}")
    times = problem.step_size * np.arange(len(states))
    canvas = problem.raster(raster, states, controls, times, size)
    if canvas is not None:
        if caption:
            canvas.text((10, size[1] - 24), caption)
        return canvas.pixels()
    return matplotlib_frame(problem, states, controls, times, size, caption)


def matplotlib_frame(problem: ControlProblem, states: np.ndarray, controls: np.ndarray | None,
                     times: np.ndarray, size: tuple[int, int] = FRAME_SIZE,
                     caption: str | None = None) -> np.ndarray:
    """The frame drawn by the problem's matplotlib ``draw`` (the fallback, and the
    ``bench/render.py`` baseline)."""
    fig = agg_figure(size[0] / _DPI, size[1] / _DPI, _DPI)
    problem.draw(fig, states, controls, times)
    if caption:
        fig.text(0.02, 0.01, caption, fontsize=10)
    return to_rgb(fig)
