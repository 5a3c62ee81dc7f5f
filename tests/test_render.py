"""Videos are written with the expected frame count; figures are written."""

import argparse

import imageio.v3 as iio
import pytest

from jfbgym.evaluation import evaluate
from jfbgym.problems import problem_for_env
from jfbgym.problems.feedback import ZeroControl
from jfbgym.problems.quadswarm import HoverPD
from jfbgym.render import (
    plot_comparison,
    plot_training,
    plot_trajectories,
    render_side_by_side,
    render_video,
    trajectory_frames,
)
from jfbgym.rollout import rollout

KW = {"n_agents": 2, "n_steps": 10}


def test_video_frame_count(tmp_path) -> None:
    problem = problem_for_env("QuadSwarm-v0", **KW)
    path = render_video(HoverPD(problem), "QuadSwarm-v0", tmp_path / "v" / "quad.mp4", seed=1,
                        env_kwargs=KW, stride=3, fps=10)
    # steps 0, 3, 6, 9 and the last one, 10
    frames = iio.imread(path)
    assert frames.shape[0] == 5 and frames.shape[-1] == 3 and frames.shape[1] % 2 == 0
    assert frames.std() > 1.0  # a picture, not a blank


def test_side_by_side_shares_the_initial_state(tmp_path) -> None:
    problem = problem_for_env("QuadSwarm-v0", **KW)
    policies = {"hover PD": HoverPD(problem), "zero": ZeroControl(problem)}
    path = render_side_by_side(policies, "QuadSwarm-v0", tmp_path / "sbs.mp4", seed=2,
                               env_kwargs=KW, stride=5)
    frames = iio.imread(path)
    single = trajectory_frames(problem, rollout(ZeroControl(problem), problem, 1, 2), 0, 5)
    assert frames.shape[0] == len(single) == 3
    assert frames.shape[2] == 2 * single[0].shape[1]  # two columns
    with pytest.raises(ValueError, match="policies"):
        render_side_by_side({"zero": ZeroControl(problem)}, "QuadSwarm-v0", tmp_path / "x.mp4")


def test_figures(tmp_path) -> None:
    problem = problem_for_env("QuadSwarm-v0", **KW)
    refs = {"hover PD": HoverPD(problem), "zero": ZeroControl(problem)}
    trajs = {k: rollout(p, problem, 3, 0) for k, p in refs.items()}
    assert plot_trajectories(problem, trajs, tmp_path / "traj.png").stat().st_size > 1000
    rows = [evaluate(p, problem, n_episodes=4, name=k) for k, p in refs.items()]
    assert plot_comparison(rows, tmp_path / "bars.png").stat().st_size > 1000
    curves = {"JFB": [(0.0, 50.0), (1.0, 20.0)], "PPO": [(0.5, 400.0)]}
    assert plot_training(curves, tmp_path / "curves.png", 15.0).stat().st_size > 1000


@pytest.mark.parametrize("n", [1, 81, 97])
def test_write_video_keeps_every_frame_in_order(tmp_path, n: int) -> None:
    import numpy as np

    from jfbgym.render import write_video

    frames = [np.full((32, 48, 3), (2 * i) % 256, np.uint8) for i in range(n)]
    video = iio.imread(write_video(frames, tmp_path / "f.mp4", fps=20))
    assert video.shape == (n, 32, 48, 3)
    np.testing.assert_allclose(video.reshape(n, -1).mean(1), [(2 * i) % 256 for i in range(n)],
                               atol=2.5)  # H.264 rounding only: no frame dropped or repeated


def test_render_cli(tmp_path) -> None:
    from jfbgym.agents.config import TrainConfig
    from jfbgym.agents.trainer import train
    from jfbgym.cli.render import add_arguments, main

    run = tmp_path / "quad1"
    train(TrainConfig(env_id="Quadrotor-v0", problem_kwargs={"n_steps": 8}, iters=1, batch=4,
                      val_batch=4, out=str(run)), progress=False)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert main(parser.parse_args([str(run), "--out", str(tmp_path / "a.mp4"),
                                   "--stride", "4"])) == 0
    assert len(iio.imread(tmp_path / "a.mp4")) == 3  # steps 0, 4, 8
    assert main(parser.parse_args([str(run), "--out", str(tmp_path / "b.mp4"), "--stride", "4",
                                   "--vs", "heuristic"])) == 0
    video = iio.imread(tmp_path / "b.mp4")
    assert len(video) == 3 and video.shape[2] == 2 * iio.imread(tmp_path / "a.mp4").shape[2]


def test_cost_panel_ends_at_each_methods_J() -> None:
    from jfbgym.baselines import references
    from jfbgym.problems import problem_for_env
    from jfbgym.render import cost_to_date
    from jfbgym.rollout import rollout

    problem = problem_for_env("Quadrotor-v0")
    for policy in references(problem).values():
        traj = rollout(policy, problem, n_episodes=3)
        times, cost = cost_to_date(traj)
        assert times.shape == cost.shape and times[-1] == times[-2] == pytest.approx(problem.horizon)
        assert cost[-1] == pytest.approx(float(traj.cost.double().mean()), rel=1e-9)
        # zero control's cost is almost all terminal: the jump at T is most of it
        assert cost[-1] > cost[-2]
