"""Env throughput: single-env steps/s per id, and QuadSwarm (N = 100) agent-steps/s of the
torch-batched vector env at K = 1, 64, 1024 against the same K steps done by looping a single
env — the ratio is the figure that travels between machines. Writes JSON.

    .venv/bin/python bench/envs.py            # full measurement -> bench/results/envs.json
    .venv/bin/python bench/envs.py --quick    # smoke run (small N and K)

Both sides simulate in float32 through the Gymnasium numpy interface (``step``), with
autoreset, validation and the O(N²) interaction term included. The vector env is timed with one
torch thread and with all of them (on a loaded machine one thread can win: a multi-threaded op
waits for its slowest thread). Wall times on a shared machine are noisy, so each figure is the
best of ``--repeats`` timings, and the process CPU time and the load average are recorded.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from common import write_json

import jfbgym
from jfbgym.envs import ENV_SPECS, ControlEnv, ControlVectorEnv

TARGET = 3e6  # agent-steps/s at K = 1024, N = 100 on a 2-core CPU (issue 3)


def _best(fn, repeats: int) -> tuple[float, float]:
    """Best (wall, CPU) seconds of ``fn`` over ``repeats`` runs after one warm-up."""
    fn()
    walls, cpus = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return min(walls), min(cpus)


def _rest_action(env: ControlEnv | ControlVectorEnv, batch: int | None = None) -> np.ndarray:
    """The problem's own do-nothing control (``initial_control`` at the start state: hover
    thrust for QuadSwarm), so costs stay in a normal range while timing."""
    problem = env.problem
    z = problem.sample_initial_states(1, torch.Generator().manual_seed(0))
    u = problem.initial_control(0.0, z)[0].double().numpy().astype(np.float32)
    space = env.action_space if isinstance(env, ControlEnv) else env.single_action_space
    u = np.clip(u, space.low, space.high)
    return u if batch is None else np.tile(u, (batch, 1))


def single_env_rates(steps: int, repeats: int) -> dict[str, float]:
    """Steps/s of the single Gymnasium env for every registered id at its defaults."""
    rates = {}
    for env_id in sorted(ENV_SPECS):
        env = ControlEnv(env_id, dtype=torch.float32)
        env.reset(seed=0)
        a = _rest_action(env)

        def run(env: ControlEnv = env, a: np.ndarray = a) -> None:
            for _ in range(steps):
                if env.step(a)[2]:
                    env.reset()

        wall, _ = _best(run, repeats)
        rates[env_id] = steps / wall
    return rates


def vector_rate(n_agents: int, num_envs: int, vec_steps: int, repeats: int) -> dict:
    """Agent-steps/s of ``vec_steps`` steps of the vector env with K = ``num_envs``."""
    venv = ControlVectorEnv("QuadSwarm-v0", num_envs=num_envs, n_agents=n_agents)
    venv.reset(seed=0)
    va = _rest_action(venv, num_envs)

    def run() -> None:
        for _ in range(vec_steps):
            venv.step(va)

    wall, cpu = _best(run, repeats)
    return {"agent_steps_per_s": n_agents * num_envs * vec_steps / wall,
            "cpu_s_per_step": cpu / vec_steps, "chunk_size": venv.chunk_size}


def loop_rate(n_agents: int, num_envs: int, vec_steps: int, repeats: int) -> dict:
    """Agent-steps/s of the same K·``vec_steps`` steps done by looping one single env."""
    single = ControlEnv("QuadSwarm-v0", n_agents=n_agents, dtype=torch.float32)
    single.reset(seed=0)
    sa = _rest_action(single)

    def run() -> None:
        for _ in range(vec_steps * num_envs):
            if single.step(sa)[2]:
                single.reset()

    wall, cpu = _best(run, repeats)
    return {"agent_steps_per_s": n_agents * num_envs * vec_steps / wall,
            "cpu_s_per_K_steps": cpu / vec_steps}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "envs.json")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    repeats = args.repeats or (1 if args.quick else 5)
    n_agents = 10 if args.quick else 100
    sizes = (1, 16) if args.quick else (1, 64, 1024)
    steps = 2 if args.quick else 10
    load_before = os.getloadavg()
    threads = torch.get_num_threads()
    single = single_env_rates(20 if args.quick else 200, repeats)
    rows = [{"num_envs": k, "n_agents": n_agents, "vector_steps": steps,
             "looped_single": loop_rate(n_agents, k, steps, repeats),
             "vector_by_torch_threads": {str(threads): vector_rate(n_agents, k, steps, repeats)}}
            for k in sizes]
    if threads > 1:  # last: after set_num_threads(1) a larger pool is not timed again
        torch.set_num_threads(1)
        for row in rows:
            row["vector_by_torch_threads"]["1"] = vector_rate(n_agents, row["num_envs"], steps,
                                                              repeats)
    for row in rows:
        best = max(v["agent_steps_per_s"] for v in row["vector_by_torch_threads"].values())
        row["vector_agent_steps_per_s"] = best
        row["ratio_vector_over_loop"] = best / row["looped_single"]["agent_steps_per_s"]
    result = {
        "benchmark": "envs", "quick": args.quick, "jfbgym": jfbgym.__version__,
        "torch": torch.__version__, "torch_threads": threads,
        "cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
        "single_env_steps_per_s": single,
        "quadswarm": rows,
        "target_agent_steps_per_s_at_K1024_N100": TARGET,
        "load_average_before_after": [load_before, os.getloadavg()],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, result)
    for row in result["quadswarm"]:
        print(f"N={row['n_agents']} K={row['num_envs']:5d}: vector "
              f"{row['vector_agent_steps_per_s']:.3g} agent-steps/s, looped single "
              f"{row['looped_single']['agent_steps_per_s']:.3g}, ratio "
              f"{row['ratio_vector_over_loop']:.1f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
