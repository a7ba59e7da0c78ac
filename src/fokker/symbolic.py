"""Symbolic (sympy) derivations for linear SDEs: Prop. 1 marginals and the Fokker-Planck check.

* :func:`prop1` -- the moments of a linear SDE (Särkkä & Solin 2019, *Applied stochastic differential
  equations*, eqs. 6.2-6.3; seed 001 Proposition 1, eqs. 29-30): for ``dX = a(t) X dt + g(t) dW``,
  ``E[X_t | X_s = x] = exp(int_s^t a) x`` and
  ``Var = int_s^t exp(2 int_u^t a) g(u)^2 du``, integrated by sympy.
* :func:`schedule_coefficients` -- ``a = alpha'/alpha``, ``g^2 = -sigma^2 rho'`` (Kingma et al. 2021,
  *Variational diffusion models*, appendix A; seed 001 eq. 36).
* :func:`sde_coefficients` -- the symbolic ``a(t)``, ``g(t)^2`` of fokker's built-in linear SDEs
  (independent re-statements of the formulas, used by the tests to cross-check the classes).
* :func:`fokker_planck_residual_general` -- proves symbolically that the Gaussian transition
  density solves the Fokker-Planck equation (Särkkä & Solin 2019, sec. 5.2; seed 001 eq. 28) for
  *arbitrary* ``a(t)``, ``g(t)``:
  the residual of ``d_t p + d_x(a x p) - g^2/2 d_xx p`` simplifies to 0 once
  ``m' = a m`` and ``v' = 2 a v + g^2`` (the ODEs behind Prop. 1) are substituted.  The
  ``d``-dimensional density is a product of such 1-D factors, so this covers every ``d``.
* :func:`fokker_planck_residual` -- the same with the closed forms of :func:`prop1` plugged in
  (an expression to evaluate); :func:`prop1_ode_residuals` -- the moment ODEs checked symbolically.
* :func:`lambdify_prop1` -- numeric (numpy, float64) ``mean_coef(s, t)``, ``var(s, t)``.

sympy is imported lazily by ``fokker.symbolic`` only (``import fokker`` stays light).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import sympy as sp

__all__ = [
    "t",
    "s",
    "prop1",
    "schedule_coefficients",
    "sde_coefficients",
    "fokker_planck_residual_general",
    "fokker_planck_residual",
    "prop1_ode_residuals",
    "lambdify_prop1",
]

t, s = sp.symbols("t s", real=True, nonnegative=True)
_u, _v, _x, _xs = sp.symbols("u v x x_s", real=True)


@functools.lru_cache(maxsize=64)
def prop1(a: sp.Expr, g2: sp.Expr) -> tuple[sp.Expr, sp.Expr]:
    """``(exp(int_s^t a), int_s^t exp(2 int_u^t a) g^2(u) du)`` for expressions ``a(t)``, ``g2(t)`` in ``t``.

    Cached: the same coefficients are integrated once per process."""
    A_ut = sp.integrate(a.subs(t, _v), (_v, _u, t))
    mean = sp.simplify(sp.exp(sp.integrate(a.subs(t, _v), (_v, s, t))))
    var = sp.simplify(sp.integrate(sp.exp(2 * A_ut) * g2.subs(t, _u), (_u, s, t)))
    return mean, var


def schedule_coefficients(alpha: sp.Expr, sigma: sp.Expr) -> tuple[sp.Expr, sp.Expr]:
    """Seed 001 eq. 36: ``a = alpha'/alpha`` and ``g^2 = -sigma^2 rho'`` with ``rho = log(alpha^2/sigma^2)``."""
    rho = sp.log(alpha**2 / sigma**2)
    return sp.simplify(sp.diff(alpha, t) / alpha), sp.simplify(-(sigma**2) * sp.diff(rho, t))


def _num(v: float) -> sp.Expr:
    return sp.nsimplify(v, rational=True)


def sde_coefficients(sde) -> tuple[sp.Expr, sp.Expr]:
    """Symbolic ``(a(t), g(t)^2)`` of a built-in :class:`~fokker.sde.LinearSDE`.

    ``CosineVPSDE``: the unclipped branch ``t <= sde.t_star`` only.
    """
    from .sde import BrownianMotion, CosineVPSDE, OrnsteinUhlenbeck, SubVPSDE, VESDE, VPSDE

    if isinstance(sde, CosineVPSDE):
        c = sp.pi / (2 * (1 + _num(sde.s)))
        beta = 2 * c * sp.tan(c * (t + _num(sde.s)))
        return -beta / 2, beta
    if isinstance(sde, SubVPSDE):
        b0, b1, T = _num(sde.beta_min), _num(sde.beta_max), _num(sde.T)
        beta = b0 + (b1 - b0) * t / T
        B = b0 * t + (b1 - b0) * t**2 / (2 * T)
        return -beta / 2, beta * (1 - sp.exp(-2 * B))
    if type(sde) is VPSDE:
        b0, b1, T = _num(sde.beta_min), _num(sde.beta_max), _num(sde.T)
        beta = b0 + (b1 - b0) * t / T
        return -beta / 2, beta
    if isinstance(sde, VESDE):
        smin, smax, T = _num(sde.sigma_min), _num(sde.sigma_max), _num(sde.T)
        sigma2 = smin**2 * (smax / smin) ** (2 * t / T)
        return sp.Integer(0), sp.diff(sigma2, t)
    if isinstance(sde, OrnsteinUhlenbeck):
        return -_num(sde.theta), _num(sde.sigma_) ** 2
    if isinstance(sde, BrownianMotion):
        return sp.Integer(0), _num(sde.sigma_) ** 2
    raise TypeError(f"no symbolic coefficients for {type(sde).__name__}")


def fokker_planck_residual_general() -> sp.Expr:
    """Residual ``(d_t p + d_x(a x p) - g^2/2 d_xx p) / p`` of ``p = N(x; m(t) x_s, v(t))`` for
    arbitrary functions ``a(t)``, ``g(t)``, after substituting ``m' = a m``, ``v' = 2 a v + g^2``.

    Returns the simplified expression; it is ``0`` (the proof).
    """
    a, g = sp.Function("a")(t), sp.Function("g")(t)
    m, v = sp.Function("m")(t), sp.Function("v")(t)
    p = sp.exp(-((_x - m * _xs) ** 2) / (2 * v)) / sp.sqrt(2 * sp.pi * v)
    res = sp.diff(p, t) + sp.diff(a * _x * p, _x) - g**2 / 2 * sp.diff(p, _x, 2)
    res = res.subs({sp.Derivative(m, t): a * m, sp.Derivative(v, t): 2 * a * v + g**2})
    return sp.simplify(sp.expand(res / p))


def fokker_planck_residual(a: sp.Expr, g2: sp.Expr, simplify: bool = False) -> sp.Expr:
    """Residual (divided by ``p``) of the Fokker-Planck equation for the Gaussian transition density
    ``N(x; mean(s, t) x_s, var(s, t))`` built from the closed forms of :func:`prop1`, as an
    expression in ``x, x_s, s, t``.  It is identically 0 for a correct derivation; simplifying
    can be slow for long expressions (``simplify=False`` returns it raw, for evaluation)."""
    mean, var = prop1(a, g2)
    p = sp.exp(-((_x - mean * _xs) ** 2) / (2 * var)) / sp.sqrt(2 * sp.pi * var)
    res = (sp.diff(p, t) + sp.diff(a * _x * p, _x) - g2 / 2 * sp.diff(p, _x, 2)) / p
    return sp.simplify(res) if simplify else res


def prop1_ode_residuals(a: sp.Expr, g2: sp.Expr) -> tuple[sp.Expr, sp.Expr]:
    """``(d_t m - a m, d_t v - 2 a v - g^2)`` for the closed forms ``m, v`` of :func:`prop1`,
    simplified: both are 0 exactly when the closed forms solve the moment ODEs (with
    ``m(s) = 1``, ``v(s) = 0``), which by :func:`fokker_planck_residual_general` is equivalent to
    the Gaussian solving the Fokker-Planck equation."""
    mean, var = prop1(a, g2)
    return sp.simplify(sp.diff(mean, t) - a * mean), sp.simplify(sp.diff(var, t) - 2 * a * var - g2)


def lambdify_prop1(a: sp.Expr, g2: sp.Expr) -> tuple[Callable[..., np.ndarray], Callable[..., np.ndarray]]:
    """Numeric ``mean_coef(s, t)`` and ``var(s, t)`` (numpy float64) from :func:`prop1`."""
    mean, var = prop1(a, g2)
    return sp.lambdify((s, t), mean, "numpy"), sp.lambdify((s, t), var, "numpy")
