"""Untrusted files, bad configurations, numerical faults: no code runs, nothing bad is saved,
every error is one clear line naming the argument or the file (issue 9, one test per item)."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import time

import gymnasium as gym
import numpy as np
import pytest
import torch

import jfbgym  # noqa: F401  (registers the ids)
from jfbgym.agents import JFBAgent, NetworkConfig, PriorConfig
from jfbgym.agents.checkpoint import CHECKPOINT, CheckpointError, load_state
from jfbgym.agents.config import TrainConfig
from jfbgym.agents.trainer import train
from jfbgym.cli import main as cli
from jfbgym.problems import ENV_SPECS, make_problem
from jfbgym.problems.registry import problem_keywords

LQ = {"env_id": "LinearQuadratic-v0", "batch": 4, "val_batch": 4, "width": 8, "rank": 2}


class Payload:
    """Unpickling this runs ``open(path, "w")``: a loader that executes code creates the file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _plant(path, marker) -> None:
    with open(path, "wb") as fh:
        pickle.dump({"model": Payload(str(marker))}, fh, protocol=2)


@pytest.fixture(scope="module")
def lq_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "lq"
    train(TrainConfig(**LQ, iters=2, checkpoint_every=1, out=str(out)), progress=False)
    return out


def _copy(run, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(run, dst)
    return dst


# --- 1. code execution ------------------------------------------------------------------------
def test_malicious_jfb_run_executes_nothing(lq_run, tmp_path) -> None:
    run, marker = _copy(lq_run, tmp_path), tmp_path / "pwned"
    _plant(run / CHECKPOINT, marker)
    with pytest.raises(CheckpointError, match="refused to load"):
        JFBAgent.load(run)
    assert cli(["evaluate", str(run), "--no-openloop"]) == 2
    for snapshot in (run / "snapshots").glob("*.pt"):  # diagnose reads the snapshots
        _plant(snapshot, marker)
    assert cli(["diagnose", str(run)]) == 2
    assert not marker.exists()


def test_malicious_baseline_directory_executes_nothing(tmp_path) -> None:
    pytest.importorskip("stable_baselines3")
    from jfbgym.baselines import load_baseline, train_baseline

    out = tmp_path / "ppo"
    train_baseline("Quadrotor-v0", "ppo", minutes=0.01, out=str(out), n_envs=1,
                   env_kwargs={"n_steps": 8})
    marker = tmp_path / "pwned"
    _plant(out / "policy.pt", marker)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_baseline(out)
    assert cli(["render", str(out), "--out", str(tmp_path / "v.mp4")]) == 2
    (out / "policy.pt").unlink()  # what SB3 itself writes: a pickled zip, never opened
    with open(out / "model.zip", "wb") as fh:
        pickle.dump(Payload(str(marker)), fh, protocol=2)
    with pytest.raises(CheckpointError, match="model.zip"):
        load_baseline(out)
    assert not marker.exists()


# --- 2. a NaN agent is never "last good" -----------------------------------------------------
def test_a_diverging_run_saves_only_finite_weights(tmp_path, capsys) -> None:
    out = tmp_path / "lr1e3"
    assert cli(["train", "LinearQuadratic-v0", "--iters", "15", "--lr", "1e3", "--width", "8",
                "--batch", "4", "--val-batch", "4", "--out", str(out)]) in (0, 1)
    state = load_state(out / CHECKPOINT)
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    agent = JFBAgent.load(out)
    obs = np.zeros((3, 5), dtype=np.float32)
    obs[:, :4] = np.random.default_rng(0).normal(size=(3, 4))
    assert np.isfinite(agent.predict(obs)[0]).all()
    assert all(np.isfinite(row["val_cost"]) for row in json.loads((out / "log.json").read_text()))


# --- 3. size limits ---------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, name", [({"n_agents": 10**7}, "n_agents"),
                                          ({"n_steps": 10**9}, "n_steps")])
