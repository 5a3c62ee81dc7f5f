"""How close to optimal: the gap (J − J*)/|J*| of trained JFB agents against CPU seconds.

For each env, on a fixed seeded held-out set (100 states, the seed every table uses):

* J*: the open-loop optimum per state (``jfbgym.openloop``: stagewise Newton from the nominal
  and zero controls, and finally from each trained agent's own controls, so that J* ≤ J by
  construction; L-BFGS where Newton's matrices do not fit), with its certificate (stationarity
  residual, second-order status; LinearQuadratic: against Riccati). Cached in
  ``bench/results/jstar/``.
* each recipe variant trains under a CPU-time budget (one thread, ``time.process_time``): the
  held-out J is scored every ``--eval-every`` CPU seconds (not charged to the budget), giving
  gap against CPU seconds.

    python bench/quality.py                                   # every env, 10 and 30 CPU-min
    python bench/quality.py --envs Quadrotor-v0 --minutes 10 --variants default no-prior
    python bench/quality.py --quick                           # smoke run (about a minute)

Writes ``bench/results/quality.json`` (``--out``) and a figure beside it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch
from common import load_average, write_json

from jfbgym.agents.config import TrainConfig
from jfbgym.agents.trainer import train
from jfbgym.evaluation import HELD_OUT_SEED, held_out_states
from jfbgym.openloop import open_loop_optimum
from jfbgym.problems import problem_for_env

ROOT = Path(__file__).resolve().parent
ENVS = {  # label -> (env id, problem overrides)
    "Quadrotor-v0": ("Quadrotor-v0", {}),
    "QuadSwarm-v0": ("QuadSwarm-v0", {}),
    "MultiBicycle-v0": ("MultiBicycle-v0", {}),
    "ConsumptionSavings-v0": ("ConsumptionSavings-v0", {}),
    "LinearQuadratic-v0": ("LinearQuadratic-v0", {}),
    "QuadSwarm-N100": ("QuadSwarm-v0", {"n_agents": 100}),
}
VARIANTS = {  # name -> TrainConfig overrides on top of the library's defaults
    "default": {},
    "no-prior": {"prior": "none"},
    "no-normalise": {"normalise": "off"},
    "costate": {"costate_weight": 1.0},
    "hjb": {"hjb_weight": 1.0},
    "terminal": {"terminal_weight": 1.0},
    "implicit": {"grad": "implicit"},
    "plateau": {"schedule": "plateau"},
    "compile": {"compile": True},
}


def reference(label: str, n_states: int, quick: bool) -> dict:
    """J* per held-out state (cached), with its certificate."""
    env_id, kwargs = ENVS[label]
    cache = ROOT / "results" / "jstar" / f"{label}-{n_states}{'-quick' if quick else ''}.pt"
    if cache.is_file():
        return torch.load(cache, weights_only=True)
    problem = problem_for_env(env_id, dtype=torch.float64, **kwargs)
    x0 = held_out_states(problem, n_states)
    cpu = time.process_time()
    result = open_loop_optimum(problem, x0, max_iters=20 if quick else None)
    data = {"cost": result.cost, "controls": result.controls, "residual": result.residual,
            "certificate": result.certificate(), "cpu_seconds": time.process_time() - cpu}
    if problem.name == "LinearQuadratic":
        exact = problem.riccati_cost(x0)
        data["certificate"] += (f"; Riccati: max relative difference "
                                f"{float(((result.cost - exact) / exact).abs().max()):.1e}")
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(data, cache)
    return data


def refine(label: str, agent, ref: dict) -> dict:
    """J* from the agent's own controls too (best per state), so that J* ≤ J."""
    env_id, kwargs = ENVS[label]
    problem = problem_for_env(env_id, dtype=torch.float64, **kwargs)
    x0 = held_out_states(problem, ref["cost"].numel())
    with torch.no_grad():  # the agent's controls, from its own (float32) problem
        own = agent.rollout(x0.to(agent.problem.dtype), warn=False).controls.double()
    result = open_loop_optimum(problem, x0, init=[ref["controls"], own])
    return {"cost": result.cost, "certificate": result.certificate(),
            "improved_states": int((result.cost < ref["cost"] - 1e-9).sum())}


