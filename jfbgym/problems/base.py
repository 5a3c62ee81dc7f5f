"""The contract every control problem implements, and the machinery they share.

A problem is a ``torch.nn.Module`` of pure functions of ``(t, z, u, p)`` with a leading batch
dimension (buffers only, so ``.to(device)`` moves its constants). Subclasses supply the analytic
pieces (dynamics, costs, their vector-Jacobian products, a solve with the Hessian of H in u);
this base class assembles the Hamiltonian, its gradients, the inner solve, and the discrete
objective of ``shared/problems.md`` from them, so no problem re-derives those by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from jfbgym.validation import (
    finite_float,
    integer,
    positive_int,
    require,
    require_memory,
)

if TYPE_CHECKING:  # pragma: no cover
    from .feedback import FeedbackLaw

Time = float | Tensor
Policy = Callable[[Tensor, Tensor], Tensor]
MAX_NEIGHBOURS = 8  # default neighbours in a per-agent observation
MAX_HORIZON = 1e4  # longer horizons overflow the problems' float32 costs
MAX_BATCH = 2**31 - 1  # samples in one batch: torch's sizes are C ints on some paths
PD_FLOOR = 1e-6  # eigenvalues of H_uu floored at this fraction of the largest (default solve)
TIME_SLACK = 1e-5  # times this fraction of T outside [0, T] are rounding (float32 observations)


def real_tensor(values: Any, name: str) -> Tensor:
    """``values`` (a tensor, numpy array, list or number) as a real tensor: a tensor as it is
    (its graph kept: differentiable initial states), anything else as float64 on the CPU;
    ``ValueError`` naming ``name`` for what is not real numbers (strings, objects, ragged lists,
    complex values, which a cast would silently truncate, sparse or meta tensors)."""
    if isinstance(values, Tensor):
        require(values.layout == torch.strided and values.device.type != "meta", name,
                "a dense tensor with data", f"a {values.layout} tensor on {values.device}")
        require(not values.is_complex() and values.dtype != torch.bool, name, "real numbers",
                f"a tensor of {values.dtype}")
        return values
    try:
        array = np.asarray(values)
    except (TypeError, ValueError) as err:  # ragged nesting, unconvertible objects
        raise ValueError(f"{name}: expected an array of real numbers, got "
                         f"{type(values).__name__} ({err})") from err
    require(array.dtype.kind in "fiu", name, "real numbers",
            f"an array of {array.dtype} ({type(values).__name__})")
    return torch.as_tensor(array.astype(np.float64))


def check_finite(x: Tensor, name: str, limit: float | None = None) -> Tensor:
    """``x`` if every entry is finite (and ``|x| <= limit``); else ``ValueError`` naming
    ``name`` and the first offending value."""
    bad = ~torch.isfinite(x.detach())
    if limit is not None:
        bad |= x.detach().abs() > limit
    if bool(bad.any()):
        value = float(x.detach()[bad].flatten()[0])
        expected = "finite values" + ("" if limit is None else f" with |value| <= {limit:g}")
        raise ValueError(f"{name}: expected {expected}, got {value!r}")
    return x


class InnerSolution(NamedTuple):
    """Result of ``optimal_control``: the control and the evidence it solves ∇_u H = 0.

    ``residual`` is the per-sample norm of the (projected) gradient of H in u, relative to
    ``1 + ‖∇_u H(u0)‖``; ``converged`` is ``bool(residual.max() <= tol)``.
    """

    control: Tensor
    residual: Tensor
    iterations: int
    converged: bool


class Trajectory(NamedTuple):
    """A discretised rollout: ``times (nt+1,)``, ``states (B, nt+1, n)``, ``controls (B, nt, m)``,
    ``running_costs (B, nt)`` (already multiplied by h), ``terminal_cost (B,)``."""

    times: Tensor
    states: Tensor
    controls: Tensor
    running_costs: Tensor
    terminal_cost: Tensor

    @property
    def cost(self) -> Tensor:
        """The discrete objective J per sample."""
        return self.running_costs.sum(dim=1) + self.terminal_cost


@dataclass(frozen=True)
class NewtonOptions:
    """Tolerances of the damped Newton inner solve (relative residual, see ``InnerSolution``)."""

    tol: float | None = None  # None: 1e-8 in float64, 1e-5 in float32
    max_iters: int = 100
    armijo: float = 1e-4
    min_step: float = 1e-10

    def __post_init__(self) -> None:
        if self.tol is not None:
            finite_float(self.tol, "tol", 0.0)
        positive_int(self.max_iters, "max_iters")


DEFAULT_NEWTON = NewtonOptions()


class ControlProblem(torch.nn.Module):
    """Batched finite-horizon optimal control problem ``min ∫ L dt + G(z(T))``, ``ż = f``.

    Shapes: ``z (B, n)``, ``u (B, m)``, ``p (B, n)``, ``t`` a float, 0-d tensor or ``(B,)``
    tensor. Multi-agent states are agent-major: ``z.view(B, N, n // N)``.
    Subclasses set the class attribute ``name`` and implement the ``NotImplementedError``
    methods below; everything else is derived here.
    """

    name: str = "ControlProblem"
    multi_agent: bool = False  # state and control split into agents (one PettingZoo agent each)
    # The largest |component| of a state given to the library (an initial state, an
    # observation): beyond it the float32 costs (squares of positions, powers of wealth)
    # overflow, so such a state is refused rather than answered with inf or NaN.
    state_limit: float = 1e6

    def __init__(self, *, state_dim: int, control_dim: int, n_agents: int, horizon: float,
                 n_steps: int, dtype: torch.dtype = torch.float32,
                 device: str | torch.device = "cpu") -> None:
        super().__init__()
        self.state_dim = positive_int(state_dim, "state_dim")
        self.control_dim = positive_int(control_dim, "control_dim")
        self.n_agents = positive_int(n_agents, "n_agents")
        self.horizon = finite_float(horizon, "horizon", 0.0, strict=True, maximum=MAX_HORIZON)
        self.n_steps = positive_int(n_steps, "n_steps")
        require(dtype in (torch.float32, torch.float64), "dtype",
                "torch.float32 or torch.float64", dtype)
        self._dtype = dtype
        self._device = torch_device(device)
        self._trusted = 0
        # Refuse sizes that cannot fit before allocating anything (a hang or an allocator crash
        # is the alternative); each check names the argument that decides it.
        require_memory(8 * (self.n_steps + 1) * 4, "n_steps", "the time grid")
        require_memory(self.step_bytes(1), "n_agents", "one time step of one sample")
        # A buffer that tracks .to(): dtype and device of the problem follow it.
        self.register_buffer("_anchor", torch.zeros((), dtype=dtype, device=self._device),
                             persistent=False)

    # ----------------------------------------------------------------- metadata
    @property
    def dtype(self) -> torch.dtype:
        return self._anchor.dtype

    @property
    def device(self) -> torch.device:
        return self._anchor.device

    @property
    def step_size(self) -> float:
        """h = T / nt."""
        return self.horizon / self.n_steps

    @property
    def agent_state_dim(self) -> int:
        return self.state_dim // self.n_agents

    @property
    def agent_control_dim(self) -> int:
        return self.control_dim // self.n_agents

    @property
    def control_bounds(self) -> tuple[Tensor, Tensor] | None:
        """Box on u that the dynamics enforce (``None``: unconstrained)."""
        return None

    def agents(self, x: Tensor) -> Tensor:
        """(B, N·w) -> (B, N, w) for a state, costate or control (the agent-major layout); a
        view where x is contiguous."""
        return x.reshape(x.shape[0], self.n_agents, x.shape[1] // self.n_agents)

    def config(self) -> dict:
        """JSON-serialisable keyword arguments that rebuild this problem via ``make_problem``.
        Default: every ``__init__`` argument but ``dtype`` and ``device``, read from the
        attribute of the same name (so a problem that stores its arguments needs none)."""
        import inspect

        kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        names = [name for name, param in inspect.signature(type(self).__init__).parameters.items()
                 if param.kind in kinds and name not in ("self", "dtype", "device")]
        missing = [name for name in names if not hasattr(self, name)]
        if missing:
            raise NotImplementedError(
                f"{type(self).__name__}.config: store each __init__ argument as an attribute of "
                f"the same name ({missing} are not), or define config()")
        return {name: getattr(self, name) for name in names}

    def extra_repr(self) -> str:
        return (f"n_agents={self.n_agents}, state_dim={self.state_dim}, "
                f"control_dim={self.control_dim}, horizon={self.horizon}, n_steps={self.n_steps}")

    # --------------------------------------------------------------- validation
    def step_bytes(self, batch: int) -> int:
        """An upper estimate of the memory one time step of ``batch`` samples takes (bytes):
        a few dozen float64 copies of state and control by default; problems with pairwise
        terms add their (batch, N, N) kernel."""
        return 8 * 32 * batch * (self.state_dim + self.control_dim)

    def pair_evaluations(self, batch: int) -> int:
        """Pairwise-interaction terms one time step of ``batch`` samples evaluates (B·N² for an
        exact all-pairs term, 0 without one): what makes training very large swarms slow."""
        return 0

    def scaling_advice(self) -> str:
        """The settings that make a very large instance cheaper (named when training refuses
        one)."""
        return "a smaller batch or fewer agents"

    def check_batch(self, x: Tensor, name: str, width: int) -> Tensor:
        """Validate a ``(B, width)`` tensor on this problem's dtype and device."""
        require(isinstance(x, Tensor), name, "a torch.Tensor", type(x).__name__)
        require(x.dim() == 2 and x.shape[1] == width, name,
                f"shape (batch, {width})", tuple(x.shape))
        require(x.dtype == self.dtype, name, f"dtype {self.dtype}", x.dtype)
        require(x.device == self.device, name, f"device {self.device}", x.device)
        return x

    @contextmanager
    def trusted(self) -> Iterator[None]:
        """Skip ``check_inputs`` inside the block: for inner loops (rollouts of the agent's own
        policy) whose tensors are built by the library, where ~50 checks per time step cost a
        fifth of a training iteration. Inputs from users are checked before entering."""
        self._trusted += 1
        try:
            yield
        finally:
            self._trusted -= 1

    def user_states(self, values: Any, name: str, batch: int | None = None) -> Tensor:
        """States from outside the library (numpy, list or tensor; ``(n,)`` or ``(B, n)``) as a
        ``(B, n)`` tensor of this problem's dtype and device: real, finite, non-empty, each
        component within ``state_limit``; ``batch`` fixes B (a single state is repeated).
        Every state a user hands an env or an agent passes here."""
        x = real_tensor(values, name)
        n = self.state_dim
        shapes = f"({n},) or ({'B' if batch is None else batch}, {n})"
        require(x.dim() in (1, 2) and x.shape[-1] == n and (x.dim() == 1 or x.shape[0] >= 1),
                name, f"shape {shapes} (state_dim {n} of {self.name})", tuple(x.shape))
        x = x.unsqueeze(0) if x.dim() == 1 else x
        if batch is not None:
            require(x.shape[0] in (1, batch), name, f"shape {shapes}", tuple(x.shape))
            x = x.expand(batch, -1)
        check_finite(x, name, self.state_limit)  # before the cast: 1e300 is no inf yet
        return x.to(dtype=self.dtype, device=self.device)

    def user_times(self, t: Any, batch: int, name: str = "t") -> Tensor:
        """Times from outside the library (a number or one per sample) as a ``(batch,)``
        tensor: finite and within [0, T] (up to float32 rounding, then clamped onto it)."""
        tt = real_tensor(t, name).detach().to(torch.float64).cpu().reshape(-1)
        require(tt.numel() in (1, batch), name, f"a number or {batch} times", tuple(tt.shape))
        check_finite(tt, name)
        slack = TIME_SLACK * self.horizon
        outside = (tt < -slack) | (tt > self.horizon + slack)
        if bool(outside.any()):
            raise ValueError(f"{name}: expected times in [0, {self.horizon:g}] (the horizon of "
                             f"{self.name}), got {float(tt[outside][0])!r}")
        return tt.clamp(0.0, self.horizon).to(self.dtype).to(self.device).expand(batch)

    def batch_size(self, batch: Any, name: str) -> int:
        """``batch`` samples as an int, refused at once where their trajectories (states and
        controls at every step, and a copy of each) would not fit in memory."""
        b = integer(batch, name, 1, MAX_BATCH)
        value = torch.finfo(self.dtype).bits // 8
        per_sample = 2 * value * (self.n_steps + 1) * (self.state_dim + self.control_dim)
        require_memory(b * per_sample + self.step_bytes(b), name,
                       f"trajectories of {b} samples of {self.name}")
        return b

    def check_inputs(self, z: Tensor, u: Tensor | None = None, p: Tensor | None = None) -> None:
        if self._trusted:
            return
        self.check_batch(z, "z", self.state_dim)
        for x, name, width in ((u, "u", self.control_dim), (p, "p", self.state_dim)):
            if x is not None:
                self.check_batch(x, name, width)
                require(x.shape[0] == z.shape[0], name,
                        f"batch size {z.shape[0]} (that of z)", x.shape[0])

    def time_column(self, t: Time, z: Tensor) -> Tensor:
        """``t`` as a ``(B, 1)`` tensor matching ``z``."""
        t = torch.as_tensor(t, dtype=z.dtype, device=z.device)
        require(t.dim() == 0 or (t.dim() == 1 and t.shape[0] in (1, z.shape[0])), "t",
                f"a scalar or shape ({z.shape[0]},)", tuple(t.shape))
        return t.reshape(-1, 1).expand(z.shape[0], 1)

    # ------------------------------------------------ what a subclass implements
    def dynamics(self, t: Time, z: Tensor, u: Tensor) -> Tensor:
        """f(t, z, u), shape (B, n)."""
        raise NotImplementedError

    def running_cost(self, t: Time, z: Tensor, u: Tensor) -> Tensor:
        """L(t, z, u), shape (B,)."""
        raise NotImplementedError

    def terminal_cost(self, z: Tensor) -> Tensor:
        """G(z), shape (B,), weight included."""
        raise NotImplementedError

    # The derivatives below have defaults from ``dynamics``, ``running_cost`` and
    # ``terminal_cost`` by ``torch.func`` (``grad`` of the batch sum: samples are independent,
    # so no ``vmap`` is needed and any batched torch code works); they stay differentiable for
    # training. The shipped problems override them analytically (several times faster in the
    # inner loop); ``jfbgym.problems.check_derivatives`` tests an override against them.
    def grad_terminal_cost(self, z: Tensor) -> Tensor:
        """∇_z G, shape (B, n)."""
        from torch.func import grad

        return grad(lambda z1: self.terminal_cost(z1).sum())(z)

    def grad_u_hamiltonian(self, t: Time, z: Tensor, p: Tensor, u: Tensor) -> Tensor:
        """∇_u H = ∇_u L + (∂f/∂u)ᵀ p, shape (B, m)."""
        from torch.func import grad

        return grad(lambda u1: self._hamiltonian_sum(t, z, p, u1))(u)

    def grad_z_hamiltonian(self, t: Time, z: Tensor, p: Tensor, u: Tensor) -> Tensor:
        """∇_z H = ∇_z L + (∂f/∂z)ᵀ p, shape (B, n)."""
        from torch.func import grad

        return grad(lambda z1: self._hamiltonian_sum(t, z1, p, u))(z)

    def hessian_u_matvec(self, t: Time, z: Tensor, p: Tensor, u: Tensor, v: Tensor) -> Tensor:
        """(∇²_uu H) v without forming the matrix, shape (B, m) (default: forward-over-reverse
        ``torch.func.jvp`` of ∇_u H)."""
        from torch.func import jvp

        return jvp(lambda u1: self.grad_u_hamiltonian(t, z, p, u1), (u,), (v,))[1]

    def _hamiltonian_sum(self, t: Time, z: Tensor, p: Tensor, u: Tensor) -> Tensor:
        return (self.running_cost(t, z, u) + (p * self.dynamics(t, z, u)).sum(-1)).sum()

    def hessian_u_max_eigenvalue(self, t: Time, z: Tensor, p: Tensor, u: Tensor
                                 ) -> Tensor | None:
        """The largest |eigenvalue| of ∇²_uu H per sample, (B, 1), in closed form where the
        problem has one (the JFB step α = 1/λ_max); None: estimated by power iteration."""
        return None

    def hessian_u_solve(self, t: Time, z: Tensor, p: Tensor, u: Tensor, v: Tensor,
                        damping: float = 0.0) -> Tensor:
        """(∇²_uu H + damping·I)⁻¹ v, (B, m).

        Where H is not convex in u, the solve uses a positive-definite modification of the
        Hessian, so that Newton directions descend. Default: the (B, m, m) Hessian from
        ``hessian_u_matvec`` of the unit vectors (one ``vmap``), symmetrised, its eigenvalues
        replaced by their absolute values floored at ``PD_FLOOR`` times the largest; fine for
        controls of up to a few hundred entries. The shipped problems override it with their
        per-agent blocks (or a low-rank update).
        """
        from torch.func import vmap

        eye = torch.eye(self.control_dim, dtype=u.dtype, device=u.device)
        columns = vmap(lambda e: self.hessian_u_matvec(t, z, p, u, e.expand_as(u)))(eye)
        H = columns.permute(1, 2, 0)  # (B, m, m): column j is H e_j
        lam, Q = torch.linalg.eigh(0.5 * (H + H.transpose(1, 2)))
        floor = PD_FLOOR * lam.abs().amax(-1, keepdim=True).clamp_min(1e-12)
        lam = lam.abs().clamp_min(floor) + damping
        w = (Q.transpose(1, 2) @ v.unsqueeze(-1)).squeeze(-1) / lam
        return (Q @ w.unsqueeze(-1)).squeeze(-1)

    def sample_initial_states(self, batch: int, generator: torch.Generator | None = None
                              ) -> Tensor:
        """Draw ``batch`` initial states from ρ, shape (B, n), reproducible from ``generator``."""
        raise NotImplementedError

    # ------------------------------------------- dense second-order information
    # For the open-loop Newton solver and the local value expansion: dense per-sample matrices,
    # so for problems of moderate size. The defaults differentiate the analytic pieces above
    # with torch.func (any problem works); problems override them where that is slow.
    def dynamics_jacobian(self, t: Time, z: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        """(∂f/∂z (B, n, n), ∂f/∂u (B, n, m)) per sample."""
        from torch.func import jacrev, vmap

        def f(t1: Tensor, z1: Tensor, u1: Tensor) -> Tensor:
            return self.dynamics(t1.reshape(1), z1[None], u1[None])[0]

        return vmap(jacrev(f, argnums=(1, 2)))(self.time_column(t, z)[:, 0], z, u)

    def hamiltonian_hessian(self, t: Time, z: Tensor, p: Tensor, u: Tensor
                            ) -> tuple[Tensor, Tensor, Tensor]:
        """(H_zz (B, n, n), H_zu (B, n, m), H_uu (B, m, m)) of H = L + pᵀf per sample."""
        from torch.func import jacfwd, vmap

        def grads(t1: Tensor, z1: Tensor, p1: Tensor, u1: Tensor) -> tuple[Tensor, Tensor]:
            args = (t1.reshape(1), z1[None], p1[None], u1[None])
            return self.grad_z_hamiltonian(*args)[0], self.grad_u_hamiltonian(*args)[0]

        (hzz, hzu), (_, huu) = vmap(jacfwd(grads, argnums=(1, 3)))(
            self.time_column(t, z)[:, 0], z, p, u)
        return hzz, hzu, huu

    def jacobian_blocks(self, t: Time, z: Tensor, p: Tensor, u: Tensor
                        ) -> tuple[Tensor, Tensor, Tensor] | None:
        """Per-agent blocks (B, N, d, d), (B, N, d, c), (B, N, d, c) of f_z, f_u and H_zu, for
        a problem whose agents' dynamics each depend on the agent's own state and control only
        and whose L has no cross term between states and controls: those three matrices are
        then block diagonal, and Newton's backward pass multiplies by their blocks (N times
        fewer operations than dense). None (the default): the dense matrices are used."""
        return None

    def terminal_hessian(self, z: Tensor) -> Tensor:
        """∇²G (B, n, n) per sample."""
        from torch.func import jacfwd, vmap

        return vmap(jacfwd(lambda z1: self.grad_terminal_cost(z1[None])[0]))(z)

    # ---------------------------------------------------------------- derived
    def hamiltonian(self, t: Time, z: Tensor, p: Tensor, u: Tensor) -> Tensor:
        """H = L + pᵀf (minimisation convention), shape (B,)."""
        self.check_inputs(z, u, p)
        return self.running_cost(t, z, u) + (p * self.dynamics(t, z, u)).sum(dim=-1)

    def initial_control(self, t: Time, z: Tensor) -> Tensor:
        """Where the inner solve starts when no warm start is given."""
        return torch.zeros(z.shape[0], self.control_dim, dtype=z.dtype, device=z.device)

    def action_box(self) -> tuple[Tensor, Tensor]:
        """(low, high), each (m,), containing every control an optimal policy uses.

        Environments expose it as their action space and clip actions onto it; it is part of the
        problem because choosing it takes the problem's mathematics (see each subclass).
        Default: ``control_bounds`` where the problem has them, else unbounded (JFB, the
        environments and evaluation need no box; RL baselines and the direct policy need a
        finite one, ``action_scale``).
        """
        bounds = self.control_bounds
        if bounds is not None:
            return bounds
        inf = torch.full((self.control_dim,), torch.inf, dtype=self.dtype, device=self.device)
        return -inf, inf

    def action_scale(self) -> tuple[Tensor, Tensor]:
        """(centre, half-width), each (m,): the range a *normalised* action a ∈ [−1, 1]ᵐ maps
        onto, u = centre + half-width·a (RL baselines act in it, the direct policy's tanh
        output is mapped onto it). It lies inside ``action_box``. Default: the action box
        itself; a problem whose box is much wider than its sensible controls (to be safe for
        any costate) narrows it around its nominal control."""
        low, high = self.action_box()
        require(bool(torch.isfinite(low).all() and torch.isfinite(high).all()), "action_box",
                f"a finite box for RL baselines and the direct policy (define "
                f"{type(self).__name__}.action_box)", "an unbounded one")
        return 0.5 * (low + high), 0.5 * (high - low)

    def value_prior(self, t: Time, z: Tensor) -> tuple[Tensor, Tensor] | None:
        """An approximate cost-to-go V₀ and its gradient, ((B,), (B, n)), or ``None`` (default).

        A value network adds it to its output and learns only the correction. It is for
        problems where an arbitrary initial costate makes the inner problem unbounded (no
        minimiser), so training cannot start from scratch; problems with a well-posed inner
        problem for every p keep ``None`` and are learned from scratch.
        """
        return None

    # ------------------------------------------------ hooks the adapters call
    # Each problem is the one home of its specifics (VMAS's scenario files): envs, PettingZoo,
    # renderers and baselines ask these instead of branching on the problem's name.
    def positions(self, z: Tensor) -> Tensor | None:
        """Agent positions (B, N, k) (drawn, and used for neighbours), or None if the problem
        has no spatial picture."""
        return None

    def target_positions(self) -> Tensor | None:
        """Each agent's target position (N, k), or None."""
        return None

    def default_neighbours(self) -> int:
        """How many nearest neighbours a per-agent observation holds by default."""
        return 0 if self.target_positions() is None else min(self.n_agents - 1, MAX_NEIGHBOURS)

    def agent_observation(self, t: Time, z: Tensor, neighbours: int) -> Tensor:
        """What agent i observes, (B, N, d), for the multi-agent envs: its own state block, its
        target and the positions of its ``neighbours`` nearest agents relative to its own
        (nearest first) when the problem has positions, then t."""
        self.check_inputs(z)
        own = self.agents(z)
        parts = [own]
        goal = self.target_positions()
        if goal is not None:
            pos = self.positions(z)
            parts += [goal.to(z).expand(z.shape[0], -1, -1),
                      nearest_relative_positions(pos, neighbours).flatten(2)]
        parts.append(self.time_column(t, z).unsqueeze(1).expand(-1, self.n_agents, 1))
        return torch.cat(parts, dim=-1)

    def agent_decomposition(self) -> tuple[ControlProblem, float, Tensor] | None:
        """When the cost is (close to) w·Σ_i J₁(z_i − o_i) for one single-agent problem J₁, i.e.
        identical agents coupled only weakly: (that problem, w, offsets o (N, d)). Used for
        value priors whose size does not grow with N; None: no such structure."""
        return None

    def heuristic(self) -> FeedbackLaw | None:
        """A simple hand-written feedback law for this problem (a baseline), or None."""
        return None

    def draw(self, fig: Any, states: np.ndarray, controls: np.ndarray | None,
             times: np.ndarray) -> None:
        """Draw one sample's trajectory prefix ``states (k + 1, n)``, ``controls (k, m)`` on
        the matplotlib ``fig`` (the last state is "now"). Default: state and control curves
        against time."""
        panels = [("state", times, states)]
        if controls is not None:
            panels.append(("control", times[:len(controls)], controls))
        draw_time_series(fig, panels, self.horizon, f"{self.name}, t={times[-1]:.2f}")

    def raster(self, kit: Any, states: np.ndarray, controls: np.ndarray | None,
               times: np.ndarray, size: tuple[int, int]) -> Any:
        """A fast video frame of the same trajectory prefix as ``draw``: a ``kit.Canvas`` drawn
        in world coordinates (``jfbgym.envs.raster``, passed in so that problems import nothing
        from the envs), or None to fall back to ``draw`` (matplotlib, ~100× slower)."""
        return None

    def project_control(self, u: Tensor) -> Tensor:
        """Clip u onto ``control_bounds`` (identity when unconstrained)."""
        bounds = self.control_bounds
        return u if bounds is None else torch.clamp(u, bounds[0], bounds[1])

    def default_tol(self) -> float:
        return 1e-8 if self.dtype == torch.float64 else 1e-5

    def certify(self, t: Time, z: Tensor, p: Tensor, u: Tensor, u0: Tensor | None,
                options: NewtonOptions, iterations: int) -> InnerSolution:
        """The evidence a closed-form or global inner solve returns with its control u: the
        residual relative to ``1 + ‖∇_u H(u0)‖`` (u0 = ``initial_control``, projected, by
        default), as the Newton solve measures it, against ``options.tol`` (or the default)."""
        tol = options.tol if options.tol is not None else self.default_tol()
        with torch.no_grad():
            start = self.project_control(self.initial_control(t, z) if u0 is None
                                         else u0.detach())
            scale = 1.0 + self.grad_u_hamiltonian(t, z, p, start).norm(dim=-1)
            res = self.stationarity_residual(t, z, p, u, scale)
        return InnerSolution(u, res, iterations, bool(res.max() <= tol))

    def stationarity_residual(self, t: Time, z: Tensor, p: Tensor, u: Tensor,
                              scale: Tensor | None = None) -> Tensor:
        """Per-sample ‖u − Π(u − ∇_u H)‖ / scale: zero exactly at (box-)stationary points."""
        r = self.projected_gradient_norm(u, self.grad_u_hamiltonian(t, z, p, u))
        return r if scale is None else r / scale

    def projected_gradient_norm(self, u: Tensor, g: Tensor) -> Tensor:
        """Per-sample ‖u − Π(u − g)‖ for a gradient g already at hand; without a box this is
        ‖g‖ itself (u − (u − g) would round g away when |u| ≫ |g|)."""
        r = g if self.control_bounds is None else u - self.project_control(u - g)
        return r.norm(dim=-1)

    def optimal_control(self, t: Time, z: Tensor, p: Tensor, u0: Tensor | None = None,
                        options: NewtonOptions = DEFAULT_NEWTON) -> InnerSolution:
        """argmin_u H(t, z, p, u) by projected damped Newton with Armijo backtracking.

        Each sample takes its own step length; a sample stops moving once its residual is below
        tolerance. Problems with a closed form override this.
        """
        self.check_inputs(z, u0, p)
        tol = options.tol if options.tol is not None else self.default_tol()
        with torch.no_grad():
            u = self.project_control(self.initial_control(t, z) if u0 is None else u0.detach())
            z, p = z.detach(), p.detach()
            scale = 1.0 + self.grad_u_hamiltonian(t, z, p, u).norm(dim=-1)
            H = self.hamiltonian(t, z, p, u)
            res = self.stationarity_residual(t, z, p, u, scale)
            eps = torch.finfo(u.dtype).eps
            it = 0
            while it < options.max_iters and bool((res > tol).any()):
                it += 1
                g = self.grad_u_hamiltonian(t, z, p, u)
                d = -self.hessian_u_solve(t, z, p, u, g)
                active = (res > tol).to(u.dtype).unsqueeze(-1)
                step = torch.ones_like(H)
                accepted = torch.zeros_like(H, dtype=torch.bool)
                u_new, H_new = u, H
                while True:
                    cand = self.project_control(u + active * step.unsqueeze(-1) * d)
                    H_cand = self.hamiltonian(t, z, p, cand)
                    decrease = (g * (cand - u)).sum(-1)
                    # Near the optimum H changes by less than its rounding error, so Armijo
                    # alone stalls; there a step is taken if it reduces the residual instead.
                    flat = (H_cand - H).abs() <= 64 * eps * (1 + H.abs())
                    better = self.stationarity_residual(t, z, p, cand, scale) < res
                    ok = ((H_cand <= H + options.armijo * decrease) | (flat & better)) & ~accepted
                    u_new = torch.where(ok.unsqueeze(-1), cand, u_new)
                    H_new = torch.where(ok, H_cand, H_new)
                    accepted |= ok
                    step = torch.where(accepted, step, step * 0.5)
                    if bool(accepted.all()) or float(step.max()) < options.min_step:
                        break
                u, H = u_new, H_new
                res = self.stationarity_residual(t, z, p, u, scale)
        return InnerSolution(u, res, it, bool(res.max() <= tol))

    # ------------------------------------------------------------- time stepping
    def step(self, t: Time, z: Tensor, u: Tensor, method: str = "euler") -> Tensor:
        """One step of length h: forward Euler (the reference) or classical RK4 (u held)."""
        h = self.step_size
        if method == "euler":
            return z + h * self.dynamics(t, z, u)
        require(method == "rk4", "method", "'euler' or 'rk4'", method)
        k1 = self.dynamics(t, z, u)
        k2 = self.dynamics(_shift(t, h / 2), z + h / 2 * k1, u)
        k3 = self.dynamics(_shift(t, h / 2), z + h / 2 * k2, u)
        k4 = self.dynamics(_shift(t, h), z + h * k3, u)
        return z + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)

    def times(self) -> Tensor:
        """The grid t_k = k h, k = 0..nt, shape (nt + 1,)."""
        return torch.linspace(0.0, self.horizon, self.n_steps + 1, dtype=self.dtype,
                              device=self.device)

    def rollout(self, controls_or_policy: Tensor | Policy, x0: Tensor,
                method: str = "euler") -> Trajectory:
        """Roll the dynamics from ``x0`` under a control sequence ``(B, nt, m)`` (or ``(nt, m)``
        shared by the batch) or a feedback policy ``(t, z) -> u``; differentiable (once) in x0,
        the controls and whatever the policy depends on, the running cost by its analytic
        gradients."""
        self.check_batch(x0, "x0", self.state_dim)
        controls = controls_or_policy if isinstance(controls_or_policy, Tensor) else None
        if controls is not None:
            if controls.dim() == 2:
                controls = controls.unsqueeze(0).expand(x0.shape[0], -1, -1)
            require(controls.dim() == 3 and controls.shape[1:] == (self.n_steps,
                                                                  self.control_dim),
                    "controls", f"shape (batch, {self.n_steps}, {self.control_dim})",
                    tuple(controls.shape))
            require(controls.shape[0] == x0.shape[0], "controls",
                    f"batch size {x0.shape[0]} (that of x0)", controls.shape[0])
        elif not callable(controls_or_policy):
            raise ValueError("controls_or_policy: expected a tensor (batch, n_steps, "
                             f"control_dim) or a callable (t, z) -> u, got "
                             f"{type(controls_or_policy).__name__}")
        times = self.times()
        h = self.step_size
        # unbind, not controls[:, k]: each slice's backward would allocate the whole sequence,
        # making the backward pass quadratic in n_steps.
        steps = controls.unbind(1) if controls is not None else None
        z, states, us, costs = x0, [x0], [], []
        for k in range(self.n_steps):
            t = times[k]
            u = steps[k] if steps is not None else controls_or_policy(t, z)
            self.check_batch(u, "u", self.control_dim)
            costs.append(h * _running_cost(self, t, z, u))
            z = self.step(t, z, u, method)
            states.append(z)
            us.append(u)
        return Trajectory(times, torch.stack(states, 1), torch.stack(us, 1),
                          torch.stack(costs, 1), self.terminal_cost(z))

    def objective(self, controls_or_policy: Tensor | Policy, x0: Tensor,
                  method: str = "euler") -> Tensor:
        """Discrete J = h Σ_k L(t_k, z_k, u_k) + G(z_nt), shape (B,)."""
        return self.rollout(controls_or_policy, x0, method).cost


class _RunningCost(torch.autograd.Function):
    """L(t, z, u) differentiated by the problem's analytic gradients ∇_z L = ∇_z H(t, z, 0, u)
    and ∇_u L = ∇_u H(t, z, 0, u) (H = L + pᵀf at p = 0). Only z and u are saved, so the
    O(B·N²) intermediates of the interaction term stay out of the autograd graph (at N = 100
    this took a training iteration from 46 s and 2.8 GB to 3.4 s and 1.2 GB). Once
    differentiable: nothing takes a second derivative through a rollout."""

    @staticmethod
    def forward(ctx, z: Tensor, u: Tensor, problem: ControlProblem, t: Time) -> Tensor:
        ctx.save_for_backward(z, u)
        ctx.problem, ctx.t = problem, t
        return problem.running_cost(t, z, u)

    @staticmethod
    def backward(ctx, grad: Tensor):
        z, u = ctx.saved_tensors
        problem, t, g = ctx.problem, ctx.t, grad.unsqueeze(-1)
        zero = torch.zeros_like(z)
        gz = g * problem.grad_z_hamiltonian(t, z, zero, u) if ctx.needs_input_grad[0] else None
        gu = g * problem.grad_u_hamiltonian(t, z, zero, u) if ctx.needs_input_grad[1] else None
        return gz, gu, None, None


def _running_cost(problem: ControlProblem, t: Time, z: Tensor, u: Tensor) -> Tensor:
    """L(t, z, u), shape (B,): through ``_RunningCost`` when a gradient is being recorded."""
    if torch.is_grad_enabled() and (z.requires_grad or u.requires_grad):
        return _RunningCost.apply(z, u, problem, t)
    return problem.running_cost(t, z, u)


def _shift(t: Time, dt: float) -> Time:
    return t + dt


def torch_device(device: object) -> torch.device:
    """``device`` as a ``torch.device`` this torch can use: a clear ``ValueError`` (not an
    AssertionError from deep inside torch) for CUDA on a CPU-only build or a bad name."""
    try:
        dev = torch.device(device)  # type: ignore[arg-type]
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device: expected a torch device such as 'cpu' or 'cuda', got "
                         f"{device!r}") from err
    require(dev.type != "cuda" or torch.cuda.is_available(), "device",
            "'cpu' (this torch has no usable CUDA device)", str(device))
    require(dev.type != "cuda" or dev.index is None or dev.index < torch.cuda.device_count(),
            "device", f"a CUDA index below {torch.cuda.device_count()}", str(device))
    require(dev.type in ("cpu", "cuda", "mps") and (dev.type != "mps" or
                                                     torch.backends.mps.is_available()),
            "device", "'cpu', 'cuda' or an available 'mps'", str(device))
    return dev


