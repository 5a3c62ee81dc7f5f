"""Regenerate the trained agents shipped in ``jfbgym/pretrained/`` (one command, reproducible).

Each agent trains with the library's default recipe (``TrainConfig`` defaults: local or
problem value prior, cosine schedule) under a fixed CPU-time budget on one thread, seed 0; it is
then scored on the 100 held-out states against the certified open-loop optimum J* (stagewise
Newton from the nominal, zero and heuristic controls and from the agent's own, best per state,
so that J* ≤ J) and the problem's
heuristic. Settings, seed, commit, CPU time, hardware and scores go into its ``agent.json``;
``--cards`` writes each agent's model card into ``docs/agents/`` from those records.

    python tools/release.py                       # every agent (about 1.5 CPU-hours)
    python tools/release.py --names Quadrotor-v0  # one
    python tools/release.py --table               # the README's table, from the records
    python tools/release.py --rescore             # J* and gaps again, against today's J*
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from jfbgym.agents.config import TrainConfig
from jfbgym.agents.pretrained import SHIPPED
from jfbgym.agents.trainer import train
from jfbgym.baselines import references
from jfbgym.evaluation import HELD_OUT_SEED, held_out_states
from jfbgym.openloop import open_loop_optimum
from jfbgym.problems import problem_for_env

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {  # name -> (env id, CPU minutes, TrainConfig overrides)
    "Quadrotor-v0": ("Quadrotor-v0", 10.0, {}),
    # compiled: more iterations per CPU-minute (bench/scale.py --compile off on)
    "QuadSwarm-v0": ("QuadSwarm-v0", 30.0, {"compile": True}),
    # flies any N (transfer()); bench/transfer.py scores it against the N = 100 J*
    "QuadSwarm-v0-set": ("QuadSwarm-v0", 30.0, {"network": "set"}),
    "MultiBicycle-v0": ("MultiBicycle-v0", 5.0, {}),
    "ConsumptionSavings-v0": ("ConsumptionSavings-v0", 5.0, {}),
    "LinearQuadratic-v0": ("LinearQuadratic-v0", 3.0, {}),
}


def commit() -> str:
    """The commit trained from (``-dirty`` when the package had uncommitted changes)."""
    try:
        def git(*args: str) -> str:
            return subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT,
                                  check=True).stdout.strip()
        # the shipped weights themselves are this script's output, not a change to the code
        dirty = git("status", "--porcelain", "--", "jfbgym", "tools", ":!jfbgym/pretrained")
        return git("rev-parse", "HEAD") + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def certified_optimum(agent, states: int) -> dict:
    """J* per held-out state of ``agent``'s problem: stagewise Newton from the problem's own
    starts, then from those optima and the agent's own controls, best per state (so J* ≤ J),
    in float64; with its certificate."""
    problem = problem_for_env(agent.env_id, dtype=torch.float64, **agent.env_kwargs)
    x0 = held_out_states(problem, states)
    first = open_loop_optimum(problem, x0)
    with torch.no_grad():  # the agent's controls, from its own (float32) problem
        own = agent.rollout(x0.to(agent.problem.dtype), warn=False).controls.double()
    result = open_loop_optimum(problem, x0, init=[first.controls, own])
    return {"cost": result.cost, "certificate": result.certificate()}


def pretrain(name: str, states: int, extra: dict | None = None,
             dest: Path = SHIPPED) -> dict:
    env_id, minutes, overrides = RECIPES[name]
    overrides = {**overrides, **(extra or {})}
    kwargs: dict = {}
    config = TrainConfig(env_id=env_id, problem_kwargs=dict(kwargs), cpu_minutes=minutes, seed=0,
                         out=str(ROOT / "runs" / "release" / f"{name}-{dest.name}"),
                         **overrides)
    load, trained_from = [round(x, 2) for x in os.getloadavg()], commit()
    x0 = held_out_states(problem_for_env(env_id, **kwargs), states)
    curve: list[list[float]] = []  # (training CPU seconds, held-out J), not charged to training

    def score(agent, row) -> None:
        if not curve or row["cpu"] >= curve[-1][0] + 60.0:
            with torch.no_grad():
                curve.append([round(row["cpu"], 1),
                              float(agent.objective(x0, warn=False).double().mean())])

    result = train(config, callback=score)
    agent = result.agent
    with torch.no_grad():
        costs = agent.objective(x0, warn=False).double()
        heuristic = list(references(agent.problem).values())[-1]  # the heuristic, else zero
        h_cost = agent.problem.rollout(heuristic.control, x0).cost.double()
    refined = certified_optimum(agent, states)
    J, J_star = float(costs.mean()), float(refined["cost"].mean())
    last = result.history[-1]
    record = {
        "env_id": env_id, "env_kwargs": kwargs, "seed": config.seed, "commit": trained_from,
        "command": f"python tools/release.py --names {name}",
        "train": config.to_dict(), "peak_lr": config.learning_rate(agent.prior),
        "status": result.status, "iterations": last["iteration"],
        "train_cpu_seconds": round(last["cpu"], 1), "threads": torch.get_num_threads(),
        "hardware": f"{platform.machine()} {platform.processor() or ''} ({os.cpu_count()} "
                    "cores)".replace("  ", " "),
        "torch": torch.__version__, "load_average_start": load,
        "held_out_seed": HELD_OUT_SEED, "states": states, "J": J,
        "J_ci95": 1.96 * float(costs.std()) / math.sqrt(costs.numel()), "J_star": J_star,
        "gap": (J - J_star) / abs(J_star), "J_star_certificate": refined["certificate"],
        "J_star_per_state": [round(float(c), 8) for c in refined["cost"]],
        "heuristic": heuristic.label, "heuristic_J": float(h_cost.mean()),
        "date": time.strftime("%Y-%m-%d"), "curve": curve,
    }
    agent.save(dest / name, record)
    print(f"{name}: J {J:.6g} ± {record['J_ci95']:.2g}, J* {J_star:.6g}, gap "
          f"{100 * record['gap']:+.2f}%, {heuristic.label} {record['heuristic_J']:.6g}; "
          f"{record['iterations']} iterations in {record['train_cpu_seconds']:.0f} CPU-s",
          flush=True)
    return record


def rescore(name: str, states: int) -> dict:
    """Re-score shipped agent ``name`` against today's J* (``certified_optimum``), without
    retraining: only the J* fields of its record change."""
    from jfbgym.agents import load_agent
    from jfbgym.agents.checkpoint import read_json, save_json
    from jfbgym.agents.pretrained import AGENT_JSON, shipped_path

    agent = load_agent(shipped_path(name))
    refined = certified_optimum(agent, states)
    path = shipped_path(name) / AGENT_JSON
    data = read_json(path)
    record = data["record"]
    J_star = float(refined["cost"].mean())
    record.update({"J_star": J_star, "gap": (record["J"] - J_star) / abs(J_star),
                   "J_star_certificate": refined["certificate"],
                   "J_star_per_state": [round(float(c), 8) for c in refined["cost"]],
                   "J_star_rescored": time.strftime("%Y-%m-%d")})
    save_json(path, data)
    print(f"{name}: J {record['J']:.6g}, J* {J_star:.6g}, gap {100 * record['gap']:+.2f}%",
          flush=True)
    return record


def table() -> str:
    """A markdown table of every shipped agent's record."""
    from jfbgym.agents.pretrained import available, record

    lines = ["| agent | J (mean ± 95% CI) | J* (certified) | gap | heuristic J (LQ: zero control) | training |",
             "|---|---|---|---|---|---|"]
    for name in available():
        r = record(name)
        lines.append(f"| `{name}` | {r['J']:.5g} ± {r['J_ci95']:.2g} | {r['J_star']:.5g} | "
                     f"{100 * r['gap']:+.2f}% | {r['heuristic_J']:.4g} | {r['iterations']} "
                     f"iterations, {r['train_cpu_seconds'] / 60:.1f} CPU-min, 1 thread, "
                     f"{r['hardware']} |")
    return "\n".join(lines)