def run_variant(label: str, variant: str, minutes: float, ref: dict, args) -> dict:
    env_id, kwargs = ENVS[label]
    settings = {**VARIANTS[variant], **(json.loads(args.set) if args.set else {})}
    out = ROOT / "results" / "runs" / f"{label}-{variant}-{minutes:g}"
    config = TrainConfig(env_id=env_id, problem_kwargs=dict(kwargs), cpu_minutes=minutes,
                         out=str(out), seed=args.seed, **settings)
    x_eval = held_out_states(problem_for_env(env_id, **kwargs), ref["cost"].numel())
    reference_mean = float(ref["cost"].mean())
    curve: list[list[float]] = []
    next_eval = [0.0]

    def score(agent, row) -> None:
        if row["cpu"] < next_eval[0]:
            return
        next_eval[0] = row["cpu"] + args.eval_every
        with torch.no_grad():
            J = float(agent.objective(x_eval, warn=False).double().mean())
        curve.append([row["cpu"], J, (J - reference_mean) / abs(reference_mean)])
        print(f"  {label} {variant} {minutes:g} min: cpu {row['cpu']:.0f} s, iteration "
              f"{row['iteration']}, J {J:.5g}, gap {100 * curve[-1][2]:+.2f}%", flush=True)

    start = time.process_time()
    result = train(config, progress=False, callback=score)
    with torch.no_grad():
        costs = result.agent.objective(x_eval, warn=False).double()
    refined = refine(label, result.agent, ref)
    J, J_star = float(costs.mean()), float(refined["cost"].mean())
    last = result.history[-1] if result.history else {}
    return {"variant": variant, "settings": settings, "cpu_minutes": minutes,
            "status": result.status, "iterations": last.get("iteration", 0),
            "train_cpu_seconds": last.get("cpu"), "process_cpu_seconds":
            time.process_time() - start, "J": J,
            "J_ci95": 1.96 * float(costs.std()) / math.sqrt(costs.numel()),
            "J_star": J_star, "gap": (J - J_star) / abs(J_star),
            "J_star_certificate": refined["certificate"],
            "J_star_improved_states": refined["improved_states"], "curve": curve,
            "load_average_end": load_average()}


def plot(results: dict, path: Path) -> None:
    from jfbgym.figures import agg_figure, save

    floor = 1e-6  # LinearQuadratic's gap is ~1e-7: drawn at the floor, labelled exactly
    fig = agg_figure(9.5, 4.6)
    ax = fig.add_subplot()
    for label, env in results["envs"].items():
        # one curve per env (its default recipe); a run without it shows each variant's
        variants = {r["variant"] for r in env["runs"]}
        for variant in ["default"] if "default" in variants else sorted(variants):
            run = max((r for r in env["runs"] if r["variant"] == variant),
                      key=lambda r: r["cpu_minutes"])
            pts = [(c, max(g, floor)) for c, _, g in run["curve"]]
            name = label if variant == "default" else f"{label}, {variant}"
            if pts:
                ax.plot(*zip(*pts), marker=".",
                        label=f"{name}: {100 * run['gap']:+.2g}% after {run['iterations']} it.")
    ax.set_yscale("log")
    ax.set_ylim(bottom=0.5 * floor)
    ax.set_xlabel("training CPU seconds (one thread)")
    ax.set_ylabel("gap (J − J*)/|J*| on the held-out states")
    for level in (0.05, 0.02):
        ax.axhline(level, color="k", lw=0.6, ls=":")
        ax.annotate(f"{100 * level:g}%", (0, level), xytext=(2, 2), textcoords="offset points",
                    xycoords=("axes fraction", "data"), fontsize=7)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="final gap",
              title_fontsize=8)
    ax.set_title(f"JFB agents against the certified open-loop optimum (gaps below {floor:g} "
                 "drawn at it)", fontsize=10)
    save(fig, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=[e for e in ENVS if e != "QuadSwarm-N100"],
                        choices=sorted(ENVS))
    parser.add_argument("--minutes", nargs="+", type=float, default=[10.0, 30.0],
                        help="CPU-minute budgets")
    parser.add_argument("--variants", nargs="+", default=["default"], choices=sorted(VARIANTS))
    parser.add_argument("--set", default=None, help="extra TrainConfig overrides as JSON")
    parser.add_argument("--states", type=int, default=100, help="held-out states")
    parser.add_argument("--eval-every", type=float, default=60.0, help="CPU seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="smoke run")
    parser.add_argument("--out", default=str(ROOT / "results" / "quality.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:
        args.envs, args.minutes, args.states, args.eval_every = \
            ["LinearQuadratic-v0", "MultiBicycle-v0"], [0.1], 8, 2.0
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {"envs": {}}
    results.update({"python": sys.version.split()[0], "torch": torch.__version__,
                    "machine": platform.machine(), "processor": platform.processor(),
                    "cpus": os.cpu_count(), "threads": args.threads,
                    "held_out_seed": HELD_OUT_SEED, "load_average_start": load_average()})
    for label in args.envs:
        ref = reference(label, args.states, args.quick)
        env = results["envs"].setdefault(label, {"runs": []})
        env.update({"J_star_mean": float(ref["cost"].mean()), "states": args.states,
                    "J_star_certificate": ref["certificate"],
                    "J_star_cpu_seconds": ref["cpu_seconds"]})
        print(f"{label}: J* = {env['J_star_mean']:.6g} ({ref['certificate']})", flush=True)
        for variant in args.variants:
            for minutes in args.minutes:
                run = run_variant(label, variant, minutes, ref, args)
                env["runs"] = [r for r in env["runs"] if (r["variant"], r["cpu_minutes"])
                               != (variant, minutes)] + [run]
                print(f"{label} {variant} {minutes:g} CPU-min: J {run['J']:.6g} ± "
                      f"{run['J_ci95']:.2g}, J* {run['J_star']:.6g}, gap "
                      f"{100 * run['gap']:+.3f}% after {run['iterations']} iterations",
                      flush=True)
                out.parent.mkdir(parents=True, exist_ok=True)
                write_json(out, results)
    plot(results, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
