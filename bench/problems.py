"""Per-call cost of the problem backends as the number of agents grows.

Times ``dynamics``, ``grad_u_hamiltonian`` and ``optimal_control`` at N = 1, 6, 100, 1000
(batch 50, float32) for every multi-agent problem ``make_problem`` can build, and reports each
time's growth ratio against N = 1: O(B·N) code should grow about linearly in N, and anything
building dense (state x state) blocks would grow quadratically. For QuadSwarm the Lambert-W
closed form is also timed against the base class's damped Newton on the same inputs (the ratio
is the speed-up the closed form buys). A problem that cannot be built is skipped with the reason
in the JSON.

    .venv/bin/python bench/problems.py            # full measurement
    .venv/bin/python bench/problems.py --quick    # smoke run (N = 1, 6; few repeats)
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from common import write_json

from jfbgym.problems import ControlProblem, make_problem

PROBLEMS = ("QuadSwarm", "MultiBicycle", "ConsumptionSavings")
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def time_call(fn: Callable[[], object], repeats: int, device: torch.device,
              warmup: int = 2) -> dict:
    """Median and minimum wall time of ``fn()`` in seconds over ``repeats`` calls (CUDA work
    is waited for, so the time is the kernels' and not just their launch)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "min_s": min(times), "repeats": repeats}


def inputs(prob: ControlProblem, batch: int, seed: int) -> tuple[float, torch.Tensor, ...]:
    """(t, z, p, u) at a point the problem visits: sampled states rolled a quarter of the horizon
    under ``initial_control``; p from ∇G there carried back a quarter horizon by the costate
    equation ṗ = −∇_z H (at that state), so every costate block is nonzero and the inner
    problem non-trivial, then scaled to max |p| <= 1; u the problem's own starting control."""
    z = prob.sample_initial_states(batch, torch.Generator().manual_seed(seed))
    h, k = prob.step_size, prob.n_steps // 4
    for i in range(k):
        z = prob.step(i * h, z, prob.initial_control(i * h, z))
    t = k * h
    u = prob.initial_control(t, z)
    p = prob.grad_terminal_cost(z)
    for _ in range(k):
        p = p / max(1.0, float(p.abs().max()))
        p = p + h * prob.grad_z_hamiltonian(t, z, p, u)
    return t, z, p / max(1.0, float(p.abs().max())), u


def measure(name: str, n: int, batch: int, dtype: torch.dtype, device: torch.device,
            repeats: int) -> dict:
    """Timings of one problem at one size (the base-class Newton, which can take 100
    iterations, at most 3 times)."""
    prob = make_problem(name, n_agents=n, dtype=dtype, device=device)
    t, z, p, u = inputs(prob, batch, seed=n)
    out = {"state_dim": prob.state_dim, "control_dim": prob.control_dim}
    with torch.no_grad():
        out["dynamics"] = time_call(lambda: prob.dynamics(t, z, u), repeats, device)
        out["grad_u_hamiltonian"] = time_call(lambda: prob.grad_u_hamiltonian(t, z, p, u),
                                              repeats, device)
        sol = prob.optimal_control(t, z, p)
        out["optimal_control"] = time_call(lambda: prob.optimal_control(t, z, p), repeats,
                                           device)
        out["optimal_control"].update(iterations=sol.iterations, converged=sol.converged,
                                      max_residual=float(sol.residual.max()))
        if type(prob).optimal_control is not ControlProblem.optimal_control:
            newton = ControlProblem.optimal_control(prob, t, z, p)
            out["newton_optimal_control"] = time_call(
                lambda: ControlProblem.optimal_control(prob, t, z, p), min(repeats, 3), device,
                warmup=1)
            out["newton_optimal_control"].update(
                iterations=newton.iterations, converged=newton.converged,
                max_residual=float(newton.residual.max()),
                rel_diff_to_optimal_control=float(
                    (newton.control - sol.control).norm()
                    / max(float(sol.control.norm()), torch.finfo(z.dtype).tiny)))
            out["newton_over_optimal_control"] = (out["newton_optimal_control"]["median_s"]
                                                  / out["optimal_control"]["median_s"])
    return out


def growth(sizes: dict[int, dict]) -> dict:
    """Median time at each N divided by that at the smallest N, per operation."""
    base_n = min(sizes)
    ops = [k for k, v in sizes[base_n].items() if isinstance(v, dict) and "median_s" in v]
    return {op: {str(n): sizes[n][op]["median_s"] / sizes[base_n][op]["median_s"]
                 for n in sorted(sizes) if op in sizes[n]} for op in ops}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: N = 1, 6, 3 repeats")
    parser.add_argument("--sizes", type=int, nargs="+", default=None,
                        help="agent counts (default 1 6 100 1000; --quick: 1 6)")
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=PROBLEMS)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=None, help="default 20 (--quick: 3)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (1: stable numbers on a shared machine)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/problems.json"))
    args = parser.parse_args(argv)
    sizes = args.sizes or ([1, 6] if args.quick else [1, 6, 100, 1000])
    repeats = args.repeats or (3 if args.quick else 20)
    if min(sizes) < 1 or args.batch < 1 or repeats < 1 or args.threads < 1:
        parser.error("--sizes, --batch, --repeats and --threads must be >= 1")
    torch.set_num_threads(args.threads)

    results: dict[str, dict] = {}
    for name in args.problems:
        per_size: dict[int, dict] = {}
        try:
            for n in sorted(set(sizes)):
                per_size[n] = measure(name, n, args.batch, DTYPES[args.dtype],
                                      torch.device(args.device), repeats)
                print(f"{name:>20} N={n:<5} " + "  ".join(
                    f"{op}={v['median_s'] * 1e3:.3f}ms" for op, v in per_size[n].items()
                    if isinstance(v, dict)), flush=True)
        except Exception as err:  # noqa: BLE001 (a missing/broken backend is reported)
            results[name] = {"skipped": f"{type(err).__name__}: {err}",
                             "sizes": {str(n): v for n, v in per_size.items()}}
            print(f"{name:>20} skipped: {results[name]['skipped']}", flush=True)
            continue
        results[name] = {"sizes": {str(n): v for n, v in per_size.items()},
                         "ratio_vs_smallest_n": growth(per_size)}

    report = {"benchmark": "problems", "quick": args.quick, "batch": args.batch,
              "dtype": args.dtype, "sizes": sorted(set(sizes)), "repeats": repeats,
              "device": args.device, "threads": args.threads, "torch": torch.__version__,
              "machine": platform.machine(), "processor": platform.processor(),
              "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
