"""Headless matplotlib pictures of a (prefix of a) trajectory, one RGB frame per call.

The envs draw their own episode history with these, and video code elsewhere can draw frames
straight from a stored ``Trajectory`` without an env::

    frame = render_frame(problem, traj.states[0, :k + 1], traj.controls[0, :k])

The last row of ``states`` is "now"; earlier rows are the trail. Frames have a fixed size (so a
video's frames agree) and are drawn on a private ``Figure`` with the Agg canvas, which works
whatever pyplot backend is active and leaks no global pyplot state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from jfbgym.problems import ControlProblem

if TYPE_CHECKING:  # matplotlib is imported on first render: `import jfbgym` stays light
    from matplotlib.figure import Figure

FRAME_SIZE = (480, 480)  # (width, height) in pixels, even so H.264 accepts them
_DPI = 80


def _numpy(x: np.ndarray | torch.Tensor | None) -> np.ndarray | None:
    if x is None:
        return None
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def _figure(size: tuple[int, int]) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] / _DPI, size[1] / _DPI), dpi=_DPI)
    FigureCanvasAgg(fig)
    return fig


def _to_rgb(fig: Figure) -> np.ndarray:
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def _limits(points: np.ndarray, margin: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Equal-aspect axis limits (lo, hi) per column containing ``points (P, k)``."""
    lo, hi = points.min(0), points.max(0)
    centre, half = (lo + hi) / 2, max(float((hi - lo).max()) / 2, 1.0) + margin
    return centre - half, centre + half


def _draw_quadswarm(fig: Figure, problem: ControlProblem, states: np.ndarray,
                    controls: np.ndarray | None, times: np.ndarray) -> None:
    n = problem.n_agents
    pos = states.reshape(len(states), n, -1)[..., :3]  # (T, N, 3)
    targets = _numpy(problem.targets_state)[:, :3]
    ax = fig.add_subplot(projection="3d")
    for i in range(n):
        ax.plot(pos[:, i, 0], pos[:, i, 1], pos[:, i, 2], lw=0.8, alpha=0.6)
    ax.scatter(*pos[-1].T, s=18, c="tab:blue", depthshade=False, label="drones")
    ax.scatter(*targets.T, s=30, c="tab:red", marker="x", label="targets")
    lo, hi = _limits(np.concatenate([pos.reshape(-1, 3), targets]))
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_zlim(lo[2], hi[2])
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_zlabel("z")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(f"QuadSwarm N={n}, t={times[-1]:.2f}")


def _draw_bicycles(fig: Figure, problem: ControlProblem, states: np.ndarray,
                   controls: np.ndarray | None, times: np.ndarray) -> None:
    n = problem.n_agents
    agents = states.reshape(len(states), n, -1)  # (T, N, 4): x, y, heading, speed
    goals = _numpy(problem.targets_xy)  # (N, 2)
    ax = fig.add_subplot()
    for i in range(n):
        ax.plot(agents[:, i, 0], agents[:, i, 1], lw=0.8, alpha=0.6)
    now = agents[-1]
    ax.quiver(now[:, 0], now[:, 1], np.cos(now[:, 2]), np.sin(now[:, 2]), color="tab:blue",
              angles="xy", scale_units="width", scale=15, width=0.006)
    ax.scatter(goals[:, 0], goals[:, 1], s=80, c="tab:red", marker="*", label="targets")
    lo, hi = _limits(np.concatenate([agents[..., :2].reshape(-1, 2), goals]))
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_aspect("equal")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(f"MultiBicycle N={n}, t={times[-1]:.2f}")


def _draw_time_series(fig: Figure, panels: list[tuple[str, np.ndarray, np.ndarray]],
                      horizon: float, title: str) -> None:
    """Stacked panels of curves against time on the whole horizon [0, T]."""
    axes = fig.subplots(len(panels), 1, sharex=True)
    for ax, (label, t, y) in zip(np.atleast_1d(axes), panels):
        if len(t):  # markers too, so a one-sample prefix is visible
            ax.plot(t, y, lw=1.0, marker="." if len(t) < 3 else None)
        ax.set_ylabel(label)
        ax.set_xlim(0.0, horizon)
    np.atleast_1d(axes)[-1].set_xlabel("t")
    fig.suptitle(title)


def _draw_consumption(fig: Figure, problem: ControlProblem, states: np.ndarray,
                      controls: np.ndarray | None, times: np.ndarray) -> None:
    panels = [("wealth", times, states[:, :1]), ("habits", times, states[:, 1:])]
    if controls is not None:
        panels.insert(1, ("consumption", times[:len(controls)], controls))
    _draw_time_series(fig, panels, problem.horizon,
                      f"ConsumptionSavings m={problem.control_dim}, t={times[-1]:.2f}")


def _draw_curves(fig: Figure, problem: ControlProblem, states: np.ndarray,
                 controls: np.ndarray | None, times: np.ndarray) -> None:
    panels = [("state", times, states)]
    if controls is not None:
        panels.append(("control", times[:len(controls)], controls))
    _draw_time_series(fig, panels, problem.horizon, f"{problem.name}, t={times[-1]:.2f}")


_DRAWERS = {
    "QuadSwarm": _draw_quadswarm,
    "MultiBicycle": _draw_bicycles,
    "ConsumptionSavings": _draw_consumption,
}


def render_frame(problem: ControlProblem, states: np.ndarray | torch.Tensor,
                 controls: np.ndarray | torch.Tensor | None = None, *,
                 size: tuple[int, int] = FRAME_SIZE) -> np.ndarray:
    """Draw one sample's trajectory prefix as an RGB frame ``(height, width, 3)`` uint8.

    ``states`` is ``(k + 1, n)`` (z_0..z_k, the last one is drawn as "now"); ``controls`` is
    ``(k, m)`` or ``None``. Problems without a dedicated picture get state/control curves.
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
    fig = _figure(size)
    _DRAWERS.get(problem.name, _draw_curves)(fig, problem, states, controls, times)
    return _to_rgb(fig)
