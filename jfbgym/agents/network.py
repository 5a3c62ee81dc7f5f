"""The value network Φ_θ(t, z) of OT-Flow / NeuralOC, with its z-gradient in closed form.

Φ(s) = wᵀN(s) + ½ sᵀAᵀA s + cᵀs,  s = (z, t),  N a ResNet with the log-cosh activation:

    u₀ = σ(K₀ s + b₀),   u_i = u_{i−1} + h σ(K_i u_{i−1} + b_i)  (i = 1..depth−1, h = 1/(depth−1))

The costate p = ∇_zΦ is what the control layer needs, once per time step. It is written out as a
reverse sweep through the ResNet (σ' = tanh) in plain torch ops, so training differentiates it
once with autograd instead of running a double backward through ``autograd.grad``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from jfbgym.problems.base import positive_int, require

LOG2 = math.log(2.0)


def log_cosh(x: Tensor) -> Tensor:
    """log cosh x = |x| + log(1 + e^{−2|x|}) − log 2: never overflows, unlike cosh."""
    a = x.abs()
    return a + torch.nn.functional.softplus(-2.0 * a) - LOG2


class ValueNetwork(nn.Module):
    """Φ_θ(t, z) for states of dimension ``state_dim`` (input is s = (z, t) of size n + 1).

    ``depth`` counts the opening layer plus the ResNet layers (depth ≥ 2); ``rank`` is the rank of
    A in the quadratic term (capped at n + 1).
    """

    def __init__(self, state_dim: int, width: int = 96, depth: int = 3, rank: int = 10,
                 dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> None:
        super().__init__()
        self.state_dim = positive_int(state_dim, "state_dim")
        self.width = positive_int(width, "width")
        self.depth = positive_int(depth, "depth")
        require(self.depth >= 2, "depth", "an integer >= 2 (opening layer + ResNet layers)", depth)
        self.rank = min(positive_int(rank, "rank"), state_dim + 1)
        d = state_dim + 1
        kw = {"dtype": dtype, "device": device}
        self.opening = nn.Linear(d, width, **kw)
        self.layers = nn.ModuleList(nn.Linear(width, width, **kw) for _ in range(depth - 1))
        self.h = 1.0 / (depth - 1)
        # OT-Flow initialisation: w = 0 and c = 0, so Φ starts as the random quadratic ½|As|².
        self.w = nn.Parameter(torch.zeros(width, **kw))
        self.A = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.rank, d, **kw)))
        self.c = nn.Parameter(torch.zeros(d, **kw))  # Φ's constant is dropped: u* ignores it

    def config(self) -> dict:
        return {"state_dim": self.state_dim, "width": self.width, "depth": self.depth,
                "rank": self.rank}

    def _inputs(self, t: float | Tensor, z: Tensor) -> Tensor:
        require(isinstance(z, Tensor) and z.dim() == 2 and z.shape[1] == self.state_dim, "z",
                f"a tensor of shape (batch, {self.state_dim})",
                tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__)
        t = torch.as_tensor(t, dtype=z.dtype, device=z.device)
        require(t.dim() == 0 or t.numel() == z.shape[0], "t",
                f"a scalar or {z.shape[0]} times", tuple(t.shape))
        return torch.cat([z, t.reshape(-1, 1).expand(z.shape[0], 1)], dim=1)

    def forward(self, t: float | Tensor, z: Tensor) -> Tensor:
        """Φ(t, z), shape (B,)."""
        s = self._inputs(t, z)
        u = log_cosh(self.opening(s))
        for layer in self.layers:
            u = u + self.h * log_cosh(layer(u))
        As = s @ self.A.T
        return u @ self.w + 0.5 * (As * As).sum(-1) + s @ self.c

    def grad_z(self, t: float | Tensor, z: Tensor) -> Tensor:
        """p = ∇_zΦ(t, z), shape (B, n), by an explicit reverse sweep (differentiable in θ)."""
        s = self._inputs(t, z)
        pre = [self.opening(s)]
        u = log_cosh(pre[0])
        for layer in self.layers:
            pre.append(layer(u))
            u = u + self.h * log_cosh(pre[-1])
        v = self.w.expand(s.shape[0], -1)
        for layer, a in zip(reversed(self.layers), reversed(pre[1:])):
            v = v + self.h * (torch.tanh(a) * v) @ layer.weight
        grad = (torch.tanh(pre[0]) * v) @ self.opening.weight + (s @ self.A.T) @ self.A + self.c
        return grad[:, : self.state_dim]
