"""Exact log-densities of the 2-D toy data sets (for structure-aware validation metrics).

Each toy of :mod:`fokker.datasets.toy` is a known distribution, so a generated sample can be
scored under the *true* density: held-out log-likelihood, the fraction of samples in regions
the data almost never visit, and a KL estimate ``E_p[log p - log q]`` of a fitted density.

* ``eight_gaussians``: the equal-weight mixture of ``N(c_k / sqrt 2, (0.5 / sqrt 2)^2 I)``,
  ``c_k = 4 (cos k pi/4, sin k pi/4)``.
* ``rings``: for each radius ``R`` (equal weights), a uniform angle plus ``N(0, s^2 I)`` noise has
  the density ``exp(-(r^2 + R^2)/(2 s^2)) I_0(r R / s^2) / (2 pi s^2)`` at radius ``r``
  (the angular average of a Gaussian: Abramowitz & Stegun 1964, eq. 9.6.16), computed with the
  exponentially scaled Bessel function for stability.
* ``two_moons``: each point is ``2 (m(t) - (1/2, 1/4)) + N(0, 0.2^2 I)`` with ``t ~ U(0, pi)`` on
  one of the two half circles ``m``: the density is the average over ``t`` of the Gaussian,
  computed by the composite Simpson rule on 601 nodes (the integrand's width in ``t`` is about
  0.1, twenty node spacings: the rule's relative error is below 1e-10).
* ``swiss_roll``: ``(t cos t, t sin t)/5 + N(0, 0.2^2 I)`` with ``t ~ U(1.5 pi, 4.5 pi)``, by the
  same quadrature.
* ``checkerboard``: uniform (density 1/32) on its eight squares of side 2.

``pinwheel`` has no tractable density here and raises.

:func:`toy_components` gives the mixture components of the eight Gaussians, the rings and the two
moons (each component's exact log-density and the weights), which say which mode a point belongs
to (:func:`fokker.metrics.component_coverage`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch

from .._args import check_last_dim, check_tensor
from ..errors import ParameterError

__all__ = ["toy_log_prob", "toy_components", "ToyComponents", "TOY_DENSITIES"]

_LOG_2PI = math.log(2 * math.pi)


def _gauss_mixture_1d_curve(
    x: torch.Tensor, curve: Callable[[torch.Tensor], torch.Tensor], lo: float, hi: float, std: float, nodes: int = 601
) -> torch.Tensor:
    """``log (1/(hi-lo)) int_lo^hi N(x; curve(t), std^2 I) dt`` by Simpson's rule; ``x`` (..., 2)."""
    t = torch.linspace(lo, hi, nodes, dtype=torch.float64, device=x.device)
    w = torch.ones(nodes, dtype=torch.float64, device=x.device)
    w[1:-1:2], w[2:-1:2] = 4.0, 2.0
    log_w = torch.log(w * (hi - lo) / (3 * (nodes - 1)) / (hi - lo))
    c = curve(t)  # (nodes, 2)
    flat = x.to(torch.float64).reshape(-1, 2)
    out = torch.empty(flat.shape[0], dtype=torch.float64, device=x.device)
    chunk = max(1, 2**22 // nodes)  # bounds the (chunk, nodes) temporaries to ~32 MB
    for i in range(0, flat.shape[0], chunk):
        d2 = torch.cdist(flat[i : i + chunk], c, compute_mode="donot_use_mm_for_euclid_dist") ** 2
        out[i : i + chunk] = torch.logsumexp(-0.5 * d2 / std**2 + log_w, -1)
    return (out - 2 * math.log(std) - _LOG_2PI).reshape(x.shape[:-1]).to(x.dtype)


def _moon_components(x: torch.Tensor) -> torch.Tensor:
    """``log p_k(x)`` of the upper (k = 0) and the lower (k = 1) moon: ``(..., 2)``."""
    shift = torch.tensor([1.0, 0.5], dtype=torch.float64, device=x.device)

    def upper(t: torch.Tensor) -> torch.Tensor:
        return 2 * torch.stack([torch.cos(t), torch.sin(t)], -1) - shift

    def lower(t: torch.Tensor) -> torch.Tensor:
        return 2 * torch.stack([1 - torch.cos(t), 0.5 - torch.sin(t)], -1) - shift

    a = _gauss_mixture_1d_curve(x, upper, 0.0, math.pi, 0.2)
    b = _gauss_mixture_1d_curve(x, lower, 0.0, math.pi, 0.2)
    return torch.stack([a, b], -1)


def _swiss_roll(x: torch.Tensor) -> torch.Tensor:
    def curve(t: torch.Tensor) -> torch.Tensor:
        return torch.stack([t * torch.cos(t), t * torch.sin(t)], -1) / 5

    return _gauss_mixture_1d_curve(x, curve, 1.5 * math.pi, 4.5 * math.pi, 0.2, nodes=1801)


def _gaussian_components(x: torch.Tensor) -> torch.Tensor:
    """``log N(x; c_k / sqrt 2, (0.5 / sqrt 2)^2 I)`` of the eight Gaussians: ``(..., 8)``."""
    ang = torch.arange(8, dtype=torch.float64, device=x.device) * math.pi / 4
    c = 4 * torch.stack([torch.cos(ang), torch.sin(ang)], -1) / math.sqrt(2)
    s = 0.5 / math.sqrt(2)
    d2 = ((x.to(torch.float64).unsqueeze(-2) - c) ** 2).sum(-1)
    return (-0.5 * d2 / s**2 - 2 * math.log(s) - _LOG_2PI).to(x.dtype)


def _ring_components(x: torch.Tensor) -> torch.Tensor:
    """``log p_k(x)`` of the rings of radii 3, 2.25, 1.5, 0.75 (Bessel form, module docstring): ``(..., 4)``."""
    radii = 3 * torch.tensor([1.0, 0.75, 0.5, 0.25], dtype=torch.float64, device=x.device)
    s = 0.08
    r = x.to(torch.float64).norm(dim=-1, keepdim=True)  # (..., 1)
    z = r * radii / s**2
    # log I0(z) = log i0e(z) + z
    log_p = -(r * r + radii * radii) / (2 * s**2) + torch.log(torch.special.i0e(z)) + z - _LOG_2PI - 2 * math.log(s)
    return log_p.to(x.dtype)


def _checkerboard(x: torch.Tensor) -> torch.Tensor:
    inside = (x.abs() <= 4).all(-1)
    cell = torch.floor(x[..., 0] / 2) + torch.floor(x[..., 1] / 2)
    on = inside & (torch.remainder(cell, 2) == 0)
    return torch.where(on, torch.full_like(x[..., 0], -math.log(32.0)), torch.full_like(x[..., 0], -math.inf))


class ToyComponents(NamedTuple):
    """The mixture structure ``p(x) = sum_k w_k p_k(x)`` of a toy data set.

    The toys are those of FFJORD (Grathwohl et al. 2019); the most probable component of a point is
    the mode it is assigned to by the entropic mode coverage (Blessing et al. 2024, "Beyond ELBOs").

    Attributes:
        log_prob: ``x (..., 2) -> (..., K)``, the normalised log-density ``log p_k(x)`` of each
            component (exact, computed as in :func:`toy_log_prob`).
        weights: ``(K,)`` float64 mixture weights ``w_k`` (they sum to 1).
    """

    log_prob: Callable[[torch.Tensor], torch.Tensor]
    weights: torch.Tensor


#: toy -> (component log-densities, number of components); the components have equal weights
_COMPONENTS: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], int]] = {
    "eight_gaussians": (_gaussian_components, 8),
    "rings": (_ring_components, 4),
    "two_moons": (_moon_components, 2),
}


