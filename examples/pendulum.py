"""A damped pendulum swung up to the top, with an implicit control cost: only the maths.

State z = (θ, ω), control u (a torque). The running cost exp(u²/2) − 1 makes the minimiser of
H = L + pᵀf the root of u·exp(u²/2) = −p_ω: no closed form the library knows of. Everything
else (derivatives, inner solve, prior, J*, envs, training) comes from these four methods.
"""

import torch

from jfbgym.problems.base import ControlProblem


class DampedPendulum(ControlProblem):
    name = "DampedPendulum"

    def __init__(self, damping=0.2, alpha_G=20.0, horizon=3.0, n_steps=60,
                 dtype=torch.float32, device="cpu"):
        self.damping, self.alpha_G = damping, alpha_G
        super().__init__(state_dim=2, control_dim=1, n_agents=1, horizon=horizon,
                         n_steps=n_steps, dtype=dtype, device=device)

    def dynamics(self, t, z, u):
        theta, omega = z[:, 0], z[:, 1]
        return torch.stack([omega, -torch.sin(theta) - self.damping * omega + u[:, 0]], dim=1)

    def running_cost(self, t, z, u):
        return torch.expm1(0.5 * u[:, 0] ** 2) + 0.1 * (1 + torch.cos(z[:, 0]))

    def terminal_cost(self, z):
        return self.alpha_G * ((1 + torch.cos(z[:, 0])) + 0.1 * z[:, 1] ** 2)

    def sample_initial_states(self, batch, generator=None):
        noise = torch.randn(batch, 2, generator=generator, dtype=torch.float64)
        return (0.2 * noise).to(dtype=self.dtype, device=self.device)
