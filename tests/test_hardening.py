"""Malformed input on every entry point: a clear one-line error naming the argument or file, a
finite answer, never a traceback, NaN or hang; nothing trained lost to Ctrl-C, a dead rank or a
second trainer (one test per defect class of issue 32, then a property-based fuzz)."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jfbgym  # noqa: F401  (registers the ids)
from jfbgym.agents import JFBAgent, NetworkConfig, PriorConfig
from jfbgym.agents.checkpoint import (
    CHECKPOINT,
    CheckpointError,
    RunLock,
    atomic_write,
    load_state,
    save_state,
)
from jfbgym.agents.config import TrainConfig
from jfbgym.agents.distributed import World
from jfbgym.agents.pretrained import AGENT_JSON, WEIGHTS
from jfbgym.agents.trainer import train
from jfbgym.cli import main as _main
from jfbgym.envs.control_env import ControlEnv, ControlVectorEnv
from jfbgym.problems import make_problem

# A hang guard, not a timing check: every refusal here takes milliseconds; what a bound has to
# catch is a loop that never ends or an allocator grinding through gigabytes (the memory checks
# below measure that directly).
HANG = 60.0
LQ = {"env_id": "LinearQuadratic-v0", "batch": 4, "val_batch": 4, "width": 8, "rank": 2}
TINY = ["LinearQuadratic-v0", "--batch", "4", "--val-batch", "4", "--width", "8", "--rank", "2"]


def cli(argv: list[str]) -> int:
    """The exit status of ``jfbgym ARGV`` (argparse's own errors exit with status 2)."""
    try:
        return _main(argv)
    except SystemExit as exit_:
        return int(exit_.code)


@pytest.fixture(scope="module")
def lq_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "lq"
    train(TrainConfig(**LQ, iters=3, checkpoint_every=1, out=str(out)), progress=False)
    return out


@pytest.fixture(scope="module")
def agents():
    return {name: JFBAgent.pretrained(name) for name in ("QuadSwarm-v0", "ConsumptionSavings-v0")}


# --- 1. observations and times given to an agent ----------------------------------------------
BAD_OBSERVATIONS = {
    "NaN": lambda n: np.full(n + 1, np.nan),
    "inf time": lambda n: np.r_[np.zeros(n), np.inf],
    "negative time": lambda n: np.r_[np.zeros(n), -1.0],
    "time past T": lambda n: np.r_[np.zeros(n), 1e3],
    "huge": lambda n: np.full(n + 1, 1e30),
    "empty batch": lambda n: np.zeros((0, n + 1)),
    "strings": lambda n: np.array(["a"] * (n + 1)),
    "complex": lambda n: np.zeros(n + 1) + 1j,
    "ragged": lambda n: [[0.0] * (n + 1), [0.0]],
    "wrong width": lambda n: np.zeros(n),
}


@pytest.mark.parametrize("case", sorted(BAD_OBSERVATIONS))
def test_bad_observations_are_refused_naming_the_argument(agents, case) -> None:
    for agent in agents.values():
        n = agent.problem.state_dim
        with pytest.raises(ValueError, match=r"^observations?\b"):
            agent.predict(BAD_OBSERVATIONS[case](n))


def test_bad_times_and_states_to_control_are_refused(agents) -> None:
    for agent in agents.values():
        n, z = agent.problem.state_dim, agent.problem.sample_initial_states(2)
        for t in (float("nan"), float("inf"), -5.0, 1e9):
            with pytest.raises(ValueError, match=r"^t: expected"):
                agent.control(t, z)
            with pytest.raises(ValueError, match=r"^time: expected"):
                agent.predict_parallel(np.zeros(n), time=t)
        with pytest.raises(ValueError, match=r"^z: expected finite values"):
            agent.control(0.0, torch.full_like(z, float("nan")))
        with pytest.raises(ValueError, match=r"^z: expected shape"):
            agent.control(0.0, z[:0])
        # valid inputs still give finite actions, float64 states included
        assert np.isfinite(agent.control(0.0, z.double()).numpy()).all()
        env = gym.make(agent.env_id)
        obs, _ = env.reset(seed=0)
        assert np.isfinite(agent.predict(obs)[0]).all()


# --- 2. Ctrl-C: during a save, and between validations ----------------------------------------
def test_an_interrupt_during_a_write_finishes_the_file_then_arrives(tmp_path) -> None:
    def write(fh) -> None:
        fh.write(b"first half ")
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C in the middle of the write
        fh.write(b"second half")

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "f", write)
    assert (tmp_path / "f").read_bytes() == b"first half second half"
    assert not list(tmp_path.glob(".f.*"))


