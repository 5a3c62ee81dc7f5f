"""Where QuadSwarm's gap comes from: coordination through the shared control cost.

The swarm's running cost exp(½‖u‖²/N) couples the drones: at each instant they pay for their
*summed* effort, so an optimum can time-share it (one drone steers while another coasts). The
lifted value prior (one drone's expansion, per drone) and anything that learns little beyond it
cannot. On the held-out states, with the interaction switched off (α_int = 0) and at the
default α_int, this measures:

* J*: the swarm's open-loop optimum (Newton, certified);
* separate: every drone flies its own single-drone optimum (Quadrotor-v0, same parameters),
  the stacked controls scored in the swarm: the best any uncoordinated controller can do;
* per drone: every drone flies the shipped Quadrotor-v0 agent (within 2% of optimal alone);
* with α_int = 0, for both: the mean of the drones' single-drone costs (each flown alone), and
  the share of it the swarm's shared control cost saves them;
* lifted prior alone, and the shipped agent (default α_int only: it was trained there).

    python bench/coupling.py                   # 20 states, 2-5 CPU-minutes (5 with an empty prior cache)
    python bench/coupling.py --quick           # smoke run

Writes ``bench/results/coupling.json`` (``--out``); one torch thread.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from common import load_average, write_json

from jfbgym.agents import JFBAgent, PriorConfig
from jfbgym.evaluation import held_out_states, optimality_gap
from jfbgym.openloop import open_loop_optimum
from jfbgym.problems import problem_for_env

ROOT = Path(__file__).resolve().parent
ENV_ID = "QuadSwarm-v0"


def row(alpha_int: float, n_states: int, iters: int, quick: bool) -> dict:
    """J*, separate single-drone optima, prior alone (and the shipped agent) at ``alpha_int``."""
    kwargs = {"alpha_int": alpha_int} | ({"n_steps": 20} if quick else {})
    prior = JFBAgent.build(ENV_ID, kwargs, prior=PriorConfig("local", normalise="off"))
    x0 = held_out_states(prior.problem, n_states).double()
    exact = problem_for_env(ENV_ID, dtype=torch.float64, **kwargs)
    n = exact.n_agents
    single = problem_for_env("Quadrotor-v0", dtype=torch.float64,
                             **({"n_steps": 20} if quick else {}))
    own = open_loop_optimum(single, x0.view(n_states * n, -1), max_iters=iters)
    stacked = own.controls.view(n_states, n, single.n_steps, -1).permute(0, 2, 1, 3)
    stacked = stacked.reshape(n_states, single.n_steps, -1)
    with torch.no_grad():
        lifted = prior.rollout(x0.float(), warn=False)
        costs = {"separate": exact.rollout(stacked, x0).cost,
                 "prior alone": lifted.cost.double()}
        starts = [stacked, lifted.controls.double()]
        if not quick:
            drone = JFBAgent.pretrained("Quadrotor-v0")
            alone = drone.rollout(x0.float().view(n_states * n, -1), warn=False)
            flown = alone.controls.double().view(n_states, n, single.n_steps, -1)
            flown = flown.permute(0, 2, 1, 3).reshape(n_states, single.n_steps, -1)
            costs["per drone"] = exact.rollout(flown, x0).cost
            starts.append(flown)
            shipped = JFBAgent.pretrained(ENV_ID)
            if shipped.problem.config() == prior.problem.config():  # trained at this α_int
                traj = shipped.rollout(x0.float(), warn=False)
                costs["shipped agent"] = traj.cost.double()
                starts.append(traj.controls.double())
    # without interaction, the mean of the drones' own single-drone costs against the swarm's
    # cost of the same controls: what the shared exp(½‖u‖²/N) saves them
    alone_costs = {"separate": own.cost.view(n_states, n).mean(1)} if alpha_int == 0 else {}
    if alone_costs and not quick:
        alone_costs["per drone"] = alone.cost.double().view(n_states, n).mean(1)
    start = time.perf_counter()
    optimum = open_loop_optimum(exact, x0, init=starts + [exact.heuristic()], max_iters=iters)
    out: dict = {"alpha_int": alpha_int, "states": n_states,
                 "J*": float(optimum.cost.mean()), "certificate": optimum.certificate(),
                 "single-drone certificate": own.certificate(),
                 "seconds": time.perf_counter() - start, "load_average": load_average()}
    for name, cost in costs.items():
        out[name] = {"J": float(cost.mean()), "gap": optimality_gap(cost, optimum.cost)}
    for name, cost in alone_costs.items():
        out[name]["J flown alone"] = float(cost.mean())
        out[name]["saved by the shared cost"] = float(1.0 - costs[name].mean() / cost.mean())
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--states", type=int, default=20)
    parser.add_argument("--alpha-int", type=float, nargs="+", default=[0.0, 0.1])
    parser.add_argument("--openloop-iters", type=int, default=300)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "results" / "coupling.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.quick:
        args.states, args.openloop_iters = 2, 20
    rows = []
    for alpha in args.alpha_int:
        rows.append(row(alpha, args.states, args.openloop_iters, args.quick))
        print(json.dumps(rows[-1]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, {"env_id": ENV_ID, "rows": rows})
    names = ("separate", "per drone", "prior alone", "shipped agent")
    print(f"{'alpha_int':>9} {'J*':>8} " + " ".join(f"{k:>14}" for k in names))
    for r in rows:
        gaps = [f"{100 * r[k]['gap']:+.2f}%" if k in r else "-" for k in names]
        print(f"{r['alpha_int']:>9} {r['J*']:>8.4f} " + " ".join(f"{g:>14}" for g in gaps))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
