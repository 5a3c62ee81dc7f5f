"""Principal-branch Lambert W on [0, ∞) in torch: batched, float32/float64, twice differentiable.

QuadSwarm's inner problem has the closed form u* = −N e^{−w/2} q with w = W₀(N‖q‖²), so the
feedback law needs W₀ on the same device and dtype as the rollout, with gradients.

Method: Winitzki's approximation W ≈ ℓ(1 − log(1 + ℓ)/(2 + ℓ)), ℓ = log(1 + x) (relative error
below 2 % for every x ≥ 0, exact to second order at 0), then Newton on w + log w − log x = 0,
i.e. w ← w (1 + log(x / w)) / (1 + w) (Iacono & Boyd, 2017). That form never evaluates e^w, so
it cannot overflow for any finite x, and its relative error roughly squares each step: four
steps take 2e-2 below float64 rounding (three suffice). The derivative
W'(x) = W / (x (1 + W)) = 1 / (x + e^W) is applied analytically (finite at x = 0, where
W' = 1); the backward is itself built from differentiable ops, so double backward works too.
"""

from __future__ import annotations

import torch
from torch import Tensor

NEWTON_STEPS = 4  # three already reach float64 rounding from Winitzki's guess


def _lambertw_forward(x: Tensor) -> Tensor:
    """W₀(x) for finite x ≥ 0 (validated by the caller); no autograd."""
    # Below machine epsilon W(x) = x − x² + O(x³) is exact to rounding; the iteration is not
    # (x / w underflows to 0/0 for subnormal x), so it runs on 1 there instead.
    tiny = x < torch.finfo(x.dtype).eps
    xs = torch.where(tiny, torch.ones_like(x), x)
    ell = torch.log1p(xs)
    w = ell * (1.0 - torch.log1p(ell) / (2.0 + ell))
    for _ in range(NEWTON_STEPS):
        w = w * (1.0 + torch.log(xs / w)) / (1.0 + w)
    return torch.where(tiny, x - x * x, w)


class _LambertW(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        w = _lambertw_forward(x)
        ctx.save_for_backward(x, w)
        return w

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        x, w = ctx.saved_tensors
        return grad / (x + torch.exp(w))


def lambertw(x: Tensor) -> Tensor:
    """Principal branch W₀(x), elementwise, for a float32/float64 tensor of finite values ≥ 0.

    Raises ``ValueError`` for other dtypes and for negative, NaN or infinite entries (the
    branch below 0 is not needed by any jfbgym problem and is not implemented).
    """
    if not isinstance(x, Tensor) or x.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"x: expected a float32 or float64 torch.Tensor, got "
                         f"{getattr(x, 'dtype', type(x).__name__)}")
    bad = ~torch.isfinite(x) | (x < 0)
    if bool(bad.any()):
        raise ValueError(f"x: expected finite values >= 0, got {x[bad].flatten()[0].item()!r}")
    return _LambertW.apply(x)


__all__ = ["lambertw"]
