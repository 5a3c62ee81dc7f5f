"""Video rendering speed: frames per second of the fast raster path (``ControlProblem.raster``)
against the matplotlib path it replaced (``draw``), side by side on the same frames.

    python bench/render.py            # QuadSwarm-v0 and MultiBicycle-v0, 40 frames each

Writes ``bench/results/render.json`` (one torch thread, load average recorded).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from common import write_json

from jfbgym.envs.rendering import FRAME_SIZE, matplotlib_frame, render_frame
from jfbgym.problems import problem_for_env
from jfbgym.rollout import rollout

ROOT = Path(__file__).resolve().parent


def frames_per_second(draw, steps: list[int]) -> float:
    draw(steps[0])  # warm-up: fonts, caches
    start = time.perf_counter()
    for k in steps:
        draw(k)
    return len(steps) / (time.perf_counter() - start)


def measure(env_id: str, n_frames: int) -> dict:
    problem = problem_for_env(env_id)
    traj = rollout(problem.heuristic(), problem, n_episodes=1, seed=0)
    states = traj.states[0].double().numpy()
    controls = traj.controls[0].double().numpy()
    nt = controls.shape[0]
    steps = [int(k) for k in np.linspace(0, nt, n_frames)]
    times = problem.step_size * np.arange(nt + 1)
    load = [round(x, 2) for x in os.getloadavg()]
    fast = frames_per_second(lambda k: render_frame(problem, states[:k + 1], controls[:k],
                                                    caption="bench"), steps)
    slow = frames_per_second(lambda k: matplotlib_frame(
        problem, states[:k + 1], controls[:k], times[:k + 1], caption="bench"), steps)
    return {"env": env_id, "frames": len(steps), "raster_fps": fast, "matplotlib_fps": slow,
            "speed_up": fast / slow, "load_average": load}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=["QuadSwarm-v0", "MultiBicycle-v0"])
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--out", default=str(ROOT / "results" / "render.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = {"frame_size": FRAME_SIZE, "cpus": os.cpu_count(), "runs": []}
    for env_id in args.envs:
        run = measure(env_id, args.frames)
        results["runs"].append(run)
        print(f"{env_id}: raster {run['raster_fps']:.1f} frames/s, matplotlib "
              f"{run['matplotlib_fps']:.2f} frames/s, x{run['speed_up']:.0f} "
              f"(load {run['load_average']})", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, results)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
