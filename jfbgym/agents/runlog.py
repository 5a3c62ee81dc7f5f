"""Where a training run reports, behind one small interface: ``log.csv`` (one row per
iteration, rewritten whole after a resume or a back-off), TensorBoard (optional), the progress
bar and messages. Only rank 0 writes or prints; the other ranks' logs are silent."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from tqdm import tqdm

LOG_FIELDS = ("iteration", "loss", "val_cost", "inner_residual", "inner_iters", "unconverged",
              "lr", "seconds", "wall", "cpu", "costate", "hjb", "terminal")
TENSORBOARD_KEYS = ("loss", "val_cost", "lr", "inner_residual", "unconverged")


class RunLog:
    """The reports of one run in ``out``: ``restart(history)`` rewrites the CSV, ``add(row)``
    appends an iteration, ``progress(percent, text)`` moves the bar, ``say(text)`` prints a
    line above it, ``close()`` ends them."""

    def __init__(self, out: Path, main: bool, progress: bool, tensorboard: bool,
                 description: str) -> None:
        self.out, self.main = out, main
        self.writer = tensorboard_writer(out) if tensorboard and main else None
        self.shown = progress and main
        self.bar = tqdm(total=100, disable=not self.shown, dynamic_ncols=True,
                        desc=description, bar_format="{desc}: {percentage:3.0f}%|{bar}| "
                        "{postfix[0]}", postfix=[""])

    def restart(self, history: list[dict]) -> None:
        if self.main:
            write_csv(self.out, history)

    def add(self, row: dict) -> None:
        if self.main:
            with open(self.out / "log.csv", "a", newline="") as fh:
                csv.DictWriter(fh, LOG_FIELDS).writerow(row)
        if self.writer is not None:
            for key in TENSORBOARD_KEYS:
                self.writer.add_scalar(f"train/{key}", row[key], row["iteration"])

    def progress(self, percent: int, text: str) -> None:
        self.bar.n = percent
        if self.shown:  # (a disabled tqdm has no postfix)
            self.bar.postfix[0] = text
            self.bar.refresh()

    def say(self, text: str) -> None:
        if self.main:
            tqdm.write(text)

    def close(self) -> None:
        self.bar.close()
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def write_csv(out: Path, history: list[dict]) -> None:
    """``log.csv`` holding exactly ``history``."""
    with open(out / "log.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, LOG_FIELDS)
        writer.writeheader()
        writer.writerows(history)


def tensorboard_writer(out: Path) -> Any:
    """A ``SummaryWriter`` logging to ``out/tb`` (the optional ``tensorboard`` package)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:
        raise ValueError("tensorboard: expected the tensorboard package to be installed "
                         "(pip install 'jfbgym[tensorboard]')") from err
    return SummaryWriter(log_dir=str(out / "tb"))
