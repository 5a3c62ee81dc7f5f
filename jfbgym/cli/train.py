"""``jfbgym train ENV [--flags]``: one flag per ``TrainConfig`` field, with its help text."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import typing

from jfbgym.agents.config import (
    AGENT_KINDS,
    DTYPE_NAMES,
    GRAD_MODE_NAMES,
    NETWORKS,
    NORMALISE,
    PRIORS,
    RESUME,
    SCHEDULES,
    SOLVER_NAMES,
    TrainConfig,
)

CHOICES = {"grad": GRAD_MODE_NAMES, "solver": SOLVER_NAMES, "dtype": DTYPE_NAMES,
           "resume": RESUME, "schedule": SCHEDULES, "prior": PRIORS, "normalise": NORMALISE,
           "agent": AGENT_KINDS, "network": NETWORKS}


def finite_number(text: str) -> float:
    """A float flag. argparse shows a ValueError as "invalid <function name> value" and drops
    its reason, so non-numbers, nan and inf raise ArgumentTypeError, which it shows."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r} ({err.msg})")
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def add_config_arguments(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """One flag per ``TrainConfig`` field (``--field-name``), typed, with its help text."""
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING \
            else f.default
        help_text = f.metadata.get("help", "") + (f" (default: {default})"
                                                   if default not in (None, {}, False) else "")
        help_text = help_text.replace("%", "%%")  # argparse %-formats help strings
        hint = hints[f.name]
        if hint is bool:
            parser.add_argument(flag, action="store_true", default=default, help=help_text)
        elif hint is dict:
            parser.add_argument(flag, type=json_object, default=default, metavar="JSON",
                                help=help_text)
        elif f.name == "resume":
            parser.add_argument(flag, nargs="?", const="always", default=default,
                                choices=RESUME, help=help_text)
        else:
            kind = next(a for a in typing.get_args(hint) or (hint,) if a is not type(None))
            kind = finite_number if kind is float else kind
            parser.add_argument(flag, type=kind, default=default, choices=CHOICES.get(f.name),
                                help=help_text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from jfbgym.problems.registry import ENV_SPECS

    parser.add_argument("env", nargs="?", default=None,
                        help=f"an env id ({', '.join(sorted(ENV_SPECS))}) or a problem class "
                             "by import path, module:Class")
    add_config_arguments(parser)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    if args.env is not None:
        values["env_id"] = args.env
    config = TrainConfig(**values)
    config.validate()
    return config


def main(args: argparse.Namespace) -> int:
    from jfbgym.agents.trainer import train

    result = train(config_from_args(args))
    last = result.history[-1] if result.history else {}
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for the run
        print(f"{result.status} after {last.get('iteration', 0)} iterations: validation cost "
              f"{last.get('val_cost', float('nan')):.6g}; saved to {result.out}")
    return {"finished": 0, "time budget": 0, "interrupted": 130}.get(result.status, 1)
