"""The ``jfbgym`` command (also ``python -m jfbgym``).

Each subcommand lives in the module that owns its work and exposes
``add_arguments(parser)`` and ``main(args) -> int``; modules are imported only when their
subcommand runs, so ``jfbgym --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Iterator
from contextlib import contextmanager

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("jfbgym.demo", "train, evaluate and render a JFB agent on QuadSwarm-v0 (minutes, CPU)"),
    "train": ("jfbgym.agents.train", "train a JFB value-function agent on a registered env"),
    "evaluate": ("jfbgym.evaluation", "evaluate a checkpoint on held-out initial states"),
    "diagnose": ("jfbgym.agents.diagnostics", "contractivity and gradient-angle diagnostics"),
    "render": ("jfbgym.render", "render a trajectory video of a trained agent"),
    "baseline": ("jfbgym.baselines", "train a Stable-Baselines3 PPO/SAC baseline on a budget"),
    "compare": ("jfbgym.compare", "JFB vs PPO vs SAC vs references under one budget"),
}


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    """``--threads``, for subcommands that run training and evaluation in-process."""
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1: small batched networks gain nothing from more, "
                             "and oversubscribed cores make BLAS threads spin: seen 100x slower)")


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op thread count set to ``n`` inside the block, restored after it."""
    import torch

    from jfbgym.problems.base import positive_int

    previous = torch.get_num_threads()
    torch.set_num_threads(positive_int(n, "threads"))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jfbgym", description="Learn feedback controllers for high-dimensional optimal "
        "control with implicit Hamiltonians (JFB-trained value functions).")
    parser.add_argument("--version", action="version",
                        version=f"%(prog)s {importlib.import_module('jfbgym').__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    if not argv or argv[0] not in COMMANDS:
        args = parser.parse_args(argv)  # prints help/version or an error for unknown commands
        parser.print_help()
        return 0 if args.command is None and not argv else 2
    name, rest = argv[0], argv[1:]
    module = importlib.import_module(COMMANDS[name][0])
    sub = argparse.ArgumentParser(prog=f"jfbgym {name}", description=COMMANDS[name][1])
    module.add_arguments(sub)
    args = sub.parse_args(rest)
    try:
        return int(module.main(args) or 0)
    except ValueError as err:  # bad input: the message names the argument; no traceback
        print(f"jfbgym {name}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
