"""The value network Φ_θ(t, z) of OT-Flow / NeuralOC, with its derivatives in closed form.

Ψ(s) = wᵀN(s) + ½ sᵀAᵀA s + cᵀs on normalised inputs s = ((z, t) − shift) / scale, N a ResNet
with the log-cosh activation:

    u₀ = σ(K₀ s + b₀),   u_i = u_{i−1} + h σ(K_i u_{i−1} + b_i)  (i = 1..depth−1, h = 1/(depth−1))

The costate p = ∇_zΦ is what the control layer needs, once per time step. It is written out as a
reverse sweep through the ResNet (σ' = tanh) in plain torch ops, so training differentiates it
once with autograd instead of running a double backward through ``autograd.grad``; the same
sweep gives ∂_tΦ (the HJB residual's time derivative).

**Inputs** are normalised (``shift``, ``scale`` buffers, set from the states the initial policy
visits): state components differ by orders of magnitude (positions against angles, wealth 25
against habits 0.01), and a raw-input network spends its first iterations rescaling them.

**Priors**. Φ = Ψ without one. With a ``LocalValue`` prior V₀ (the second-order expansion of
the value around optimal trajectories, saved with the network), Φ = V₀ + c·Ψ: c is the scale
of the value (``value_scale``), A starts small and w, c at zero, so Φ starts as V₀ and the
network learns an additive correction in units of the value. With a problem-supplied prior
(``ControlProblem.value_prior``: Merton's value for ConsumptionSavings), Φ = V₀(1 + σΨ), a
*relative* correction: where the costate spans orders of magnitude (p_x from −3 at t = 0 to
−3·10⁻³ near T) any additive correction of a size Adam can take flips its sign somewhere, and
there the inner problem has no minimiser; σ = ``correction_scale`` keeps a step's relative
change of the costate to a fraction of a percent.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from jfbgym.validation import MAX_WIDTH, integer, layers, positive_float, positive_int, require

from .prior import LocalValue


def check_states(z: Tensor, state_dim: int) -> None:
    """``ValueError`` unless ``z`` is a (batch, ``state_dim``) tensor."""
    require(isinstance(z, Tensor) and z.dim() == 2 and z.shape[1] == state_dim, "z",
            f"a tensor of shape (batch, {state_dim})",
            tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__)


def batch_times(t: float | Tensor, z: Tensor) -> Tensor:
    """``t`` (a scalar or one time per state) as a (B,) tensor in ``z``'s dtype and device."""
    tt = torch.as_tensor(t, dtype=z.dtype, device=z.device)
    require(tt.dim() == 0 or tt.numel() == z.shape[0], "t",
            f"a scalar or {z.shape[0]} times", tuple(tt.shape))
    return tt.reshape(-1).expand(z.shape[0])


def normalised_inputs(t: float | Tensor, z: Tensor, state_dim: int, shift: Tensor,
                      scale: Tensor) -> Tensor:
    """The network input ((z, t) − shift)/scale, shape (B, state_dim + 1), checked."""
    check_states(z, state_dim)
    s = torch.cat([z, batch_times(t, z).unsqueeze(1)], dim=1)
    return (s - shift) / scale


def copy_normalisation(net: nn.Module, shift: Tensor, scale: Tensor) -> None:
    """Check and copy an input normalisation into ``net``'s ``shift`` and ``scale`` buffers."""
    require(shift.shape == net.shift.shape and scale.shape == net.scale.shape, "shift",
            f"tensors of shape {tuple(net.shift.shape)}", tuple(shift.shape))
    require(bool((scale > 0).all()) and bool(torch.isfinite(scale).all())
            and bool(torch.isfinite(shift).all()), "scale", "finite, positive entries",
            scale.tolist())
    with torch.no_grad():
        net.shift.copy_(shift)
        net.scale.copy_(scale)

Prior = Callable[[float | Tensor, Tensor], "tuple[Tensor, Tensor] | None"]

LOG2 = math.log(2.0)
CORRECTION_SCALE = 3e-5  # σ of Φ = V₀(1 + σΨ): see the module docstring
COMPOSITIONS = ("none", "relative", "additive")


def log_cosh(x: Tensor) -> Tensor:
    """log cosh x = |x| + log(1 + e^{−2|x|}) − log 2: never overflows, unlike cosh."""
    a = x.abs()
    return a + torch.nn.functional.softplus(-2.0 * a) - LOG2