CARDS = ROOT / "docs" / "agents"


def card(name: str) -> str:
    """The model card of shipped agent ``name``, from its record (markdown), and its picture
    ``docs/agents/<name>.png``: the agent's flight from the first held-out state."""
    from jfbgym.agents import load_agent
    from jfbgym.agents.pretrained import record, shipped_path
    from jfbgym.envs.rendering import render_frame

    r, agent = record(name), load_agent(shipped_path(name))
    problem, train = agent.problem, r["train"]
    x0 = held_out_states(problem, 1, r["held_out_seed"])
    with torch.no_grad():
        traj = problem.rollout(agent.control, x0)
    import imageio.v3 as iio

    CARDS.mkdir(parents=True, exist_ok=True)
    iio.imwrite(CARDS / f"{name}.png", render_frame(problem, traj.states[0], traj.controls[0],
                                                    caption=f"{name}: J = "
                                                    f"{float(traj.cost[0]):.4g}"))
    network = "set network (any N)" if train.get("network") == "set" else "flat network"
    lr = f"{r['peak_lr']:g}" if "peak_lr" in r else "the default for its prior"
    settings = {k: train[k] for k in ("width", "depth", "rank", "batch", "prior", "grad",
                                      "solver", "schedule", "compile") if k in train}
    return f"""# {name}

A JFB value-function agent for `{r['env_id']}`{f" with {r['env_kwargs']}" if r['env_kwargs']
                                                  else ""}: {problem.name}, {problem.n_agents}
agent(s), state {problem.state_dim}, control {problem.control_dim}, horizon {problem.horizon:g}
over {problem.n_steps} steps; a {network} over the `{agent.prior}` value prior.

![{name} flying from the first held-out state]({name}.png)

## Scores

On {r['states']} held-out initial states (seed {r['held_out_seed']}), against J*, the open-loop
optimum of each state ({r['J_star_certificate']}):

| | J (mean) | gap to J* |
|---|---|---|
| this agent | {r['J']:.6g} ± {r['J_ci95']:.2g} (95% CI) | {100 * r['gap']:+.2f}% |
| {r['heuristic']} | {r['heuristic_J']:.6g} | {100 * (r['heuristic_J'] - r['J_star']) / abs(r['J_star']):+.3g}% |
| open-loop optimum J* | {r['J_star']:.6g} | 0 |

## Training

`{r['command']}` at commit `{r['commit'][:12]}` on {r['date']}: {r['iterations']} iterations
({r['status']}) in {r['train_cpu_seconds'] / 60:.1f} CPU-minutes on {r['threads']} thread(s),
{r['hardware']}, torch {r['torch']}; seed {r['seed']}, peak learning rate {lr};
{", ".join(f"{k} {v}" for k, v in settings.items())}. Every setting is in the record
(`jfbgym.agents.pretrained.record("{name}")`).

## Use

```python
from jfbgym.agents import JFBAgent

agent = JFBAgent.pretrained("{name}")
action, _ = agent.predict(obs)        # obs = [z, t] from gymnasium.make("{r['env_id']}")
```

```bash
jfbgym evaluate --pretrained {name}
jfbgym render --pretrained {name} --out videos/{name}.mp4
```
"""


