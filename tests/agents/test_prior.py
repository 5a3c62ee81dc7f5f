"""The local value prior: V₀ = min over branch expansions, its derivatives, the branches it
finds, and checkpoints saved before branches existed."""

from __future__ import annotations

import pytest
import torch

from jfbgym.agents.checkpoint import CheckpointError, load_weights
from jfbgym.agents.prior import LocalValue, build_local_value
from jfbgym.problems import problem_for_env

F64 = torch.float64


def random_local(branches: int, n_agents: int = 3, dim: int = 4, n_steps: int = 5,
                 seed: int = 0) -> LocalValue:
    """Random nominals (symmetric Hessians), agents on branch sets of their own."""
    g = torch.Generator().manual_seed(seed)
    groups = 2 * branches
    local = LocalValue(groups, dim, n_agents, n_steps, horizon=1.0, weight=0.7, dtype=F64,
                       branches=branches)
    S = torch.randn(groups, n_steps + 1, dim, dim, generator=g, dtype=F64)
    with torch.no_grad():
        local.states.copy_(torch.randn(local.states.shape, generator=g, dtype=F64))
        local.costates.copy_(torch.randn(local.costates.shape, generator=g, dtype=F64))
        local.hessians.copy_(S + S.transpose(-1, -2))
        local.values.copy_(torch.randn(local.values.shape, generator=g, dtype=F64))
        local.offsets.copy_(torch.randn(local.offsets.shape, generator=g, dtype=F64))
        rows = torch.arange(groups).view(2, branches)
        local.group.copy_(rows[torch.arange(n_agents) % 2])
    return local


def by_hand(local: LocalValue, t: float, z: torch.Tensor) -> torch.Tensor:
    """w Σ_i min_b V_b(t, z_i − o_i), interpolating each nominal linearly in t."""
    h = local.horizon / local.n_steps
    k = min(int(t / h), local.n_steps - 1)
    w = t / h - k
    total = torch.zeros(z.shape[0], dtype=F64)
    for i in range(local.n_agents):
        e_i = z.view(z.shape[0], local.n_agents, local.dim)[:, i] - local.offsets[i]
        values = []
        for g in local.group[i].tolist():
            zbar, lam, S, vbar = ((1 - w) * x[g, k] + w * x[g, k + 1] for x in
                                  (local.states, local.costates, local.hessians, local.values))
            e = e_i - zbar
            values.append(vbar + e @ lam + 0.5 * ((e @ S) * e).sum(-1))
        total = total + torch.stack(values, -1).min(-1).values
    return local.weight * total


@pytest.mark.parametrize("branches", [1, 3])
def test_value_is_the_least_branch_and_its_derivatives_are_exact(branches: int) -> None:
    local = random_local(branches)
    z = torch.randn(64, local.n_agents * local.dim, generator=torch.Generator().manual_seed(1),
                    dtype=F64).requires_grad_()
    t = torch.tensor(0.53, dtype=F64, requires_grad=True)
    value, grad, rate = local(t, z, with_time=True)
    assert torch.allclose(value, by_hand(local, 0.53, z.detach()), atol=1e-12)
    dz, dt = torch.autograd.grad(value.sum(), (z, t))
    assert torch.allclose(grad, dz, atol=1e-10)
    assert torch.allclose(rate.sum(), dt, atol=1e-10)
    if branches > 1:  # the choice is made: agents do not all sit on their first branch
        one = random_local(branches)
        one.group.copy_(one.group[:, :1].expand_as(one.group))
        assert bool((one(0.53, z.detach())[0] > value.detach() + 1e-9).any())


