"""Value priors: an approximate cost-to-go V₀ that the value network corrects.

``LocalValue`` is the second-order expansion of the value function around optimal trajectories
(neighbouring-optimal control, Bryson & Ho, *Applied Optimal Control*, ch. 6): for a nominal
optimal trajectory z̄_k with costates λ_k, cost-to-go V̄_k and the Hessians S_k of the
cost-to-go from stagewise Newton's backward pass,

    V_b(t_k, z) = V̄_k + λ_kᵀ(z − z̄_k) + ½ (z − z̄_k)ᵀ S_k (z − z̄_k),

interpolated linearly in t between grid points. Its feedback ``argmin_u H(t, z, ∇V₀, u)`` is
within a few percent of optimal on the reference problems, so training starts near the optimum
instead of spending its first minute escaping a random costate.

Branches: a non-convex problem can have several locally optimal ways to fly, and which is best
depends on the initial state (a quadrotor either climbs above its target and comes down, or
flies straight in, whichever is cheaper from where it starts). One quadratic expansion describes one of them; its gradient is
meaningless along the other. So ``build_local_value`` finds the branches from open-loop optima
of states sampled from ρ, solves each branch's nominal from the mean of the samples that prefer
it, and V₀ = min_b V_b: the viscosity-solution structure of a value function, each branch
valid where it is the cheapest (what each costs and gains: docs/results.md).

Swarms: a problem whose cost is (close to) a weighted sum of identical single-agent costs
(``ControlProblem.agent_decomposition``) gets the expansions of that *single-agent* problem,
lifted: V₀(t, z) = w Σ_i min_b V_b(t, z_i − o_i), each agent on its own branch. Its size is
independent of N (12-dimensional expansions for any number of quadrotors), and it is what makes
the prior work for swarms: the joint expansion around the mean initial state (every drone at
one point) describes no drone's actual path.
"""

from __future__ import annotations

import copy
import inspect
import json
import warnings

import torch
from torch import Tensor, nn

from jfbgym.problems.base import ControlProblem, Time
from jfbgym.validation import finite_float, positive_int, require, require_memory

from . import cache
from .cache import code_version
from .checkpoint import CheckpointError, load_weights

NOMINAL_SAMPLES = 4096  # draws from ρ averaged into the nominal initial state
BRANCH_SAMPLES = 64  # single-agent states drawn from ρ whose optima reveal the branches
MAX_BRANCHES = 4
MIN_SHARE = 0.05  # a branch fewer samples prefer than this is dropped (noise, not a branch)
_BUILT: dict[str, LocalValue] = {}  # per process: the same problem's prior is built once


