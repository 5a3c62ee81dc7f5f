"""What the torch.func derivative defaults cost: the example of docs/own-problem.md
(examples/pendulum.py) with its derivatives from torch.func against the same problem with them
written out, side by side in one run: a closed-loop rollout of a value-prior JFB agent (the
inner Newton solve at every step) and a training iteration.

    python bench/defaults.py      # bench/results/defaults.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
from common import write_json

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

from pendulum import DampedPendulum


class AnalyticPendulum(DampedPendulum):
    """The same problem with every derivative written out (H_uu is 1 × 1)."""

    name = "DampedPendulum"

    def grad_terminal_cost(self, z):
        return self.alpha_G * torch.stack([-torch.sin(z[:, 0]), 0.2 * z[:, 1]], dim=1)

    def grad_u_hamiltonian(self, t, z, p, u):
        return u * torch.exp(0.5 * u * u) + p[:, 1:]

    def grad_z_hamiltonian(self, t, z, p, u):
        theta = z[:, 0]
        return torch.stack([-0.1 * torch.sin(theta) - torch.cos(theta) * p[:, 1],
                            p[:, 0] - self.damping * p[:, 1]], dim=1)

    def hessian_u_matvec(self, t, z, p, u, v):
        return (1 + u * u) * torch.exp(0.5 * u * u) * v

    def hessian_u_solve(self, t, z, p, u, v, damping=0.0):
        return v / ((1 + u * u) * torch.exp(0.5 * u * u) + damping)


def timed(call, repeats: int) -> float:
    """Median CPU seconds of ``call()``."""
    times = []
    for _ in range(repeats):
        start = time.process_time()
        call()
        times.append(time.process_time() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "defaults.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    from jfbgym.agents import JFBAgent
    from jfbgym.problems import check_derivatives, register_problem

    check_derivatives(AnalyticPendulum(), rel=1e-10)  # the written-out ones are right
    rows = {}
    for label, cls in (("torch.func defaults", DampedPendulum),
                       ("analytic", AnalyticPendulum)):
        register_problem("bench-pendulum", cls)
        from jfbgym.problems.registry import ENV_SPECS
        ENV_SPECS["BenchPendulum-v0"] = ("bench-pendulum", {})
        agent = JFBAgent.build("BenchPendulum-v0", seed=0)
        x0 = agent.problem.sample_initial_states(args.batch, torch.Generator().manual_seed(0))

        def rollout(agent=agent, x0=x0) -> None:
            with torch.no_grad():
                agent.rollout(x0, warn=False)

        def iteration(agent=agent, x0=x0) -> None:
            agent.network.zero_grad()
            agent.rollout(x0, "jfb", warn=False).cost.mean().backward()

        rows[label] = {"rollout_cpu_s": timed(rollout, args.repeats),
                       "iteration_cpu_s": timed(iteration, args.repeats)}
    base = rows["analytic"]
    for row in rows.values():
        row["rollout_ratio"] = row["rollout_cpu_s"] / base["rollout_cpu_s"]
        row["iteration_ratio"] = row["iteration_cpu_s"] / base["iteration_cpu_s"]
    record = {"batch": args.batch, "n_steps": 60, "threads": 1, "torch": torch.__version__,
              "load_average": os.getloadavg(), "rows": rows}
    write_json(args.out, record)
    print(f"batch {args.batch}, 60 steps, one thread, load average {os.getloadavg()[0]:.2f}")
    for label, row in rows.items():
        print(f"{label:20s} rollout {row['rollout_cpu_s']:.3f} CPU-s (x{row['rollout_ratio']:.1f})"
              f", training iteration {row['iteration_cpu_s']:.3f} CPU-s "
              f"(x{row['iteration_ratio']:.1f})")


if __name__ == "__main__":
    main()
