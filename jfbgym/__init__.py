"""jfbgym: feedback controllers for high-dimensional optimal control with implicit Hamiltonians.

Importing the package registers the Gymnasium environments (see ``jfbgym.envs``), so
``gymnasium.make("jfbgym:QuadSwarm-v0")`` works without a prior import.
"""

__version__ = "0.1.0"


def _default_n_steps(env_id: str) -> int | None:
    """The n_steps an id runs by default (the episode length), from the problem's signature."""
    import inspect

    from jfbgym.envs.registry import ENV_SPECS
    from jfbgym.problems import problem_class

    name, defaults = ENV_SPECS[env_id]
    if "n_steps" in defaults:
        return int(defaults["n_steps"])
    try:
        cls = problem_class(name)
    except ImportError:  # a problem module that fails to import must not break the package
        return None
    return int(inspect.signature(cls).parameters["n_steps"].default)


def _register_envs() -> None:
    """Register every id of ``ENV_SPECS``; ``make`` keywords reach the problem constructor.

    ``max_episode_steps`` is the default ``n_steps``: a larger ``n_steps`` given to ``make`` needs
    ``max_episode_steps`` raised too (the envs themselves terminate at their own t = T).
    """
    import gymnasium

    from jfbgym.envs.registry import ENV_SPECS

    for env_id in ENV_SPECS:
        if env_id in gymnasium.registry:
            continue
        gymnasium.register(id=env_id, entry_point="jfbgym.envs.control_env:ControlEnv",
                           vector_entry_point="jfbgym.envs.control_env:ControlVectorEnv",
                           max_episode_steps=_default_n_steps(env_id), kwargs={"env_id": env_id})


_register_envs()
