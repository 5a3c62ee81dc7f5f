"""``jfbgym evaluate RUN`` (or ``--pretrained ENV_ID``): mean J ± 95% CI and the optimality gap
on held-out states."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", nargs="?", default=None,
                        help="a training run directory or a saved agent directory")
    parser.add_argument("--pretrained", default=None, metavar="NAME",
                        help="evaluate an agent shipped with jfbgym instead, e.g. QuadSwarm-v0")
    parser.add_argument("--episodes", type=int, default=100, help="held-out initial states")
    parser.add_argument("--seed", type=int, default=None,
                        help="held-out set seed (default: the fixed seed every table uses)")
    parser.add_argument("--no-openloop", action="store_true",
                        help="skip the open-loop optimum (and so the optimality gap)")
    parser.add_argument("--openloop-iters", type=int, default=100,
                        help="iterations per warm start of the open-loop optimum (stagewise "
                        "Newton; L-BFGS where its matrices do not fit)")


def main(args: argparse.Namespace) -> int:
    import torch

    from jfbgym.agents import JFBAgent, load_agent
    from jfbgym.baselines import references
    from jfbgym.evaluation import (
        HELD_OUT_SEED,
        Evaluation,
        evaluate,
        format_table,
        held_out_states,
        open_loop_reference,
    )
    from jfbgym.validation import require

    require((args.run_dir is None) != (args.pretrained is None), "run_dir",
            "a run directory or --pretrained NAME (one of them)", args.run_dir)
    if args.pretrained is not None:
        agent = JFBAgent.pretrained(args.pretrained)
    else:
        agent = load_agent(args.run_dir)
    problem = agent.problem
    seed = HELD_OUT_SEED if args.seed is None else args.seed
    x0 = held_out_states(problem, args.episodes, seed)
    policies = {"JFB" if agent.kind == "jfb" else "direct policy": agent, **references(problem)}
    rec = None
    if args.pretrained is not None:
        from jfbgym.agents.pretrained import record

        rec = record(args.pretrained)
    ref, optimum = None, "open-loop optimum"
    if rec is not None and seed == rec["held_out_seed"] and args.episodes <= rec["states"]:
        # the shipped agent's certified J* on these very states: no solve needed
        x0 = held_out_states(problem, rec["states"], seed)[:args.episodes]
        ref = torch.tensor(rec["J_star_per_state"], dtype=torch.float64)[:args.episodes]
        optimum = "open-loop optimum (recorded)"
    elif not args.no_openloop:
        ref = open_loop_reference(problem, x0, warm_starts=list(policies.values()),
                                  max_iters=args.openloop_iters).cost
    rows = [evaluate(p, problem, x0=x0, reference=ref, name=n) for n, p in policies.items()]
    if ref is not None:
        rows.append(Evaluation(optimum, ref, 0.0, float("nan")))
    print(f"{agent.env_id}: {x0.shape[0]} held-out states (seed {seed})")
    print(format_table(rows))
    if rec is not None:
        print(f"recorded when it was trained ({rec['states']} held-out states, seed "
              f"{rec['held_out_seed']}): J {rec['J']:.6g}, J* {rec['J_star']:.6g}, gap "
              f"{100 * rec['gap']:+.2f}%, {rec['iterations']} iterations in "
              f"{rec['train_cpu_seconds'] / 60:.1f} CPU-minutes on {rec['hardware']}; "
              f"J* {rec['J_star_certificate']}")
    return 0
