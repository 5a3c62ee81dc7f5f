"""``TrainConfig``: every setting of a training run, with its help text, and its checks.

Torch-free on purpose: the command line builds its parser from these fields and rejects bad
values before anything heavy is imported (``jfbgym train --help`` answers at once).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from jfbgym.validation import (
    MAX_DEPTH,
    MAX_LR,
    MAX_WIDTH,
    finite_float,
    integer,
    one_of,
    optional,
    output_dir,
    positive_float,
    positive_int,
    require,
    seed,
)

# The registries' names, for argument checks without torch (the registries in
# ``implicit.py`` and ``agent.py`` are keyed by exactly these; a test keeps them in step).
GRAD_MODE_NAMES = ("jfb", "unrolled", "implicit", "newton-jfb")
SOLVER_NAMES = ("newton", "gradient")
DTYPE_NAMES = ("float32", "float64")
RESUME = ("never", "always", "if-present")
SCHEDULES = ("cosine", "plateau", "constant")
PRIORS = ("auto", "problem", "local", "none")
NORMALISE = ("auto", "on", "off")
AGENT_KINDS = ("jfb", "direct")
NETWORKS = ("mlp", "set")
DEFAULT_LR = 1e-2
LOCAL_PRIOR_LR = 1e-3
DIRECT_GRAD_CLIP = 1.0
DEFAULT_ITERS = 500
MAX_PRIOR_BRANCHES = 64
MAX_COUNT = 2**31 - 1  # iterations, batches, periods: a C int, as torch's sizes need


@dataclass(frozen=True)
class NetworkConfig:
    """The network an agent learns: ``kind`` ``mlp`` (over the flat state) or ``set`` (one
    network per agent with a pooled ``context``: the same weights at any number of agents),
    ``width``, ``depth`` (opening layer + ResNet layers for the value network; hidden layers for
    the direct policy) and ``rank`` of the value network's quadratic term."""

    kind: str = "mlp"
    width: int = 96
    depth: int = 3
    rank: int = 10
    context: int = 16

    def __post_init__(self) -> None:
        one_of(self.kind, "network", NETWORKS)
        for name in ("width", "rank", "context"):
            integer(getattr(self, name), name, 1, MAX_WIDTH)
        integer(self.depth, "depth", 1, MAX_DEPTH)


@dataclass(frozen=True)
class PriorConfig:
    """The value prior the network corrects and the input normalisation: ``kind`` (``auto``:
    the problem's own ``value_prior`` where it has one, else ``local``; ``problem``, ``local``,
    ``none``), the most ``branches`` a local prior takes the least of, and ``normalise``
    (``auto``, ``on``, ``off``)."""

    kind: str = "auto"
    branches: int = 4
    normalise: str = "auto"

    def __post_init__(self) -> None:
        one_of(self.kind, "prior", PRIORS)
        integer(self.branches, "prior_branches", 1, MAX_PRIOR_BRANCHES)
        one_of(self.normalise, "normalise", NORMALISE)


DEFAULT_NETWORK, DEFAULT_PRIOR = NetworkConfig(), PriorConfig()  # (frozen: safe to share)


def arg(default: Any, help: str, **kwargs: Any) -> Any:
    """A dataclass field with an immutable default and its command-line help text."""
    return field(default=default, metadata={"help": help}, **kwargs)