def _mixture(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    fn, k = _COMPONENTS[name]

    def log_prob(x: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(fn(x), -1) - math.log(k)

    return log_prob


TOY_DENSITIES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "two_moons": _mixture("two_moons"),
    "eight_gaussians": _mixture("eight_gaussians"),
    "checkerboard": _checkerboard,
    "rings": _mixture("rings"),
    "swiss_roll": _swiss_roll,
}


def toy_log_prob(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The exact ``log p(x)`` of the toy data set ``name``: a function ``(..., 2) -> (...)``.

    Raises :class:`~fokker.errors.ParameterError` for a name without a tractable density.

    Example:
        >>> import torch
        >>> log_p = toy_log_prob("eight_gaussians")
        >>> log_p(torch.zeros(3, 2)).shape
        torch.Size([3])
    """
    if name not in TOY_DENSITIES:
        raise ParameterError(
            f"no exact density for toy data set {name!r}; available: {sorted(TOY_DENSITIES)}"
        )
    fn = TOY_DENSITIES[name]

    def log_prob(x: torch.Tensor) -> torch.Tensor:
        check_tensor(x, "x")
        check_last_dim(x, 2, "x")
        return fn(x)

    log_prob.__doc__ = f"Exact log-density of the {name} toy data set."
    return log_prob


def toy_components(name: str) -> ToyComponents:
    """The mixture components of the toy data set ``name``: eight Gaussians (8), rings (4, outermost
    first), two moons (2, upper first), each of weight ``1/K`` as the samplers of
    :mod:`fokker.datasets.toy` draw them.

    ``toy_log_prob(name)(x) = logsumexp_k(log w_k + log p_k(x))``.  The most probable component of
    a point, ``argmax_k log w_k + log p_k(x)``, says which mode it belongs to (for
    :func:`fokker.metrics.component_coverage`).  Raises :class:`~fokker.errors.ParameterError` for a
    toy without a component structure here.

    Example:
        >>> import torch
        >>> comps = toy_components("rings")
        >>> comps.log_prob(torch.tensor([[3.0, 0.0]])).argmax(-1), comps.weights.shape
        (tensor([0]), torch.Size([4]))
    """
    if name not in _COMPONENTS:
        raise ParameterError(f"no component structure for toy data set {name!r}; available: {sorted(_COMPONENTS)}")
    fn, k = _COMPONENTS[name]

    def log_prob(x: torch.Tensor) -> torch.Tensor:
        check_tensor(x, "x")
        check_last_dim(x, 2, "x")
        return fn(x)

    log_prob.__doc__ = f"Exact log-densities of the {k} components of the {name} toy data set: (..., 2) -> (..., {k})."
    return ToyComponents(log_prob, torch.full((k,), 1.0 / k, dtype=torch.float64))