def cards() -> None:
    """Write every shipped agent's model card and picture into ``docs/agents/``, and the
    index that lists them."""
    from jfbgym.agents.pretrained import available, record

    rows = ["# Shipped agents", "",
            ("Each trained by `python tools/release.py` and checked against its record by "
             "`tests/agents/test_pretrained.py`; the cards are written from the records by "
             "`python tools/release.py --cards`."), "",
            "| agent | gap to J* | training |", "|---|---|---|"]
    for name in available():
        (CARDS / f"{name}.md").parent.mkdir(parents=True, exist_ok=True)
        (CARDS / f"{name}.md").write_text(card(name))
        r = record(name)
        rows.append(f"| [{name}]({name}.md) | {100 * r['gap']:+.2f}% | {r['iterations']} "
                    f"iterations, {r['train_cpu_seconds'] / 60:.0f} CPU-min |")
    (CARDS / "index.md").write_text("\n".join(rows) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--states", type=int, default=100, help="held-out states")
    parser.add_argument("--table", action="store_true", help="print the records' table only")
    parser.add_argument("--cards", action="store_true",
                        help="write the model cards into docs/agents/ from the records only")
    parser.add_argument("--rescore", action="store_true",
                        help="re-score the shipped agents against today's J* (no training)")
    parser.add_argument("--set", default=None, help="TrainConfig overrides as JSON (recorded)")
    parser.add_argument("--dest", default=str(SHIPPED),
                        help="where the agents go (default: the package's shipped agents)")
    args = parser.parse_args()
    if args.table:
        print(table())
        return 0
    if args.cards:
        cards()
        return 0
    torch.set_num_threads(1)
    if args.rescore:
        for name in args.names:
            rescore(name, args.states)
        return 0
    for name in args.names:
        pretrain(name, args.states, json.loads(args.set) if args.set else None, Path(args.dest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
