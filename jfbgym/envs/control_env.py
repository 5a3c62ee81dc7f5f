"""Gymnasium adapters over a ``ControlProblem``: a single env and a torch-batched vector env.

Both are thin: one env step is one Euler step ``problem.step`` of length h = T/nt, and the reward
is ``−h·L``, plus ``−G`` on the last step, so an episode's return is exactly ``−J``. The class
docstrings are the documentation (Gymnasium style).
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space
from torch import Tensor

from jfbgym import validation
from jfbgym.envs.rendering import render_frame
from jfbgym.problems import PROBLEMS, problem_class, problem_for_env, problem_overrides
from jfbgym.problems.base import ControlProblem, check_finite, real_tensor
from jfbgym.validation import optional, positive_int, require, require_memory

RENDER_FPS = 20
CHUNK_ELEMENTS = 2**19


# ----------------------------------------------------------------------------- shared pieces
def action_bounds(problem: ControlProblem) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) float32 arrays of shape (m,): the problem's ``action_box``."""
    low, high = problem.action_box()
    return (low.detach().cpu().numpy().astype(np.float32),
            high.detach().cpu().numpy().astype(np.float32))


def build_problem(env_id: str | None, problem: ControlProblem | None, dtype: torch.dtype,
                  device: str | torch.device, problem_kwargs: dict) -> ControlProblem:
    """The problem an env wraps: a given one, or the one ``env_id`` stands for."""
    if problem is not None:
        require(isinstance(problem, ControlProblem), "problem", "a ControlProblem",
                type(problem).__name__)
        require(env_id is None and not problem_kwargs, "problem",
                "either a problem or env_id with keywords, not both", type(problem).__name__)
        return problem
    require(env_id is not None, "env_id", "a registered id (or pass problem=)", env_id)
    return problem_for_env(env_id, dtype=dtype, device=device,
                           **problem_overrides(problem_kwargs))


def finite_array(values: Any, shape: tuple[int, ...], name: str = "action") -> np.ndarray:
    """``values`` as a float64 array of exactly ``shape``: real (no complex, string or object
    entries) and finite, else ``ValueError``."""
    x = real_tensor(values, name)
    require(tuple(x.shape) == shape, name, f"shape {shape}", tuple(x.shape))
    check_finite(x, name)  # before any cast: a finite 1e300 is clipped onto the box, not inf
    return x.detach().cpu().double().numpy()


def transition(problem: ControlProblem, t: Tensor, z: Tensor, u: Tensor, last: Tensor | bool
               ) -> tuple[Tensor, Tensor, Tensor]:
    """One step of a batch: (z_{k+1}, running cost h·L(t_k, z_k, u_k), terminal cost G(z_{k+1})
    where ``last`` else 0) — exactly the terms of ``problem.objective``."""
    running = problem.step_size * problem.running_cost(t, z, u)
    z_next = problem.step(t, z, u)
    if isinstance(last, bool):
        terminal = problem.terminal_cost(z_next) if last else torch.zeros_like(running)
    elif bool(last.any()):
        terminal = torch.where(last, problem.terminal_cost(z_next), 0.0)
    else:
        terminal = torch.zeros_like(running)
    return z_next, running, terminal


