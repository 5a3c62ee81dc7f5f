"""A problem from its maths alone (docs/own-problem.md, examples/pendulum.py): the torch.func
derivatives equal every shipped problem's analytic ones and autograd; the example trains,
certifies J*, renders and acts in the envs with no more code; the CLI takes it by import path
and a fresh process loads what it trained; a package's entry points register its ids."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from checks import (
    GYM_ALLOWED_WARNINGS,
    assert_derivatives_match_autograd,
    assert_only_allowed_warnings,
)
from gymnasium.utils.env_checker import check_env

from jfbgym.problems import ENV_SPECS, check_derivatives, problem_for_env
from jfbgym.problems.base import ControlProblem

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PENDULUM = "pendulum:DampedPendulum"


@pytest.fixture(autouse=True)
def examples_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))


@pytest.mark.parametrize("env_id", sorted(ENV_SPECS))
def test_torch_func_defaults_equal_the_analytic_derivatives(env_id) -> None:
    errors = check_derivatives(problem_for_env(env_id), rel=1e-10)
    assert set(errors) == {"grad_terminal_cost", "grad_u_hamiltonian", "grad_z_hamiltonian",
                           "hessian_u_matvec", "hessian_u_solve"}


def test_the_defaults_equal_autograd_and_stay_differentiable() -> None:
    problem = problem_for_env(PENDULUM, dtype=torch.float64)
    assert check_derivatives(problem) == {}  # nothing overridden: the defaults are used
    g = torch.Generator().manual_seed(0)
    z = problem.sample_initial_states(6, g)
    p = torch.randn(6, 2, dtype=torch.float64, generator=g, requires_grad=True)
    u = torch.randn(6, 1, dtype=torch.float64, generator=g)
    assert_derivatives_match_autograd(problem, 0.4, z, p.detach(), u, rel=1e-10)
    # training differentiates ∇_uH in the costate: the default carries that gradient
    (dp,) = torch.autograd.grad(problem.grad_u_hamiltonian(0.4, z, p, u).sum(), p)
    assert torch.allclose(dp, torch.cat([torch.zeros(6, 1, dtype=torch.float64),
                                         torch.ones(6, 1, dtype=torch.float64)], 1))
    # the default solve inverts H_uu + damping
    v = torch.randn(6, 1, dtype=torch.float64, generator=g)
    x = problem.hessian_u_solve(0.4, z, p.detach(), u, v, 0.5)
    assert torch.allclose(problem.hessian_u_matvec(0.4, z, p.detach(), u, x) + 0.5 * x, v)


def test_a_wrong_override_is_caught() -> None:
    from pendulum import DampedPendulum

    class Wrong(DampedPendulum):
        def grad_terminal_cost(self, z):
            return 2.0 * super().grad_terminal_cost(z)

    with pytest.raises(AssertionError, match="grad_terminal_cost"):
        check_derivatives(Wrong())


def test_the_example_trains_certifies_and_renders(tmp_path) -> None:
    from jfbgym.agents import load_agent
    from jfbgym.agents.config import TrainConfig
    from jfbgym.agents.trainer import train
    from jfbgym.envs import ControlEnv
    from jfbgym.evaluation import held_out_states
    from jfbgym.openloop import open_loop_optimum
    from jfbgym.render import render_frame

    result = train(TrainConfig(env_id=PENDULUM, iters=3, batch=8, val_batch=8,
                               out=str(tmp_path / "run")), progress=False)
    assert result.status == "finished"
    agent = load_agent(tmp_path / "run")
    problem = agent.problem
    x0 = held_out_states(problem, 4)
    J = agent.objective(x0)
    opt = open_loop_optimum(problem, x0)  # certified: stationary, reduced Hessian PD
    assert opt.converged and float(opt.residual.max()) <= 1e-7 and bool(opt.second_order.all())
    assert bool((J.double() >= opt.cost - 1e-4 * opt.cost.abs()).all())  # a lower bound
    env = ControlEnv(PENDULUM)
    unbounded = [r"A Box action space (minimum|maximum) value is -?infinity"]  # no action_box:
    # by design (docs/own-problem.md), the action space is unbounded
    assert_only_allowed_warnings(GYM_ALLOWED_WARNINGS + unbounded, check_env, env,
                                 skip_render_check=True)
    obs, _ = env.reset(seed=0)
    action = agent.predict(obs)[0]
    assert np.isfinite(env.step(action)[0]).all()
    traj = problem.rollout(agent.control, x0[:1])
    frame = render_frame(problem, traj.states[0], traj.controls[0])
    assert frame.ndim == 3 and frame.std() > 0


def _run(argv: list[str], cwd: Path, extra_path: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (extra_path, str(Path(__file__).resolve().parents[2]),
                    os.environ.get("PYTHONPATH", "")) if p)}
    code = f"from jfbgym.cli import main; import sys; sys.exit(main({argv!r}))"
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600, check=False)


def test_the_cli_takes_an_import_path_and_a_fresh_process_loads_it(tmp_path) -> None:
    run = tmp_path / "run"
    done = _run(["train", PENDULUM, "--iters", "2", "--batch", "4", "--val-batch", "4",
                 "--out", str(run)], cwd=EXAMPLES)  # the working directory is importable
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((run / "config.json").read_text())["agent"]["env_id"] == PENDULUM
    elsewhere = _run(["evaluate", str(run), "--episodes", "2", "--no-openloop"], cwd=tmp_path)
    assert elsewhere.returncode == 2
    assert "cannot import module 'pendulum'" in elsewhere.stderr
    found = _run(["evaluate", str(run), "--episodes", "2", "--no-openloop"], cwd=tmp_path,
                 extra_path=str(EXAMPLES))
    assert found.returncode == 0, found.stderr[-2000:]


def test_a_problem_registered_in_a_script_says_why_another_process_cannot_load_it(
        tmp_path) -> None:
    from jfbgym.agents import JFBAgent
    from jfbgym.agents.checkpoint import CheckpointError
    from jfbgym.agents.policy import Agent

    config = {"agent": {"kind": "jfb", "env_id": "Scripted-v0", "env_kwargs": {},
                        "problem_name": "DampedPendulum", "problem": {}, "dtype": "float32",
                        "problem_class": "__main__:DampedPendulum", "network": {},
                        "solver": {}}}
    with pytest.raises(CheckpointError, match=r"defined in a script \(__main__\)"):
        Agent.from_config.__func__(JFBAgent, config)


def test_a_package_entry_point_registers_its_env_id(tmp_path) -> None:
    dist = tmp_path / "pendulum_pkg-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: pendulum-pkg\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[jfbgym.envs]\nDampedPendulum-v0 = {PENDULUM}\n")
    code = ("import gymnasium as gym, jfbgym\n"
            "from jfbgym.problems import ENV_SPECS\n"
            "env = gym.make('DampedPendulum-v0')\n"
            "obs, _ = env.reset(seed=0)\n"
            "print(ENV_SPECS['DampedPendulum-v0'][0], obs.shape)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(EXAMPLES),
                                                        str(Path(__file__).resolve().parents[2])])}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == [PENDULUM, "(3,)"]
    helped = subprocess.run([sys.executable, "-m", "jfbgym", "train", "--help"], env=env,
                            capture_output=True, text=True, timeout=300, check=False)
    assert "DampedPendulum-v0" in helped.stdout


def test_config_defaults_to_the_stored_arguments() -> None:
    from pendulum import DampedPendulum

    assert DampedPendulum(damping=0.3).config() == {"damping": 0.3, "alpha_G": 20.0,
                                                    "horizon": 3.0, "n_steps": 60}

    class Forgetful(ControlProblem):
        def __init__(self, stiffness: float = 1.0) -> None:
            super().__init__(state_dim=1, control_dim=1, n_agents=1, horizon=1.0, n_steps=4)

    with pytest.raises(NotImplementedError, match=r"\['stiffness'\] are not"):
        Forgetful().config()


def test_the_docs_page_shows_the_example_as_it_is() -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "own-problem.md").read_text()
    shown = page.split("```python\n", 1)[1].split("```", 1)[0]
    source = (EXAMPLES / "pendulum.py").read_text()
    code = source[source.index("import torch"):]
    assert shown == code
    assert len(code.strip().splitlines()) <= 40