class ValueNetwork(nn.Module):
    """Φ_θ(t, z) for states of dimension ``state_dim`` (input is s = (z, t) of size n + 1).

    ``depth`` counts the opening layer plus the ResNet layers (depth ≥ 2); ``rank`` is the rank
    of A in the quadratic term (capped at n + 1). At most one prior: ``prior`` (a problem's
    ``value_prior``, (t, z) -> (V₀, ∇V₀), not saved: relative correction) or ``local`` (a
    ``LocalValue``, saved with the network: additive correction).
    """

    def __init__(self, state_dim: int, width: int, depth: int, rank: int,
                 dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                 prior: Prior | None = None, correction_scale: float = CORRECTION_SCALE,
                 local: LocalValue | None = None) -> None:
        super().__init__()
        self.correction_scale = positive_float(correction_scale, "correction_scale")
        require(prior is None or callable(prior), "prior", "None or a callable (t, z) -> "
                "(value, gradient) | None", type(prior).__name__)
        require(prior is None or local is None, "local", "no local prior beside a problem prior",
                type(local).__name__)
        self.prior = prior
        self.local = local
        self.state_dim = positive_int(state_dim, "state_dim")
        self.width, self.depth = layers(width, depth, state_dim + 1,
                                        torch.finfo(dtype).bits // 8)
        require(self.depth >= 2, "depth", "an integer >= 2 (opening layer + ResNet layers)", depth)
        self.rank = min(integer(rank, "rank", 1, MAX_WIDTH), state_dim + 1)
        d = state_dim + 1
        kw = {"dtype": dtype, "device": device}
        self.opening = nn.Linear(d, width, **kw)
        self.layers = nn.ModuleList(nn.Linear(width, width, **kw) for _ in range(depth - 1))
        self.h = 1.0 / (depth - 1)
        # OT-Flow initialisation: w = 0 and c = 0, so Ψ starts as the random quadratic ½|As|²;
        # with a prior A starts at zero (relative) or small (additive), so Φ starts as V₀.
        self.w = nn.Parameter(torch.zeros(width, **kw))
        self.A = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.rank, d, **kw)))
        if prior is not None:
            nn.init.zeros_(self.A)
        elif local is not None:
            with torch.no_grad():
                self.A.mul_(1e-3)
        self.c = nn.Parameter(torch.zeros(d, **kw))  # Φ's constant is dropped: u* ignores it
        self.register_buffer("shift", torch.zeros(d, **kw))
        self.register_buffer("scale", torch.ones(d, **kw))
        self.register_buffer("value_scale", torch.ones((), **kw))

    @property
    def composition(self) -> str:
        return "relative" if self.prior is not None else \
            "additive" if self.local is not None else "none"

    def config(self) -> dict:
        return {"state_dim": self.state_dim, "width": self.width, "depth": self.depth,
                "rank": self.rank, "correction_scale": self.correction_scale,
                "composition": self.composition,
                "local": None if self.local is None else self.local.config()}

    def set_normalisation(self, shift: Tensor, scale: Tensor, value_scale: float = 1.0) -> None:
        """Input shift and scale ((n + 1,) each, scale > 0) and the additive correction's
        value scale c."""
        positive_float(value_scale, "value_scale")
        copy_normalisation(self, shift, scale)
        with torch.no_grad():
            self.value_scale.fill_(value_scale)

    def _inputs(self, t: float | Tensor, z: Tensor) -> Tensor:
        return normalised_inputs(t, z, self.state_dim, self.shift, self.scale)

    def _sweep(self, s: Tensor) -> tuple[list[Tensor], Tensor, Tensor]:
        """The forward pass: (pre-activations of every layer, Ψ (B,), As (B, rank))."""
        pre = [self.opening(s)]
        u = log_cosh(pre[0])
        for layer in self.layers:
            pre.append(layer(u))
            u = u + self.h * log_cosh(pre[-1])
        As = s @ self.A.T
        return pre, u @ self.w + 0.5 * (As * As).sum(-1) + s @ self.c, As

    def _gradient(self, s: Tensor) -> tuple[Tensor, Tensor]:
        """(Ψ (B,), ∇_{(z,t)}Ψ in the raw units (B, n + 1)) by the explicit reverse sweep."""
        pre, psi, As = self._sweep(s)
        v = self.w.expand(s.shape[0], -1)
        for layer, a in zip(reversed(self.layers), reversed(pre[1:])):
            v = v + self.h * (torch.tanh(a) * v) @ layer.weight
        grad = (torch.tanh(pre[0]) * v) @ self.opening.weight + As @ self.A + self.c
        return psi, grad / self.scale

    def forward(self, t: float | Tensor, z: Tensor) -> Tensor:
        """Φ(t, z), shape (B,)."""
        _, psi, _ = self._sweep(self._inputs(t, z))
        if self.prior is not None:
            prior = self.prior(t, z)
            return prior[0] * (1.0 + self.correction_scale * psi)
        if self.local is not None:
            return self.local(t, z)[0] + self.value_scale * psi
        return psi

    def grad_z(self, t: float | Tensor, z: Tensor) -> Tensor:
        """p = ∇_zΦ(t, z), shape (B, n) (differentiable in θ)."""
        return self.derivatives(t, z)[1]

    def derivatives(self, t: float | Tensor, z: Tensor, with_time: bool = False
                    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """(Φ (B,), ∇_zΦ (B, n), ∂_tΦ (B,) if ``with_time``) from one sweep."""
        psi, grad = self._gradient(self._inputs(t, z))
        n = self.state_dim
        if self.prior is not None:
            require(not with_time, "with_time", "a network without a problem prior (its time "
                    "derivative is not available)", with_time)
            V, dV = self.prior(t, z)
            factor = 1.0 + self.correction_scale * psi
            return V * factor, dV * factor.unsqueeze(-1) \
                + (self.correction_scale * V).unsqueeze(-1) * grad[:, :n], None
        c = self.value_scale
        value, dz, dt = c * psi, c * grad[:, :n], c * grad[:, n]
        if self.local is not None:
            V, dV, dtV = self.local(t, z, with_time)
            value, dz = V + value, dV + dz
            dt = dt + dtV if with_time else dt
        return value, dz, dt if with_time else None