def default_chunk_size(problem: ControlProblem, num_envs: int) -> int:
    """Envs per chunk of a CPU step: about CHUNK_ELEMENTS entries of the (chunk, N, N)
    pairwise kernel (a few MB, cache-sized); the whole batch on an accelerator or for N = 1."""
    if problem.device.type != "cpu" or problem.n_agents == 1:
        return num_envs
    return max(1, min(num_envs, CHUNK_ELEMENTS // problem.n_agents**2))


def observation(z: Tensor, t: Tensor) -> Tensor:
    """[z, t] per row, shape (B, n + 1)."""
    return torch.cat([z, t.reshape(-1, 1).to(z.dtype)], dim=1)


def _observation_space(problem: ControlProblem) -> spaces.Box:
    return spaces.Box(-np.inf, np.inf, shape=(problem.state_dim + 1,), dtype=np.float32)


def _initial_state(problem: ControlProblem, value: Any, batch: int) -> Tensor:
    """``options["initial_state"]`` as a (batch, n) tensor, validated
    (``ControlProblem.user_states``)."""
    return problem.user_states(value, "initial_state", batch)


class _Seeding:
    """A torch.Generator driven by Gymnasium's seeding: ``reset(seed)`` reseeds it; the first
    unseeded reset draws its seed from ``np_random`` (itself randomly seeded)."""

    generator: torch.Generator | None = None

    def _seed_generator(self, seed: int | None, np_random: np.random.Generator) -> torch.Generator:
        if seed is not None or self.generator is None:
            self.generator = torch.Generator()
            self.generator.manual_seed(int(np_random.integers(2**62)) if seed is None else
                                       validation.seed(seed))
        return self.generator


class _Viewer:
    """A pyplot window for ``render_mode="human"`` (a no-op display under Agg)."""

    def __init__(self) -> None:
        self.figure, self.image = None, None

    def show(self, frame: np.ndarray) -> None:
        import matplotlib.pyplot as plt

        if self.figure is None:
            self.figure = plt.figure()
            ax = self.figure.add_axes((0, 0, 1, 1))
            ax.set_axis_off()
            self.image = ax.imshow(frame)
        else:
            self.image.set_data(frame)
        plt.pause(1.0 / RENDER_FPS)

    def close(self) -> None:
        if self.figure is not None:
            import matplotlib.pyplot as plt

            plt.close(self.figure)
        self.figure, self.image = None, None


# ------------------------------------------------------------------------------- single env
class ControlEnv(gym.Env[np.ndarray, np.ndarray], _Seeding):
    """One episode of a finite-horizon control problem ``min ∫L dt + G(z(T))``.

    **Observation** ``(n + 1,)`` float32: the state z followed by the time t (unbounded Box).

    **Action** ``(m,)`` float32: the joint control u, a Box from the problem's ``action_box``,
    which contains every control the optimal policy uses. Actions outside it are clipped onto it;
    NaN/inf or a wrong shape raise ``ValueError``. The boxes, from the problems themselves:

    {bounds}

    **Reward** ``−h·L(t_k, z_k, u_k)`` per step, plus ``−G(z_nt)`` on the last one: an
    episode's return is exactly ``−J`` (``problem.objective`` of the same controls). ``info``
    carries ``running_cost`` (h·L) and ``terminal_cost`` (G; 0 before the end) as floats.

    **Episode end**: ``terminated`` at t = T, after ``n_steps`` steps: the horizon is part of
    the problem (the terminal cost is paid there and nothing follows), not a time limit, so
    ``truncated`` is always False. The ids are registered without ``max_episode_steps``, so an
    ``n_steps`` given to ``make`` sets the episode length, with no time limit to cut it short.

    **Starting state**: ``problem.sample_initial_states`` driven by a ``torch.Generator`` that
    ``reset(seed=...)`` seeds (same seed, same episode); ``reset(options={{"initial_state":
    z0}})`` starts from a given state instead.

    **Arguments**: ``env_id`` (an id of ``jfbgym.problems.ENV_SPECS``) and any problem keyword
    (``n_agents``, ``targets``, ``n_steps``, ...), or a ready ``problem``; ``render_mode``
    (``"rgb_array"`` or ``"human"``), ``dtype`` and ``device`` of the simulation (float64 by
    default: exact returns cost nothing at batch size one).

    **Version history**: v0 — first release.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["human", "rgb_array"],
                                          "render_fps": RENDER_FPS}

    def __init__(self, env_id: str | None = None, *, problem: ControlProblem | None = None,
                 render_mode: str | None = None, dtype: torch.dtype = torch.float64,
                 device: str | torch.device = "cpu", **problem_kwargs: Any) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode: expected one of {self.metadata['render_modes']} or "
                             f"None, got {render_mode!r}")
        self.problem = build_problem(env_id, problem, dtype, device, problem_kwargs)
        self.render_mode = render_mode
        low, high = action_bounds(self.problem)
        self.action_space = spaces.Box(low, high, dtype=np.float32)
        self.observation_space = _observation_space(self.problem)
        self._low = torch.as_tensor(low, dtype=self.problem.dtype, device=self.problem.device)
        self._high = torch.as_tensor(high, dtype=self.problem.dtype, device=self.problem.device)
        self._times = self.problem.times()
        self._z: Tensor | None = None
        self._k = 0
        self._history: list[Tensor] = []
        self._controls: list[Tensor] = []
        self._viewer = _Viewer()

    @property
    def state(self) -> np.ndarray:
        """The current state z (a float64 copy), for tests and tools."""
        if self._z is None:
            raise RuntimeError("state: call reset() first")
        return self._z[0].detach().cpu().double().numpy().copy()

    @property
    def time(self) -> float:
        """The current time t_k."""
        return float(self._times[self._k])

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self._z is None:
            raise RuntimeError("step: call reset() first")
        if self._k >= self.problem.n_steps:
            raise RuntimeError("step: the episode has ended (t = T); call reset()")
        a = finite_array(action, (self.problem.control_dim,))
        with torch.no_grad():
            u = torch.as_tensor(a, dtype=self.problem.dtype, device=self.problem.device)
            u = torch.clamp(u, self._low, self._high).unsqueeze(0)
            last = self._k + 1 == self.problem.n_steps
            self._z, running, terminal = transition(self.problem, self._times[self._k], self._z,
                                                    u, last)
        self._k += 1
        if self.render_mode is not None:
            self._history.append(self._z[0])
            self._controls.append(u[0])
        if self.render_mode == "human":
            self.render()
        info = {"running_cost": float(running), "terminal_cost": float(terminal)}
        return self._observation(), -(info["running_cost"] + info["terminal_cost"]), last, \
            False, info

    def reset(self, *, seed: int | None = None, options: dict | None = None
              ) -> tuple[np.ndarray, dict]:
        super().reset(seed=optional(validation.seed, seed, "seed"))
        generator = self._seed_generator(seed, self.np_random)
        if options and "initial_state" in options:
            self._z = _initial_state(self.problem, options["initial_state"], 1).clone()
        else:
            self._z = self.problem.sample_initial_states(1, generator)
        self._k = 0
        self._history, self._controls = [self._z[0]], []
        if self.render_mode == "human":
            self.render()
        return self._observation(), {}

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            gym.logger.warn("render: no render_mode was given at construction")
            return None
        if self._z is None:
            raise RuntimeError("render: call reset() first")
        frame = render_frame(self.problem, torch.stack(self._history),
                             torch.stack(self._controls) if self._controls else None)
        if self.render_mode == "human":
            self._viewer.show(frame)
            return None
        return frame

    def close(self) -> None:
        self._viewer.close()

    def _observation(self) -> np.ndarray:
        t = self._times[self._k].reshape(1)
        return observation(self._z, t)[0].detach().cpu().numpy().astype(np.float32)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_viewer"] = _Viewer()  # a window does not pickle
        return state


# ------------------------------------------------------------------------------- vector env
class ControlVectorEnv(VectorEnv, _Seeding):
    """K episodes of one problem in one (K, n) tensor, with next-step autoreset.

    Spaces, rewards and episode ends are those of ``ControlEnv``, batched; the simulation is
    float32 by default and runs on any ``device``. ``step`` takes a (K, m) numpy array; an env
    that ended on the previous step is reset instead of stepped (its action ignored, reward 0,
    not terminated), as Gymnasium's ``AutoresetMode.NEXT_STEP`` prescribes. ``info`` holds
    per-env ``running_cost`` and ``terminal_cost`` arrays and the clipped ``applied_action``
    (K, m). A ``max_episode_steps`` below ``n_steps`` truncates episodes there.

    ``reset_torch``/``step_torch`` are the same code with tensors in and out, and with
    ``differentiable=True`` gradients flow from the rewards back to the actions and initial
    states (off by default, as in VMAS and gymnax). On a CPU a step runs the batch in chunks of
    ``chunk_size`` envs (default: about 2¹⁹ entries of the (chunk, N, N) interaction kernel),
    which keeps the kernel's several passes in cache: ~5x less CPU time per step at N = 100,
    K = 1024 than one whole-batch call.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"],
                                          "render_fps": RENDER_FPS,
                                          "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, env_id: str | None = None, num_envs: int = 1, *,
                 problem: ControlProblem | None = None, max_episode_steps: int | None = None,
                 render_mode: str | None = None, dtype: torch.dtype = torch.float32,
                 device: str | torch.device = "cpu", differentiable: bool = False,
                 chunk_size: int | None = None, **problem_kwargs: Any) -> None:
        num_envs = positive_int(num_envs, "num_envs")
        chunk_size = optional(positive_int, chunk_size, "chunk_size")
        max_episode_steps = optional(positive_int, max_episode_steps, "max_episode_steps")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode: expected one of {self.metadata['render_modes']} or "
                             f"None, got {render_mode!r}")
        self.problem = build_problem(env_id, problem, dtype, device, problem_kwargs)
        self.chunk_size = chunk_size if chunk_size is not None else default_chunk_size(
            self.problem, num_envs)
        require_memory(self.problem.step_bytes(min(self.chunk_size, num_envs))
                       + 8 * 8 * num_envs * (self.problem.state_dim + self.problem.control_dim),
                       "num_envs", f"one step of {num_envs} envs")
        self.num_envs = num_envs
        self.max_episode_steps = max_episode_steps
        self.render_mode = render_mode
        self.differentiable = bool(differentiable)
        low, high = action_bounds(self.problem)
        self.single_action_space = spaces.Box(low, high, dtype=np.float32)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.single_observation_space = _observation_space(self.problem)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self._low = torch.as_tensor(low, dtype=self.problem.dtype, device=self.problem.device)
        self._high = torch.as_tensor(high, dtype=self.problem.dtype, device=self.problem.device)
        self._times = self.problem.times()
        self._z: Tensor | None = None
        self._k = torch.zeros(num_envs, dtype=torch.long, device=self.problem.device)
        self._done = torch.zeros(num_envs, dtype=torch.bool, device=self.problem.device)
        self._history: list[Tensor] = []

    # --------------------------------------------------------------- torch interface
    @property
    def state(self) -> Tensor:
        """The current states (K, n) (part of the graph when differentiable)."""
        if self._z is None:
            raise RuntimeError("state: call reset() first")
        return self._z

    def reset_torch(self, seed: int | None = None, initial_state: Tensor | None = None
                    ) -> Tensor:
        """Start all K episodes; returns observations (K, n + 1) in the problem's dtype.

        ``initial_state`` ((K, n) or (n,)) replaces sampling; with ``differentiable=True`` it
        may require grad and the episode costs are differentiable in it.
        """
        if seed is not None:
            seed = validation.seed(seed)
            VectorEnv.reset(self, seed=seed)
        generator = self._seed_generator(seed, self.np_random)
        with torch.set_grad_enabled(self.differentiable):
            if initial_state is not None:
                self._z = _initial_state(self.problem, initial_state, self.num_envs)
            else:
                self._z = self.problem.sample_initial_states(self.num_envs, generator)
        self._k.zero_()
        self._done.zero_()
        self._history = [self._z.detach()] if self.render_mode else []
        return observation(self._z, self._times[self._k])

    def step_torch(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Step with a (K, m) tensor; returns (obs (K, n+1), reward (K,), terminated (K,),
        truncated (K,)) as tensors. Actions are clipped onto the action box (zero gradient
        outside it); NaN/inf or a wrong shape raise ``ValueError``."""
        if self._z is None:
            raise RuntimeError("step_torch: call reset_torch() or reset() first")
        shape = (self.num_envs, self.problem.control_dim)
        require(isinstance(actions, Tensor), "actions", f"a tensor of shape {shape}",
                type(actions).__name__)
        u = real_tensor(actions, "actions")
        require(tuple(u.shape) == shape, "actions", f"a tensor of shape {shape}",
                tuple(u.shape))
        check_finite(u, "actions")
        # clipped in its own precision first: a finite 1e300 is clipped onto the box, as step
        # does, not turned into inf by the cast
        low, high = (b.to(dtype=u.dtype, device=u.device) for b in (self._low, self._high))
        u = torch.clamp(u, low, high).to(dtype=self.problem.dtype, device=self.problem.device)
        return self._advance(u)

    def _advance(self, u: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``step_torch`` after validation (``step`` validates in numpy)."""
        with torch.set_grad_enabled(self.differentiable):
            u = torch.clamp(u, self._low, self._high)
            k_next = self._k + 1
            terminated = k_next >= self.problem.n_steps
            z, running, terminal = self._transition(self._times[self._k], u, terminated)
            truncated = (k_next >= self.max_episode_steps) & ~terminated \
                if self.max_episode_steps is not None else torch.zeros_like(terminated)
            reward = -(running + terminal)
            restart = self._done
            if bool(restart.any()):  # next-step autoreset: these envs start over instead
                fresh = self.problem.sample_initial_states(int(restart.sum()), self.generator)
                z = z.index_put((restart,), fresh)
                k_next = torch.where(restart, 0, k_next)
                zero = torch.zeros((), dtype=reward.dtype, device=reward.device)
                reward = torch.where(restart, zero, reward)
                running = torch.where(restart, zero, running)
                terminal = torch.where(restart, zero, terminal)
                terminated = terminated & ~restart
                truncated = truncated & ~restart
        self._z, self._k = z, k_next
        self._done = terminated | truncated
        self._last_costs = (running, terminal)
        if self.render_mode:
            self._history.append(z.detach())
        return observation(z, self._times[k_next]), reward, terminated, truncated

    def _transition(self, t: Tensor, u: Tensor, last: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``transition`` over the batch in chunks of ``chunk_size`` envs: on a CPU the
        (chunk, N, N) interaction kernel then stays in cache across its several passes."""
        if self.chunk_size >= self.num_envs:
            return transition(self.problem, t, self._z, u, last)
        parts = [transition(self.problem, *chunk) for chunk in zip(
            t.split(self.chunk_size), self._z.split(self.chunk_size), u.split(self.chunk_size),
            last.split(self.chunk_size))]
        return tuple(torch.cat(p) for p in zip(*parts))  # type: ignore[return-value]

    # --------------------------------------------------------------- Gymnasium interface
    def reset(self, *, seed: int | None = None, options: dict | None = None
              ) -> tuple[np.ndarray, dict]:
        initial = (options or {}).get("initial_state")
        if initial is not None:
            initial = _initial_state(self.problem, initial, self.num_envs)
        with torch.no_grad():
            obs = self.reset_torch(seed=seed, initial_state=initial)
        return self._numpy(obs, np.float32), {}

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                 np.ndarray, dict]:
        a = finite_array(actions, (self.num_envs, self.problem.control_dim), "actions")
        u = torch.as_tensor(a, dtype=self.problem.dtype).to(self.problem.device)
        if self._z is None:
            raise RuntimeError("step: call reset() first")
        with torch.no_grad():
            obs, reward, terminated, truncated = self._advance(u)
        running, terminal = self._last_costs
        every = np.ones(self.num_envs, dtype=bool)
        box = self.single_action_space
        info = {"running_cost": self._numpy(running, np.float64), "_running_cost": every,
                "terminal_cost": self._numpy(terminal, np.float64), "_terminal_cost": every.copy(),
                "applied_action": np.clip(a, box.low, box.high), "_applied_action": every.copy()}
        return (self._numpy(obs, np.float32), self._numpy(reward, np.float64),
                terminated.cpu().numpy().copy(), truncated.cpu().numpy().copy(), info)

    def render(self) -> tuple[np.ndarray, ...] | None:
        """One frame per env (its episode so far); the history is kept only when rendering."""
        if self.render_mode is None:
            gym.logger.warn("render: no render_mode was given at construction")
            return None
        if self._z is None:
            raise RuntimeError("render: call reset() first")
        history = torch.stack(self._history, dim=1)  # (K, steps + 1, n)
        start = (len(self._history) - 1 - self._k).clamp_min(0)
        return tuple(render_frame(self.problem, history[i, int(start[i]):])
                     for i in range(self.num_envs))

    @staticmethod
    def _numpy(x: Tensor, dtype: type) -> np.ndarray:
        return x.detach().cpu().numpy().astype(dtype, copy=True)


def _bounds_doc() -> str:
    """One line per registered problem: the first sentence of its ``action_box`` docstring."""
    lines = []
    for name in PROBLEMS:
        doc = (problem_class(name).action_box.__doc__ or "").strip()
        first = " ".join(doc.split("\n\n")[0].split())
        lines.append(f"* {name}: {first}")
    return "\n    ".join(lines)


ControlEnv.__doc__ = (ControlEnv.__doc__ or "").format(bounds=_bounds_doc())
