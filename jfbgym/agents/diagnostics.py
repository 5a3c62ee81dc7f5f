"""``jfbgym diagnose RUN``: the papers' verification quantities over training, per snapshot.

For every weight snapshot of a run (saved at each checkpoint), on a fixed batch from ρ:

* ``contraction``: worst case over the batch and the time steps of the closed-loop rollout of
  ‖∂T/∂u‖₂ = ‖I − α H_uu‖₂ at the fixed point (α as the ``jfb`` gradient uses it). JFB's
  descent guarantee needs this below 1. Power iteration on the symmetric operator, matrix-free.
* ``m_sigma_min``/``m_sigma_max``: extreme singular values of M_θ = ∂T/∂θ at t = 0 (the batch's
  controls stacked), from the dense Jacobian, so only for small networks (``--max-jacobian``).
* ``angle_deg``/``cosine``: between the minibatch mean of the true gradient (``implicit``) and
  the JFB direction; below 90° means JFB descends.

Writes ``diagnostics.csv`` and ``diagnostics.png`` in the run directory (or ``--out``).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import torch
from torch import Tensor

from jfbgym.figures import agg_figure, save
from jfbgym.validation import positive_int

from .agent import JFBAgent
from .checkpoint import (
    CheckpointError,
    load_config,
    load_state,
    load_weights,
    require_keys,
    snapshot_paths,
)
from .implicit import step_size

FIELDS = ("iteration", "contraction", "m_sigma_min", "m_sigma_max", "angle_deg", "cosine")


def contraction(agent: JFBAgent, x0: Tensor, power_iters: int = 50) -> float:
    """max over samples and time steps of ‖I − αH_uu(u*)‖₂ along the closed-loop rollout
    (power iteration: a lower estimate that converges to it)."""
    problem, worst = agent.problem, 0.0
    with torch.no_grad():
        trajectory = agent.rollout(x0)
        for k, t in enumerate(trajectory.times[:-1]):
            z, u = trajectory.states[:, k], trajectory.controls[:, k]
            p = agent.costate(t, z)
            alpha = step_size(problem, t, z, p, u, agent.solver)
            v = torch.randn(u.shape, generator=torch.Generator().manual_seed(k), dtype=u.dtype)
            v = v.to(u.device)
            norm = torch.zeros(u.shape[0], dtype=u.dtype, device=u.device)
            for _ in range(power_iters):
                v = v / v.norm(dim=-1, keepdim=True)
                w = v - alpha * problem.hessian_u_matvec(t, z, p, u, v)
                norm = w.norm(dim=-1)
                v = w
            worst = max(worst, float(norm.max()))
    return worst


def m_theta_singular_values(agent: JFBAgent, x0: Tensor, max_entries: int) -> tuple[float, float]:
    """(σ_min, σ_max) of ∂T/∂θ at t = 0 for the batch x0; NaN when the Jacobian is too big."""
    problem, params = agent.problem, [p for p in agent.network.parameters()]
    n_params = sum(p.numel() for p in params)
    rows = x0.shape[0] * problem.control_dim
    if rows * n_params > max_entries:
        return math.nan, math.nan
    t = problem.times()[0]
    with torch.no_grad():
        u_star = agent.control(t, x0)
        alpha = step_size(problem, t, x0, agent.costate(t, x0), u_star, agent.solver)
    T = u_star - alpha * problem.grad_u_hamiltonian(t, x0, agent.costate(t, x0), u_star)
    flat = T.flatten()
    jac = torch.stack([torch.cat([g.flatten() for g in torch.autograd.grad(
        flat[i], params, retain_graph=True, allow_unused=True, materialize_grads=True)])
        for i in range(rows)])
    sigma = torch.linalg.svdvals(jac)
    return float(sigma.min()), float(sigma.max())


def gradient_angle(agent: JFBAgent, x0: Tensor) -> tuple[float, float]:
    """(angle in degrees, cosine) between the true (implicit) and the JFB gradients."""
    grads = []
    for mode in ("implicit", "jfb"):
        agent.network.zero_grad(set_to_none=True)
        agent.objective(x0, mode).mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in agent.network.parameters()]))
    agent.network.zero_grad(set_to_none=True)
    true, jfb = grads
    cosine = float(true @ jfb / (true.norm() * jfb.norm()).clamp_min(1e-300))
    return math.degrees(math.acos(max(-1.0, min(1.0, cosine)))), cosine


def diagnose(run_dir: str | Path, batch: int = 16, seed: int = 0,
             max_jacobian: int = 20_000_000, out: str | Path | None = None) -> list[dict]:
    """Diagnostics of every snapshot of a run; writes CSV and a plot; returns the rows."""
    run_dir = Path(run_dir)
    positive_int(batch, "batch")
    snapshots = snapshot_paths(run_dir)
    if not snapshots:
        raise CheckpointError(f"{run_dir}: expected a run directory with weight snapshots "
                              "(snapshots/model_*.pt); there are none")
    agent = JFBAgent.from_config(load_config(run_dir), where=str(Path(run_dir) / "config.json"))
    x0 = agent.problem.sample_initial_states(batch, torch.Generator().manual_seed(seed))
    rows = []
    for iteration, path in snapshots:
        state = load_state(path, agent.problem.device)
        require_keys(state, ("model",), str(path))
        load_weights(agent.network, state["model"], path)
        s_min, s_max = m_theta_singular_values(agent, x0, max_jacobian)
        angle, cosine = gradient_angle(agent, x0)
        rows.append({"iteration": iteration, "contraction": contraction(agent, x0),
                     "m_sigma_min": s_min, "m_sigma_max": s_max, "angle_deg": angle,
                     "cosine": cosine})
    out = Path(out) if out is not None else run_dir
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "diagnostics.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, out / "diagnostics.png")
    return rows


def plot(rows: list[dict], path: Path) -> None:
    its = [r["iteration"] for r in rows]
    fig = agg_figure(13, 3.6)
    axes = fig.subplots(1, 3)
    axes[0].plot(its, [r["contraction"] for r in rows], "o-")
    axes[0].axhline(1.0, color="k", lw=0.8, ls="--")
    axes[0].set_title(r"worst $\|\partial T/\partial u\|_2$ (contractivity)")
    axes[1].semilogy(its, [r["m_sigma_min"] for r in rows], "o-", label=r"$\sigma_{min}$")
    axes[1].semilogy(its, [r["m_sigma_max"] for r in rows], "s-", label=r"$\sigma_{max}$")
    axes[1].set_title(r"singular values of $M_\theta=\partial T/\partial\theta$")
    axes[1].legend()
    axes[2].plot(its, [r["angle_deg"] for r in rows], "o-")
    axes[2].axhline(90.0, color="k", lw=0.8, ls="--")
    axes[2].set_title("angle(true gradient, JFB) [deg]")
    for ax in axes:
        ax.set_xlabel("iteration")
    save(fig, path)
