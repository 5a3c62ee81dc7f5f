"""``jfbgym diagnose RUN``: the papers' verification quantities per weight snapshot."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="a run directory written by `jfbgym train`")
    parser.add_argument("--batch", type=int, default=16, help="initial states per snapshot")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-jacobian", type=int, default=20_000_000,
                        help="largest dense M_theta (entries) to form; bigger ones are skipped")
    parser.add_argument("--out", default=None, help="output folder (default: the run)")


def main(args: argparse.Namespace) -> int:
    from jfbgym.agents.diagnostics import diagnose

    rows = diagnose(args.run, args.batch, args.seed, args.max_jacobian, args.out)
    for row in rows:
        print("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in row.items()))
    return 0
