"""Swarm scale: one QuadSwarm training iteration at N = 100, 1,000 and 10,000, exact against
random-Fourier-feature interaction, seconds and peak memory, side by side in one run.

    python bench/scale.py                         # N = 100, 1000, 10000; nt 160; 2 threads
    python bench/scale.py --n 10000 --networks set --interactions fourier --recompute on
    python bench/scale.py --n 100 1000 --batch 8  # a subset
    python bench/scale.py --kernel                # the exact kernel alone at N = 1000
    python bench/scale.py --n 6 --batch 50 --prior local --threads 1 --iters 6 \\
        --interactions exact --recompute off --compile off on   # the shipped agents' step

Each configuration runs in its own process (its peak RSS is its own; one that fails, e.g.
killed for memory, is recorded under "failed"): the flat value network or the set network
(``--networks``; by default ``--prior none``, no input normalisation: the prior and the input
statistics are set-up, not the iteration; ``--prior local`` times the step as the shipped
agents train, prior included), with and without per-step recomputation (``--recompute``:
``TrainConfig.recompute``, activation checkpointing), eager or with the costate compiled
(``--compile``: ``TrainConfig.compile``), the JFB gradient, one warm-up iteration (it also
compiles) and ``--iters`` timed ones, each a full rollout of nt = 160 steps and its backward
pass.
``--kernel`` times the exact interaction's value and gradient through autograd at N = 1,000:
the blocked kernel with its saved gradient
(``interaction``) against the whole-kernel autograd graph it replaced (``_kernel``). The batch
shrinks with N (``--batch``, stated in the JSON). Writes ``bench/results/scale.json`` (and
``scale.png``) with the load average beside every timing, and the fitted exponents of time and
memory in N.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

from common import write_json

ROOT = Path(__file__).resolve().parent


def one_iteration(n: int, batch: int, interaction: str, features: int, iters: int,
                  network: str = "mlp", recompute: bool = False, width: int = 96,
                  prior: str = "none", compile: bool = False) -> dict:
    """Run in a child process: seconds per training iteration and peak RSS."""
    import tempfile

    from jfbgym.agents.config import TrainConfig
    from jfbgym.agents.trainer import Trainer

    kwargs = {"interaction": interaction}
    if interaction == "fourier":
        kwargs["fourier_features"] = features
    with tempfile.TemporaryDirectory() as tmp:
        config = TrainConfig(env_id="QuadSwarm-v0", n_agents=n, problem_kwargs=kwargs,
                             batch=batch, val_batch=1, prior=prior,
                             normalise="off" if prior == "none" else "auto",
                             network=network, recompute=recompute, width=width,
                             compile=compile, out=tmp)
        run = Trainer(config)
        run.step(1e-3)  # warm-up (and compilation)
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(iters):
            assert run.step(1e-3) is not None
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"n_agents": n, "batch": batch, "network": network, "interaction": interaction,
            "recompute": recompute, "width": width, "prior": prior, "compile": compile,
            "fourier_features": features if interaction == "fourier" else None,
            "seconds_per_iteration": wall / iters, "cpu_seconds_per_iteration": cpu / iters,
            "peak_rss_gb": rss / 2**30}


def kernel(n: int, batch: int, repeats: int) -> dict:
    """The exact interaction's value + gradient through autograd, new against old."""
    import torch

    from jfbgym.problems.interaction import _kernel, interaction

    def old(q: torch.Tensor) -> torch.Tensor:
        E = _kernel(q, 1.0, None)
        return (E.sum((1, 2)) - E.diagonal(dim1=1, dim2=2).sum(-1)) / (4.0 * n)

    q0 = torch.randn(batch, n, 3, dtype=torch.float32)
    out = {}
    for name, fn in (("blocked, saved gradient", interaction), ("whole-kernel autograd", old)):
        times = []
        for _ in range(repeats):
            q = q0.clone().requires_grad_()
            start = time.perf_counter()
            fn(q).sum().backward()
            times.append(time.perf_counter() - start)
        out[name] = min(times)
    return {"n_agents": n, "batch": batch, "seconds": out,
            "speed-up": out["whole-kernel autograd"] / out["blocked, saved gradient"]}


def child(args: argparse.Namespace, task: dict) -> dict:
    load = os.getloadavg()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    command = [sys.executable, __file__, "--child", json.dumps(task),
               "--threads", str(args.threads), "--max-gb", str(args.max_gb)]
    done = subprocess.run(command, check=False, capture_output=True, text=True, env=env)
    if done.returncode != 0:  # e.g. killed for memory: recorded, and the bench goes on
        result = {**task, "error": f"exit status {done.returncode}: "
                  f"{(done.stderr.strip().splitlines() or [''])[-1][:300]}"}
    else:
        result = json.loads(done.stdout.strip().splitlines()[-1])
        result["seconds_per_state"] = result["seconds_per_iteration"] / result["batch"]
    result["load_average_before"] = [round(x, 2) for x in load]
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result), flush=True)
    return result


