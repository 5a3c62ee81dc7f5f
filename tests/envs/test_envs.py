"""Gymnasium single and vector envs: API checker, return = −J, gradients, autoreset, video."""

from __future__ import annotations

import pickle
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch
from checks import GYM_ALLOWED_WARNINGS, assert_only_allowed_warnings
from gymnasium.utils.env_checker import check_env

import jfbgym  # noqa: F401  (registers the ids)
from jfbgym.envs import ENV_SPECS, ControlEnv, ControlVectorEnv, render_frame
from jfbgym.problems import problem_for_env

IDS = sorted(ENV_SPECS)
SHORT = {"n_steps": 6}  # every problem takes n_steps; short episodes keep the tests fast

ALLOWED_WARNINGS = GYM_ALLOWED_WARNINGS


def _checked(fn, *args, **kwargs) -> None:
    assert_only_allowed_warnings(ALLOWED_WARNINGS, fn, *args, **kwargs)


def _episode(env: gym.Env, actions: np.ndarray, seed: int) -> tuple[np.ndarray, float, list]:
    """Run ``actions`` from ``reset(seed)``; (z0, return, per-step infos)."""
    env.reset(seed=seed)
    z0 = env.unwrapped.state
    total, infos = 0.0, []
    for k, a in enumerate(actions):
        _, r, terminated, truncated, info = env.step(a)
        total += r
        infos.append(info)
        assert terminated == (k == len(actions) - 1) and not truncated
    return z0, total, infos


def _actions(env: gym.Env, n: int, seed: int) -> np.ndarray:
    env.action_space.seed(seed)
    return np.stack([env.action_space.sample() for _ in range(n)])


@pytest.mark.parametrize("env_id", IDS)
def test_gymnasium_check_env(env_id):
    _checked(check_env, gym.make(env_id, **SHORT).unwrapped)
    _checked(check_env, gym.make(env_id, render_mode="rgb_array", n_steps=3).unwrapped)


@pytest.mark.parametrize("env_id", IDS)
def test_return_is_minus_objective(env_id):
    env = gym.make(env_id, **SHORT)
    problem = env.unwrapped.problem
    actions = _actions(env, SHORT["n_steps"], seed=1)
    z0, total, infos = _episode(env, actions, seed=0)
    x0 = torch.as_tensor(z0, dtype=problem.dtype)[None]
    controls = torch.as_tensor(actions, dtype=problem.dtype)[None]
    J = float(problem.objective(controls, x0)[0])
    assert total == pytest.approx(-J, rel=1e-5)
    # the info parts add up to the same: h·L on every step, G on the last only
    assert all(i["terminal_cost"] == 0.0 for i in infos[:-1])
    parts = sum(i["running_cost"] + i["terminal_cost"] for i in infos)
    assert parts == pytest.approx(J, rel=1e-5)


@pytest.mark.parametrize("env_id", IDS)
def test_vector_return_is_minus_objective_float32(env_id):
    K, n = 3, SHORT["n_steps"]
    envs = gym.make_vec(env_id, num_envs=K, vectorization_mode="vector_entry_point", **SHORT)
    assert isinstance(envs.unwrapped, ControlVectorEnv)
    problem = envs.unwrapped.problem
    assert problem.dtype == torch.float32
    obs, _ = envs.reset(seed=4)
    x0 = envs.unwrapped.state.clone()
    assert np.array_equal(obs[:, :-1], x0.numpy()) and (obs[:, -1] == 0).all()
    envs.action_space.seed(5)
    actions = np.stack([envs.action_space.sample() for _ in range(n)], axis=1)  # (K, n, m)
    total = np.zeros(K)
    for k in range(n):
        obs, r, terminated, truncated, _ = envs.step(actions[:, k])
        total += r
        assert terminated.all() == (k == n - 1) and not truncated.any()
    J = problem.objective(torch.as_tensor(actions, dtype=torch.float32), x0).double().numpy()
    np.testing.assert_allclose(total, -J, rtol=1e-5)
    # next-step autoreset: the following step restarts every env with reward 0 at t = 0
    obs, r, terminated, truncated, _ = envs.step(actions[:, 0])
    assert (r == 0).all() and not terminated.any() and (obs[:, -1] == 0).all()
    assert not np.allclose(obs[:, :-1], x0.numpy())
    obs, r, terminated, _, _ = envs.step(actions[:, 0])
    np.testing.assert_allclose(obs[:, -1], problem.step_size, rtol=1e-6)
    assert (r != 0).all()