def test_one_time_per_state_is_each_state_at_its_own_time() -> None:
    """The batch may carry a time per state (the tables are then gathered per sample): each
    row must equal that state evaluated alone at its time, derivatives included."""
    local = random_local(3)
    z = torch.randn(7, local.n_agents * local.dim, generator=torch.Generator().manual_seed(2),
                    dtype=F64)
    t = torch.tensor([0.0, 0.13, 0.2, 0.5, 0.77, 0.99, 1.0], dtype=F64)
    value, grad, rate = local(t, z, with_time=True)
    for i in range(z.shape[0]):
        v, g, r = local(float(t[i]), z[i:i + 1], with_time=True)
        torch.testing.assert_close(value[i:i + 1], v, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(grad[i:i + 1], g, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(rate[i:i + 1], r, rtol=1e-12, atol=1e-12)
    assert torch.allclose(value[3], by_hand(local, 0.5, z[3:4]), atol=1e-12)


def test_checkpoint_from_before_branches_loads() -> None:
    old = random_local(1).state_dict()
    old["group"] = old["group"][:, 0].clone()  # saved as (N,) before branches
    local = LocalValue(2, 4, 3, 5, 1.0, 0.7, F64)
    load_weights(local, old, "old.pt")
    assert local.group.shape == (3, 1)
    assert torch.equal(local.group[:, 0], old["group"])
    old["group"] = torch.zeros(2, 2, 2, dtype=torch.long)
    with pytest.raises(CheckpointError, match="old.pt: weight 'group' has shape"):
        load_weights(local, old, "old.pt")


def test_a_convex_problem_has_one_branch() -> None:
    problem = problem_for_env("LinearQuadratic-v0", dtype=F64)
    assert build_local_value(problem).states.shape[0] == 1


def test_quadrotor_has_two_branches_and_the_least_one_flies_better() -> None:
    """The climb-over and the straight-in ways to the target (measured: the second is cheaper
    for about 30% of ρ): found, each solved from where it is used, and the prior that picks
    the cheaper one per state beats the single expansion in closed loop."""
    problem = problem_for_env("Quadrotor-v0", dtype=F64)
    two = build_local_value(problem)
    one = build_local_value(problem, max_branches=1)
    assert two.states.shape[0] == 2 and two.group.tolist() == [[0, 1]]
    climb = two.states[:, :, 2].max(1).values  # peak altitude; the target is at 2
    assert float(climb.max()) > 2.5 and float(climb.min()) < 2.2
    x0 = problem.sample_initial_states(32, torch.Generator().manual_seed(3))

    def cost(local: LocalValue) -> float:
        def policy(t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
            return problem.optimal_control(t, z, local(t, z)[1]).control
        with torch.no_grad():
            return float(problem.rollout(policy, x0).cost.mean())

    assert cost(two) < cost(one)


def test_a_built_prior_is_kept_on_disk_and_read_back(tmp_path, monkeypatch) -> None:
    """The next process reads the prior instead of building it (same tensors); a corrupt
    cache file is reported and rebuilt; ``off`` writes nothing."""
    from jfbgym.agents import cache, prior

    problem = problem_for_env("LinearQuadratic-v0", dtype=F64)
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(prior, "_BUILT", {})
    built = build_local_value(problem)
    (path,) = tmp_path.glob("local-value-*.pt")

    def fail(*args: object) -> None:
        raise AssertionError("built again instead of read from the cache")

    monkeypatch.setattr(prior, "_BUILT", {})
    with monkeypatch.context() as m:
        m.setattr(prior, "_build", fail)
        read = build_local_value(problem)
    for name, tensor in built.state_dict().items():
        assert torch.equal(tensor, read.state_dict()[name]), name

    path.write_bytes(b"not a checkpoint")
    monkeypatch.setattr(prior, "_BUILT", {})
    with pytest.warns(UserWarning, match="ignoring the cached value prior"):
        again = build_local_value(problem)
    assert torch.equal(again.hessians, built.hessians)
    assert cache.read("local-value", next(iter(prior._BUILT))) is not None  # rewritten

    monkeypatch.chdir(tmp_path)  # were "off" read as a folder name, it would appear here
    off = tmp_path / "off"
    monkeypatch.setenv(cache.CACHE_ENV, "off")
    monkeypatch.setattr(prior, "_BUILT", {})
    build_local_value(problem)
    assert cache.cache_dir() is None and not off.exists()
    assert len(list(tmp_path.glob("local-value-*.pt"))) == 1
