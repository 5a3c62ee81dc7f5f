"""The trained agents shipped inside the package, and how an agent is saved for shipping.

A saved agent is a directory of two files, neither of which can execute code when read:

    agent.json   the agent's config (env, problem, network, solver) and a ``record``: how it was
                 trained (settings, seed, commit, CPU time, hardware) and what it scores on the
                 held-out states (J, J*, gap, the heuristic's J)
    weights.pt   the network's tensors (``torch.load(..., weights_only=True)``)

``tools/release.py`` regenerates every shipped agent; ``tests/agents/test_pretrained.py`` checks each
against its record.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jfbgym.validation import require

AGENT_JSON = "agent.json"
WEIGHTS = "weights.pt"
SHIPPED = Path(__file__).resolve().parent.parent / "pretrained"


def available() -> list[str]:
    """Names of the shipped agents (env ids, plus a size suffix such as ``QuadSwarm-v0-N100``)."""
    if not SHIPPED.is_dir():
        return []
    return sorted(p.name for p in SHIPPED.iterdir() if (p / AGENT_JSON).is_file())


def shipped_path(name: str) -> Path:
    """The directory of shipped agent ``name``; ``ValueError`` listing the names otherwise."""
    names = available()
    require(isinstance(name, str) and name in names, "name",
            f"one of the shipped agents {names}", name)
    return SHIPPED / name


def is_saved_agent(path: str | Path) -> bool:
    """Whether ``path`` is a saved-agent directory (rather than a training run directory)."""
    return (Path(path) / AGENT_JSON).is_file()


def record(name: str) -> dict[str, Any]:
    """What shipped agent ``name`` scored when it was trained, and how it was trained."""
    from jfbgym.agents.checkpoint import read_json

    data = read_json(shipped_path(name) / AGENT_JSON)
    return dict(data.get("record", {})) if isinstance(data, dict) else {}
