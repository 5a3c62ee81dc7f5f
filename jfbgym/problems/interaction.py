"""Pairwise Gaussian interaction W of the multi-agent problems, and its analytic gradient.

W(q) = 1/(2N) Σ_{i<j} exp(−‖q_i − q_j‖² / (2 r²)) [· 1{‖q_i − q_j‖ < cutoff}]

This is the single super-linear part of every multi-agent problem. The exact value and gradient
(``interaction``, ``interaction_grad``) are computed in one blocked pass over rows of the kernel,
in a reused workspace of ``BLOCK_ELEMENTS`` entries: memory O(B·N) beyond it whatever N (a
(B, N, N) kernel at N = 10,000 and B = 4 would be 3.2 GB), no broadcast copies, and under
autograd only the (B, N, k) gradient is saved for the backward pass (``_Exact``), where the
plain autograd graph kept several (B, N, N) buffers per step.

``FourierInteraction`` is the O(N·D) approximation by D random Fourier features of the Gaussian
kernel (Rahimi and Recht): k(x, y) = E_ω[cos ωᵀ(x − y)], ω ~ 𝒩(0, I/r²), so with
S = Σ_i φ(q_i), φ(x) = (cos ωᵀx, sin ωᵀx)/√D, Σ_{i,j} k(q_i, q_j) ≈ ‖S‖², unbiased with error
∝ 1/√D; the diagonal is exactly φ(x)·φ(x) = 1, so W ≈ (‖S‖² − N)/(4N).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

BLOCK_ELEMENTS = 2**21  # entries of the exact kernel's row-block workspace (16 MB in float64)


def kernel_bytes(batch: int, n_agents: int) -> int:
    """Memory of the exact interaction of one step (bytes): its row-block workspace and the
    (batch, N, k) gradient beside it, float64."""
    return 8 * (min(batch * n_agents * n_agents, BLOCK_ELEMENTS) + 2 * 3 * batch * n_agents)


def _blocked(q: Tensor, radius: float, cutoff: float | None, gradient: bool
             ) -> tuple[Tensor, Tensor | None]:
    """(W (B,), ∇_q W (B, N, k) or None), exact, without autograd, one pass over row blocks."""
    b, n, _ = q.shape
    rows = max(1, min(n, BLOCK_ELEMENTS // max(1, b * n)))
    sq = (q * q).sum(-1)
    workspace = q.new_empty(b * rows * n)
    total = q.new_zeros(b)
    grad = torch.empty_like(q) if gradient else None
    qt = q.transpose(1, 2)
    floor = math.exp(-0.5 * cutoff**2 / radius**2) if cutoff is not None else None
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        E = workspace[:b * (stop - start) * n].view(b, stop - start, n)
        torch.baddbmm(sq[:, start:stop].unsqueeze(-1), q[:, start:stop], qt, alpha=-2.0, out=E)
        E.add_(sq.unsqueeze(1)).clamp_min_(0).mul_(-0.5 / radius**2).exp_()
        if floor is not None:  # exp is monotone: d² < c² exactly where E > exp(−c²/(2r²))
            E.masked_fill_(E <= floor, 0.0)
        total += E.sum((1, 2)) - E.diagonal(offset=start, dim1=1, dim2=2).sum(-1)
        if grad is not None:
            grad[:, start:stop] = torch.bmm(E, q) - E.sum(-1, keepdim=True) * q[:, start:stop]
    if grad is not None:
        grad /= 2.0 * n * radius**2
    return total / (4.0 * n), grad


def _transformed(q: Tensor) -> bool:
    """Whether ``q`` is a torch.func (vmap, grad, jacrev) wrapper."""
    return bool(torch._C._functorch.is_functorch_wrapped_tensor(q))


class _Exact(torch.autograd.Function):
    """W with a backward pass that multiplies the gradient saved by the forward pass."""

    @staticmethod
    def forward(ctx: Any, q: Tensor, radius: float, cutoff: float | None) -> Tensor:
        value, grad = _blocked(q.detach(), radius, cutoff, ctx.needs_input_grad[0])
        ctx.save_for_backward(q, grad)
        ctx.radius, ctx.cutoff = radius, cutoff
        return value

    @staticmethod
    def backward(ctx: Any, out: Tensor) -> tuple[Tensor, None, None]:
        q, grad = ctx.saved_tensors
        if torch.is_grad_enabled():  # a double backward needs ∇W as a function of q
            grad = _kernel_grad(q, ctx.radius, ctx.cutoff)
        return out[:, None, None] * grad, None, None


def _kernel(q: Tensor, radius: float, cutoff: float | None) -> Tensor:
    """E_ij = exp(−‖q_i − q_j‖²/(2r²)), zeroed past the cut-off; the diagonal (≈ 1) is kept.

    Without autograd the whole kernel is one (B, N, N) buffer updated in place: this term
    dominates a multi-agent step, and its memory traffic is what bounds it.
    """
    sq = (q * q).sum(-1)
    d2 = torch.baddbmm(sq.unsqueeze(-1), q, q.transpose(1, 2), alpha=-2.0)
    if torch.is_grad_enabled() and q.requires_grad:  # autograd needs the intermediates intact
        E = torch.exp((d2 + sq.unsqueeze(-2)).clamp_min(0) * (-0.5 / radius**2))
    else:
        E = d2.add_(sq.unsqueeze(-2)).clamp_min_(0).mul_(-0.5 / radius**2).exp_()
    if cutoff is not None:  # exp is monotone: d2 < c² exactly where E > exp(−c²/(2r²))
        E = E * (E > math.exp(-0.5 * cutoff**2 / radius**2))
    return E


def interaction(q: Tensor, radius: float = 1.0, cutoff: float | None = None) -> Tensor:
    """W for positions ``q (B, N, k)``, shape (B,)."""
    if q.shape[1] < 2:
        return q.new_zeros(q.shape[0])
    # Σ_{i≠j} = 2 Σ_{i<j}; the diagonal is subtracted rather than masked.
    if _transformed(q):  # under torch.func: plain ops (no out= workspace, no custom backward)
        E = _kernel(q, radius, cutoff)
        return (E.sum((1, 2)) - E.diagonal(dim1=1, dim2=2).sum(-1)) / (4.0 * q.shape[1])
    if torch.is_grad_enabled() and q.requires_grad:
        return _Exact.apply(q, radius, cutoff)
    return _blocked(q, radius, cutoff, False)[0]


def interaction_hessian(q: Tensor, radius: float = 1.0, cutoff: float | None = None) -> Tensor:
    """∇²_q W, dense, shape (B, N·k, N·k): block (i, j ≠ i) is E_ij [I − d dᵀ/r²] / (2N r²)
    with d = q_i − q_j, and block (i, i) is minus the sum of row i's other blocks. For the
    open-loop Newton solver at moderate N (its memory is (B, N², k²))."""
    b, n, k = q.shape
    if n < 2:
        return q.new_zeros(b, n * k, n * k)
    E = _kernel(q, radius, cutoff)
    d = q.unsqueeze(2) - q.unsqueeze(1)  # d[b, i, j] = q_i − q_j
    eye = torch.eye(k, dtype=q.dtype, device=q.device)
    blocks = (E[..., None, None] * (eye - d.unsqueeze(-1) * d.unsqueeze(-2) / radius**2)
              / (2.0 * n * radius**2))
    idx = torch.arange(n, device=q.device)
    blocks[:, idx, idx] = 0.0
    blocks[:, idx, idx] = -blocks.sum(2)
    return blocks.permute(0, 1, 3, 2, 4).reshape(b, n * k, n * k)


def interaction_grad(q: Tensor, radius: float = 1.0, cutoff: float | None = None) -> Tensor:
    """∇_q W, shape (B, N, k): −1/(2N r²) Σ_j E_ij (q_i − q_j) (the cut-off is a.e. flat).

    The diagonal terms E_ii (q_i − q_i) cancel exactly, so the kernel needs no mask.
    """
    if q.shape[1] < 2:
        return torch.zeros_like(q)
    if _transformed(q) or (torch.is_grad_enabled() and q.requires_grad):
        return _kernel_grad(q, radius, cutoff)
    grad = _blocked(q, radius, cutoff, True)[1]
    assert grad is not None
    return grad


def _kernel_grad(q: Tensor, radius: float, cutoff: float | None) -> Tensor:
    """∇_q W through the whole (B, N, N) kernel, differentiable (second derivatives)."""
    E = _kernel(q, radius, cutoff)
    return (torch.bmm(E, q) - E.sum(-1, keepdim=True) * q) / (2.0 * q.shape[1] * radius**2)


class FourierInteraction:
    """W and ∇W by ``features`` random Fourier features of the Gaussian kernel of radius
    ``radius`` in dimension ``dim`` (frequencies drawn once, from ``seed``): O(B·N·D) time and
    memory, unbiased, error ∝ 1/√D; no cut-off (the features approximate the plain Gaussian)."""

    def __init__(self, dim: int, features: int, radius: float = 1.0, seed: int = 0,
                 dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu") -> None:
        generator = torch.Generator().manual_seed(seed)
        omega = torch.randn(features, dim, generator=generator, dtype=torch.float64) / radius
        self.omega = omega.to(dtype=dtype, device=device)
        self.features = features

    def _angles(self, q: Tensor) -> Tensor:
        return q @ self.omega.to(q).T  # (B, N, D)

    def __call__(self, q: Tensor) -> Tensor:
        """W ≈ (‖S‖² − N)/(4N), shape (B,)."""
        n = q.shape[1]
        if n < 2:
            return q.new_zeros(q.shape[0])
        a = self._angles(q)
        norm = (a.cos().sum(1).square().sum(-1) + a.sin().sum(1).square().sum(-1)) \
            / self.features
        return (norm - n) / (4.0 * n)

    def grad(self, q: Tensor) -> Tensor:
        """∇_q of ``__call__``, analytic, (B, N, k)."""
        n = q.shape[1]
        if n < 2:
            return torch.zeros_like(q)
        a = self._angles(q)
        c, s = a.cos(), a.sin()
        weight = c * s.sum(1, keepdim=True) - s * c.sum(1, keepdim=True)  # (B, N, D)
        return weight @ self.omega.to(q) / (2.0 * n * self.features)

    def hessian(self, q: Tensor) -> Tensor:
        raise ValueError("interaction: expected 'exact' where the dense Hessian ∇²W is needed "
                         "(the open-loop Newton solver), got 'fourier'")


INTERACTIONS = ("exact", "fourier")


class ExactInteraction:
    """The exact W, ∇W and ∇²W of radius ``radius`` (optional cut-off), as an object with the
    interface of ``FourierInteraction``."""

    def __init__(self, radius: float = 1.0, cutoff: float | None = None) -> None:
        self.radius, self.cutoff = radius, cutoff

    def __call__(self, q: Tensor) -> Tensor:
        return interaction(q, self.radius, self.cutoff)

    def grad(self, q: Tensor) -> Tensor:
        return interaction_grad(q, self.radius, self.cutoff)

    def hessian(self, q: Tensor) -> Tensor:
        return interaction_hessian(q, self.radius, self.cutoff)
