"""The two tables every layer resolves names with: problem name -> class, env id -> problem.

``PROBLEMS`` maps a problem name to ``"module:Class"`` (imported on first use, so a broken
optional module cannot hide the rest); ``ENV_SPECS`` maps a registered environment id to its
problem name and default keyword arguments. Adding a problem is one module plus one line in each
table (or a call of ``register_problem`` / ``register_env`` from user code; see
``docs/adding-a-problem.md``). This module imports neither torch nor gymnasium, so
``import jfbgym`` can register the ids cheaply.
"""

from __future__ import annotations

import importlib
import inspect
from typing import TYPE_CHECKING, Any

from jfbgym.validation import known_keywords, require

if TYPE_CHECKING:  # pragma: no cover
    from .base import ControlProblem

PROBLEMS: dict[str, str] = {
    "QuadSwarm": "jfbgym.problems.quadswarm:QuadSwarm",
    "MultiBicycle": "jfbgym.problems.bicycle:MultiBicycle",
    "ConsumptionSavings": "jfbgym.problems.consumption:ConsumptionSavings",
    "LinearQuadratic": "jfbgym.problems.linear_quadratic:LinearQuadratic",
}

# env id -> (problem name, default problem keyword arguments)
ENV_SPECS: dict[str, tuple[str, dict]] = {
    "Quadrotor-v0": ("QuadSwarm", {"n_agents": 1}),
    "QuadSwarm-v0": ("QuadSwarm", {"n_agents": 6}),
    "MultiBicycle-v0": ("MultiBicycle", {"n_agents": 5}),
    "ConsumptionSavings-v0": ("ConsumptionSavings", {"n_agents": 10}),
    "LinearQuadratic-v0": ("LinearQuadratic", {}),
}


def register_problem(name: str, target: str | type) -> None:
    """Make ``make_problem(name)`` build ``target`` (a class, or ``"module:Class"``)."""
    require(isinstance(name, str) and name != "", "name", "a non-empty string", name)
    if isinstance(target, type):
        PROBLEMS[name] = f"{target.__module__}:{target.__qualname__}"
        _CLASSES[name] = target
    else:
        require(isinstance(target, str) and ":" in target, "target",
                "a class or 'module:Class'", target)
        PROBLEMS[name] = target
        _CLASSES.pop(name, None)


def register_env(env_id: str, problem: str, **defaults: Any) -> None:
    """Add an environment id for problem ``problem`` with default keyword arguments, and
    register it with Gymnasium when that is installed."""
    require(isinstance(env_id, str) and "-v" in env_id, "env_id", "an id like 'Name-v0'", env_id)
    require(problem in PROBLEMS, "problem", f"one of {sorted(PROBLEMS)}", problem)
    ENV_SPECS[env_id] = (problem, dict(defaults))
    register_with_gymnasium(env_id)


_CLASSES: dict[str, type] = {}


def problem_class(name: str) -> type[ControlProblem]:
    """The class registered under ``name``."""
    require(name in PROBLEMS, "name", f"one of {sorted(PROBLEMS)}", name)
    if name not in _CLASSES:
        _CLASSES[name] = load_class(PROBLEMS[name], "problem")
    return _CLASSES[name]


def problem_keywords(name: str) -> list[str]:
    """The keyword arguments ``make_problem(name, ...)`` accepts."""
    return [p for p in inspect.signature(problem_class(name)).parameters]


def make_problem(name: str, **kwargs: Any) -> ControlProblem:
    """Build a problem by name with the defaults of ``shared/problems.md``, any overridden
    (``dtype`` and ``device`` included). Unknown keywords raise ``ValueError`` listing the valid
    ones.

    >>> prob = make_problem("QuadSwarm", n_agents=6, dtype=torch.float64)
    """
    cls = problem_class(name)
    known_keywords(kwargs, problem_keywords(name), f"the {name} problem")
    return cls(**kwargs)


def strip_namespace(env_id: str) -> str:
    """``"jfbgym:QuadSwarm-v0"`` -> ``"QuadSwarm-v0"``."""
    require(isinstance(env_id, str), "env_id", "a string", env_id)
    return env_id.split(":", 1)[1] if env_id.startswith("jfbgym:") else env_id


def is_import_path(env_id: str) -> bool:
    """Whether ``env_id`` names a problem class by ``"module:Class"`` (after the optional
    ``jfbgym:`` namespace) rather than a registered id."""
    return ":" in strip_namespace(env_id)


