"""The value network Φ_θ(t, z) of OT-Flow / NeuralOC, with its z-gradient in closed form.

Ψ(s) = wᵀN(s) + ½ sᵀAᵀA s + cᵀs,  s = (z, t),  N a ResNet with the log-cosh activation:

    u₀ = σ(K₀ s + b₀),   u_i = u_{i−1} + h σ(K_i u_{i−1} + b_i)  (i = 1..depth−1, h = 1/(depth−1))

The costate p = ∇_zΦ is what the control layer needs, once per time step. It is written out as a
reverse sweep through the ResNet (σ' = tanh) in plain torch ops, so training differentiates it
once with autograd instead of running a double backward through ``autograd.grad``.

Φ = Ψ, unless the problem supplies a prior V₀ (``ControlProblem.value_prior``, with its gradient
in closed form); then Φ = V₀·(1 + σΨ) and A starts at zero, so Φ starts as V₀ exactly and the
network learns a small *relative* correction. Relative, because where the costate spans orders
of magnitude (ConsumptionSavings: p_x from −3 at t = 0 to −3·10⁻³ near T), any additive
correction of a size Adam can take flips its sign somewhere, and there the inner problem has no
minimiser. Small (σ = ``correction_scale``), because Adam moves every weight by about the
learning rate per step whatever the gradient's size, and Ψ is fed raw states (wealth up to 10³
there): σ keeps a step's relative change of the costate to a fraction of a percent.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from jfbgym.validation import positive_float, positive_int, require

Prior = Callable[[float | Tensor, Tensor], "tuple[Tensor, Tensor] | None"]

LOG2 = math.log(2.0)
CORRECTION_SCALE = 3e-5  # σ of Φ = V₀(1 + σΨ): see the module docstring


def log_cosh(x: Tensor) -> Tensor:
    """log cosh x = |x| + log(1 + e^{−2|x|}) − log 2: never overflows, unlike cosh."""
    a = x.abs()
    return a + torch.nn.functional.softplus(-2.0 * a) - LOG2


class ValueNetwork(nn.Module):
    """Φ_θ(t, z) for states of dimension ``state_dim`` (input is s = (z, t) of size n + 1).

    ``depth`` counts the opening layer plus the ResNet layers (depth ≥ 2); ``rank`` is the rank of
    A in the quadratic term (capped at n + 1). ``prior`` (a problem's ``value_prior``) maps
    (t, z) to (V₀ (B,), ∇_zV₀ (B, n)) or None; it has no parameters and is not saved.
    ``correction_scale`` is σ of Φ = V₀(1 + σΨ) (unused without a prior).
    """

    def __init__(self, state_dim: int, width: int = 96, depth: int = 3, rank: int = 10,
                 dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                 prior: Prior | None = None,
                 correction_scale: float = CORRECTION_SCALE) -> None:
        super().__init__()
        self.correction_scale = positive_float(correction_scale, "correction_scale")
        require(prior is None or callable(prior), "prior", "None or a callable (t, z) -> "
                "(value, gradient) | None", type(prior).__name__)
        self.prior = prior
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
        # OT-Flow initialisation: w = 0 and c = 0, so Ψ starts as the random quadratic ½|As|²
        # (with a prior A = 0 too, so Φ starts as the prior).
        self.w = nn.Parameter(torch.zeros(width, **kw))
        self.A = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.rank, d, **kw)))
        if prior is not None:
            nn.init.zeros_(self.A)
        self.c = nn.Parameter(torch.zeros(d, **kw))  # Φ's constant is dropped: u* ignores it

    def config(self) -> dict:
        return {"state_dim": self.state_dim, "width": self.width, "depth": self.depth,
                "rank": self.rank, "correction_scale": self.correction_scale}

    def _inputs(self, t: float | Tensor, z: Tensor) -> Tensor:
        require(isinstance(z, Tensor) and z.dim() == 2 and z.shape[1] == self.state_dim, "z",
                f"a tensor of shape (batch, {self.state_dim})",
                tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__)
        t = torch.as_tensor(t, dtype=z.dtype, device=z.device)
        require(t.dim() == 0 or t.numel() == z.shape[0], "t",
                f"a scalar or {z.shape[0]} times", tuple(t.shape))
        return torch.cat([z, t.reshape(-1, 1).expand(z.shape[0], 1)], dim=1)

    def _sweep(self, s: Tensor) -> tuple[list[Tensor], Tensor, Tensor]:
        """The forward pass: (pre-activations of every layer, Ψ (B,), As (B, rank))."""
        pre = [self.opening(s)]
        u = log_cosh(pre[0])
        for layer in self.layers:
            pre.append(layer(u))
            u = u + self.h * log_cosh(pre[-1])
        As = s @ self.A.T
        return pre, u @ self.w + 0.5 * (As * As).sum(-1) + s @ self.c, As

    def forward(self, t: float | Tensor, z: Tensor) -> Tensor:
        """Φ(t, z), shape (B,)."""
        _, psi, _ = self._sweep(self._inputs(t, z))
        prior = self._prior(t, z)
        return psi if prior is None else prior[0] * (1.0 + self.correction_scale * psi)

    def grad_z(self, t: float | Tensor, z: Tensor) -> Tensor:
        """p = ∇_zΦ(t, z), shape (B, n), by an explicit reverse sweep (differentiable in θ)."""
        s = self._inputs(t, z)
        pre, psi, As = self._sweep(s)
        v = self.w.expand(s.shape[0], -1)
        for layer, a in zip(reversed(self.layers), reversed(pre[1:])):
            v = v + self.h * (torch.tanh(a) * v) @ layer.weight
        grad = (torch.tanh(pre[0]) * v) @ self.opening.weight + As @ self.A + self.c
        grad = grad[:, : self.state_dim]
        prior = self._prior(t, z)
        if prior is None:
            return grad
        return prior[1] * (1.0 + self.correction_scale * psi).unsqueeze(-1) \
            + (self.correction_scale * prior[0]).unsqueeze(-1) * grad

    def _prior(self, t: float | Tensor, z: Tensor) -> tuple[Tensor, Tensor] | None:
        return None if self.prior is None else self.prior(t, z)
