"""The JFB agent: value network Φ_θ, implicit control layer, training and diagnostics."""

from .agent import InnerLog, JFBAgent
from .implicit import GRAD_MODES, SOLVERS, SolverOptions, control_layer
from .network import ValueNetwork

__all__ = ["GRAD_MODES", "SOLVERS", "InnerLog", "JFBAgent", "SolverOptions", "ValueNetwork",
           "control_layer"]