def import_problem(path: str, name: str = "env_id") -> str:
    """Register the ``ControlProblem`` subclass at ``"module:Class"`` under that path as its
    problem name (imported now, so a missing module is named at once); returns the name."""
    if path not in _CLASSES:
        _CLASSES[path] = load_class(path, name)
        PROBLEMS[path] = path
    return path


def load_class(path: str, name: str) -> type[ControlProblem]:
    """The ``ControlProblem`` subclass at ``"module:Class"``; ``ValueError`` naming ``name``
    when the module cannot be imported or holds no such class."""
    module, _, cls = path.partition(":")
    require(module != "" and cls != "", name, "'module:Class'", path)
    if module == "__main__":
        raise ValueError(f"{name}: {path!r} was defined in a script (__main__), which another "
                         "process cannot import: move the class into a module and use "
                         "'module:Class'")
    try:
        target: Any = importlib.import_module(module)
    except ImportError as err:
        raise ValueError(f"{name}: cannot import module {module!r} of {path!r} ({err})") \
            from err
    for part in cls.split("."):
        target = getattr(target, part, None)
    from .base import ControlProblem

    require(isinstance(target, type) and issubclass(target, ControlProblem), name,
            f"a ControlProblem subclass at {path!r}", type(target).__name__)
    return target


def problem_kwargs(env_id: str, **overrides: Any) -> tuple[str, dict]:
    """The problem name and keyword arguments an env id stands for, ``overrides`` applied; an
    import path ``"module:Class"`` stands for that class with its own defaults."""
    env_id = strip_namespace(env_id)
    if is_import_path(env_id):
        return import_problem(env_id), dict(overrides)
    require(env_id in ENV_SPECS, "env_id", f"one of {sorted(ENV_SPECS)} or an import path "
            "'module:Class'", env_id)
    name, defaults = ENV_SPECS[env_id]
    return name, {**defaults, **overrides}


ENTRY_POINTS = "jfbgym.envs"  # entry-point group: env id = "module:Class" of a package


def register_entry_points() -> list[str]:
    """Register the env ids that installed packages declare in the ``jfbgym.envs``
    entry-point group (``MyProblem-v0 = "mypkg.problems:MyProblem"``), without importing them;
    returns the new ids."""
    from importlib.metadata import entry_points

    added = []
    for entry in entry_points(group=ENTRY_POINTS):
        if entry.name in ENV_SPECS or ":" not in entry.value:
            continue
        PROBLEMS.setdefault(entry.value, entry.value)
        ENV_SPECS[entry.name] = (entry.value, {})
        added.append(entry.name)
    return added


def problem_overrides(kwargs: Any, name: str = "problem_kwargs") -> dict:
    """Problem keywords from a user or a file, for a caller that sets ``dtype`` and ``device``
    itself (an env, an agent): a dict with string keys, neither of those two among them."""
    require(isinstance(kwargs, dict) and all(isinstance(k, str) for k in kwargs), name,
            "a dict of problem keywords", type(kwargs).__name__)
    for key in ("dtype", "device"):
        require(key not in kwargs, name, f"no {key!r} (the env's or agent's own {key} "
                "argument sets it)", sorted(kwargs))
    return dict(kwargs)


def problem_for_env(env_id: str, **overrides: Any) -> ControlProblem:
    """Build the problem behind an env id (defaults of the id, ``overrides`` applied)."""
    name, kwargs = problem_kwargs(env_id, **overrides)
    return make_problem(name, **kwargs)


def register_with_gymnasium(*env_ids: str) -> None:
    """Register ids (all of ``ENV_SPECS`` by default) with Gymnasium, if it is installed;
    ids already registered are left alone.

    No ``max_episode_steps``: an episode ends at t = T by itself (``terminated``), whatever
    ``n_steps`` a user passes to ``make``, so no time limit can cut it short unannounced.
    """
    try:
        import gymnasium
    except ImportError:  # the maths works without gymnasium
        return
    for env_id in env_ids or tuple(ENV_SPECS):
        if env_id in gymnasium.registry:
            continue
        gymnasium.register(id=env_id, entry_point="jfbgym.envs.control_env:ControlEnv",
                           vector_entry_point="jfbgym.envs.control_env:ControlVectorEnv",
                           kwargs={"env_id": env_id})