def test_vector_autoreset_only_restarts_finished_envs():
    envs = ControlVectorEnv("LinearQuadratic-v0", num_envs=2, n_steps=3, max_episode_steps=2)
    envs.reset(seed=0)
    zero = np.zeros((2, 2))
    _, _, term, trunc, _ = envs.step(zero)
    assert not term.any() and not trunc.any()
    _, _, term, trunc, _ = envs.step(zero)  # max_episode_steps=2 < n_steps: truncation
    assert not term.any() and trunc.all()
    obs, r, term, trunc, _ = envs.step(zero)
    assert (r == 0).all() and (obs[:, -1] == 0).all()


def test_torch_interface_gradients_match_finite_differences():
    """d(episode cost)/d(actions, initial states) through the batched env, float64, vs central
    differences along random directions (nonlinear QuadSwarm with its interaction term)."""
    K, n_steps = 2, 4
    env = ControlVectorEnv("QuadSwarm-v0", num_envs=K, n_agents=3, n_steps=n_steps,
                           dtype=torch.float64, differentiable=True, chunk_size=1)
    g = torch.Generator().manual_seed(0)
    x0 = env.problem.sample_initial_states(K, g) + 0.3 * torch.randn(K, 36, generator=g,
                                                                     dtype=torch.float64)
    u = 0.5 + 0.5 * torch.randn(n_steps, K, 12, generator=g, dtype=torch.float64)

    def cost(x0: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        env.reset_torch(initial_state=x0)
        total = torch.zeros(K, dtype=torch.float64)
        for k in range(n_steps):
            _, reward, _, _ = env.step_torch(u[k])
            total = total - reward
        return total.sum()

    xr, ur = x0.clone().requires_grad_(True), u.clone().requires_grad_(True)
    gx, gu = torch.autograd.grad(cost(xr, ur), (xr, ur))
    assert gx.abs().sum() > 0 and gu.abs().sum() > 0
    for _ in range(3):
        dx = torch.randn(x0.shape, generator=g, dtype=torch.float64)
        du = torch.randn(u.shape, generator=g, dtype=torch.float64)
        eps = 1e-6
        with torch.no_grad():
            fd = (cost(x0 + eps * dx, u + eps * du) - cost(x0 - eps * dx, u - eps * du)) / (2 * eps)
        ad = (gx * dx).sum() + (gu * du).sum()
        assert float(ad) == pytest.approx(float(fd), rel=1e-6)
    # and the same objective as the problem's own differentiable rollout
    J = env.problem.objective(u.transpose(0, 1), x0).sum()
    assert float(cost(x0, u)) == pytest.approx(float(J), rel=1e-12)


def test_torch_interface_is_graph_free_by_default():
    env = ControlVectorEnv("QuadSwarm-v0", num_envs=2, n_agents=2, n_steps=3)
    env.reset_torch(seed=0)
    u = torch.zeros(2, 8, requires_grad=True)
    obs, reward, _, _ = env.step_torch(u)
    assert not reward.requires_grad and not obs.requires_grad


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_bad_actions_raise(bad):
    env = gym.make("QuadSwarm-v0", n_agents=2, **SHORT)
    env.reset(seed=0)
    a = np.zeros(8, dtype=np.float32)
    a[3] = bad
    with pytest.raises(ValueError, match="finite"):
        env.step(a)
    for shape in [(7,), (1, 8), (9,)]:
        with pytest.raises(ValueError, match="shape"):
            env.step(np.zeros(shape, dtype=np.float32))
    with pytest.raises(ValueError, match="action"):
        env.step("hover")
    venv = ControlVectorEnv("QuadSwarm-v0", num_envs=2, n_agents=2, **SHORT)
    venv.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        venv.step(np.zeros((3, 8)))
    with pytest.raises(ValueError, match="finite"):
        venv.step(np.full((2, 8), bad))
    with pytest.raises(ValueError, match="finite"):
        venv.step_torch(torch.full((2, 8), bad))
    with pytest.raises(ValueError, match="shape"):
        venv.step_torch(torch.zeros(2, 7))


def test_out_of_box_actions_are_clipped():
    env_a, env_b = (ControlEnv("MultiBicycle-v0", **SHORT) for _ in range(2))
    env_a.reset(seed=3)
    env_b.reset(seed=3)
    high = env_a.action_space.high
    big = 100.0 * np.ones_like(high)
    obs_a, r_a, *_ = env_a.step(big)
    obs_b, r_b, *_ = env_b.step(high)
    assert np.array_equal(obs_a, obs_b) and r_a == r_b
    venv = ControlVectorEnv("MultiBicycle-v0", num_envs=2, **SHORT)
    venv.reset(seed=0)
    info = venv.step(np.stack([big, -big]))[-1]
    np.testing.assert_array_equal(info["applied_action"], np.stack([high, -high]))
    # steering is limited by the problem's own δ_max, acceleration by the documented 10
    assert high[0] == pytest.approx(np.pi / 2 - 0.25) and high[1] == 10.0


def test_bad_constructor_arguments_raise():
    with pytest.raises(ValueError, match="env_id"):
        ControlEnv("NoSuchEnv-v0")
    with pytest.raises(ValueError, match="render_mode"):
        ControlEnv("LinearQuadratic-v0", render_mode="ascii")
    with pytest.raises(ValueError, match="num_envs"):
        ControlVectorEnv("LinearQuadratic-v0", num_envs=0)
    with pytest.raises(ValueError, match="initial_state"):
        ControlEnv("LinearQuadratic-v0").reset(options={"initial_state": [0.0, np.nan, 0, 0]})


def test_seeded_determinism_and_pickle():
    env1, env2 = (gym.make("QuadSwarm-v0", n_agents=3, **SHORT) for _ in range(2))
    actions = _actions(env1, 6, seed=0)
    o1, _ = env1.reset(seed=7)
    o2, _ = env2.reset(seed=7)
    assert np.array_equal(o1, o2)
    o3, _ = env2.reset(seed=8)
    assert not np.array_equal(o1, o3)
    env2.reset(seed=7)
    for a in actions[:3]:
        assert np.array_equal(env1.step(a)[0], env2.step(a)[0])
    clone = pickle.loads(pickle.dumps(env1))
    for a in actions[3:]:
        s1, s2 = env1.step(a), clone.step(a)
        assert np.array_equal(s1[0], s2[0]) and s1[1] == s2[1]
    venv = ControlVectorEnv("MultiBicycle-v0", num_envs=2, **SHORT)
    venv.reset(seed=1)
    vclone = pickle.loads(pickle.dumps(venv))
    a = np.zeros((2, 10))
    assert np.array_equal(venv.step(a)[0], vclone.step(a)[0])


def test_make_forwards_problem_keywords_and_terminates_on_its_own_horizon():
    env = gym.make("QuadSwarm-v0", n_agents=4, targets="formation", n_steps=5)
    problem = env.unwrapped.problem
    assert problem.n_agents == 4 and problem.targets == "formation"
    assert env.observation_space.shape == (49,) and env.action_space.shape == (16,)
    # no registered time limit: the horizon ends an episode (terminated, never truncated), so
    # an n_steps override sets the episode length, longer than the default 160 steps too
    assert gym.spec("QuadSwarm-v0").max_episode_steps is None
    obs, _ = env.reset(seed=0)
    for k in range(5):
        obs, _, terminated, truncated, _ = env.step(np.zeros(16, dtype=np.float32))
    assert terminated and not truncated and obs[-1] == pytest.approx(problem.horizon)
    with pytest.raises(RuntimeError):
        env.unwrapped.step(np.zeros(16, dtype=np.float32))
    long = gym.make("Quadrotor-v0", n_steps=200)
    long.reset(seed=0)
    flags = [long.step(np.zeros(4, dtype=np.float32))[2:4] for _ in range(200)]
    assert [f for f in flags[:-1] if any(f)] == [] and flags[-1] == (True, False)


def test_namespaced_make_works_without_prior_import():
    code = ("import gymnasium; e = gymnasium.make('jfbgym:QuadSwarm-v0'); "
            "print(e.unwrapped.problem.n_agents, e.spec.max_episode_steps)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["6", "None"]


def test_initial_state_option_and_observation_layout():
    env = ControlEnv("LinearQuadratic-v0", n_steps=4)
    x0 = np.array([1.0, -2.0, 0.5, 0.25])
    obs, _ = env.reset(options={"initial_state": x0})
    assert np.array_equal(obs, np.append(x0, 0.0).astype(np.float32))
    obs, *_ = env.step(np.zeros(2, dtype=np.float32))
    # Euler step of the double integrator, h = 0.25: position += h·velocity
    np.testing.assert_allclose(obs, [1.125, -1.9375, 0.5, 0.25, 0.25], rtol=1e-6)


@pytest.mark.parametrize("env_id", IDS)
def test_render_frames(env_id):
    problem = problem_for_env(env_id, n_steps=6)
    x0 = problem.sample_initial_states(1, torch.Generator().manual_seed(0))
    traj = problem.rollout(lambda t, z: problem.initial_control(t, z), x0)
    first = render_frame(problem, traj.states[0, :1])
    later = render_frame(problem, traj.states[0], traj.controls[0])
    assert first.shape == later.shape == (480, 480, 3) and first.dtype == np.uint8
    assert first.std() > 0 and not np.array_equal(first, later)
    with pytest.raises(ValueError, match="states"):
        render_frame(problem, traj.states[0, :, :-1])


def test_record_video_writes_playable_mp4(tmp_path):
    moviepy = pytest.importorskip("moviepy")
    env = gym.make("MultiBicycle-v0", render_mode="rgb_array", n_steps=8)
    env = gym.wrappers.RecordVideo(env, str(tmp_path / "videos"), episode_trigger=lambda e: True,
                                   disable_logger=True)
    env.reset(seed=0)
    done = False
    while not done:
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        done = terminated or truncated
    env.close()
    videos = list((tmp_path / "videos").glob("*.mp4"))
    assert len(videos) == 1
    clip = moviepy.VideoFileClip(str(videos[0]))
    try:
        frames = list(clip.iter_frames())
    finally:
        clip.close()
    assert len(frames) > 0 and frames[0].shape == (480, 480, 3)


def test_chunked_step_matches_whole_batch():
    """The CPU step runs the batch in cache-sized chunks; results must not depend on it."""
    envs = [ControlVectorEnv("QuadSwarm-v0", num_envs=5, n_agents=3, n_steps=3, chunk_size=c)
            for c in (2, 5)]
    assert envs[0].chunk_size == 2 and envs[1].chunk_size == 5
    actions = np.random.default_rng(0).uniform(-2, 2, size=(4, 5, 12))
    outs = []
    for env in envs:
        env.reset(seed=0)
        outs.append([env.step(a)[:2] for a in actions])
    for (o1, r1), (o2, r2) in zip(*outs):
        np.testing.assert_allclose(o1, o2, rtol=1e-6)
        np.testing.assert_allclose(r1, r2, rtol=1e-6)
    with pytest.raises(ValueError, match="chunk_size"):
        ControlVectorEnv("QuadSwarm-v0", num_envs=2, chunk_size=0)


def test_vector_render_and_seed_checks():
    envs = ControlVectorEnv("MultiBicycle-v0", num_envs=2, n_steps=2, render_mode="rgb_array")
    envs.reset(seed=0)
    for _ in range(3):  # the third step autoresets: each frame shows its env's own episode
        envs.step(np.zeros((2, 10)))
    frames = envs.render()
    assert len(frames) == 2 and all(f.shape == (480, 480, 3) for f in frames)
    assert not np.array_equal(frames[0], frames[1])
    with pytest.raises(ValueError, match="seed"):
        envs.reset(seed=[1, 2])
    a, b = (ControlVectorEnv("QuadSwarm-v0", num_envs=3, n_agents=2, n_steps=2) for _ in range(2))
    assert np.array_equal(a.reset(seed=5)[0], b.reset(seed=5)[0])
    assert not np.array_equal(a.reset(seed=6)[0], b.reset(seed=5)[0])


def test_longer_horizon_through_make_with_max_episode_steps():
    env = gym.make("Quadrotor-v0", n_steps=170, max_episode_steps=-1)
    env.reset(seed=0)
    hover = np.array([0.5, 0.0, 0.0, 0.0], dtype=np.float32)
    ends = [env.step(hover)[2:4] for _ in range(170)]
    assert ends[-1] == (True, False) and not any(t or u for t, u in ends[:-1])


@pytest.mark.parametrize("env_id", ["ConsumptionSavings-v0", "MultiBicycle-v0", "Quadrotor-v0",
                                    "LinearQuadratic-v0"])
def test_action_box_contains_the_optimal_controls(env_id):
    """The env clips actions onto its box, so the box must hold what the optimum does (on
    ConsumptionSavings a box up to 10³ cut the optimum's last-step consumption of 2.6·10³)."""
    from jfbgym.evaluation import held_out_states
    from jfbgym.openloop import open_loop_optimum

    problem = problem_for_env(env_id, dtype=torch.float64)
    optimum = open_loop_optimum(problem, held_out_states(problem, 2))
    assert optimum.converged
    low, high = problem.action_box()
    u = optimum.controls
    assert bool((u >= low).all() and (u <= high).all()), (float(u.min()), float(u.max()))
