"""What a controller does: trajectory videos (one policy, or two side by side) and figures.

Frames come from the envs' renderers (``jfbgym.envs.rendering.render_frame``), drawn from a
stored trajectory, so a video shows exactly the rollout that ``jfbgym.rollout`` scored. Videos
are H.264 mp4 written with moviepy 2 (imageio-ffmpeg's bundled binary, so offline); figures are
matplotlib on private Agg figures (headless, no global pyplot state).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jfbgym.envs.rendering import FRAME_SIZE, render_frame
from jfbgym.figures import agg_figure, save
from jfbgym.problems.base import ControlProblem, Trajectory
from jfbgym.rollout import initial_states, resolve_problem, rollout
from jfbgym.validation import integer, output_file, positive_int, require

FPS = 20
MAX_FPS = 240
VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov")  # containers that take H.264


def video_file(path: str | Path, name: str = "path") -> Path:
    """``path`` as a video file to write (checked before any frame is drawn): a container
    suffix of ``VIDEO_SUFFIXES``, a folder that can be created."""
    p = output_file(path, name)
    require(p.suffix.lower() in VIDEO_SUFFIXES, name,
            f"a video file name ending in one of {', '.join(VIDEO_SUFFIXES)}", str(p))
    return p


def trajectory_frames(problem: ControlProblem, traj: Trajectory, index: int = 0,
                      stride: int = 1, size: tuple[int, int] = FRAME_SIZE,
                      name: str | None = None) -> list[np.ndarray]:
    """Frames of sample ``index`` at steps 0, stride, 2·stride, ..., and always the last step:
    ``len(range(0, nt + 1, stride))`` frames, plus one when nt is not a multiple of stride.
    With ``name``, each frame's caption names the policy and its cost so far (the terminal
    cost joins at the last step, so the last caption shows J)."""
    stride = positive_int(stride, "stride")
    require(0 <= index < traj.states.shape[0], "index",
            f"an integer in [0, {traj.states.shape[0]})", index)
    nt = traj.controls.shape[1]
    steps = list(range(0, nt + 1, stride))
    if steps[-1] != nt:
        steps.append(nt)
    states, controls = traj.states[index], traj.controls[index]
    so_far = torch.cumsum(traj.running_costs[index].double(), 0).cpu().numpy()
    total = float(traj.cost[index])

    def caption(k: int) -> str | None:
        if name is None:
            return None
        if k == nt:
            return f"{name}: J = {total:.4g}"
        return f"{name}: cost so far {so_far[k - 1] if k else 0.0:.4g}"

    return [render_frame(problem, states[:k + 1], controls[:k], size=size, caption=caption(k))
            for k in steps]


def write_video(frames: Sequence[np.ndarray], path: str | Path, fps: int = FPS) -> Path:
    """Write RGB frames (H, W, 3) uint8 as an H.264 mp4 (parent folders created)."""
    from moviepy import VideoClip

    require(len(frames) >= 1, "frames", "at least one frame", len(frames))
    path = video_file(path)
    fps = integer(fps, "fps", 1, MAX_FPS)
    frames = list(frames)
    # Frame k is shown at t = k/fps. moviepy writes int(duration·fps) frames and maps t to a
    # frame by float comparisons (ImageSequenceClip drops/duplicates frames by rounding), so
    # round t·fps explicitly and pad the duration by half a frame: exactly len(frames) frames.
    clip = VideoClip(lambda t: frames[min(int(t * fps + 0.5), len(frames) - 1)],
                     duration=(len(frames) + 0.5) / fps)
    clip.write_videofile(str(path), fps=fps, codec="libx264", logger=None, audio=False)
    clip.close()
    return path


def policy_name(policy: Any) -> str:
    """What a caption calls ``policy``: its ``label`` (references), "JFB" or "direct policy"
    for agents, the algorithm for RL baselines, else its class name."""
    label = getattr(policy, "label", None)
    if isinstance(label, str):
        return label
    names = {"JFBAgent": "JFB", "DirectAgent": "direct policy"}
    model = getattr(policy, "model", None)  # an RLPolicy: name its SB3 algorithm
    cls = type(model if model is not None and type(policy).__name__ == "RLPolicy" else policy)
    return names.get(cls.__name__, cls.__name__)


def render_video(policy: Any, env_id: str, path: str | Path | None = None, seed: int = 0, *,
                 env_kwargs: dict | None = None, stride: int = 1, fps: int = FPS,
                 name: str | None = None) -> Path:
    """Roll ``policy`` out from the initial state drawn with ``seed`` and write its video
    (default ``videos/<env id>.mp4``), captioned with ``name`` (default ``policy_name``) and
    the cost so far."""
    env_id, problem = resolve_problem(env_id, env_kwargs)
    path = video_file(Path("videos") / f"{env_id or problem.name}.mp4" if path is None else path)
    fps = integer(fps, "fps", 1, MAX_FPS)
    traj = rollout(policy, env_id or problem, n_episodes=1, seed=seed, env_kwargs=env_kwargs)
    frames = trajectory_frames(problem, traj, 0, stride, name=name or policy_name(policy))
    return write_video(frames, path, fps)


def render_side_by_side(policies: Mapping[str, Any], env_id: str, path: str | Path,
                        seed: int = 0, *, env_kwargs: dict | None = None, stride: int = 1,
                        fps: int = FPS) -> Path:
    """One video of several policies from the *same* initial state, labelled, left to right."""
    require(len(policies) >= 2, "policies", "at least two named policies", list(policies))
    path, fps = video_file(path), integer(fps, "fps", 1, MAX_FPS)
    env_id, problem = resolve_problem(env_id, env_kwargs)
    x0 = initial_states(problem, 1, seed)
    columns = []
    for name, policy in policies.items():
        traj = rollout(policy, env_id or problem, x0=x0, env_kwargs=env_kwargs)
        columns.append(trajectory_frames(problem, traj, 0, stride, name=name))
    frames = [np.concatenate(row, axis=1) for row in zip(*columns)]
    return write_video(frames, path, fps)


# ------------------------------------------------------------------- figures


def plot_trajectories(problem: ControlProblem, trajectories: Mapping[str, Trajectory],
                      path: str | Path, index: int = 0) -> Path:
    """Per method: the problem's picture of sample ``index``'s whole trajectory; below, the
    cumulative cost and the control norm against time (means over the batch)."""
    require(len(trajectories) >= 1, "trajectories", "at least one", trajectories)
    k = len(trajectories)
    fig = agg_figure(3.2 * max(k, 2), 6.4)
    grid = fig.add_gridspec(2, max(k, 2))
    for i, (name, traj) in enumerate(trajectories.items()):
        ax = fig.add_subplot(grid[0, i])
        ax.imshow(render_frame(problem, traj.states[index], traj.controls[index]))
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    cost_ax = fig.add_subplot(grid[1, : max(k, 2) // 2])
    ctrl_ax = fig.add_subplot(grid[1, max(k, 2) // 2:])
    for name, traj in trajectories.items():
        times, cost = cost_to_date(traj)
        cost_ax.plot(times, cost, label=f"{name} (J = {cost[-1]:.4g})")
        ctrl_ax.plot(times[:-2], traj.controls.double().norm(dim=-1).mean(0).cpu().numpy(),
                     label=name)
    cost_ax.set_xlabel("t (the step at T adds the terminal cost)")
    cost_ax.set_ylabel("cost to date (mean)")
    cost_ax.set_yscale("symlog", linthresh=1.0)
    cost_ax.legend(fontsize=8)
    ctrl_ax.set_xlabel("t")
    ctrl_ax.set_ylabel("‖u‖ (mean)")
    return save(fig, path)


def cost_to_date(traj: Trajectory) -> tuple[np.ndarray, np.ndarray]:
    """(times, mean cost to date) of a batch of trajectories: running cost accumulated step by
    step, then the terminal cost added at T, so the curve ends at the mean J (a curve without
    it would rank zero control, whose cost is almost all terminal, best)."""
    times = traj.times.cpu().double().numpy()
    running = torch.cumsum(traj.running_costs.double(), 1).mean(0).cpu().numpy()
    total = float(traj.cost.double().mean())
    return (np.concatenate([times, times[-1:]]),
            np.concatenate([[0.0], running, [total]]))


def training_history(run_dir: str | Path) -> list[dict]:
    """The rows of a JFB run's ``log.json`` (iteration, loss, val_cost, wall, ...)."""
    log = Path(run_dir) / "log.json"
    require(log.is_file(), "run_dir", "a training run directory with log.json", str(run_dir))
    return json.loads(log.read_text())


