"""``jfbgym render RUN``: a trajectory video of a trained policy (side by side with a
reference with ``--vs``)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", nargs="?", default=None,
                        help="a JFB run or saved-agent directory, or an SB3 baseline directory")
    parser.add_argument("--pretrained", default=None, metavar="NAME",
                        help="render an agent shipped with jfbgym instead, e.g. QuadSwarm-v0")
    parser.add_argument("--out", default=None, help="mp4 path (default videos/<run>.mp4)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial state")
    parser.add_argument("--stride", type=int, default=1, help="draw every stride-th step")
    parser.add_argument("--fps", type=int, default=None,
                        help="frames per second of the video (default: the library's)")
    parser.add_argument("--vs", default=None, choices=["zero", "heuristic"],
                        help="render side by side with a reference from the same state")


def main(args: argparse.Namespace) -> int:
    from jfbgym.baselines import references
    from jfbgym.render import FPS, policy_name, render_side_by_side, render_video
    from jfbgym.rollout import load_policy, resolve_problem
    from jfbgym.validation import require

    require((args.run_dir is None) != (args.pretrained is None), "run_dir",
            "a run directory or --pretrained NAME (one of them)", args.run_dir)
    if args.pretrained is not None:
        from jfbgym.agents import JFBAgent

        policy = JFBAgent.pretrained(args.pretrained)
        env_id, env_kwargs, stem = policy.env_id, policy.env_kwargs, args.pretrained
        name = f"JFB (shipped {args.pretrained})"
    else:
        policy, env_id, env_kwargs = load_policy(args.run_dir)
        stem, name = Path(args.run_dir).name, policy_name(policy)
    fps = FPS if args.fps is None else args.fps
    out = args.out or str(Path("videos") / f"{stem}.mp4")
    if args.vs is None:
        path = render_video(policy, env_id, out, args.seed, env_kwargs=env_kwargs,
                            stride=args.stride, fps=fps, name=name)
    else:
        _, problem = resolve_problem(env_id, env_kwargs)
        refs = list(references(problem).items())
        ref = refs[0] if args.vs == "zero" else refs[-1]
        require(args.vs == "zero" or len(refs) > 1, "--vs", "a problem with a heuristic",
                env_id)
        path = render_side_by_side({name: policy, ref[0]: ref[1]}, env_id,
                                   out, args.seed, env_kwargs=env_kwargs, stride=args.stride,
                                   fps=fps)
    print(f"wrote {path}")
    return 0