def test_impossible_sizes_are_refused_at_once(kwargs, name) -> None:
    start = time.perf_counter()
    with pytest.raises(ValueError, match=f"^{name}: too large"):
        gym.make("QuadSwarm-v0", **kwargs)
    assert time.perf_counter() - start < 5.0


def test_impossible_vector_batch_is_refused() -> None:
    with pytest.raises(ValueError, match="^num_envs: too large"):
        gym.make_vec("QuadSwarm-v0", num_envs=10**9, vectorization_mode="vector_entry_point",
                     n_agents=100)


# --- 4. invalid problem data; failed inner solves say so -----------------------------------
def test_invalid_problem_data() -> None:
    A = [[np.nan, 1.0], [0.0, 0.0]]
    with pytest.raises(ValueError, match="^A: expected a matrix of finite numbers"):
        make_problem("LinearQuadratic", A=A, B=[[0.0], [1.0]], Q=np.eye(2), Q_f=np.eye(2),
                     R=[[1.0]])
    with pytest.raises(ValueError, match=r"^r: expected \|r\|·horizon <= 30"):
        gym.make("ConsumptionSavings-v0", r=1e6)
    with pytest.raises(ValueError, match="^B: expected a matrix of numbers"):
        make_problem("LinearQuadratic", B="two")


def test_failed_inner_solves_warn_once_with_the_count() -> None:
    from jfbgym.agents import SolverOptions

    agent = JFBAgent.build("Quadrotor-v0", {"n_steps": 5}, NetworkConfig(width=8),
                           PriorConfig("none", normalise="off"),  # no solve starts solved
                           solver=SolverOptions("gradient", alpha=0.01, max_iters=2, tol=0.0))
    x0 = agent.problem.sample_initial_states(3)
    with pytest.warns(RuntimeWarning, match=r"^15 of 15 inner solves") as caught:
        agent.objective(x0)
    assert len(caught) == 1


