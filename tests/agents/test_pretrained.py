"""Every agent shipped in the package loads, beats the heuristic, and scores what its record says
on the held-out states it was scored on (``tools/release.py`` regenerates them)."""

import json

import pytest
import torch

from jfbgym.agents import JFBAgent
from jfbgym.agents.pretrained import SHIPPED, available, record
from jfbgym.baselines import references
from jfbgym.evaluation import held_out_states
from jfbgym.problems import problem_for_env

SHIPPED_NAMES = ("Quadrotor-v0", "QuadSwarm-v0", "MultiBicycle-v0", "ConsumptionSavings-v0",
                 "LinearQuadratic-v0")


def test_every_env_has_a_shipped_agent_within_the_size_budget() -> None:
    assert set(SHIPPED_NAMES) <= set(available())
    size = sum(p.stat().st_size for p in SHIPPED.rglob("*") if p.is_file())
    assert size < 5 * 2**20, size


@pytest.mark.parametrize("name", available())
def test_shipped_agent_matches_its_record_and_beats_the_heuristic(name: str) -> None:
    torch.set_num_threads(1)
    rec = record(name)
    agent = JFBAgent.pretrained(name)
    assert agent.env_id == rec["env_id"]
    x0 = held_out_states(problem_for_env(rec["env_id"], **rec["env_kwargs"]), rec["states"],
                         rec["held_out_seed"])
    with torch.no_grad():
        costs = agent.objective(x0, warn=False).double()
        heuristic = list(references(agent.problem).values())[-1]
        h_costs = agent.problem.rollout(heuristic.control, x0).cost.double()
    J, J_h = float(costs.mean()), float(h_costs.mean())
    assert J == pytest.approx(rec["J"], rel=1e-4, abs=1e-6)
    assert J_h == pytest.approx(rec["heuristic_J"], rel=1e-4, abs=1e-6)
    assert J < J_h
    gap = (J - rec["J_star"]) / abs(rec["J_star"])
    assert gap == pytest.approx(rec["gap"], rel=1e-2, abs=1e-5)
    assert gap >= -1e-6  # J* was refined from the agent's own controls, so J* <= J
    for key in ("seed", "commit", "train", "train_cpu_seconds", "hardware", "J_star_certificate"):
        assert key in rec


def test_unknown_name_lists_the_shipped_agents() -> None:
    with pytest.raises(ValueError, match="QuadSwarm-v0"):
        JFBAgent.pretrained("QuadSwarm-v9")


def test_saved_agent_round_trip_is_exact(tmp_path) -> None:
    agent = JFBAgent.pretrained("LinearQuadratic-v0")
    path = agent.save(tmp_path / "lq", {"note": "copy"})
    again = JFBAgent.load(path)
    assert json.loads((path / "agent.json").read_text())["record"] == {"note": "copy"}
    x0 = held_out_states(agent.problem, 4)
    with torch.no_grad():
        assert torch.equal(agent.objective(x0, warn=False), again.objective(x0, warn=False))


def test_the_shipped_set_agent_flies_any_number_of_drones() -> None:
    torch.set_num_threads(1)
    agent = JFBAgent.pretrained("QuadSwarm-v0-set")
    assert agent.network.config()["kind"] == "set"
    for n in (1, 20):
        moved = agent.transfer(n_agents=n)
        x0 = held_out_states(moved.problem, 4)
        with torch.no_grad():
            costs = moved.objective(x0, warn=False)
            heuristic = list(references(moved.problem).values())[-1]
            h_costs = moved.problem.rollout(heuristic.control, x0).cost
        assert bool(torch.isfinite(costs).all())
        assert float(costs.mean()) < 0.2 * float(h_costs.mean())  # measured: about 1/16
