"""Factories of every linear SDE (shared by the sde tests)."""

from __future__ import annotations

import torch

from fokker import sde

LINEAR_SDES = {
    "vp": lambda: sde.VPSDE(beta_min=0.1, beta_max=20.0),
    "vp_cosine": lambda: sde.VPSDE.cosine(),
    "subvp": lambda: sde.SubVPSDE(beta_min=0.1, beta_max=20.0),
    "ve": lambda: sde.VESDE(sigma_min=0.01, sigma_max=50.0),
    "ou": lambda: sde.OrnsteinUhlenbeck(theta=1.5, sigma=0.8, T=2.0),
    "brownian": lambda: sde.BrownianMotion(sigma=1.3, T=2.0),
    "schedule": lambda: sde.LinearSDE.from_schedule(
        lambda t: torch.cos(0.5 * torch.pi * t * 0.98), lambda t: torch.sin(0.5 * torch.pi * t * 0.98)
    ),
}
