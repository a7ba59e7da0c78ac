"""fokker.symbolic: the general Fokker-Planck proof and the Prop. 1 derivations."""

from __future__ import annotations

import math

import pytest
import sympy as sp
import torch

from fokker import sde, symbolic
from fokker.tolerances import tolerance


def test_fokker_planck_general_proof() -> None:
    assert symbolic.fokker_planck_residual_general() == 0


@pytest.mark.parametrize(
    "obj", [sde.VPSDE(), sde.VESDE(), sde.OrnsteinUhlenbeck(theta=2.0, sigma=0.5), sde.BrownianMotion(sigma=2.0)],
    ids=["vp", "ve", "ou", "brownian"],
)
def test_prop1_moment_odes_symbolically(obj) -> None:
    a, g2 = symbolic.sde_coefficients(obj)
    assert symbolic.prop1_ode_residuals(a, g2) == (0, 0)


@pytest.mark.parametrize("obj", [sde.VPSDE(), sde.SubVPSDE(), sde.VESDE()], ids=["vp", "subvp", "ve"])
def test_fokker_planck_residual_vanishes_numerically(obj) -> None:
    a, g2 = symbolic.sde_coefficients(obj)
    res = symbolic.fokker_planck_residual(a, g2)
    f = sp.lambdify(sp.symbols("x x_s s t", real=True), res)
    for x, xs, s_, t_ in [(0.3, -0.5, 0.1, 0.7), (2.0, 1.0, 0.0, 0.4), (-1.0, 0.2, 0.5, 0.9)]:
        assert abs(f(x, xs, s_, t_)) < 1e-8


def test_schedule_coefficients_of_vp_schedule() -> None:
    """eq. 36 applied to the VP schedule recovers a = -beta/2, g^2 = beta."""
    t = symbolic.t
    B = t / 10 + sp.Rational(199, 20) * t**2
    a, g2 = symbolic.schedule_coefficients(sp.exp(-B / 2), sp.sqrt(1 - sp.exp(-B)))
    beta = sp.diff(B, t)
    assert sp.simplify(a + beta / 2) == 0
    assert sp.simplify(g2 - beta) == 0
    mean, var = symbolic.lambdify_prop1(a, g2)
    vp = sde.VPSDE()
    assert math.isclose(float(mean(0.0, 0.5)), float(vp.alpha(0.5)), rel_tol=tolerance(torch.float64, loose=True).rtol)
