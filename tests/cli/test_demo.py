"""The demo runs end to end on a tiny budget: the shipped agent, a fresh run, the table with gaps
against the recorded J*, its video and plots."""

import argparse

import imageio.v3 as iio

from jfbgym.cli.demo import add_arguments, main


def test_demo_tiny_budget(tmp_path, capsys) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--iters", "2", "--batch", "4", "--episodes", "5",
                              "--out", str(tmp_path / "run"),
                              "--videos", str(tmp_path / "videos"), "--stride", "10"])
    assert main(args) == 0
    out = capsys.readouterr().out
    for name in ("JFB shipped", "JFB fresh (2 iterations)", "zero control",
                 "heuristic (hover PD)", "open-loop optimum (certified)", "quadswarm_jfb.mp4"):
        assert name in out
    assert "is no better than" not in out  # both JFB agents beat the heuristic
    frames = iio.imread(tmp_path / "videos" / "quadswarm_jfb.mp4")
    assert frames.shape[0] == 17  # QuadSwarm: nt = 160 steps drawn every 10th step
    for png in ("quadswarm_jfb.png", "quadswarm_jfb_training.png"):
        assert (tmp_path / "videos" / png).stat().st_size > 1000
    assert (tmp_path / "run" / "config.json").is_file()
