"""A seeded fuzz campaign over every entry point that takes input from outside, with the counts
of what each input ended in: a clear error (one line, ``ValueError`` naming the argument or
file), a finite answer, a crash (any other exception), a NaN leak (an answer with NaN or inf)
or a hang (over ``--limit`` seconds). The suite's property-based fuzz
(``tests/test_hardening.py``) runs a few dozen of each; this runs thousands, for the record.

    python bench/fuzz.py            # about 3 CPU-minutes; bench/results/fuzz.json
    python bench/fuzz.py --quick
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import shutil
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import write_json

POOL = [0, 1, -1, 0.5, 3.7, 1e9, -1e9, 1e30, 1e300, 1e-300, float("nan"), float("inf"),
        -float("inf"), True, None, "x", "", [], [1.0, 2.0], {"a": 1}, 2**70, -2**70, 1j,
        np.int64(2), np.float32(0.25), 10**7, [[1.0], [2.0, 3.0]]]


def outcome(call: Callable[[], Any], limit: float) -> tuple[str, str]:
    """(what ``call()`` ended in, a detail for anything but a clear error or finite answer)."""
    start = time.perf_counter()
    try:
        result = call()
    except ValueError as err:  # CheckpointError included
        text = str(err).strip()
        kind = "clear error" if text and "\n" not in text and ":" in text else "unclear error"
        detail = text[:300]
    except Exception as err:  # noqa: BLE001 - what the campaign hunts
        return "crash", f"{type(err).__name__}: {err}"[:300] + traceback.format_exc()[-400:]
    else:
        detail = ""
        values = result if isinstance(result, (list, tuple)) else [result]
        finite = all(np.isfinite(np.asarray(v, dtype=np.float64)).all() for v in values
                     if v is not None)
        kind = "finite" if finite else "nan leak"
    if time.perf_counter() - start > limit:
        return "hang", f"{time.perf_counter() - start:.1f} s"
    return kind, detail


def observations(rng: random.Random, n: int) -> Iterator[tuple[str, Callable[[], Any]]]:
    from jfbgym.agents import JFBAgent

    agents = [JFBAgent.pretrained(name) for name in
              ("QuadSwarm-v0", "ConsumptionSavings-v0", "MultiBicycle-v0", "LinearQuadratic-v0")]
    for i in range(n):
        agent = agents[i % len(agents)]
        dim = agent.problem.state_dim
        obs: Any = agent.problem.sample_initial_states(1)[0].double().tolist() + [0.0]
        how = rng.choice(["entry", "scale", "time", "shape", "whole"])
        if how == "entry":
            obs[rng.randrange(dim + 1)] = rng.choice(POOL)
        elif how == "scale":
            obs = [x * rng.choice([1e2, 1e4, 1e6, 1e8, -1e5]) for x in obs]
        elif how == "time":
            obs[-1] = rng.choice([-1e-3, 1e3, float("nan"), 4.5, 2.0, 0.0, 1e-9])
        elif how == "shape":
            obs = rng.choice([obs[:-1], obs + [0.0], [obs, obs], [], [[]], np.zeros((0, dim + 1))])
        else:
            obs = rng.choice(POOL)
        call = agent.predict_parallel if how == "time" and agent.problem.multi_agent and \
            rng.random() < 0.3 else None
        if call is not None:
            yield "observations", lambda a=agent, o=obs: list(a.predict_parallel(o).values())
        else:
            yield "observations", lambda a=agent, o=obs: a.predict(o)[0]


def actions(rng: random.Random, n: int) -> Iterator[tuple[str, Callable[[], Any]]]:
    from jfbgym.envs.control_env import ControlEnv, ControlVectorEnv

    env, venv = ControlEnv("Quadrotor-v0"), ControlVectorEnv("QuadSwarm-v0", 2)
    for i in range(n):
        m = env.action_space.shape[0] if i % 2 == 0 else venv.single_action_space.shape[0]
        action: Any = [0.0] * m
        action[rng.randrange(m)] = rng.choice(POOL)
        if rng.random() < 0.2:
            action = rng.choice(POOL)
        if i % 2 == 0:
            def step(a: Any = action) -> list:
                env.reset(seed=0)
                obs, reward, *_ = env.step(a)
                return [obs, reward]
        else:
            def step(a: Any = action, width: int = m) -> list:
                venv.reset(seed=0)
                try:
                    u = torch.as_tensor(np.broadcast_to(np.asarray(a, dtype=np.complex128
                                                                   if isinstance(a, complex)
                                                                   else None), (2, width)))
                except (TypeError, ValueError):
                    u = a
                obs, reward, *_ = venv.step_torch(u)
                return [obs.numpy(), reward.numpy()]
        yield "actions", step


def env_kwargs(rng: random.Random, n: int) -> Iterator[tuple[str, Callable[[], Any]]]:
    import gymnasium as gym

    from jfbgym.problems import ENV_SPECS
    from jfbgym.problems.registry import problem_keywords

    ids = sorted(ENV_SPECS)
    for i in range(n):
        env_id = ids[i % len(ids)]
        keys = [k for k in problem_keywords(ENV_SPECS[env_id][0]) if k not in ("dtype",
                                                                              "device")]
        kwargs = {k: rng.choice(POOL) for k in rng.sample(keys, rng.randint(1, 2))}
        seed = rng.choice([0, 1, 2**63, -1, 2**70, None, 1.5])

        def make(e: str = env_id, kw: dict = kwargs, s: Any = seed) -> list:
            env = gym.make(e, **kw)
            obs, _ = env.reset(seed=s)
            obs2, reward, *_ = env.step(env.action_space.sample())
            return [obs, obs2, reward]

        yield "env kwargs", make


def cli_numbers(rng: random.Random, n: int) -> Iterator[tuple[str, Callable[[], Any]]]:
    from jfbgym.cli import parse_subcommand
    from jfbgym.cli.train import config_from_args
    from jfbgym.problems import problem_for_env

    flags = ["--batch", "--val-batch", "--width", "--depth", "--lr", "--seed", "--threads",
             "--n-agents", "--iters", "--context", "--rank", "--val-every", "--inner-iters",
             "--cpu-minutes", "--warmup", "--grad-clip", "--blowup", "--inner-tol"]
    values = ["0", "-1", "1", "nan", "inf", "-inf", "1e308", "x", "1e9", str(10**9),
              str(2**31), str(2**64), str(2**70), "0.5", "1e-308", "-0", ""]
    out = tempfile.mkdtemp(prefix="jfbgym-fuzz-cli-")
    for _ in range(n):
        argv = ["LinearQuadratic-v0", "--out", out]
        for _ in range(rng.randint(1, 2)):
            argv += [rng.choice(flags), rng.choice(values + [str(rng.randint(-10, 10**12))])]

        def check(a: list = argv) -> None:
            try:
                with contextlib.redirect_stderr(io.StringIO()):  # argparse's usage text
                    _, args = parse_subcommand("train", a)
            except SystemExit as exit_:  # argparse's or our one-line error, status 2
                if exit_.code != 2:
                    raise RuntimeError(f"exit status {exit_.code}") from None
                raise ValueError("argument: refused with exit status 2") from None
            config = config_from_args(args)
            problem = problem_for_env(config.env_id, **config.env_kwargs())
            problem.batch_size(config.batch, "batch")
            problem.batch_size(config.val_batch, "val_batch")

        yield "CLI numbers", check


def checkpoint_bytes(rng: random.Random, n: int, run: Path,
                     check: Callable[[dict, Path], None]) -> Iterator[tuple[str, Callable]]:
    from jfbgym.agents.checkpoint import load_state

    raw = (run / "checkpoint.pt").read_bytes()
    folder = Path(tempfile.mkdtemp(prefix="jfbgym-fuzz-bytes-"))
    for i in range(n):
        data = bytearray(raw)
        if i % 3 == 0:
            at = rng.randrange(len(data))
            data[at] ^= 1 << rng.randrange(8)
        elif i % 3 == 1:
            data[rng.randrange(len(data))] = rng.randrange(256)
        else:
            data = data[:rng.randrange(len(data))]
        path = folder / f"c{i}.pt"
        path.write_bytes(bytes(data))

        def load(p: Path = path) -> None:
            check(load_state(p), p)

        yield "checkpoint bytes", load


def saved_files(rng: random.Random, n: int, saved: Path, category: str, config_name: str,
                weights_name: str, load_folder: Callable[[Path], Any],
                part: str | None) -> Iterator[tuple[str, Callable]]:
    """Mutations of a saved folder: a leaf of its JSON (``part`` of it) replaced, or a bit of
    its weights flipped; each folder loaded with ``load_folder``."""
    base = json.loads((saved / config_name).read_text())
    weights = (saved / weights_name).read_bytes()
    root = Path(tempfile.mkdtemp(prefix="jfbgym-fuzz-files-"))

    def leaves(obj: Any, path: tuple = ()) -> list[tuple]:
        if isinstance(obj, dict):
            return [p for k, v in obj.items() for p in leaves(v, path + (k,))] or [path]
        return [path]

    top = base[part] if part else base
    paths = [p for p in leaves(top) if p]
    for i in range(n):
        folder = root / f"a{i}"
        folder.mkdir()
        config = json.loads(json.dumps(base))
        if i % 2 == 0:
            where = rng.choice(paths)
            target = config[part] if part else config
            for key in where[:-1]:
                target = target[key]
            target[where[-1]] = rng.choice(POOL[:-1]) if rng.random() < 0.7 else \
                rng.choice([10**6, 10**7, -2, 0, 10**12])
            (folder / weights_name).write_bytes(weights)
            (folder / config_name).write_text(json.dumps(config, default=str))
        else:
            data = bytearray(weights)
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            (folder / weights_name).write_bytes(bytes(data))
            (folder / config_name).write_text(json.dumps(config))

        yield category, lambda f=folder: (load_folder(f), None)[1]


def interrupts(rng: random.Random, n: int, folder: Path) -> Iterator[tuple[str, Callable]]:
    """Training runs (continuing one directory) stopped at a random moment by Ctrl-C, SIGTERM,
    two Ctrl-Cs or SIGKILL. A lost iteration is a ``ValueError`` that this campaign counts as
    'data lost': after one Ctrl-C or SIGTERM the checkpoint must hold every iteration the log
    shows; after any signal it must load, and the next run must continue from it."""
    import signal
    import subprocess
    import sys

    from jfbgym.agents.checkpoint import load_state

    out = folder / "interrupted"
    flags = ["LinearQuadratic-v0", "--batch", "4", "--val-batch", "4", "--width", "8", "--rank",
             "2", "--iters", "1000000", "--val-every", "7", "--checkpoint-every", "5",
             "--resume", "if-present", "--out", str(out)]
    for i in range(n):
        how = ["SIGINT", "SIGTERM", "SIGINT twice", "SIGKILL"][i % 4]
        wait = rng.uniform(0.5, 4.0)

        def cycle(how: str = how, wait: float = wait) -> None:
            before = load_state(out / "checkpoint.pt")["iteration"] \
                if (out / "checkpoint.pt").is_file() else 0
            run = subprocess.Popen([sys.executable, "-m", "jfbgym", "train", *flags],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            time.sleep(wait)
            if how == "SIGKILL":
                run.kill()
            else:
                sig = signal.SIGTERM if how == "SIGTERM" else signal.SIGINT
                run.send_signal(sig)
                if how == "SIGINT twice":
                    time.sleep(rng.uniform(0.0, 0.3))
                    if run.poll() is None:
                        run.send_signal(sig)
            err, _ = run.communicate(timeout=120)
            if "Traceback" in err:
                raise RuntimeError(f"{how}: traceback: {err[-300:]}")
            if not (out / "checkpoint.pt").is_file():
                return  # stopped before the first save: nothing had been trained
            state = load_state(out / "checkpoint.pt")  # raises if torn
            rows = len((out / "log.csv").read_text().strip().splitlines()) - 1
            trained = "stopping after this iteration" in err  # else stopped while starting,
            # before the log was rewritten from the checkpoint (rows of a SIGKILLed run remain)
            if how in ("SIGINT", "SIGTERM") and trained and state["iteration"] != rows:
                raise ValueError(f"data lost: {how} kept {state['iteration']} of {rows}")
            if state["iteration"] < before:
                raise ValueError(f"data lost: {how} went back from {before} to "
                                 f"{state['iteration']}")
            leftovers = list(out.glob(".*.tmp")) + list((out / "snapshots").glob(".*.tmp"))
            if how != "SIGKILL" and leftovers:
                raise RuntimeError(f"{how}: temporary files left: {leftovers}")

        yield f"interrupts ({how})", cycle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the inputs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=float, default=10.0, help="seconds that make a hang")
    parser.add_argument("--out", default="bench/results/fuzz.json")
    parser.add_argument("--interrupts", type=int, default=40,
                        help="training runs stopped by a signal (a few seconds each)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("JFBGYM_CACHE_DIR", tempfile.mkdtemp(prefix="jfbgym-fuzz-cache-"))
    import warnings

    warnings.simplefilter("ignore")
    from jfbgym.agents import JFBAgent, NetworkConfig, PriorConfig
    from jfbgym.agents.config import TrainConfig
    from jfbgym.agents.trainer import Trainer, train

    scale = 0.1 if args.quick else 1.0
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="jfbgym-fuzz-"))
    config = TrainConfig(env_id="LinearQuadratic-v0", batch=4, val_batch=4, width=8, rank=2,
                         iters=3, checkpoint_every=1, out=str(work / "run"))
    train(config, progress=False)
    trainer = Trainer(config)
    saved = JFBAgent.build("Quadrotor-v0", network=NetworkConfig(width=8, depth=2),
                           prior=PriorConfig(normalise="off")).save(work / "a")
    from jfbgym.baselines import load_baseline, train_baseline

    train_baseline("Quadrotor-v0", "ppo", minutes=0.005, out=str(work / "ppo"), n_envs=1,
                   hyperparams={"n_steps": 64, "batch_size": 32})
    sources = [observations(rng, int(1200 * scale)), actions(rng, int(600 * scale)),
               env_kwargs(rng, int(600 * scale)), cli_numbers(rng, int(600 * scale)),
               checkpoint_bytes(rng, int(900 * scale), work / "run", trainer.check_state),
               saved_files(rng, int(600 * scale), saved, "agent files", "agent.json",
                           "weights.pt", JFBAgent.load, "agent"),
               saved_files(rng, int(300 * scale), work / "ppo", "baseline files",
                           "baseline.json", "policy.pt", load_baseline, None),
               interrupts(rng, max(4, int(args.interrupts * scale)), work)]
    counts: dict[str, Counter] = {}
    crashes: list[str] = []
    start = time.perf_counter()
    for source in sources:
        for category, call in source:
            kind, detail = outcome(call, 120.0 if category.startswith("interrupts")
                                   else args.limit)
            if category.startswith("interrupts"):  # the cycle's own check failed, or held
                kind = {"clear error": "data lost", "finite": "nothing lost"}.get(kind, kind)
            counts.setdefault(category, Counter())[kind] += 1
            if kind in ("crash", "nan leak", "hang", "unclear error", "data lost"):
                crashes.append(f"{category}: {kind}: {detail}")
    total = sum(counts.values(), Counter())
    record = {"seed": args.seed, "quick": args.quick, "seconds": time.perf_counter() - start,
              "load_average": os.getloadavg(), "torch": torch.__version__,
              "counts": {k: dict(v) for k, v in counts.items()}, "total": dict(total),
              "tried": sum(total.values()), "problems": crashes[:50]}
    write_json(args.out, record)
    for category, c in counts.items():
        print(f"{category:18s} {sum(c.values()):5d} tried: {dict(c)}")
    print(f"{'all':18s} {record['tried']:5d} tried: {dict(total)}")
    for line in crashes[:20]:
        print(line)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