def _train_process(out: Path, *flags: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "jfbgym", "train", *TINY, "--out", str(out),
                             *flags], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _rows(out: Path) -> int:
    log = out / "log.csv"
    return max(0, len(log.read_text().strip().splitlines()) - 1) if log.is_file() else 0


def test_ctrl_c_keeps_every_completed_iteration(tmp_path) -> None:
    out = tmp_path / "run"
    run = _train_process(out, "--iters", "1000000", "--val-every", "100000",
                         "--checkpoint-every", "100000")
    try:
        deadline = time.time() + 120
        while _rows(out) < 5:
            assert time.time() < deadline and run.poll() is None, "training did not start"
            time.sleep(0.2)
        run.send_signal(signal.SIGINT)
        err, _ = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 130, err
    assert "stopping after this iteration" in err and "Traceback" not in err
    state = load_state(out / CHECKPOINT)
    assert state["iteration"] >= 5 and state["iteration"] == _rows(out)  # none dropped


# --- 3. a rank that dies: see tests/test_distributed.py (the survivor saves) ------------------
def test_a_failed_collective_is_a_lost_peer() -> None:
    from jfbgym.agents.distributed import PeerLost

    class Broken(World):
        def _reduce(self, value, op="sum"):
            try:
                raise RuntimeError("Connection closed by peer")
            except RuntimeError as err:
                raise PeerLost(f"rank {self.rank}: a collective failed ({err})") from err

    with pytest.raises(PeerLost, match="collective"):
        Broken(0, 2).sum(1.0)


def test_world_size_from_the_environment_is_checked(monkeypatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "abc")
    with pytest.raises(ValueError, match="^WORLD_SIZE: expected an integer"):
        World.from_environment()


# --- 4. two trainers on one directory ----------------------------------------------------------
def test_a_second_trainer_on_the_same_directory_is_refused(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    out.mkdir()
    holder = RunLock(out)
    holder.__enter__()
    try:
        with pytest.raises(ValueError, match=r"^out: .* is in use by another training run"):
            train(TrainConfig(**LQ, iters=1, out=str(out)), progress=False)
        assert cli(["train", *TINY, "--iters", "1", "--out", str(out)]) == 2
        assert "in use by another training run" in capsys.readouterr().err
    finally:
        holder.__exit__()
    assert train(TrainConfig(**LQ, iters=1, out=str(out)), progress=False).status == "finished"


# --- 5. --resume trusts nothing ----------------------------------------------------------------
def _damage(state: dict, how: str) -> dict:
    state = copy.deepcopy(state)
    if how == "missing entry":
        del state["optimizer"]
    elif how == "wrong type":
        state["iteration"] = "many"
    elif how == "garbage rng":
        state["generator"] = torch.zeros(7, dtype=torch.uint8)
    elif how == "nan weights":
        key = next(k for k, v in state["model"].items() if v.is_floating_point())
        state["model"][key] = torch.full_like(state["model"][key], float("nan"))
    elif how == "nan lr scale":
        state["lr"]["scale"] = float("nan")
    elif how == "another env's weights":
        state["model"] = {"opening.weight": torch.zeros(3, 3)}
    elif how == "nan optimizer moments":
        moments = next(iter(state["optimizer"]["state"].values()))
        moments["exp_avg"] = torch.full_like(moments["exp_avg"], float("nan"))
    elif how == "history of strings":
        state["history"] = "x"
    return state


@pytest.mark.parametrize("how", ["missing entry", "wrong type", "garbage rng", "nan weights",
                                 "nan lr scale", "another env's weights",
                                 "nan optimizer moments", "history of strings"])
def test_resume_refuses_a_damaged_checkpoint_naming_it(lq_run, tmp_path, how) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(lq_run, run)
    save_state(run / CHECKPOINT, _damage(load_state(run / CHECKPOINT), how))
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match=f"^{run / CHECKPOINT}: "):
        train(TrainConfig(**LQ, iters=5, out=str(run), resume="always"), progress=False)
    assert time.perf_counter() - start < HANG


def test_a_flipped_bit_in_tensor_data_fails_the_checksum(lq_run, tmp_path) -> None:
    path = tmp_path / CHECKPOINT
    state = load_state(lq_run / CHECKPOINT)
    save_state(path, state)
    data = bytearray(path.read_bytes())
    weight = state["model"]["opening.weight"].numpy().tobytes()
    at = bytes(data).find(weight)
    assert at > 0
    data[at + 3] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_state(path)


