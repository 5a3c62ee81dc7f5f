"""The ``jfbgym`` command (also ``python -m jfbgym``): a dispatcher over one small module per
subcommand in this package. Each module exposes ``add_arguments(parser)`` and
``main(args) -> int`` and imports torch only inside ``main``, so ``--help`` and argument errors
answer at once. Every subcommand runs torch on ``--threads`` threads (default 1) and prints a
``ValueError`` as one line, ``jfbgym CMD: error: ...``, with exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from types import ModuleType

from jfbgym import __version__
from jfbgym.validation import positive_int, seed, threads

# subcommand -> one-line help; the module is jfbgym.cli.<name>
COMMANDS: dict[str, str] = {
    "demo": "the main job: a near-optimal controller for a six-drone swarm, against "
            "references, on any machine",
    "train": "train a JFB value-function agent on a registered env",
    "evaluate": "evaluate a run (or a shipped agent) on held-out states, with the gap to J*",
    "diagnose": "contractivity and gradient-angle diagnostics of a run",
    "render": "render a trajectory video of a run (or a shipped agent)",
    "baseline": "train a Stable-Baselines3 PPO/SAC baseline on a budget",
    "compare": "JFB against the direct policy, PPO, SAC and references under stated budgets",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jfbgym", description="Learn feedback controllers for high-dimensional optimal "
        "control with implicit Hamiltonians (JFB-trained value functions).")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def parse_subcommand(name: str, argv: list[str]) -> tuple[ModuleType, argparse.Namespace]:
    """(the module of subcommand ``name``, its parsed and checked arguments); a bad value exits
    with argparse's one-line error (status 2)."""
    module = importlib.import_module(f"jfbgym.cli.{name}")
    sub = argparse.ArgumentParser(prog=f"jfbgym {name}", description=COMMANDS[name])
    module.add_arguments(sub)
    sub.add_argument("--threads", type=int, default=1,
                     help="torch CPU threads (default 1: small batched networks gain nothing "
                          "from more, and oversubscribed cores make BLAS threads spin)")
    args = sub.parse_args(argv)
    try:  # the settings every subcommand shares, checked in one place
        threads(args.threads, "--threads")
        for flag in ("seed", "rl_seeds"):
            if getattr(args, flag, None) is not None:
                (seed if flag == "seed" else positive_int)(getattr(args, flag),
                                                          "--" + flag.replace("_", "-"))
    except ValueError as err:  # one line, as every other bad value
        print(f"jfbgym {name}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    return module, args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    if not argv or argv[0] not in COMMANDS:
        args = parser.parse_args(argv)  # prints help/version or an error for unknown commands
        parser.print_help()
        return 0 if args.command is None and not argv else 2
    name, rest = argv[0], argv[1:]
    if os.getcwd() not in sys.path and "" not in sys.path:  # 'module:Class' from here, as
        sys.path.insert(0, os.getcwd())  # python -m does (the console script does not)
    module, args = parse_subcommand(name, rest)
    try:
        import torch

        previous = torch.get_num_threads()
        torch.set_num_threads(args.threads)
        try:
            return int(module.main(args) or 0)
        finally:
            torch.set_num_threads(previous)
    except ValueError as err:  # bad input: the message names the argument or file
        print(f"jfbgym {name}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # outside training (which saves and returns 130 itself)
        print(f"jfbgym {name}: interrupted", file=sys.stderr)
        return 130


def run() -> None:
    """The console command: ``main``'s status as the exit status. After an interrupt (all
    saved) a further Ctrl-C is ignored: it would only break the interpreter's shutdown with a
    traceback."""
    code = main()
    if code == 130:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(code)


if __name__ == "__main__":
    run()
