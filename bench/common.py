"""What every benchmark records beside its figures, and the one way it writes them: the date,
commit, machine, torch, threads and load average (the machine is shared: a timing means little
without the load beside it), as JSON under ``bench/results/``. Imported by the scripts in this
folder (``python bench/NAME.py`` puts the folder on the path)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def load_average() -> list[float]:
    """The 1, 5 and 15-minute load averages, rounded."""
    return [round(x, 2) for x in os.getloadavg()]


def commit() -> str:
    """The commit the benchmark ran at (``-dirty`` with uncommitted changes), or 'unknown'."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True,
                              cwd=RESULTS.parent).stdout.strip()

    try:
        return git("rev-parse", "HEAD") + ("-dirty" if git("status", "--porcelain") else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def context() -> dict[str, Any]:
    """Where and when: date, commit, machine, torch and its threads, load average."""
    import torch

    return {"date": time.strftime("%Y-%m-%d %H:%M"), "commit": commit(),
            "machine": f"{platform.machine()} ({os.cpu_count()} cores)",
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "load_average": load_average()}


def write_json(path: str | Path, payload: dict[str, Any]) -> Path:
    """``payload`` with its ``context`` as indented JSON at ``path`` (folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**payload, "context": context()}, indent=2, default=str) + "\n")
    return path