def plot_training(curves: Mapping[str, Sequence[tuple[float, float]]], path: str | Path,
                  reference: float | None = None) -> Path:
    """Cost against wall-clock seconds for each method (``name -> [(seconds, cost), ...]``),
    with the open-loop optimum as a dashed line when given."""
    fig = agg_figure(6.0, 4.0)
    ax = fig.add_subplot()
    for name, points in curves.items():
        if len(points):
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="." if len(points) < 30 else None, label=name)
    if reference is not None:
        ax.axhline(reference, ls="--", c="k", lw=1, label="open-loop optimum")
    ax.set_xlabel("wall-clock training time (s)")
    ax.set_ylabel("mean cost J")
    if all(y > 0 for pts in curves.values() for _, y in pts):
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    return save(fig, path)


def plot_comparison(rows: Sequence[Any], path: str | Path) -> Path:
    """Bar chart of mean J ± 95% CI per method (``jfbgym.evaluation.Evaluation`` rows)."""
    require(len(rows) >= 1, "rows", "at least one evaluation", rows)
    fig = agg_figure(1.4 * len(rows) + 2.0, 4.0)
    ax = fig.add_subplot()
    means = [r.mean for r in rows]
    errs = [0.0 if not np.isfinite(r.ci95) else r.ci95 for r in rows]
    ax.bar(range(len(rows)), means, yerr=errs, capsize=4,
           color=[f"C{i}" for i in range(len(rows))])
    ax.set_xticks(range(len(rows)), [r.name for r in rows], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("mean J on held-out states (± 95% CI)")
    finite = [m for m in means if np.isfinite(m)]
    if finite and min(finite) > 0 and max(finite) / min(finite) > 50:
        ax.set_yscale("log")
    return save(fig, path)
