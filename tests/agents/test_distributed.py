"""Data-parallel training (gloo on CPU, loopback): a K-rank run is the single-process run on the
same global minibatch, and a rank killed mid-run leaves a loadable checkpoint to resume from."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from jfbgym.agents.checkpoint import load_state
from jfbgym.agents.config import TrainConfig
from jfbgym.agents.distributed import World
from jfbgym.agents.trainer import train

SETTINGS = {"env_id": "QuadSwarm-v0", "n_agents": 2, "problem_kwargs": {"n_steps": 20},
            "batch": 6, "val_batch": 5, "width": 16, "depth": 2, "rank": 3, "dtype": "float64",
            "prior": "none", "normalise": "off", "seed": 3, "val_every": 1, "lr": 1e-3}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, size: int, port: int, settings: dict) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    train(TrainConfig(**settings), progress=False)


def weights(out: Path) -> dict:
    return load_state(out / "checkpoint.pt")["model"]


@pytest.mark.parametrize("iters, rel", [(1, 1e-10), (4, 1e-6)])
def test_two_ranks_equal_one_process_on_the_same_global_batch(tmp_path, iters, rel) -> None:
    single = dict(SETTINGS, iters=iters, out=str(tmp_path / "single"))
    train(TrainConfig(**single), progress=False)
    pair = dict(SETTINGS, iters=iters, out=str(tmp_path / "pair"))
    mp.start_processes(_rank, args=(2, free_port(), pair), nprocs=2, start_method="spawn")
    a, b = weights(tmp_path / "single"), weights(tmp_path / "pair")
    assert a.keys() == b.keys()

    def close(x: dict, y: dict) -> bool:
        return all(float((x[k] - y[k]).abs().max()) <= rel * (float(x[k].abs().max()) or 1.0)
                   for k in x)

    assert close(a, b)
    if iters == 1:  # the check can fail: another minibatch gives other weights
        other = dict(single, seed=4, out=str(tmp_path / "other"))
        train(TrainConfig(**other), progress=False)
        assert not close(a, weights(tmp_path / "other"))
    # only rank 0 wrote: one log row per iteration
    rows = (tmp_path / "pair" / "log.csv").read_text().strip().splitlines()
    assert len(rows) == iters + 1


def test_shards_cover_the_batch_once() -> None:
    for n in (5, 6, 7):
        for size in (1, 2, 3):
            parts = [World(r, size).shard(n) for r in range(size)]
            covered = [i for p in parts for i in range(n)[p]]
            assert covered == list(range(n))


@pytest.mark.slow
def test_killed_rank_leaves_a_checkpoint_that_resumes(tmp_path) -> None:
    """No periodic checkpoint: what is on disk after a rank is killed is the survivor's save."""
    out = tmp_path / "run"
    flags = ["QuadSwarm-v0", "--n-agents", "2", "--batch", "4", "--val-batch", "4",
             "--width", "16", "--depth", "2", "--prior", "none", "--iters", "100000",
             "--val-every", "1", "--checkpoint-every", "100000", "--out", str(out)]
    launcher = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "jfbgym", "train", *flags],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 240
        while not (out / "log.csv").is_file() or len(
                (out / "log.csv").read_text().strip().splitlines()) < 4:
            assert time.time() < deadline and launcher.poll() is None, "no iterations came"
            time.sleep(0.5)
        assert not (out / "checkpoint.pt").exists()
        workers = subprocess.run(["pgrep", "-P", str(launcher.pid)], capture_output=True,
                                 text=True, check=False).stdout.split()
        assert len(workers) == 2, workers
        os.kill(int(workers[-1]), signal.SIGKILL)
        assert launcher.wait(timeout=120) != 0  # torchrun ends the whole run
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
    state = load_state(out / "checkpoint.pt")  # written by rank 0 on the way out
    done = state["iteration"]
    assert done >= 3
    result = train(TrainConfig(env_id="QuadSwarm-v0", n_agents=2, batch=4, val_batch=4,
                               width=16, depth=2, prior="none", iters=done + 2, val_every=1,
                               checkpoint_every=1, out=str(out), resume="always"),
                   progress=False)
    assert result.status == "finished" and result.history[-1]["iteration"] == done + 2


TINY = ["QuadSwarm-v0", "--n-agents", "2", "--batch", "4", "--val-batch", "4", "--width", "16",
        "--depth", "2", "--prior", "none", "--val-every", "1", "--checkpoint-every", "1"]


@pytest.mark.slow
def test_sigterm_to_torchrun_saves_once_and_resumes(tmp_path) -> None:
    out = tmp_path / "run"
    with open(tmp_path / "output.txt", "w") as log:  # a file: a pipe can fill and block
        launcher = subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
             "2", "-m", "jfbgym", "train", *TINY, "--iters", "100000", "--out", str(out)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.time() + 240
            while len(list((out / "snapshots").glob("*.pt"))) < 2:
                assert time.time() < deadline and launcher.poll() is None, "no checkpoints came"
                time.sleep(0.5)
            launcher.send_signal(signal.SIGTERM)  # torchrun forwards it to every rank
            launcher.wait(timeout=120)
        finally:
            if launcher.poll() is None:
                os.killpg(launcher.pid, signal.SIGKILL)
    err = (tmp_path / "output.txt").read_text()
    assert err.count("stopping after this iteration") == 1, err[-2000:]  # rank 0 only
    done = load_state(out / "checkpoint.pt")["iteration"]
    assert done >= 1
    rows = (out / "log.csv").read_text().strip().splitlines()
    assert len(rows) == done + 1  # the log is the saved state's history, written once
    result = train(TrainConfig(env_id="QuadSwarm-v0", n_agents=2, batch=4, val_batch=4,
                               width=16, depth=2, prior="none", iters=done + 1, val_every=1,
                               out=str(out), resume="always"), progress=False)
    assert result.status == "finished" and result.history[-1]["iteration"] == done + 1


@pytest.mark.slow
def test_the_readme_multi_node_command_on_loopback(tmp_path) -> None:
    """Two 'nodes' (two torchrun launchers on this machine) meet at a c10d rendezvous endpoint,
    as the README's multi-node command does, and train one agent."""
    endpoint = f"127.0.0.1:{free_port()}"
    out = tmp_path / "run"
    nodes = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
         "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint,
         "-m", "jfbgym", "train", *TINY, "--iters", "3",
         "--out", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
        for _ in range(2)]  # 3 iterations: far less output than a pipe holds
    try:
        errs = [node.communicate(timeout=300)[1] for node in nodes]
    finally:
        for node in nodes:
            if node.poll() is None:
                os.killpg(node.pid, signal.SIGKILL)
    assert [node.returncode for node in nodes] == [0, 0], errs[0][-2000:] + errs[1][-2000:]
    assert load_state(out / "checkpoint.pt")["iteration"] == 3
    rows = (out / "log.csv").read_text().strip().splitlines()
    assert len(rows) == 4  # one writer: a header and one row per iteration
