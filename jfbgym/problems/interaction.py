"""Pairwise Gaussian interaction W of the multi-agent problems, and its analytic gradient.

W(q) = 1/(2N) Σ_{i<j} exp(−‖q_i − q_j‖² / (2 r²)) [· 1{‖q_i − q_j‖ < cutoff}]

Computed from Gram matrices (``bmm``) so the only O(N²) memory is the (B, N, N) kernel itself;
this is the single super-linear part of every multi-agent problem.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _kernel(q: Tensor, radius: float, cutoff: float | None) -> Tensor:
    """E_ij = exp(−‖q_i − q_j‖²/(2r²)) with the diagonal (and pairs past the cut-off) zeroed."""
    sq = (q * q).sum(-1)
    d2 = (sq.unsqueeze(-1) + sq.unsqueeze(-2) - 2.0 * torch.bmm(q, q.transpose(1, 2))).clamp_min(0)
    E = torch.exp(d2 * (-0.5 / radius**2))
    E = E * (1.0 - torch.eye(q.shape[1], dtype=q.dtype, device=q.device))
    if cutoff is not None:
        E = E * (d2 < cutoff**2).to(q.dtype)
    return E


def interaction(q: Tensor, radius: float = 1.0, cutoff: float | None = None) -> Tensor:
    """W for positions ``q (B, N, k)``, shape (B,)."""
    n = q.shape[1]
    if n < 2:
        return q.new_zeros(q.shape[0])
    return _kernel(q, radius, cutoff).sum((1, 2)) / (4.0 * n)  # Σ_{i≠j} = 2 Σ_{i<j}


def interaction_grad(q: Tensor, radius: float = 1.0, cutoff: float | None = None) -> Tensor:
    """∇_q W, shape (B, N, k): −1/(2N r²) Σ_j E_ij (q_i − q_j) (the cut-off is a.e. flat)."""
    n = q.shape[1]
    if n < 2:
        return torch.zeros_like(q)
    E = _kernel(q, radius, cutoff)
    return (torch.bmm(E, q) - E.sum(-1, keepdim=True) * q) / (2.0 * n * radius**2)