class LocalValue(nn.Module):
    """V₀ and its derivatives from nominal trajectories, lifted to N agents.

    Buffers (saved with the network): ``states``, ``costates`` (G, nt + 1, d), ``hessians``
    (G, nt + 1, d, d), ``values`` (G, nt + 1) of G nominal trajectories of a d-dimensional
    (single-agent) problem; ``group`` (N, K) says which K nominals (branches) agent i takes the
    minimum over (rows padded by repetition) and ``offsets`` (N, d) how its frame is shifted
    (formation targets); ``weight`` is w.
    """

    def __init__(self, groups: int, dim: int, n_agents: int, n_steps: int, horizon: float,
                 weight: float = 1.0, dtype: torch.dtype = torch.float32,
                 device: str | torch.device = "cpu", branches: int = 1) -> None:
        super().__init__()
        kw = {"dtype": dtype, "device": device}
        groups, dim = positive_int(groups, "groups"), positive_int(dim, "dim")
        n_agents, n_steps = positive_int(n_agents, "n_agents"), positive_int(n_steps, "n_steps")
        branches = positive_int(branches, "branches")
        require_memory(8 * (groups * (n_steps + 1) * (dim + 1) ** 2 + n_agents * (branches + dim)),
                       "groups", f"a prior of {groups} nominals of {n_steps + 1} steps in {dim} "
                       f"dimensions for {n_agents} agents")
        self.dim, self.n_agents, self.n_steps = dim, n_agents, n_steps
        self.horizon = finite_float(horizon, "horizon", 0.0, strict=True)
        self.weight = finite_float(weight, "weight")
        self.register_buffer("states", torch.zeros(groups, n_steps + 1, dim, **kw))
        self.register_buffer("costates", torch.zeros(groups, n_steps + 1, dim, **kw))
        self.register_buffer("hessians", torch.zeros(groups, n_steps + 1, dim, dim, **kw))
        self.register_buffer("values", torch.zeros(groups, n_steps + 1, **kw))
        self.register_buffer("group", torch.zeros(n_agents, branches, dtype=torch.long,
                                                  device=device))
        self.register_buffer("offsets", torch.zeros(n_agents, dim, **kw))

    def check_loaded(self) -> None:
        """``ValueError`` unless every branch index names one of the nominals (loaded tables
        are indexed with it)."""
        groups = self.states.shape[0]
        bad = (self.group < 0) | (self.group >= groups)
        require(not bool(bad.any()), "group", f"branch indices in [0, {groups - 1}]",
                int(self.group[bad][0]) if bool(bad.any()) else None)

    def config(self) -> dict:
        return {"groups": self.states.shape[0], "dim": self.dim, "n_agents": self.n_agents,
                "n_steps": self.n_steps, "horizon": self.horizon, "weight": self.weight,
                "branches": self.group.shape[1]}

    def _tables(self, k: Tensor, w: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Every agent's branches' nominal (states, costates, hessians, values) at grid index k
        and weight w, each as (value at t, change per unit w), shape (T, N, K, ...): T = 1 for a
        time shared by the batch (the tables are then built once, not gathered per sample),
        else T = B with k and w (B,)."""
        rows, kk = self.group.unsqueeze(0), k.view(-1, 1, 1)
        out = []
        for data in (self.states, self.costates, self.hessians, self.values):
            lo, hi = data[rows, kk], data[rows, kk + 1]
            slope = hi - lo
            out.append((lo + w.view((-1,) + (1,) * (lo.dim() - 1)) * slope, slope))
        return out

    def forward(self, t: Time, z: Tensor, with_time: bool = False
                ) -> tuple[Tensor, Tensor, Tensor | None]:
        """(V₀ (B,), ∇_zV₀ (B, n), ∂_tV₀ (B,) if ``with_time``) at (t, z).

        Every branch is expanded for every agent ((B, N, K) values, the Hessians applied per
        agent and branch, never gathered per sample) and the least kept; the choice is piecewise
        constant in z, so no gradient flows through it."""
        b = z.shape[0]
        h = self.horizon / self.n_steps
        t = torch.as_tensor(t, dtype=z.dtype, device=z.device).reshape(-1)
        if t.numel() != 1:
            t = t.expand(b)
        x = (t / h).clamp(0.0, float(self.n_steps))
        k = x.floor().long().clamp(max=self.n_steps - 1)
        (zbar, dz), (lam, dlam), (S, dS), (vbar, dv) = self._tables(k, x - k)
        e = z.view(b, self.n_agents, 1, self.dim) - self.offsets[:, None] - zbar  # (B, N, K, d)
        Se = _matvec(S, e)
        value = vbar + (lam * e).sum(-1) + 0.5 * (e * Se).sum(-1)  # (B, N, K)
        pick = value.detach().argmin(-1, keepdim=True)  # (B, N, 1): each agent's branch

        def chosen(per_branch: Tensor) -> Tensor:  # (B, N, K[, d]) -> (B, N[, d])
            if per_branch.dim() == 3:
                return per_branch.gather(-1, pick).squeeze(-1)
            return per_branch.gather(-2, pick.unsqueeze(-1).expand(*pick.shape, self.dim)
                                     ).squeeze(-2)

        grad = (self.weight * chosen(lam + Se)).reshape(z.shape)
        value = self.weight * chosen(value).sum(-1)
        if not with_time:
            return value, grad, None
        de = -dz  # e moves against the nominal state
        rate = dv + (dlam * e).sum(-1) + (lam * de).sum(-1) + 0.5 * (e * _matvec(dS, e)).sum(-1) \
            + (de * Se).sum(-1)
        return value, grad, self.weight * chosen(rate).sum(-1) / h


def _matvec(S: Tensor, e: Tensor) -> Tensor:
    """S e over the last axis: S (T, N, K, d, d) applied to e (B, N, K, d), T = 1 or B."""
    return torch.einsum("...ij,...j->...i", S, e)


def nominal_starts(problem: ControlProblem, generator: torch.Generator | None = None) -> Tensor:
    """The mean of ``NOMINAL_SAMPLES`` draws from ρ, (1, n)."""
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    return problem.sample_initial_states(NOMINAL_SAMPLES, g).mean(0, keepdim=True)


def _distinct(controls: Tensor, rtol: float = 1e-3) -> Tensor:
    """Label each of B converged control sequences (B, nt, m) by the distinct one it equals
    (relative distance below ``rtol``), labels 0, 1, ... in order of first appearance."""
    labels = torch.empty(controls.shape[0], dtype=torch.long)
    reps: list[Tensor] = []
    for i, u in enumerate(controls):
        for j, r in enumerate(reps):
            if float((u - r).norm()) <= rtol * max(float(r.norm()), 1e-12):
                labels[i] = j
                break
        else:
            labels[i] = len(reps)
            reps.append(u)
    return labels


def find_branches(ref: ControlProblem, centre: Tensor, pool: Tensor, tol: float,
                  max_branches: int) -> tuple[Tensor, Tensor]:
    """(starts (K, d), optimal controls (K, nt, m)) of the K branches of a (float64) problem.

    The optima of ``centre`` (d,) and of the states ``pool`` (P, d) (starts: the nominal
    control and the heuristic), each continued back to the centre by Newton; the distinct local
    optima reached there are the branches, each preferred by the samples that reached it.
    Branches fewer than ``MIN_SHARE`` of them prefer are dropped; the rest (at most
    ``max_branches``, most preferred first) are re-solved from the mean of their samples, so
    each expansion sits where it is used. One branch (or ``max_branches=1``): the centre's
    optimum (starts: nominal, zero and heuristic)."""
    from jfbgym.openloop import open_loop_optimum

    if max_branches == 1 or pool.shape[0] == 0:
        return centre[None], open_loop_optimum(ref, centre[None], tol=tol).controls
    x = torch.cat([centre[None], pool])
    nominal = ref.initial_control(0.0, x).unsqueeze(1)
    starts = [nominal.expand(-1, ref.n_steps, -1).clone()]
    if ref.heuristic() is not None:
        starts.append(ref.heuristic())
    own = open_loop_optimum(ref, x, init=starts, tol=tol).controls
    back = open_loop_optimum(ref, centre.expand_as(x), init=[own], tol=tol).controls
    labels = _distinct(back)
    counts = torch.bincount(labels[1:], minlength=int(labels.max()) + 1)
    keep = [int(j) for j in counts.argsort(descending=True)[:max_branches]
            if int(counts[j]) >= max(2, MIN_SHARE * pool.shape[0])]
    if len(keep) <= 1:
        return centre[None], back[:1]  # the centre's own optimum
    means = torch.stack([pool[labels[1:] == j].mean(0) for j in keep])
    warm = torch.stack([back[int((labels == j).nonzero()[0])] for j in keep])
    return means, open_loop_optimum(ref, means, init=[warm], tol=tol).controls


def build_local_value(problem: ControlProblem, tol: float = 1e-8,
                      max_branches: int = MAX_BRANCHES, samples: int = BRANCH_SAMPLES
                      ) -> LocalValue:
    """The neighbouring-optimal expansions for ``problem``: around optimal trajectories of its
    single-agent problem (``agent_decomposition``; each agent's frame from its agents' mean
    initial state), or of the problem itself, one per branch (``find_branches``, from
    ``samples`` draws of ρ; ``max_branches=1``: the one optimum from the mean initial state).
    Solved in float64 by the open-loop Newton solver; stored in the problem's dtype and
    device. Built once per process and kept on disk (``jfbgym.agents.cache``) for the next."""
    positive_int(max_branches, "max_branches")
    samples = int(samples)
    require(samples >= 0, "samples", "an integer >= 0", samples)
    key = json.dumps([type(problem).__name__, problem.config(), tol, max_branches, samples,
                      code_version(inspect.getsourcefile(type(problem)), __file__)],
                     sort_keys=True, default=str)
    if key not in _BUILT:
        local = _from_cache(key)
        if local is None:
            local = _build(problem, tol, max_branches, samples)
            cache.write("local-value", key, {"config": local.config(),
                                             "weights": local.state_dict()})
        _BUILT[key] = local
    return copy.deepcopy(_BUILT[key]).to(dtype=problem.dtype, device=problem.device)


def _from_cache(key: str) -> LocalValue | None:
    """The prior stored for ``key``, or None; a corrupt or foreign entry is reported and
    ignored (it is rebuilt)."""
    found = cache.read("local-value", key)
    if found is None:
        return None
    state, path = found
    try:
        require(isinstance(state.get("config"), dict), "cache", "a prior's settings", str(path))
        local = LocalValue(**state["config"], dtype=torch.float64)
        load_weights(local, state.get("weights"), path)
        return local
    except (CheckpointError, ValueError, TypeError, KeyError, AttributeError) as err:
        warnings.warn(f"{path}: ignoring the cached value prior ({err}); building it again",
                      stacklevel=3)
        return None


def _build(problem: ControlProblem, tol: float, max_branches: int, samples: int) -> LocalValue:
    from jfbgym.openloop import local_expansion

    decomposition = problem.agent_decomposition() if problem.n_agents > 1 else None
    if decomposition is None:
        single, weight = problem, 1.0
        offsets = torch.zeros(1, problem.state_dim, dtype=torch.float64)
        starts = nominal_starts(problem).double()
    else:
        single, weight, offsets = decomposition
        offsets = offsets.double().cpu()
        mean = nominal_starts(problem).double().cpu().view(problem.n_agents, -1)
        starts = mean - offsets
    d = single.state_dim
    require(d * d * (single.n_steps + 1) <= 2**24, "problem",
            "a (single-agent) state small enough for a dense local expansion", d)
    # one frame per distinct offset (formation targets shift them), from the mean start of the
    # agents that share it (their ρ is the same, so sampling noise must not split them)
    frames, frame = torch.unique(offsets, dim=0, return_inverse=True)
    ref = copy.deepcopy(single).to(torch.float64)  # Module.to works in place
    draws = problem.sample_initial_states(max(samples, 1), torch.Generator().manual_seed(1))
    draws = (draws.double().cpu().view(-1, offsets.shape[0], d) - offsets)[:samples]
    nominals, rows, count = [], [], 0
    for f in range(frames.shape[0]):
        centre = starts[frame == f].mean(0)
        pool = draws[:, frame == f].reshape(-1, d)[:samples]
        found = find_branches(ref, centre.to(ref.device), pool.to(ref.device), tol, max_branches)
        rows.append(list(range(count, count + found[0].shape[0])))
        count += found[0].shape[0]
        nominals.append(found)
    width = max(len(r) for r in rows)
    group = torch.tensor([r + r[:1] * (width - len(r)) for r in rows])[frame]
    x0 = torch.cat([x for x, _ in nominals])
    U = torch.cat([controls for _, controls in nominals])
    expansion = local_expansion(ref, x0, U)
    local = LocalValue(U.shape[0], d, offsets.shape[0], single.n_steps, single.horizon,
                       weight, torch.float64, branches=width)
    for name, value in (*expansion._asdict().items(), ("offsets", offsets)):
        getattr(local, name).copy_(value.cpu())
    local.group.copy_(group)
    return local


