"""PettingZoo ``ParallelEnv`` over any problem: one agent per control block (quadrotor,
bicycle, consumption stream), all acting at once on the joint control. The class docstring is
the documentation.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from gymnasium import spaces
from pettingzoo import ParallelEnv

from jfbgym.envs.control_env import ControlEnv, finite_array
from jfbgym.problems import strip_namespace
from jfbgym.validation import integer, require


class ControlParallelEnv(ParallelEnv):
    """One agent per control block of a problem, all acting at once on the joint control.

    The env wraps a single ``ControlEnv`` (same dynamics, costs, clipping, seeding, rendering)
    and only splits its observation and reward per agent and joins the agents' actions.

    **Agents** ``agent_0 .. agent_{N-1}``; all end together at t = T (then ``agents`` is empty).

    **Action** of agent i: its own control block, a slice of the joint action box (QuadSwarm: 4,
    MultiBicycle: 2, ConsumptionSavings: 1 — the consumption of good i).

    **Observation** of agent i (float32, unbounded Box): the problem's
    ``agent_observation`` — for problems with positions (QuadSwarm, MultiBicycle) its own state
    block, its target and the positions of its ``neighbours`` nearest agents relative to its own
    (nearest first), then t; ConsumptionSavings: the shared wealth, its own habit, the mean habit
    and t. ``neighbours`` defaults to ``problem.default_neighbours()`` (all others, up to 8).

    **Reward**: every agent receives the joint reward divided by N, so the agents' returns sum
    to −J. ``infos[agent]`` carries the joint ``running_cost`` and ``terminal_cost``.
    ``state()`` is the global observation [z, t] (float32), ``state_space`` its Box.
    """

    metadata: ClassVar[dict[str, Any]] = {
        "name": "jfbgym_control", "render_modes": ["human", "rgb_array"],
        "is_parallelizable": True, "render_fps": ControlEnv.metadata["render_fps"]}

    def __init__(self, env_id: str, *, render_mode: str | None = None,
                 neighbours: int | None = None, dtype: torch.dtype = torch.float64,
                 device: str | torch.device = "cpu", **kwargs: Any) -> None:
        self.env = ControlEnv(strip_namespace(env_id), render_mode=render_mode, dtype=dtype,
                              device=device, **kwargs)
        self.problem = self.env.problem
        require(self.problem.multi_agent, "env_id",
                "an id whose problem splits into agents (its class sets multi_agent)", env_id)
        self.render_mode = render_mode
        n = self.problem.n_agents
        if neighbours is None:
            neighbours = self.problem.default_neighbours()
        self.neighbours = integer(neighbours, "neighbours", 0, n - 1)
        self.possible_agents = [f"agent_{i}" for i in range(n)]
        self.agents: list[str] = []
        self._index = {agent: i for i, agent in enumerate(self.possible_agents)}
        self._block = self.problem.agent_control_dim
        self.state_space = self.env.observation_space
        obs_dim = self._observe(np.zeros(self.problem.state_dim), 0.0).shape[1]
        box = self.env.action_space
        self._observation_spaces = {a: spaces.Box(-np.inf, np.inf, shape=(obs_dim,),
                                                  dtype=np.float32) for a in self.possible_agents}
        self._action_spaces = {
            a: spaces.Box(box.low[i * self._block:(i + 1) * self._block],
                          box.high[i * self._block:(i + 1) * self._block], dtype=np.float32)
            for i, a in enumerate(self.possible_agents)}

    def observation_space(self, agent: str) -> spaces.Box:
        """The same Box object on every call (PettingZoo's seeding relies on it)."""
        return self._observation_spaces[self.possible_agents[self._agent_index(agent)]]

    def action_space(self, agent: str) -> spaces.Box:
        """Agent i's slice of the joint action box; the same object on every call."""
        return self._action_spaces[self.possible_agents[self._agent_index(agent)]]

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        if not self.agents:
            raise RuntimeError("step: no live agents; call reset()")
        if not isinstance(actions, dict) or set(actions) != set(self.agents):
            got = sorted(actions) if isinstance(actions, dict) else type(actions).__name__
            raise ValueError(f"actions: expected a dict with one action per live agent "
                             f"{self.agents}, got {got}")
        joint = np.concatenate([finite_array(actions[a], (self._block,), f"actions[{a!r}]")
                                for a in self.agents])
        _, reward, terminated, truncated, info = self.env.step(joint)
        obs = self._agent_dict(self._observe(self.env.state, self.env.time))
        share = reward / self.problem.n_agents
        agents = self.agents
        rewards = {a: share for a in agents}
        terms = {a: terminated for a in agents}
        truncs = {a: truncated for a in agents}
        infos = {a: dict(info) for a in agents}
        if terminated or truncated:
            self.agents = []
        return obs, rewards, terms, truncs, infos

    def reset(self, seed: int | None = None, options: dict | None = None
              ) -> tuple[dict, dict]:
        self.env.reset(seed=seed, options=options)
        self.agents = list(self.possible_agents)
        obs = self._agent_dict(self._observe(self.env.state, self.env.time))
        return obs, {a: {} for a in self.agents}

    def render(self) -> np.ndarray | None:
        return self.env.render()

    def close(self) -> None:
        self.env.close()

    def state(self) -> np.ndarray:
        """The global observation [z, t] (float32)."""
        z = self.env.state
        return np.concatenate([z, [self.env.time]]).astype(np.float32)

    # ---------------------------------------------------------------- helpers
    def _agent_index(self, agent: str) -> int:
        if agent not in self._index:
            raise ValueError(f"agent: expected one of {self.possible_agents[:3]}..., got "
                             f"{agent!r}")
        return self._index[agent]

    def _agent_dict(self, obs: np.ndarray) -> dict[str, np.ndarray]:
        return {a: obs[self._index[a]].copy() for a in self.agents}

    def _observe(self, z: np.ndarray, t: float) -> np.ndarray:
        """Per-agent observations (N, d) from the joint state (``agent_observation``)."""
        problem = self.problem
        x = torch.as_tensor(z, dtype=problem.dtype, device=problem.device).unsqueeze(0)
        with torch.no_grad():
            obs = problem.agent_observation(float(t), x, self.neighbours)[0]
        return obs.cpu().numpy().astype(np.float32)


def parallel_env(env_id: str, **kwargs: Any) -> ControlParallelEnv:
    """PettingZoo parallel env for a multi-agent id, e.g.
    ``parallel_env("QuadSwarm-v0", n_agents=100, neighbours=8)``; problem keywords pass through."""
    return ControlParallelEnv(env_id, **kwargs)
