"""jfbgym: feedback controllers for high-dimensional optimal control with implicit Hamiltonians.

Importing the package registers the Gymnasium environments (see ``jfbgym.envs``).
"""

__version__ = "0.1.0"
