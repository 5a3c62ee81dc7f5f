"""The pairwise interaction at scale: the blocked exact kernel equals the textbook formula (value,
gradient, autograd, second derivatives), and the random-Fourier-feature approximation is
consistent with its own gradient and converges as the number of features grows."""

import pytest
import torch

import jfbgym.problems.interaction as interaction_module
from jfbgym.problems import problem_for_env
from jfbgym.problems.interaction import (
    FourierInteraction,
    interaction,
    interaction_grad,
    kernel_bytes,
)


def textbook(q: torch.Tensor, radius: float = 1.0, cutoff: float | None = None) -> torch.Tensor:
    """W = 1/(2N) Σ_{i<j} exp(−‖q_i − q_j‖²/(2r²)) [· 1{‖q_i − q_j‖ < cutoff}], by loops."""
    b, n, _ = q.shape
    total = q.new_zeros(b)
    for i in range(n):
        for j in range(i + 1, n):
            d2 = ((q[:, i] - q[:, j]) ** 2).sum(-1)
            term = torch.exp(-d2 / (2 * radius**2))
            if cutoff is not None:
                term = term * (d2.sqrt() < cutoff)
            total = total + term
    return total / (2 * n)


@pytest.mark.parametrize("cutoff", [None, 2.0])
@pytest.mark.parametrize("block", [7, 10**9])  # several row blocks (a partial last one), or one
def test_blocked_exact_kernel_equals_the_formula(monkeypatch, cutoff, block) -> None:
    monkeypatch.setattr(interaction_module, "BLOCK_ELEMENTS", block * 3 * 13)
    q = 1.5 * torch.randn(3, 13, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(interaction(q, 0.8, cutoff), textbook(q, 0.8, cutoff))
    leaf = q.clone().requires_grad_()
    expected, = torch.autograd.grad(textbook(leaf, 0.8, cutoff).sum(), leaf)
    torch.testing.assert_close(interaction_grad(q, 0.8, cutoff), expected)
    leaf = q.clone().requires_grad_()
    got, = torch.autograd.grad((interaction(leaf, 0.8, cutoff) * torch.arange(1.0, 4.0,
                                dtype=torch.float64)).sum(), leaf)  # per-sample weights
    torch.testing.assert_close(got, expected * torch.arange(1.0, 4.0, dtype=torch.float64)
                               .view(3, 1, 1))


def test_exact_kernel_second_derivatives() -> None:
    q = torch.randn(2, 5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert torch.autograd.gradgradcheck(lambda x: interaction(x), (q.requires_grad_(),))


def test_exact_kernel_memory_is_bounded_whatever_n() -> None:
    assert kernel_bytes(4, 10_000) < 20 * 2**20  # the full (4, N, N) kernel would be 3.2 GB
    assert kernel_bytes(2, 10) == 8 * (2 * 100 + 2 * 3 * 2 * 10)


def test_fourier_gradient_is_the_gradient_of_its_value() -> None:
    features = FourierInteraction(3, 64, radius=0.7, seed=3, dtype=torch.float64)
    q = torch.randn(2, 9, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    leaf = q.clone().requires_grad_()
    expected, = torch.autograd.grad(features(leaf).sum(), leaf)
    torch.testing.assert_close(features.grad(q), expected)


def test_fourier_error_falls_as_features_grow() -> None:
    q = torch.randn(4, 40, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    exact, grad = interaction(q), interaction_grad(q)

    def errors(d: int) -> tuple[float, float]:
        value, gradient = [], []
        for seed in range(8):
            f = FourierInteraction(3, d, seed=seed, dtype=torch.float64)
            value.append(float(((f(q) - exact) / exact).abs().mean()))
            gradient.append(float((f.grad(q) - grad).norm() / grad.norm()))
        return sum(value) / 8, sum(gradient) / 8

    small, medium, large = errors(16), errors(256), errors(4096)
    for k in range(2):  # error ∝ 1/√D: 16× the features, about 4× smaller
        assert small[k] > 2 * medium[k] > 4 * large[k]
    assert large[0] < 0.03
    # unbiased: the mean over many independent feature draws approaches the exact value
    mean = torch.stack([FourierInteraction(3, 32, seed=s, dtype=torch.float64)(q)
                        for s in range(400)]).mean(0)
    torch.testing.assert_close(mean, exact, rtol=0.02, atol=0.0)


def test_quadswarm_with_fourier_features() -> None:
    exact = problem_for_env("QuadSwarm-v0", n_agents=30, dtype=torch.float64, init_std=1.0)
    approx = problem_for_env("QuadSwarm-v0", n_agents=30, dtype=torch.float64, init_std=1.0,
                             interaction="fourier", fourier_features=4096)
    assert approx.config()["interaction"] == "fourier" and "interaction" not in exact.config()
    z = exact.sample_initial_states(3, torch.Generator().manual_seed(0))
    u = exact.initial_control(0.0, z)
    w_exact = exact.running_cost(0.0, z, u) - torch.exp(exact._control_cost_exponent(u))
    w_approx = approx.running_cost(0.0, z, u) - torch.exp(approx._control_cost_exponent(u))
    torch.testing.assert_close(w_approx, w_exact, rtol=0.05, atol=0.0)
    p = torch.randn_like(z)
    leaf = z.clone().requires_grad_()
    expected, = torch.autograd.grad(approx.hamiltonian(0.0, leaf, p, u).sum(), leaf)
    torch.testing.assert_close(approx.grad_z_hamiltonian(0.0, z, p, u), expected)
    with pytest.raises(ValueError, match="interaction_cutoff"):
        problem_for_env("QuadSwarm-v0", interaction="fourier", interaction_cutoff=2.0)
    with pytest.raises(ValueError, match="interaction"):
        problem_for_env("QuadSwarm-v0", interaction="cells")
    with pytest.raises(ValueError, match="'exact'"):
        approx.pairwise.hessian(approx.positions(z))
