"""Eight schools (Rubin 1981; Gelman et al., BDA3 Sec. 5.5) on an unconstrained space.

Data: ``y = (28, 8, -3, 7, -1, 1, 18, 12)``, ``sigma = (15, 10, 16, 11, 9, 11, 10, 18)``.
Model (as posteriordb's ``eight_schools_noncentered`` / ``_centered`` and Pyro's example):

.. math::

    \\mu \\sim \\mathcal N(0, 5^2),\\quad \\tau \\sim \\text{HalfCauchy}(5),\\quad
    \\theta_j \\sim \\mathcal N(\\mu, \\tau^2),\\quad y_j \\sim \\mathcal N(\\theta_j, \\sigma_j^2).

Unconstrained coordinates ``z = (mu, log tau, t_1, ..., t_8)`` (``dim = 10``):

* ``centered=True``: ``t_j = theta_j`` (a funnel in ``(log tau, theta)``);
* ``centered=False`` (default): ``t_j = theta_trans_j ~ N(0, 1)`` and
  ``theta_j = mu + tau * theta_trans_j``.

``log_prob(z)`` is the log joint density of the data and the parameters *in these
coordinates*: every prior and likelihood term keeps its normalizing constant and the
change of variables ``tau = exp(log tau)`` contributes its log-Jacobian ``+ log tau``.
So ``log_Z = log p(y)``, the marginal likelihood (unknown in closed form: ``None``; the
same number for both parameterizations).  Score: exact, analytic.
"""

from __future__ import annotations

import math

import torch

from .base import LOG_2PI, Target

__all__ = ["EightSchools", "EIGHT_SCHOOLS_Y", "EIGHT_SCHOOLS_SIGMA"]

EIGHT_SCHOOLS_Y = (28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0)
EIGHT_SCHOOLS_SIGMA = (15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0)
_MU_SCALE = 5.0
_TAU_SCALE = 5.0


class EightSchools(Target):
    """Posterior of the eight-schools hierarchical model in ``(mu, log tau, theta or theta_trans)``.

    Rubin (1981), "Estimation in parallel randomized experiments", Journal of Educational
    Statistics 6; Gelman et al. (2013), "Bayesian Data Analysis", 3rd ed., Sec. 5.5.

    Buffers ``y`` and ``sigma`` (shape ``(8,)``) fix dtype / device.  ``constrain(z)``
    returns ``{"mu", "tau", "theta"}`` (``theta`` derived for the non-centred form).
    """

    name = "eight_schools"

    y: torch.Tensor
    sigma: torch.Tensor

    def __init__(self, centered: bool = False) -> None:
        super().__init__(10, log_Z=None, name="eight_schools_centered" if centered else "eight_schools_noncentered")
        self.centered = bool(centered)
        self.register_buffer("y", torch.tensor(EIGHT_SCHOOLS_Y))
        self.register_buffer("sigma", torch.tensor(EIGHT_SCHOOLS_SIGMA))

    def constrain(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"mu": (...), "tau": (...), "theta": (..., 8)}`` from unconstrained ``z (..., 10)``."""
        z = self.check_input(z, "z")
        mu, tau, t = z[..., 0], torch.exp(z[..., 1]), z[..., 2:]
        theta = t if self.centered else mu.unsqueeze(-1) + tau.unsqueeze(-1) * t
        return {"mu": mu, "tau": tau, "theta": theta}

    def unconstrain(self, mu: torch.Tensor, tau: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`constrain`: ``(mu (...), tau (...), theta (..., 8)) -> z (..., 10)``."""
        t = theta if self.centered else (theta - mu.unsqueeze(-1)) / tau.unsqueeze(-1)
        return torch.cat([mu.unsqueeze(-1), torch.log(tau).unsqueeze(-1), t], dim=-1)

    def _log_prob(self, z: torch.Tensor) -> torch.Tensor:
        mu, log_tau, t = z[..., 0], z[..., 1], z[..., 2:]
        tau = torch.exp(log_tau)
        J = 8
        lp_mu = -0.5 * (mu / _MU_SCALE) ** 2 - math.log(_MU_SCALE) - 0.5 * LOG_2PI
        # HalfCauchy(5) density 2 / (pi * 5 * (1 + (tau/5)^2)), plus log-Jacobian log tau
        lp_tau = math.log(2 / (math.pi * _TAU_SCALE)) - torch.log1p((tau / _TAU_SCALE) ** 2) + log_tau
        if self.centered:
            theta = t
            lp_t = (-0.5 * ((t - mu.unsqueeze(-1)) / tau.unsqueeze(-1)) ** 2).sum(-1) - J * (log_tau + 0.5 * LOG_2PI)
        else:
            theta = mu.unsqueeze(-1) + tau.unsqueeze(-1) * t
            lp_t = -0.5 * (t * t).sum(-1) - J * 0.5 * LOG_2PI
        lik = (-0.5 * ((self.y - theta) / self.sigma) ** 2 - torch.log(self.sigma) - 0.5 * LOG_2PI).sum(-1)
        return lp_mu + lp_tau + lp_t + lik

    def _score(self, z: torch.Tensor) -> torch.Tensor:
        mu, log_tau, t = z[..., :1], z[..., 1:2], z[..., 2:]
        tau = torch.exp(log_tau)
        s2 = self.sigma**2
        d_tau_prior = -2 * tau * tau / (_TAU_SCALE**2 + tau * tau) + 1.0  # d/dlog tau of log HC + log tau
        if self.centered:
            r = (self.y - t) / s2  # d lik / d theta
            u = (t - mu) / tau**2
            g_mu = -mu / _MU_SCALE**2 + u.sum(-1, keepdim=True)
            g_lt = d_tau_prior + ((t - mu) ** 2).sum(-1, keepdim=True) / tau**2 - 8.0
            g_t = -u + r
        else:
            theta = mu + tau * t
            r = (self.y - theta) / s2
            g_mu = -mu / _MU_SCALE**2 + r.sum(-1, keepdim=True)
            g_lt = d_tau_prior + tau * (r * t).sum(-1, keepdim=True)
            g_t = -t + tau * r
        return torch.cat([g_mu, g_lt, g_t], dim=-1)

    def extra_repr(self) -> str:
        return f"centered={self.centered}, dim=10, log_Z=unknown"
