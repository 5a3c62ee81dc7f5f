"""compare runs end to end on a tiny budget and writes its tables, plots and video."""

import argparse
import csv
import json

import imageio.v3 as iio
import pytest

from jfbgym.cli.compare import add_arguments, main


@pytest.mark.slow
def test_compare_end_to_end(tmp_path, capsys) -> None:
    pytest.importorskip("stable_baselines3")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    out = tmp_path / "cmp"
    args = parser.parse_args(["Quadrotor-v0", "--minutes", "0.02", "--iters", "2", "--batch", "8",
                              "--episodes", "6", "--openloop-iters", "30", "--out", str(out), "--rl-seeds", "2",
                              "--env-kwargs", '{"n_steps": 12}'])
    assert main(args) == 0
    printed = capsys.readouterr().out
    with open(out / "results.csv") as fh:
        rows = {r["method"]: r for r in csv.DictReader(fh)}
    assert list(rows) == ["JFB", "direct policy", "PPO (best of 2)", "PPO (mean of 2)",
                          "SAC (best of 2)", "SAC (mean of 2)", "zero control",
                          "heuristic (hover PD)", "open-loop optimum"]
    for name, row in rows.items():
        assert name in printed
        assert float(row["J_mean"]) > 0 and row["n_states"] == "6"
    # the optimum is warm-started from JFB and the heuristic: it cannot be worse than either
    optimum = float(rows["open-loop optimum"]["J_mean"])
    assert optimum <= float(rows["JFB"]["J_mean"]) + 1e-6
    assert optimum <= float(rows["heuristic (hover PD)"]["J_mean"]) + 1e-6
    for name in ("JFB", "direct policy", "PPO (best of 2)", "SAC (mean of 2)", "zero control"):
        assert float(rows[name]["gap"]) == pytest.approx(
            (float(rows[name]["J_mean"]) - optimum) / abs(optimum), rel=1e-6)
    for name in ("JFB", "direct policy", "PPO (best of 2)", "PPO (mean of 2)"):
        assert float(rows[name]["train_s"]) > 0 and float(rows[name]["ms_per_step"]) > 0
    data = json.loads((out / "results.json").read_text())
    assert data["env_id"] == "Quadrotor-v0" and len(data["rows"]) == 9
    # each RL algorithm: two seeds sharing the budget, the best chosen on validation states
    for rl in data["rl"]:
        assert [r["seed"] for r in rl["runs"]] == [0, 1] and len(rl["validation"]) == 2
        assert rl["best_seed"] == min((v, k) for k, v in enumerate(rl["validation"]))[1]
        held_out = rl["held_out"]
        name = rl["algo"].upper()
        assert float(rows[f"{name} (best of 2)"]["J_mean"]) == pytest.approx(
            held_out[rl["best_seed"]], rel=1e-9)
        assert float(rows[f"{name} (mean of 2)"]["J_mean"]) == pytest.approx(
            sum(held_out) / 2, rel=1e-9)
    assert "JFB" in (out / "results.md").read_text()
    curves = json.loads((out / "curves.json").read_text())
    assert set(curves) == {"JFB", "direct policy", "PPO (best seed, training episodes)",
                           "SAC (best seed, training episodes)"}
    assert all(len(points) >= 1 and len(points[0]) == 2 for points in curves.values())
    for png in ("comparison.png", "training.png"):
        assert (out / png).stat().st_size > 1000
    videos = list(out.glob("jfb_vs_*.mp4"))
    assert len(videos) == 1 and len(iio.imread(videos[0])) == 13  # steps 0, 1, ..., 12
