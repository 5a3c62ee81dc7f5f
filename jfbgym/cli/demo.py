"""The README's first command: a near-optimal feedback controller for a six-drone swarm.

``jfbgym demo`` loads the JFB agent shipped for ``QuadSwarm-v0`` (N = 6), trains a fresh one
beside it under an *iteration* budget (``--iters``: the same result on a fast or a loaded
machine, only sooner or later), and scores both, zero control and the hover-PD heuristic on the
held-out states against the certified open-loop optimum J* recorded with the shipped agent: the
table's gap column is (J − J*)/|J*|. It writes ``videos/quadswarm_jfb.mp4`` (the shipped swarm
flying to its targets), ``videos/quadswarm_jfb.png`` (trajectories, cost and control effort
against time) and ``videos/quadswarm_jfb_training.png`` (the fresh run's validation cost).
"""

from __future__ import annotations

import argparse
from pathlib import Path

ENV_ID = "QuadSwarm-v0"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--iters", type=int, default=100,
                        help="iterations of the fresh training run (0: shipped agent only)")
    parser.add_argument("--batch", type=int, default=50, help="fresh run: minibatch")
    parser.add_argument("--episodes", type=int, default=100,
                        help="held-out states (the first of the 100 J* was certified on)")
    parser.add_argument("--out", default="runs/demo", help="the fresh run's directory")
    parser.add_argument("--videos", default="videos", help="where the mp4 and png go")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stride", type=int, default=1, help="video: draw every stride-th step")


def main(args: argparse.Namespace) -> int:
    import torch

    from jfbgym.agents import JFBAgent
    from jfbgym.agents.config import TrainConfig
    from jfbgym.agents.pretrained import record
    from jfbgym.agents.trainer import train
    from jfbgym.baselines import references
    from jfbgym.evaluation import Evaluation, evaluate, format_table, held_out_states
    from jfbgym.render import plot_training, plot_trajectories, render_video
    from jfbgym.rollout import rollout
    from jfbgym.validation import integer

    integer(args.iters, "--iters", 0)
    shipped, rec = JFBAgent.pretrained(ENV_ID), record(ENV_ID)
    problem = shipped.problem
    n = integer(args.episodes, "--episodes", 1, rec["states"])  # J* is known for these
    x0 = held_out_states(problem, rec["states"], rec["held_out_seed"])[:n]
    J_star = torch.tensor(rec["J_star_per_state"], dtype=torch.float64)[:n]
    policies = {f"JFB shipped ({rec['train_cpu_seconds'] / 60:.0f} CPU-min)": shipped}
    train_seconds = {next(iter(policies)): rec["train_cpu_seconds"]}
    history: list[dict] = []
    if args.iters > 0:
        result = train(TrainConfig(env_id=ENV_ID, iters=args.iters, batch=args.batch,
                                   seed=args.seed, out=args.out))
        history = result.history
        done = history[-1]["iteration"] if history else 0
        seconds = history[-1]["wall"] if history else 0.0
        print(f"fresh JFB run on {ENV_ID}: {result.status} after {done} iterations, "
              f"{seconds:.0f} s wall, {history[-1]['cpu'] if history else 0:.0f} s CPU")
        if done < args.iters:
            print(f"WARNING: the fresh run stopped after {done} of {args.iters} iterations "
                  f"({result.status}); its row is not the recipe's result")
        name = f"JFB fresh ({done} iterations)"
        policies[name], train_seconds[name] = result.agent, history[-1]["cpu"] if history else 0.0
    policies.update(references(problem))
    rows = [evaluate(p, problem, x0=x0, reference=J_star, name=k,
                     train_seconds=train_seconds.get(k)) for k, p in policies.items()]
    rows.append(Evaluation("open-loop optimum (certified)", J_star, 0.0, float("nan")))
    print(f"{ENV_ID}: {n} held-out states; J* {rec['J_star_certificate']}")
    print(format_table(rows))
    heuristic = rows[len(policies) - 1]
    for row in rows[:len(policies) - 2]:
        if row.mean >= heuristic.mean:
            print(f"WARNING: {row.name} is no better than {heuristic.name}")

    videos = Path(args.videos)
    video = render_video(shipped, ENV_ID, videos / "quadswarm_jfb.mp4", seed=args.seed,
                         stride=args.stride)
    trajectories = {k: rollout(p, problem, x0=x0[:8]) for k, p in policies.items()}
    figure = plot_trajectories(problem, trajectories, videos / "quadswarm_jfb.png")
    print(f"wrote {video}, {figure}", end="")
    if history:
        curve = plot_training({"fresh JFB (validation)": [(r["wall"], r["val_cost"])
                                                          for r in history]},
                              videos / "quadswarm_jfb_training.png", float(J_star.mean()))
        print(f", {curve}; the fresh agent is in {args.out}", end="")
    print()
    return 0
