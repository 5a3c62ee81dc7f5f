"""``jfbgym compare ENV``: every method on the same held-out states under stated budgets."""

from __future__ import annotations

import argparse

from jfbgym.cli.train import json_object


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("env_id", help="a registered env id, e.g. QuadSwarm-v0")
    parser.add_argument("--minutes", type=float, default=10.0, help="JFB wall-clock budget")
    parser.add_argument("--rl-factor", type=float, default=1.0,
                        help="PPO/SAC budget as a multiple of --minutes (10: ten times JFB's)")
    parser.add_argument("--algos", default="ppo,sac",
                        help="comma-separated subset of ppo,sac (empty: no RL)")
    parser.add_argument("--rl-seeds", type=int, default=3,
                        help="seeds per RL algorithm, sharing its budget (best and mean reported)")
    parser.add_argument("--no-direct", action="store_true",
                        help="skip the direct policy (trained through the rollout, JFB's budget)")
    parser.add_argument("--episodes", type=int, default=100, help="held-out states")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--env-kwargs", type=json_object, default={}, metavar="JSON")
    parser.add_argument("--iters", type=int, default=1_000_000, help="JFB iteration cap")
    parser.add_argument("--batch", type=int, default=50, help="JFB minibatch")
    parser.add_argument("--openloop-iters", type=int, default=500,
                        help="L-BFGS iterations per warm start (0: skip the optimum)")
    parser.add_argument("--out", default=None, help="default runs/compare-<env>")
    parser.add_argument("--no-video", action="store_true")


def main(args: argparse.Namespace) -> int:
    from jfbgym.compare import CompareConfig, compare
    from jfbgym.evaluation import format_table
    from jfbgym.problems import strip_namespace

    algos = tuple(a for a in args.algos.split(",") if a)
    config = CompareConfig(args.env_id, args.minutes, args.rl_factor, algos, args.rl_seeds,
                           not args.no_direct, args.episodes, args.seed, args.env_kwargs,
                           args.iters, args.batch, args.openloop_iters,
                           args.out or f"runs/compare-{strip_namespace(args.env_id)}",
                           not args.no_video)
    rows = compare(config, progress=True)
    print(format_table(rows))
    print(f"written to {config.out}")
    return 0