def nearest_relative_positions(positions: Tensor, k: int) -> Tensor:
    """For each agent, the positions of its k nearest others minus its own, nearest first:
    ``positions (B, N, d)`` -> ``(B, N, k, d)``. Ties break by agent index (stable sort)."""
    n = positions.shape[1]
    rel = positions.unsqueeze(1) - positions.unsqueeze(2)  # rel[b, i, j] = q_j − q_i
    dist = (rel * rel).sum(-1)
    dist = dist + torch.diag(torch.full((n,), float("inf"), dtype=dist.dtype,
                                        device=dist.device))
    order = torch.sort(dist, dim=-1, stable=True).indices[..., :k]
    return torch.take_along_dim(rel, order.unsqueeze(-1), dim=2)


def draw_time_series(fig: Any, panels: list[tuple[str, np.ndarray, np.ndarray]],
                     horizon: float, title: str) -> None:
    """Stacked panels of curves against time on the whole horizon [0, T]."""
    axes = np.atleast_1d(fig.subplots(len(panels), 1, sharex=True))
    for ax, (label, t, y) in zip(axes, panels):
        if len(t):  # markers too, so a one-sample prefix is visible
            ax.plot(t, y, lw=1.0, marker="." if len(t) < 3 else None)
        ax.set_ylabel(label)
        ax.set_xlim(0.0, horizon)
    axes[-1].set_xlabel("t")
    fig.suptitle(title)
