"""One set-network agent at every N: train on QuadSwarm at N_train, fly swarms of other sizes.

For each N in ``--sizes``, on ``--states`` held-out states (the seed every table uses), with no
retraining: J of the trained set agent moved to N (``JFBAgent.transfer``), J of its value prior
alone (the same architecture with the correction at zero: what training added), the hover-PD
heuristic, and J*, the open-loop optimum per state warm-started from the prior's, the agents'
and the heuristic's controls (best per state), with its stationarity residual. The gap of each is
(J − J*)/|J*| on the same states.

    python bench/transfer.py --train-minutes 10 --sizes 6 12 24 48
    python bench/transfer.py --agent runs/set6 --sizes 6 100       # an agent already trained
    python bench/transfer.py --agent jfbgym/pretrained/QuadSwarm-v0-set --native runs/set100 \
        --sizes 6 24 100                                           # and one trained at N = 100
    python bench/transfer.py --agent jfbgym/pretrained/QuadSwarm-v0-set --sizes 100 \
        --jstar-starts agent --openloop-iters 100    # N = 100 J* by Newton, about 6 CPU-min/state
    python bench/transfer.py --agent jfbgym/pretrained/QuadSwarm-v0-set --sizes 1000 \
        --openloop-iters 0                                         # J only, no J*
    python bench/transfer.py --quick                               # smoke run

Writes ``bench/results/transfer.json`` (``--out``). One torch thread; training is charged in
CPU seconds (``--train-minutes`` is CPU minutes), evaluations in wall seconds beside the load
average.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
from common import load_average, write_json

from jfbgym.agents import JFBAgent, NetworkConfig, PriorConfig
from jfbgym.agents.config import TrainConfig
from jfbgym.agents.trainer import train
from jfbgym.evaluation import held_out_states, optimality_gap
from jfbgym.openloop import open_loop_optimum
from jfbgym.problems import problem_for_env

ROOT = Path(__file__).resolve().parent
ENV_ID = "QuadSwarm-v0"


def trained_agent(args: argparse.Namespace) -> tuple[JFBAgent, dict]:
    """The agent of ``--agent``, or one trained here at ``--train-n`` with the set network."""
    if args.agent:
        return JFBAgent.load(args.agent), {"agent": args.agent}
    out = Path(args.run)
    config = TrainConfig(env_id=ENV_ID, n_agents=args.train_n, network="set",
                         cpu_minutes=args.train_minutes, seed=0, out=str(out),
                         resume="if-present",
                         **({"problem_kwargs": {"n_steps": 20}, "batch": 8, "val_batch": 8,
                             "width": 16, "depth": 2} if args.quick else {}))
    result = train(config, progress=not args.quick)
    return result.agent, {"run": str(out), "iterations": len(result.history),
                          "status": result.status, "cpu_minutes": args.train_minutes}


def score(agent: JFBAgent, n: int, n_states: int, iters: int,
          native: JFBAgent | None = None, newton_gb: float = 1.0, starts: str = "all") -> dict:
    """The agent, its prior alone, an agent trained at N = ``n`` (``native``, if given), the
    heuristic and J* at N = ``n``, solved from every policy's controls (``starts="all"``) or
    from the set agent's only (``"agent"``: a third of the time)."""
    moved = agent.transfer(n_agents=n)
    prior = JFBAgent.build(ENV_ID, moved.env_kwargs, NetworkConfig("set"),
                           PriorConfig("local", normalise="off"), dtype=moved.problem.dtype)
    problem = moved.problem
    x0 = held_out_states(problem, n_states)
    row: dict = {"n_agents": n, "states": n_states}
    costs, controls = {}, []
    policies = [("set agent", moved), ("prior alone", prior)]
    if native is not None:
        policies.append(("trained at this N", native))
    for name, policy in policies:
        start = time.perf_counter()
        with torch.no_grad():
            traj = policy.rollout(x0, warn=False)
        row[name] = {"ms_per_step": 1e3 * (time.perf_counter() - start) / problem.n_steps}
        costs[name] = traj.cost.double()
        controls.append(traj.controls.double())
    heuristic = problem.heuristic()
    if heuristic is not None:
        with torch.no_grad():
            costs["heuristic"] = problem.rollout(heuristic, x0).cost.double()
        row["heuristic"] = {}
    optimum = None
    if iters > 0:  # 0 skips J*: at N = 1,000 its solve is out of reach
        start = time.perf_counter()
        exact = problem_for_env(ENV_ID, dtype=torch.float64, **moved.env_kwargs)
        reference = exact.heuristic()
        inits = controls + ([reference] if reference is not None else [])
        optimum = open_loop_optimum(exact, x0.double(),
                                    init=inits if starts == "all" else inits[:1], max_iters=iters,
                                    newton_bytes=int(newton_gb * 2**30))
        row["optimum"] = {"J": float(optimum.cost.mean()), "certificate": optimum.certificate(),
                          "starts": starts, "seconds": time.perf_counter() - start}
    for name, cost in costs.items():
        row[name] |= {"J": float(cost.mean())}
        if optimum is not None:
            row[name]["gap"] = optimality_gap(cost, optimum.cost)
    row["load_average"] = load_average()
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agent", default=None, help="a trained set agent (run or saved)")
    parser.add_argument("--run", default="runs/transfer-set", help="where to train one")
    parser.add_argument("--train-n", type=int, default=6)
    parser.add_argument("--train-minutes", type=float, default=10.0, help="CPU minutes")
    parser.add_argument("--sizes", type=int, nargs="+", default=[6, 12, 24, 48])
    parser.add_argument("--states", type=int, default=20, help="held-out states per N")
    parser.add_argument("--openloop-iters", type=int, default=300,
                        help="per start: Newton iterations, or L-BFGS ones where Newton's "
                        "matrices do not fit in --newton-gb; 0 skips J* (no gaps)")
    parser.add_argument("--newton-gb", type=float, default=1.0,
                        help="memory for Newton's matrices of one chunk of states "
                        "(QuadSwarm: 45 MB per state at N = 24, 0.78 GB at N = 100)")
    parser.add_argument("--jstar-starts", choices=("all", "agent"), default="all",
                        help="J* from every policy's controls and the heuristic's, or from "
                        "the set agent's only")
    parser.add_argument("--native", nargs="*", default=[], metavar="AGENT",
                        help="agents trained at one of --sizes (run or saved), each scored at "
                        "its own N beside the transferred agent")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "results" / "transfer.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.quick:
        args.train_minutes, args.sizes, args.states, args.openloop_iters = 0.1, [2, 3], 2, 5
        args.train_n = 2
    agent, trained = trained_agent(args)
    natives = {}
    for path in args.native:
        native = JFBAgent.load(path)
        natives[native.problem.n_agents] = native
        trained[f"trained at N = {native.problem.n_agents}"] = path
    rows = []
    for n in args.sizes:
        rows.append(score(agent, n, args.states, args.openloop_iters, natives.get(n),
                          args.newton_gb, args.jstar_starts))
        print(json.dumps(rows[-1]), flush=True)
    report = {"env_id": ENV_ID, "trained": trained, "rows": rows, "torch": torch.__version__,
              "machine": platform.machine(), "cpus": os.cpu_count(), "threads": 1}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, report)
    names = ("set agent", "prior alone", "trained at this N", "heuristic")
    print(f"{'N':>5} " + " ".join(f"{k:>17}" for k in names) + f" {'J*':>10}")
    for r in rows:
        gaps = [f"{100 * r[k]['gap']:+.2f}%" if "gap" in r.get(k, {})
                else f"J {r[k]['J']:.4g}" if k in r else "-" for k in names]
        optimum = f"{r['optimum']['J']:>10.4g}" if "optimum" in r else f"{'-':>10}"
        print(f"{r['n_agents']:>5} " + " ".join(f"{g:>17}" for g in gaps) + f" {optimum}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
