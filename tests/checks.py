"""Assertions shared by several test modules (imported as ``checks``: pytest puts tests/ on the path)."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Sequence

import torch

from jfbgym.problems import ControlProblem


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖a − b‖ / ‖b‖ (detached; a zero b counts as 1e-300)."""
    return float((a.detach() - b.detach()).norm() / b.detach().norm().clamp_min(1e-300))


def assert_derivatives_match_autograd(prob: ControlProblem, t, z: torch.Tensor, p: torch.Tensor,
                                      u: torch.Tensor, rel: float = 1e-8) -> None:
    """∇_uH, ∇_zH, H_uu·v and ∇G, analytic, against autograd of the scalar H and G at (t, z, p, u)."""
    z, u = z.detach().requires_grad_(), u.detach().requires_grad_()
    H = prob.hamiltonian(t, z, p, u)
    assert bool(torch.isfinite(H).all())
    gz, gu = torch.autograd.grad(H.sum(), (z, u), create_graph=True)
    assert rel_err(prob.grad_u_hamiltonian(t, z, p, u), gu) < rel
    assert rel_err(prob.grad_z_hamiltonian(t, z, p, u), gz) < rel
    v = torch.randn(u.shape, dtype=u.dtype, generator=torch.Generator().manual_seed(1))
    (hv,) = torch.autograd.grad((gu * v).sum(), u)
    assert rel_err(prob.hessian_u_matvec(t, z, p, u, v), hv) < rel
    (gG,) = torch.autograd.grad(prob.terminal_cost(z).sum(), z)
    assert rel_err(prob.grad_terminal_cost(z), gG) < rel


# Warnings Gymnasium's checker gives for by-design choices (unbounded observations, physical
# action units); any other warning fails a test, as in Gymnasium's own env tests.
GYM_ALLOWED_WARNINGS = [
    r"For Box action spaces, we recommend using a symmetric and normalized space",
    r"A Box observation space minimum value is -infinity",
    r"A Box observation space maximum value is infinity",
]


def assert_only_allowed_warnings(allowed: Sequence[str], fn: Callable, *args, **kwargs) -> None:
    """Run ``fn``; fail on any warning whose message matches none of the ``allowed`` patterns
    (the allow-list practice of Gymnasium's own env tests)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn(*args, **kwargs)
    unexpected = [str(w.message) for w in caught
                  if not any(re.search(p, str(w.message)) for p in allowed)]
    assert not unexpected, unexpected