@pytest.mark.parametrize("offset", range(0, 4000, 97))
def test_single_bit_flips_anywhere_are_clear_errors(lq_run, tmp_path, offset) -> None:
    data = bytearray((lq_run / CHECKPOINT).read_bytes())
    data[offset % len(data)] ^= 1 << (offset % 8)
    path = tmp_path / CHECKPOINT
    path.write_bytes(bytes(data))
    try:
        load_state(path)
    except CheckpointError as err:
        assert str(err).startswith(str(path))


# --- 6. saved-agent files: sizes, types, nesting, tables, tensor kinds ------------------------
@pytest.fixture(scope="module")
def saved_agent(tmp_path_factory):
    agent = JFBAgent.build("Quadrotor-v0", network=NetworkConfig(width=8, depth=2),
                           prior=PriorConfig(normalise="off"))
    return agent.save(tmp_path_factory.mktemp("agents") / "quad")


def _edit_json(folder: Path, edit) -> None:
    config = json.loads((folder / AGENT_JSON).read_text())
    edit(config["agent"])
    (folder / AGENT_JSON).write_text(json.dumps(config))


AGENT_EDITS = {
    "width 1e6": lambda a: a["network"].update(width=10**6),
    "depth 1e7": lambda a: a["network"].update(depth=10**7),
    "negative groups": lambda a: a["network"]["local"].update(groups=-2),
    "horizon 0": lambda a: a["network"]["local"].update(horizon=0),
    "list as env id": lambda a: a.update(env_id=["Quadrotor-v0"]),
    "list as dtype": lambda a: a.update(dtype=["float32"]),
    "dtype in env kwargs": lambda a: a.update(env_kwargs={"dtype": "float64"}),
}


@pytest.mark.parametrize("case", sorted(AGENT_EDITS))
def test_a_malformed_agent_json_is_one_error_naming_the_file(saved_agent, tmp_path,
                                                             case) -> None:
    import shutil

    folder = tmp_path / "agent"
    shutil.copytree(saved_agent, folder)
    _edit_json(folder, AGENT_EDITS[case])
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match=f"^{folder / AGENT_JSON}: "):
        JFBAgent.load(folder)
    assert time.perf_counter() - start < HANG


def test_deep_nesting_and_text_weights_are_clear_errors(saved_agent, tmp_path) -> None:
    import shutil

    folder = tmp_path / "agent"
    shutil.copytree(saved_agent, folder)
    (folder / AGENT_JSON).write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(CheckpointError, match="not valid JSON"):
        JFBAgent.load(folder)
    shutil.copy(saved_agent / AGENT_JSON, folder / AGENT_JSON)
    (folder / WEIGHTS).write_text("these are not weights\n")
    with pytest.raises(CheckpointError, match=f"^{folder / WEIGHTS}: not a readable"):
        JFBAgent.load(folder)


@pytest.mark.parametrize("kind", ["out-of-range branch", "sparse", "meta"])
def test_weights_of_the_wrong_kind_are_refused(saved_agent, tmp_path, kind) -> None:
    import shutil

    folder = tmp_path / "agent"
    shutil.copytree(saved_agent, folder)
    weights = load_state(folder / WEIGHTS)
    if kind == "out-of-range branch":
        weights["local.group"] = torch.full_like(weights["local.group"], 99)
    elif kind == "sparse":
        weights["opening.weight"] = weights["opening.weight"].to_sparse()
    else:
        weights["opening.weight"] = torch.empty_like(weights["opening.weight"], device="meta")
    torch.save(weights, folder / WEIGHTS)
    with pytest.raises(CheckpointError, match=f"^{folder / WEIGHTS}: "):
        JFBAgent.load(folder)


# --- 7. a corrupt prior cache: tests/test_prior.py (garbage); here, tables out of range -------
def test_a_cached_prior_with_bad_tables_is_ignored_and_rebuilt(tmp_path, monkeypatch) -> None:
    from jfbgym.agents import cache, prior
    from jfbgym.problems import problem_for_env

    problem = problem_for_env("LinearQuadratic-v0", dtype=torch.float64)
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(prior, "_BUILT", {})
    built = prior.build_local_value(problem)
    (path,) = tmp_path.glob("local-value-*.pt")
    state = load_state(path)
    state["weights"]["group"] = torch.full_like(state["weights"]["group"], 7)
    save_state(path, state)
    monkeypatch.setattr(prior, "_BUILT", {})
    with pytest.warns(UserWarning, match="ignoring the cached value prior"):
        again = prior.build_local_value(problem)
    assert torch.equal(again.group, built.group)
    x = problem.sample_initial_states(3)
    assert torch.isfinite(again(0.0, x)[0]).all()


