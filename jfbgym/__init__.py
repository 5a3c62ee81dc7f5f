"""jfbgym: feedback controllers for high-dimensional optimal control with implicit Hamiltonians.

Importing the package registers the Gymnasium environment ids when Gymnasium is installed (a
table of strings: no torch import), so ``gymnasium.make("jfbgym:QuadSwarm-v0")`` works without a
prior import. The maths (``jfbgym.problems``) needs only torch.
"""

__version__ = "0.2.0"

from jfbgym.problems.registry import register_entry_points as _entry_points
from jfbgym.problems.registry import register_with_gymnasium as _register

_entry_points()  # ids that installed packages declare (group "jfbgym.envs")
_register()
