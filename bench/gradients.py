"""The four gradients of the implicit control layer side by side: the papers' Table 1 and
Figures 3–4, measured here.

For Quadrotor (N = 1) and QuadSwarm (N = 6) with the reference settings (batch 50, nt 160,
width 96, depth 3, the papers' gradient-step inner solver T), each gradient mode (``jfb``,
``unrolled``, ``implicit``, ``newton-jfb``) trains from the same seed and initial weights for
the same wall-clock budget, each in its own process so that peak memory (max RSS) is its own.
Reported per mode: median seconds per training iteration (validation excluded), peak RSS and the
RSS before training, mean inner iterations per time step, unconverged inner solves, cost against
iterations and against wall-clock, and every ratio against ``jfb``.

    .venv/bin/python bench/gradients.py                  # full: 10 min per mode and problem
    .venv/bin/python bench/gradients.py --budget-minutes 3
    .venv/bin/python bench/gradients.py --quick          # smoke run (seconds)

Writes JSON (``--out``, default bench/results/gradients.json) and a plot beside it.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import write_json

MODES = ("jfb", "unrolled", "implicit", "newton-jfb")
PROBLEMS = (("Quadrotor-v0", 1), ("QuadSwarm-v0", 6))


def worker(spec: dict) -> dict:
    """Train one mode in this process; return its measurements."""
    import torch

    from jfbgym.agents.trainer import TrainConfig, train

    torch.set_num_threads(spec.pop("threads"))
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = train(TrainConfig(**spec), progress=False)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    history = result.history
    seconds = [row["seconds"] for row in history]
    return {"status": result.status, "iterations": len(history),
            "sec_per_iter_median": statistics.median(seconds) if seconds else None,
            "peak_rss_mb": peak, "rss_before_training_mb": rss_before,
            "inner_iters_per_step_mean": statistics.fmean(r["inner_iters"] for r in history)
            if history else None,
            "unconverged_total": sum(r["unconverged"] for r in history),
            "final_val_cost": history[-1]["val_cost"] if history else None,
            "curve": [{k: r[k] for k in ("iteration", "wall", "loss", "val_cost")}
                      for r in history]}


def run_mode(spec: dict) -> dict:
    """``worker`` in a fresh interpreter (its own RSS); a crash is recorded, not raised."""
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return {"status": "failed", "error": proc.stderr.strip().splitlines()[-5:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def plot(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 2, figsize=(11, 3.8 * len(results)), squeeze=False)
    for row, (problem, modes) in zip(axes, results.items()):
        for mode, res in modes.items():
            curve = res.get("curve") or []
            if not curve:
                continue
            its = [c["iteration"] for c in curve]
            row[0].semilogy(its, [c["val_cost"] for c in curve], label=mode)
            row[1].semilogy([c["wall"] for c in curve], [c["val_cost"] for c in curve],
                            label=mode)
        row[0].set(title=f"{problem}: validation cost", xlabel="iteration")
        row[1].set(title=f"{problem}: validation cost", xlabel="wall-clock [s]")
        row[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    parser.add_argument("--out", default="bench/results/gradients.json")
    parser.add_argument("--budget-minutes", type=float, default=10.0,
                        help="wall-clock budget per mode and problem")
    parser.add_argument("--max-iters", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--n-steps", type=int, default=160)
    parser.add_argument("--width", type=int, default=96)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    if args.quick:
        args.budget_minutes, args.max_iters, args.batch = 0.2, 3, 8
        args.n_steps, args.width = 20, 16
    settings = {"batch": args.batch, "n_steps": args.n_steps, "width": args.width, "depth": 3,
                "solver": "gradient", "budget_minutes": args.budget_minutes,
                "max_iters": args.max_iters, "threads": args.threads, "quick": args.quick,
                "platform": platform.platform(), "python": platform.python_version()}
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for env_id, n_agents in PROBLEMS:
            key = f"{env_id}(N={n_agents})"
            results[key] = {}
            for mode in args.modes:
                spec = {"env_id": env_id, "n_agents": n_agents,
                        "problem_kwargs": {"n_steps": args.n_steps}, "grad": mode,
                        "solver": "gradient", "iters": args.max_iters, "batch": args.batch,
                        "val_batch": args.batch, "val_every": 5, "width": args.width,
                        "depth": 3, "seed": 0, "out": f"{tmp}/{n_agents}-{mode}",
                        "checkpoint_every": 10**9, "max_minutes": args.budget_minutes,
                        "threads": args.threads}
                results[key][mode] = res = run_mode(spec)
                print(f"{key} {mode}: {res.get('status')} "
                      f"{res.get('sec_per_iter_median')} s/iter, "
                      f"peak {res.get('peak_rss_mb')} MB, val {res.get('final_val_cost')}",
                      flush=True)
            base = results[key].get("jfb", {})
            for res in results[key].values():
                res["ratios_vs_jfb"] = {
                    k: res[k] / base[k] for k in ("sec_per_iter_median", "peak_rss_mb",
                                                  "inner_iters_per_step_mean")
                    if res.get(k) and base.get(k)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, {"settings": settings, "results": results})
    plot(results, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