def peak_memory() -> int:
    """This process's peak resident memory so far, bytes."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# --- 8. absurd sizes, refused before allocating -------------------------------------------------
@pytest.mark.parametrize("flags, name", [
    (["--threads", "100000"], "--threads"), (["--width", str(10**9)], "width"),
    (["--depth", str(10**6)], "depth"), (["--batch", str(10**9)], "batch"),
    (["--val-batch", str(10**9)], "val_batch"), (["--lr", "1e308"], "lr"),
    (["--seed", str(2**70)], "seed"), (["--n-agents", str(10**9)], "n_agents")])
def test_absurd_sizes_from_the_cli_are_refused_at_once(tmp_path, capsys, flags, name) -> None:
    start, before = time.perf_counter(), peak_memory()
    assert cli(["train", *TINY, "--iters", "1", "--out", str(tmp_path / "r"), *flags]) == 2
    err = capsys.readouterr().err
    assert name in err and "Traceback" not in err and len(err.strip().splitlines()) <= 3
    assert time.perf_counter() - start < HANG and peak_memory() - before < 2**28


@pytest.mark.parametrize("command", [["evaluate", "--pretrained", "LinearQuadratic-v0",
                                      "--episodes", str(10**10)],
                                     ["render", "--pretrained", "LinearQuadratic-v0", "--threads",
                                      "100000"]])
def test_absurd_sizes_in_other_commands(capsys, command) -> None:
    start = time.perf_counter()
    assert cli(command) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert time.perf_counter() - start < HANG


@pytest.mark.parametrize("problem", ["MultiBicycle", "ConsumptionSavings", "QuadSwarm"])
def test_a_billion_agents_is_refused_before_allocating(problem) -> None:
    before = peak_memory()
    with pytest.raises(ValueError, match="^n_agents: too large"):
        make_problem(problem, n_agents=10**9)
    assert peak_memory() - before < 2**28  # was 8 GB of per-agent lists before the refusal


# --- 9. env inputs -------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype, value", [(torch.float32, 1e20), (torch.float64, 1e300)])
def test_a_huge_initial_state_is_refused(dtype, value) -> None:
    for env in (ControlEnv("QuadSwarm-v0", dtype=dtype),
                ControlVectorEnv("QuadSwarm-v0", 2, dtype=dtype)):
        n = env.problem.state_dim
        with pytest.raises(ValueError, match=r"^initial_state: expected finite values with"):
            env.reset(options={"initial_state": np.full(n, value)})


def test_complex_values_are_refused_not_truncated() -> None:
    env = ControlEnv("Quadrotor-v0")
    env.reset(seed=0)
    m, n = env.action_space.shape[0], env.problem.state_dim
    with pytest.raises(ValueError, match="^action: expected real numbers"):
        env.step(np.zeros(m) + 1j)
    with pytest.raises(ValueError, match="^initial_state: expected real numbers"):
        env.reset(options={"initial_state": np.zeros(n) + 1j})
    venv = ControlVectorEnv("Quadrotor-v0", 2)
    venv.reset(seed=0)
    with pytest.raises(ValueError, match="^actions: expected real numbers"):
        venv.step_torch(torch.zeros(2, m, dtype=torch.complex64))


def test_a_huge_finite_action_is_clipped_alike_by_step_and_step_torch() -> None:
    a, b = ControlVectorEnv("Quadrotor-v0", 1, dtype=torch.float32), \
        ControlVectorEnv("Quadrotor-v0", 1, dtype=torch.float32)
    a.reset(seed=3)
    b.reset(seed=3)
    m = a.single_action_space.shape[0]
    obs_a, reward_a, *_ = a.step(np.full((1, m), 1e300))
    obs_b, *_ = b.step_torch(torch.full((1, m), 1e300, dtype=torch.float64))
    np.testing.assert_allclose(obs_a, obs_b.numpy(), rtol=1e-6)
    assert np.isfinite(reward_a).all()


def test_dtype_and_device_in_problem_kwargs_are_named(tmp_path, capsys) -> None:
    from jfbgym.rollout import rollout

    for key in ("dtype", "device"):
        with pytest.raises(ValueError, match=f"^env_kwargs: expected no '{key}'"):
            rollout(lambda t, z: torch.zeros(z.shape[0], 4), "Quadrotor-v0",
                    env_kwargs={key: "float64"})
        with pytest.raises(ValueError, match=f"^env_kwargs: expected no '{key}'"):
            JFBAgent.build("Quadrotor-v0", {key: "cpu"}, NetworkConfig(width=8, depth=2))
    assert cli(["train", *TINY, "--iters", "1", "--out", str(tmp_path / "r"),
                "--problem-kwargs", '{"dtype": "float64"}']) == 2
    assert "problem_kwargs: expected no 'dtype'" in capsys.readouterr().err


@pytest.mark.parametrize("seed", [-1, 2**70, 1.5, "1"])
def test_seeds_are_checked_alike_everywhere(seed, capsys) -> None:
    with pytest.raises(ValueError, match="^seed: expected an integer >= 0 and <= "):
        ControlEnv("Quadrotor-v0").reset(seed=seed)
    with pytest.raises(ValueError, match="^seed: expected an integer >= 0 and <= "):
        ControlVectorEnv("Quadrotor-v0", 2).reset(seed=seed)
    if isinstance(seed, int):
        assert cli(["render", "--pretrained", "LinearQuadratic-v0", "--seed", str(seed)]) == 2
        assert "--seed: expected an integer >= 0 and <= " in capsys.readouterr().err


# --- 10. outputs ---------------------------------------------------------------------------------
def test_a_video_path_is_checked_before_rendering(tmp_path, capsys) -> None:
    start = time.perf_counter()
    assert cli(["render", "--pretrained", "LinearQuadratic-v0", "--out",
                str(tmp_path / "video.txt")]) == 2
    assert "a video file name ending in one of .mp4" in capsys.readouterr().err
    assert time.perf_counter() - start < HANG


def test_demo_refuses_more_episodes_than_it_can_score(capsys) -> None:
    assert cli(["demo", "--iters", "0", "--episodes", "150"]) == 2
    assert "--episodes: expected an integer >= 1 and <= 100" in capsys.readouterr().err


def test_temporaries_of_a_killed_writer_are_removed(tmp_path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    stale = tmp_path / f".checkpoint.pt.{dead}.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    foreign = tmp_path / ".checkpoint.pt.notapid.tmp"
    foreign.write_bytes(b"")
    save_state(tmp_path / "checkpoint.pt", {"x": torch.ones(2)})
    assert not stale.exists() and foreign.exists()


def test_a_run_folder_with_a_directory_for_its_log_is_refused(tmp_path) -> None:
    out = tmp_path / "run"
    (out / "log.csv").mkdir(parents=True)
    with pytest.raises(ValueError, match="^out: expected a run directory whose log.csv is a file"):
        train(TrainConfig(**LQ, iters=1, out=str(out)), progress=False)


# --- the fuzz: observations, actions, env kwargs, CLI numbers, checkpoint bytes ---------------
NUMBERS = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64),
                    st.integers(min_value=-2**80, max_value=2**80), st.booleans(),
                    st.text(max_size=3), st.none(), st.just([1.0, 2.0]), st.complex_numbers())
FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


def _clear_or_finite(call, *finite_checks) -> None:
    """``call()`` raises a ValueError (one line, no internal names) within 10 s, or returns
    something whose arrays are all finite."""
    start = time.perf_counter()
    try:
        result = call()
    except ValueError as err:
        assert "\n" not in str(err).strip() and ":" in str(err), err
        return
    finally:
        assert time.perf_counter() - start < HANG
    for value in finite_checks or (result,):
        assert np.isfinite(np.asarray(value, dtype=np.float64)).all(), result


@FUZZ
@given(value=NUMBERS, index=st.integers(0, 72), scale=st.sampled_from([1.0, 1e3, 1e7, 1e30]))
def test_fuzz_observations(agents, value, index, scale) -> None:
    for agent in agents.values():
        n = agent.problem.state_dim
        obs = agent.problem.sample_initial_states(1)[0].double().numpy().tolist() + [0.0]
        obs = [x * scale for x in obs]
        obs[index % (n + 1)] = value
        _clear_or_finite(lambda agent=agent, obs=obs: agent.predict(obs)[0])


@FUZZ
@given(value=NUMBERS, index=st.integers(0, 3))
def test_fuzz_actions(value, index) -> None:
    env = ControlEnv("Quadrotor-v0")
    env.reset(seed=0)
    action = [0.0] * env.action_space.shape[0]
    action[index] = value

    def step():
        obs, reward, *_ = env.step(action)
        return np.r_[obs, reward]

    _clear_or_finite(step)


@FUZZ
@given(key=st.sampled_from(["n_agents", "init_std", "horizon", "n_steps", "alpha_G", "radius",
                            "target", "seed"]), value=NUMBERS)
def test_fuzz_env_kwargs(key, value) -> None:
    def make_and_step():
        env = gym.make("QuadSwarm-v0", **({} if key == "seed" else {key: value}))
        obs, _ = env.reset(seed=value if key == "seed" else 0)
        obs2, reward, *_ = env.step(env.action_space.sample())
        return np.r_[obs, obs2, reward]

    _clear_or_finite(make_and_step)


@FUZZ
@given(flag=st.sampled_from(["--batch", "--val-batch", "--width", "--depth", "--lr", "--seed",
                             "--threads", "--n-agents", "--iters", "--context", "--rank"]),
       value=st.one_of(st.integers(-2**70, 2**70), st.sampled_from(["nan", "inf", "1e308",
                                                                     "x", "-0", "1e-308"])))
def test_fuzz_cli_numbers(tmp_path_factory, flag, value) -> None:
    """What ``jfbgym train`` checks before any work: parsing, the config, the batch sizes
    (an accepted value would start a run, which the tests above cover)."""
    from jfbgym.cli import parse_subcommand
    from jfbgym.cli.train import config_from_args
    from jfbgym.problems import problem_for_env

    out = tmp_path_factory.mktemp("fuzz")
    start = time.perf_counter()
    try:
        _, args = parse_subcommand("train", [*TINY, "--out", str(out), flag, str(value)])
        config = config_from_args(args)
        problem = problem_for_env(config.env_id, **config.env_kwargs())
        problem.batch_size(config.batch, "batch")
        problem.batch_size(config.val_batch, "val_batch")
    except SystemExit as exit_:  # argparse's one-line error: status 2
        assert exit_.code == 2
    except ValueError as err:
        assert "\n" not in str(err).strip(), err
    assert time.perf_counter() - start < HANG


@FUZZ
@given(data=st.data())
def test_fuzz_checkpoint_bytes(lq_run, tmp_path_factory, data) -> None:
    raw = bytearray((lq_run / CHECKPOINT).read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(raw) - 1))
        raw[at] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        raw = raw[:data.draw(st.integers(0, len(raw)))]
    path = tmp_path_factory.mktemp("bytes") / CHECKPOINT
    path.write_bytes(bytes(raw))
    try:
        state = load_state(path)
    except CheckpointError as err:
        assert str(err).startswith(str(path))
        return
    assert isinstance(state, dict)


@pytest.mark.parametrize("edit", [{"seed": 2**70}, {"env_kwargs": ["x"]},
                                  {"hyperparams": {"policy_kwargs": {"net_arch": [10**9]}}},
                                  {"hyperparams": {"batch_size": -1}},
                                  {"hyperparams": {"no_such_setting": 1}}, {"env_id": [1]}])
def test_a_malformed_baseline_json_is_one_error_naming_the_file(tmp_path, edit) -> None:
    pytest.importorskip("stable_baselines3")
    from jfbgym.baselines import load_baseline, train_baseline

    out = tmp_path / "ppo"
    train_baseline("Quadrotor-v0", "ppo", minutes=0.005, out=str(out), n_envs=1,
                   hyperparams={"n_steps": 64, "batch_size": 32})
    values = json.loads((out / "baseline.json").read_text())
    for key, value in edit.items():
        values[key] = {**values[key], **value} if key == "hyperparams" else value
    (out / "baseline.json").write_text(json.dumps(values))
    with pytest.raises(CheckpointError, match=f"^{out / 'baseline.json'}: "):
        load_baseline(out)


def test_an_exact_interaction_too_large_to_train_names_the_settings_to_use(tmp_path,
                                                                           capsys) -> None:
    start = time.perf_counter()
    assert cli(["train", "QuadSwarm-v0", "--n-agents", "10000", "--batch", "4", "--val-batch",
                "4", "--iters", "1", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jfbgym train: error: n_agents:") and '"fourier"' in err
    assert time.perf_counter() - start < HANG