@dataclass
class TrainConfig:
    """Every setting of a training run; each field is a CLI flag (``--field-name``)."""

    env_id: str = arg("QuadSwarm-v0", "registered env id, e.g. QuadSwarm-v0")
    n_agents: int | None = arg(None, "problem size override (default: the env id's)")
    agent: str = arg("jfb", "what is trained: jfb (value network + implicit control layer) or "
                     "direct (a policy network u = pi(t, z) trained through the same "
                     "differentiable rollout; the grad, solver, prior and penalty settings are "
                     "JFB's and must stay at their defaults)")
    problem_kwargs: dict = field(default_factory=dict, metadata={
        "help": "further problem overrides as JSON, e.g. '{\"alpha_G\": 500}'"})
    grad: str = arg("jfb", "gradient through the inner solve: " + ", ".join(GRAD_MODE_NAMES))
    solver: str = arg("newton", "inner solver: newton (the problem's own solve: closed form "
                      "or damped Newton) or gradient (the papers' iteration T)")
    alpha: float | None = arg(None, "step of T(u) = u - alpha grad_u H (default: 1/curvature)")
    inner_iters: int = arg(200, "max inner iterations per time step")
    inner_tol: float | None = arg(None, "inner relative residual (default 1e-5 float32, "
                                  "1e-8 float64)")
    prior: str = arg(PriorConfig.kind, "value prior the network corrects: auto (the problem's own "
                     "value_prior if it has one, else local), problem, local (the second-order "
                     "expansion of the value around optimal trajectories from the mean initial "
                     "state), none")
    prior_branches: int = arg(PriorConfig.branches, "most branches (locally optimal ways to fly) the local prior "
                              "takes the least of; 1: one expansion from the mean initial state")
    normalise: str = arg(PriorConfig.normalise, "normalise the network's inputs by the states the initial "
                         "policy visits: on, off, or auto (on, except over the problem's own "
                         "value prior, whose relative correction is already in natural units)")
    costate_weight: float = arg(0.0, "weight of the costate-matching penalty: grad Phi against "
                                "the rollout's discrete adjoint (relative squared error)")
    hjb_weight: float = arg(0.0, "weight of the HJB-residual penalty along the rollouts")
    terminal_weight: float = arg(0.0, "weight of the terminal penalty (Phi - G and its gradient "
                                 "at t = T)")
    iters: int | None = arg(None, f"iteration budget (default: {DEFAULT_ITERS} when no time "
                            "budget is given, else no cap, so --cpu-minutes or --max-minutes "
                            "binds; given with a time budget, whichever comes first)")
    cpu_minutes: float | None = arg(None, "budget in CPU minutes of this process over the whole "
                                    "run, resumes included: the comparable unit on a shared "
                                    "machine")
    max_minutes: float | None = arg(None, "wall-clock limit of this call")
    batch: int = arg(50, "initial states drawn from rho per iteration")
    val_batch: int = arg(100, "fixed held-out validation states")
    val_every: int = arg(10, "validate every this many iterations")
    lr: float | None = arg(None, "Adam learning rate (peak, after warm-up); default by prior: "
                           "1e-3 over the local prior (the largest rate that never failed to "
                           "improve on it), 1e-2 otherwise")
    grad_clip: float | None = arg(None, "clip the gradient's global norm to this; default by "
                                  "agent: 1 for direct (it diverges without), none for jfb")
    schedule: str = arg("cosine", "learning-rate schedule: cosine (to zero at the end of the "
                        "budget), plateau (halve when validation stalls), constant")
    warmup: int = arg(20, "iterations of linear learning-rate warm-up")
    lr_patience: int = arg(10, "plateau schedule: validations without improvement before "
                           "halving")
    blowup: float = arg(10.0, "a validation cost above prev + blowup*|prev| (or non-finite) "
                        "undoes the step and halves the learning rate")
    width: int = arg(NetworkConfig.width, "value network width")
    depth: int = arg(NetworkConfig.depth, "value network depth (opening layer + ResNet layers)")
    network: str = arg(NetworkConfig.kind, "value network: mlp (over the flat state) or set (one network per "
                       "agent with a pooled context: the same weights at any number of agents)")
    context: int = arg(NetworkConfig.context, "set network: size of the pooled context")
    rank: int = arg(NetworkConfig.rank, "rank of the quadratic term of the value network")
    recompute: bool = arg(False, "keep only each time step's state and control, and recompute "
                          "its value-network graph in the backward pass (activation "
                          "checkpointing): memory of one step instead of all nt, for swarms "
                          "of thousands (bench/scale.py)")
    compile: bool = arg(False, "run the costate (value network and prior) through "
                        "torch.compile: cheaper steps after a first one spent compiling "
                        "(bench/scale.py --compile off on); stays eager, with a warning, where "
                        "compilation fails")
    seed: int = arg(0, "seed of weights, minibatches and validation states")
    dtype: str = arg("float32", "float32 or float64")
    device: str = arg("cpu", "torch device, e.g. cpu or cuda")
    out: str = arg("runs/jfb", "run directory (config, checkpoints, logs)")
    checkpoint_every: int = arg(50, "checkpoint every this many iterations")
    resume: str = arg("never", "continue a run in --out: always (fail if there is none), "
                      "if-present, or never (start over)")
    tensorboard: bool = arg(False, "also log to TensorBoard in OUT/tb (needs tensorboard)")

    def __post_init__(self) -> None:
        if isinstance(self.resume, bool):  # resume=True reads naturally from Python
            self.resume = "always" if self.resume else "never"
        if isinstance(self.normalise, bool):
            self.normalise = "on" if self.normalise else "off"

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad setting."""
        require(isinstance(self.env_id, str) and self.env_id != "", "env_id",
                "a registered env id", self.env_id)
        optional(positive_int, self.n_agents, "n_agents")
        require(isinstance(self.problem_kwargs, dict), "problem_kwargs", "a dict (JSON object)",
                self.problem_kwargs)
        for key in ("dtype", "device"):  # set by their own settings
            require(key not in self.problem_kwargs, "problem_kwargs",
                    f"no {key!r} (set it with its own setting, --{key})",
                    sorted(self.problem_kwargs))
        one_of(self.agent, "agent", AGENT_KINDS)
        integer(self.depth, "depth", 2, MAX_DEPTH)  # (the value network needs two layers)
        self.network_config()  # the network's and the prior's settings check themselves
        self.prior_config()
        one_of(self.grad, "grad", GRAD_MODE_NAMES)
        one_of(self.solver, "solver", SOLVER_NAMES)
        require(not (self.grad == "unrolled" and self.solver != "gradient"), "solver",
                "'gradient' with grad='unrolled' (it differentiates the gradient iterations)",
                self.solver)
        optional(finite_float, self.alpha, "alpha", 0.0, True)
        optional(finite_float, self.inner_tol, "inner_tol", 0.0)
        one_of(self.dtype, "dtype", DTYPE_NAMES)
        one_of(self.schedule, "schedule", SCHEDULES)
        one_of(self.resume, "resume", RESUME)
        optional(integer, self.iters, "iters", 1, MAX_COUNT)
        for name in ("batch", "val_batch", "val_every", "checkpoint_every", "inner_iters",
                     "lr_patience"):
            integer(getattr(self, name), name, 1, MAX_COUNT)
        integer(self.warmup, "warmup", 0, MAX_COUNT)
        seed(self.seed)
        optional(finite_float, self.lr, "lr", 0.0, True, MAX_LR)
        optional(positive_float, self.grad_clip, "grad_clip")
        for name in ("costate_weight", "hjb_weight", "terminal_weight"):
            finite_float(getattr(self, name), name, 0.0)
        require(not (self.hjb_weight and self.prior == "problem"), "hjb_weight",
                "0 with prior='problem' (that prior has no time derivative)", self.hjb_weight)
        if self.agent == "direct":
            jfb_only = {"grad": "jfb", "solver": "newton", "alpha": None,
                        "prior": PriorConfig.kind, "prior_branches": PriorConfig.branches,
                        "network": NetworkConfig.kind, "recompute": False, "compile": False,
                        "costate_weight": 0.0, "hjb_weight": 0.0, "terminal_weight": 0.0}
            for name, default in jfb_only.items():
                require(getattr(self, name) == default, name,
                        f"{default!r} with agent='direct' (a JFB setting)", getattr(self, name))
        positive_float(self.blowup, "blowup")
        optional(positive_float, self.cpu_minutes, "cpu_minutes")
        optional(positive_float, self.max_minutes, "max_minutes")
        require(isinstance(self.device, str) and self.device != "", "device",
                "a torch device name such as 'cpu'", self.device)
        for name in ("tensorboard", "recompute", "compile"):
            require(isinstance(getattr(self, name), bool), name, "True or False",
                    getattr(self, name))
        require(not (self.recompute and self.grad == "unrolled"), "recompute",
                "False with grad='unrolled' (its graph runs through every step's warm start)",
                self.recompute)
        output_dir(self.out, "out")

    def network_config(self) -> NetworkConfig:
        """The network settings of this run, as one object."""
        return NetworkConfig(self.network, self.width, self.depth, self.rank, self.context)

    def prior_config(self) -> PriorConfig:
        """The prior and normalisation settings of this run, as one object."""
        return PriorConfig(self.prior, self.prior_branches, self.normalise)

    def env_kwargs(self) -> dict:
        kwargs = dict(self.problem_kwargs)
        if self.n_agents is not None:
            kwargs["n_agents"] = self.n_agents
        return kwargs

    def penalty_weights(self) -> dict[str, float]:
        """The value penalties switched on, by name (``jfbgym.agents.losses``)."""
        weights = {"costate": self.costate_weight, "hjb": self.hjb_weight,
                   "terminal": self.terminal_weight}
        return {k: v for k, v in weights.items() if v > 0}

    def learning_rate(self, prior: str) -> float:
        """The peak learning rate for a run whose resolved prior is ``prior``."""
        if self.lr is not None:
            return self.lr
        return LOCAL_PRIOR_LR if prior == "local" else DEFAULT_LR

    def gradient_clip(self) -> float | None:
        """The gradient-norm clip of this run (``grad_clip``, else the agent kind's default)."""
        if self.grad_clip is not None:
            return self.grad_clip
        return DIRECT_GRAD_CLIP if self.agent == "direct" else None

    def iteration_budget(self) -> int | None:
        """The iteration cap: ``iters``, else ``DEFAULT_ITERS`` for a run with no time budget,
        else none (a time budget that a default cap cut short would silently not bind)."""
        if self.iters is not None:
            return self.iters
        return DEFAULT_ITERS if self.cpu_minutes is None and self.max_minutes is None else None

    def budget_seconds(self) -> float | None:
        """The CPU-time budget in seconds (None: iterations only)."""
        return None if self.cpu_minutes is None else 60.0 * self.cpu_minutes

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """A config from saved JSON; unknown keys (an older or newer version) are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        require(not unknown, "config", f"keys among {sorted(names)}", unknown)
        return cls(**values)
