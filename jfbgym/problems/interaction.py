"""Pairwise Gaussian interaction W of the multi-agent problems, and its analytic gradient.

W(q) = 1/(2N) Σ_{i<j} exp(−‖q_i − q_j‖² / (2 r²)) [· 1{‖q_i − q_j‖ < cutoff}]

Computed from Gram matrices (``bmm``) so the only O(N²) memory is the (B, N, N) kernel itself;
this is the single super-linear part of every multi-agent problem.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def kernel_bytes(batch: int, n_agents: int) -> int:
    """Memory of the (batch, N, N) float64 kernel and the two buffers beside it (bytes)."""
    return 3 * 8 * batch * n_agents * n_agents


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
    n = q.shape[1]
    if n < 2:
        return q.new_zeros(q.shape[0])
    E = _kernel(q, radius, cutoff)
    # Σ_{i≠j} = 2 Σ_{i<j}; the diagonal is subtracted rather than masked.
    return (E.sum((1, 2)) - E.diagonal(dim1=1, dim2=2).sum(-1)) / (4.0 * n)


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
    n = q.shape[1]
    if n < 2:
        return torch.zeros_like(q)
    E = _kernel(q, radius, cutoff)
    return (torch.bmm(E, q) - E.sum(-1, keepdim=True) * q) / (2.0 * n * radius**2)
