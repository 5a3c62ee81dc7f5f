"""Data-parallel speed-up: training iterations per second with 1 and K ranks (torchrun, gloo on
CPU; nccl with ``--device cuda``) at the same global minibatch, side by side in one run.

    python bench/distributed.py                          # QuadSwarm N = 100, 1 and 2 ranks
    python bench/distributed.py --n-agents 6 --batch 256 --ranks 1 2

Each configuration is a real ``torchrun ... -m jfbgym train`` run (one torch thread per rank);
the time per iteration is taken from its log (steady state: the first iterations, which include
warm-up, are dropped), so process start-up and the prior are not counted. Writes
``bench/results/distributed.json`` with the load average beside every timing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import write_json

ROOT = Path(__file__).resolve().parent


def seconds_per_iteration(ranks: int, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        load = os.getloadavg()
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   "--nproc-per-node", str(ranks), "-m", "jfbgym", "train", "QuadSwarm-v0",
                   "--n-agents", str(args.n_agents), "--batch", str(args.batch),
                   "--val-batch", str(max(args.batch // 4, ranks)), "--iters", str(args.iters),
                   "--prior", "none", "--normalise", "off", "--val-every", "1000000",
                   "--checkpoint-every", "1000000", "--device", args.device, "--out", tmp]
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        total = time.perf_counter() - start
        rows = json.loads((Path(tmp) / "log.json").read_text())
    steady = rows[args.warmup:]
    per_iteration = (steady[-1]["wall"] - rows[args.warmup - 1]["wall"]) / len(steady)
    return {"ranks": ranks, "seconds_per_iteration": per_iteration,
            "iterations_per_second": 1.0 / per_iteration, "process_seconds": total,
            "load_average_before": [round(x, 2) for x in load],
            "load_average_after": [round(x, 2) for x in os.getloadavg()]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--n-agents", type=int, default=100)
    parser.add_argument("--batch", type=int, default=64, help="global minibatch")
    parser.add_argument("--iters", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2, help="iterations not timed")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=str(ROOT / "results" / "distributed.json"))
    args = parser.parse_args()
    runs = [seconds_per_iteration(k, args) for k in args.ranks]
    base = runs[0]["seconds_per_iteration"]
    for run in runs:
        run["speed_up"] = base / run["seconds_per_iteration"]
        print(f"{run['ranks']} rank(s): {run['seconds_per_iteration']:.3f} s/iteration, "
              f"speed-up x{run['speed_up']:.2f} (load {run['load_average_before']})", flush=True)
    result = {"env": "QuadSwarm-v0", "n_agents": args.n_agents, "global_batch": args.batch,
              "iterations": args.iters, "device": args.device, "cpus": os.cpu_count(),
              "machine": platform.machine(), "python": sys.version.split()[0], "runs": runs}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, result)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
