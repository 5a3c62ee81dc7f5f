"""``jfbgym baseline ENV --algo ppo``: a Stable-Baselines3 baseline under a wall-clock budget."""

from __future__ import annotations

import argparse

from jfbgym.cli.train import json_object


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("env_id", help="a registered env id, e.g. QuadSwarm-v0")
    parser.add_argument("--algo", choices=("ppo", "sac"), default="ppo")
    parser.add_argument("--minutes", type=float, default=10.0, help="wall-clock budget")
    parser.add_argument("--out", default=None, help="directory for the model + baseline.json")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--env-kwargs", type=json_object, default={}, metavar="JSON",
                        help="problem overrides as JSON, e.g. '{\"n_agents\": 2}'")
    parser.add_argument("--episodes", type=int, default=100, help="held-out states to evaluate")


def main(args: argparse.Namespace) -> int:
    from jfbgym.baselines import references, train_baseline
    from jfbgym.evaluation import evaluate, format_table
    from jfbgym.problems import problem_for_env, strip_namespace

    out = args.out if args.out is not None else f"runs/{args.algo}-{strip_namespace(args.env_id)}"
    model, run = train_baseline(args.env_id, args.algo, args.minutes, out, args.seed,
                                args.env_kwargs, verbose=1)
    print(f"trained {args.algo.upper()} for {run.train_seconds:.1f} s "
          f"({run.timesteps} env steps), saved to {out}")
    problem = problem_for_env(args.env_id, **args.env_kwargs)
    rows = [evaluate(model, args.env_id, n_episodes=args.episodes, name=args.algo.upper(),
                     env_kwargs=args.env_kwargs, train_seconds=run.train_seconds)]
    rows += [evaluate(p, problem, n_episodes=args.episodes, name=n)
             for n, p in references(problem).items()]
    print(format_table(rows))
    return 0