# --- 5. loading is checked, file by file -----------------------------------------------------
@pytest.mark.parametrize("damage, message", [
    ("truncate", "not a readable checkpoint"),
    ("empty", "is empty"),
    ("no_dtype", r"incomplete: missing \['dtype'\]"),
    ("garbage_json", "not valid JSON"),
    ("wrong_shape", "has shape"),
    ("nan_weights", "NaN or inf"),
])
def test_damaged_runs_are_refused_naming_the_file(lq_run, tmp_path, capsys, damage, message):
    run = _copy(lq_run, tmp_path)
    ckpt, config = run / CHECKPOINT, run / "config.json"
    if damage == "truncate":
        ckpt.write_bytes(ckpt.read_bytes()[:200])
    elif damage == "empty":
        ckpt.write_bytes(b"")
    elif damage == "no_dtype":
        cfg = json.loads(config.read_text())
        del cfg["agent"]["dtype"]
        config.write_text(json.dumps(cfg))
    elif damage == "garbage_json":
        config.write_text("{this is not json")
    else:
        state = load_state(ckpt)
        key = next(iter(state["model"]))
        models = [state["model"]] + ([state["best"]["model"]] if state.get("best") else [])
        for model in models:  # the current and the best weights alike
            if damage == "wrong_shape":
                model[key] = torch.zeros(3, 3, 3)
            else:
                model[key] = model[key] * float("nan")
        torch.save(state, ckpt)
    named = str(config) if damage in ("no_dtype", "garbage_json") else str(ckpt)
    with pytest.raises(ValueError, match=message) as info:
        JFBAgent.load(run)
    assert named in str(info.value)
    assert cli(["evaluate", str(run), "--no-openloop"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jfbgym evaluate: error: ") and err.count("\n") == 1 and named in err


# --- 6. resume ---------------------------------------------------------------------------------
def test_resume_without_a_checkpoint_fails_unless_asked(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="holds no checkpoint.pt"):
        train(TrainConfig(**LQ, iters=1, out=str(tmp_path / "typo"), resume="always"),
              progress=False)
    result = train(TrainConfig(**LQ, iters=1, out=str(tmp_path / "new"), resume="if-present"),
                   progress=False)
    assert result.status == "finished" and len(result.history) == 1


# --- 7. smaller ones -------------------------------------------------------------------------
def test_argument_types(tmp_path, capsys) -> None:
    with pytest.raises(ValueError, match="^n_agents: expected an integer >= 1, got True"):
        gym.make("QuadSwarm-v0", n_agents=True)
    assert gym.make("QuadSwarm-v0", n_agents=np.int64(3)).unwrapped.problem.n_agents == 3
    with pytest.raises(ValueError, match="^init_std: expected a finite number"):
        gym.make("QuadSwarm-v0", init_std="big")
    with pytest.raises(ValueError, match=r"^bogus: not a keyword of the QuadSwarm problem; "
                                         r"expected one of \['alpha_G'"):
        gym.make("QuadSwarm-v0", bogus=1)
    file = tmp_path / "a_file"
    file.write_text("")
    for out, what in ((file, "that path is a file"), (tmp_path / ("x" * 300), "255 bytes")):
        assert cli(["train", "LinearQuadratic-v0", "--iters", "1", "--out", str(out)]) == 2
        assert what in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert cli(["train", "LinearQuadratic-v0", "--iters", "1", "--device", "cuda",
                    "--out", str(tmp_path / "c")]) == 2
        assert "device: expected 'cpu'" in capsys.readouterr().err


# --- the fuzz: construction arguments of every env id ---------------------------------------
POOL = [0, 1, 2, -1, 0.5, -0.5, 3.7, 1e9, -1e9, 1e-300, float("nan"), float("inf"), True,
        None, "x", [], [1.0, 2.0, 3.0], np.int64(2), np.float32(0.25), 10**7]


def fuzz_construction(seed: int = 0, per_env: int = 60) -> dict[str, int]:
    """Seeded random construction arguments for every env id: each accepted env is reset and
    stepped; returns the counts (and fails on anything but a clear ValueError)."""
    rng = np.random.default_rng(seed)
    counts = {"tried": 0, "clear errors": 0, "accepted": 0, "crashes": 0, "nan leaks": 0}
    for env_id, (problem, defaults) in sorted(ENV_SPECS.items()):
        keywords = [k for k in problem_keywords(problem) if k not in ("dtype", "device")]
        for _ in range(per_env):
            chosen = rng.choice(keywords, size=rng.integers(1, 3), replace=False)
            kwargs = {str(k): POOL[rng.integers(len(POOL))] for k in chosen}
            counts["tried"] += 1
            start = time.perf_counter()
            try:
                env = gym.make(env_id, **kwargs)
            except ValueError as err:  # names the argument first, and one of those passed
                assert any(str(err).startswith(f"{k}:") for k in keywords), (env_id, err)
                assert any(k in str(err) for k in kwargs), (env_id, kwargs, err)
                counts["clear errors"] += 1
                continue
            except Exception as err:  # pragma: no cover - a crash is what this test hunts
                counts["crashes"] += 1
                raise AssertionError(f"{env_id} {kwargs}: {type(err).__name__}: {err}") from err
            finally:
                assert time.perf_counter() - start < 5.0, (env_id, kwargs)
            counts["accepted"] += 1
            obs, _ = env.reset(seed=0)
            values = [obs]
            for _ in range(min(3, env.unwrapped.problem.n_steps)):
                obs, reward, *_ = env.step(env.action_space.sample())
                values += [obs, np.array([reward])]
            if not all(np.isfinite(v).all() for v in values):
                counts["nan leaks"] += 1
                raise AssertionError(f"{env_id} {kwargs}: non-finite observation or reward")
    return counts


def test_construction_fuzz() -> None:
    counts = fuzz_construction()
    assert counts["crashes"] == counts["nan leaks"] == 0
    assert counts["clear errors"] > 0 and counts["accepted"] > 0


if __name__ == "__main__":  # the counts for a report: python tests/test_trust.py
    os.environ.setdefault("MPLBACKEND", "Agg")
    torch.set_num_threads(1)
    print(fuzz_construction(per_env=200))