def exponent(rows: list[dict], key: str) -> float | None:
    """The least-squares slope of log(key) against log(N)."""
    if len(rows) < 2:
        return None
    xs = [math.log(r["n_agents"]) for r in rows]
    ys = [math.log(r[key]) for r in rows]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def plot(runs: list[dict], path: Path) -> None:
    """Seconds per iteration and peak RSS against N, log-log, one line per configuration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    def key(r: dict) -> tuple:
        return r["network"], r["interaction"], r.get("recompute", False), r.get("compile", False)

    for config in sorted({key(r) for r in runs}):
        rows = sorted((r for r in runs if key(r) == config), key=lambda r: r["n_agents"])
        ns = [r["n_agents"] for r in rows]
        label = f"{config[0]}, {config[1]}" + (", recompute" if config[2] else "") \
            + (", compiled" if config[3] else "")
        for ax, field in zip(axes, ("seconds_per_iteration", "peak_rss_gb")):
            ax.loglog(ns, [r[field] for r in rows], "o-" if config[2] else "s--", label=label)
    for ax, label in zip(axes, ("seconds per training iteration", "peak RSS (GB)")):
        ax.set_xlabel("drones N")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    fig.suptitle("QuadSwarm, one JFB iteration (nt = 160; batch per N in scale.json)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--batch", type=int, nargs="+", default=[16, 8, 4],
                        help="minibatch per N (the last repeats)")
    parser.add_argument("--interactions", nargs="+", default=["exact", "fourier"])
    parser.add_argument("--networks", nargs="+", default=["mlp", "set"],
                        help="value networks: mlp (flat) and set")
    parser.add_argument("--recompute", nargs="+", choices=["off", "on"], default=["off", "on"],
                        help="per-step recomputation of the value network's graph (TrainConfig."
                        "recompute): off keeps every step's activations")
    parser.add_argument("--features", type=int, default=512)
    parser.add_argument("--width", type=int, default=96, help="value network width (the shipped "
                        "agents': 96)")
    parser.add_argument("--prior", choices=["none", "local"], default="none",
                        help="value prior (local: as the shipped agents train; built, or read "
                        "from the prior cache, before the timing)")
    parser.add_argument("--compile", nargs="+", choices=["off", "on"], default=["off"],
                        help="TrainConfig.compile: the costate through torch.compile")
    parser.add_argument("--iters", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-exact", type=int, default=10000,
                        help="skip the exact kernel above this N")
    parser.add_argument("--max-gb", type=float, default=16.0,
                        help="address-space limit of each configuration's process")
    parser.add_argument("--kernel", action="store_true", help="the kernel alone at N = 1000")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(ROOT / "results" / "scale.json"))
    args = parser.parse_args()
    if args.child is not None:
        # a configuration that needs more fails with MemoryError (recorded), not the OOM killer
        limit = int(args.max_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        import torch

        torch.set_num_threads(args.threads)
        task = json.loads(args.child)
        result = kernel(**task) if "repeats" in task else one_iteration(**task)
        print(json.dumps(result))
        return 0
    runs, kernels = [], []
    if args.kernel:
        kernels.append(child(args, {"n": 1000, "batch": 8, "repeats": 3}))
    else:
        for k, n in enumerate(args.n):
            batch = args.batch[min(k, len(args.batch) - 1)]
            for interaction in args.interactions:
                if interaction == "exact" and n > args.max_exact:
                    continue
                for network in args.networks:
                    for recompute in args.recompute:
                        for compiled in args.compile:
                            runs.append(child(args, {
                                "n": n, "batch": batch, "interaction": interaction,
                                "features": args.features, "iters": args.iters,
                                "network": network, "recompute": recompute == "on",
                                "width": args.width, "prior": args.prior,
                                "compile": compiled == "on"}))
    failed = [r for r in runs if "error" in r]
    runs = [r for r in runs if "error" not in r]
    fits = {}
    for network in args.networks:
        for kind in args.interactions:
            for recompute in args.recompute:
                for compiled in args.compile:
                    rows = [r for r in runs if r["interaction"] == kind
                            and r["network"] == network and r["recompute"] == (recompute == "on")
                            and r["compile"] == (compiled == "on")]
                    fits[f"{network}, {kind}, recompute {recompute}, compile {compiled}"] = {
                        "time per state": exponent(rows, "seconds_per_state"),
                        "memory": exponent(rows, "peak_rss_gb")}
    result = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
              "threads": args.threads, "runs": runs, "failed": failed, "kernel": kernels,
              "exponents_in_n": fits, "note": "batch shrinks with N (see each run): time "
              "exponents are per initial state; peak RSS includes the batch"}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, result)
    if runs:
        plot(runs, out.with_suffix(".png"))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
