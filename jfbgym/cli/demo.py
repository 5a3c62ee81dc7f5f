"""The README's first command: a JFB controller for a six-drone swarm in about three minutes.

``jfbgym demo`` trains a JFB agent on ``QuadSwarm-v0`` (N = 6) under a wall-clock budget
(``--minutes``, 3 by default: what a 2-core laptop CPU can spare), scores it against zero control
and the hover-PD heuristic on the held-out states, writes ``videos/quadswarm_jfb.mp4`` (the
learned swarm flying to its targets) and ``videos/quadswarm_jfb.png`` (trajectories, cost and
control effort against time, and the training curve), and prints the table. ``--openloop-iters``
adds the open-loop optimum and the optimality gaps (minutes more on a CPU).
"""

from __future__ import annotations

import argparse
from pathlib import Path

ENV_ID = "QuadSwarm-v0"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--minutes", type=float, default=3.0, help="JFB training budget")
    parser.add_argument("--iters", type=int, default=100_000, help="JFB iteration cap")
    parser.add_argument("--batch", type=int, default=50, help="JFB minibatch")
    parser.add_argument("--episodes", type=int, default=100, help="held-out states")
    parser.add_argument("--openloop-iters", type=int, default=0,
                        help="L-BFGS iterations for the open-loop optimum (0: skip)")
    parser.add_argument("--out", default="runs/demo", help="the training run directory")
    parser.add_argument("--videos", default="videos", help="where the mp4 and png go")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stride", type=int, default=2, help="video: draw every stride-th step")


def main(args: argparse.Namespace) -> int:
    from jfbgym.agents.config import TrainConfig
    from jfbgym.agents.train import train
    from jfbgym.baselines import references
    from jfbgym.evaluation import format_table, held_out_states, score_methods
    from jfbgym.render import plot_training, plot_trajectories, render_video
    from jfbgym.rollout import rollout

    result = train(TrainConfig(env_id=ENV_ID, iters=args.iters, batch=args.batch,
                               seed=args.seed, out=args.out, max_minutes=args.minutes))
    agent, history = result.agent, result.history
    seconds = history[-1]["wall"] if history else 0.0
    print(f"JFB on {ENV_ID}: {result.status} after {len(history)} iterations, {seconds:.0f} s")
    problem = agent.problem
    x0 = held_out_states(problem, args.episodes)
    refs = references(problem)
    policies = {"JFB": agent, **refs}
    methods = [("JFB", agent, seconds, problem)] + [(n, p, None, problem) for n, p in refs.items()]
    rows, reference, _ = score_methods(methods, problem, x0, args.openloop_iters,
                                       [agent, *list(refs.values())[1:]])

    videos = Path(args.videos)
    video = render_video(agent, ENV_ID, videos / "quadswarm_jfb.mp4", seed=args.seed,
                         stride=args.stride)
    trajectories = {n: rollout(p, problem, x0=x0[:8]) for n, p in policies.items()}
    figure = plot_trajectories(problem, trajectories, videos / "quadswarm_jfb.png")
    curve = plot_training({"JFB (validation)": [(r["wall"], r["val_cost"]) for r in history]},
                          videos / "quadswarm_jfb_training.png",
                          None if reference is None else float(reference.cost.mean()))
    print(f"{ENV_ID}: {x0.shape[0]} held-out states")
    print(format_table(rows))
    print(f"wrote {video}, {figure}, {curve}; the agent is in {result.out}")
    return 0
