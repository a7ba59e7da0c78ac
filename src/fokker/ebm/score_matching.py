"""Score-matching objectives for unnormalized densities (Hyvarinen 2005; Song et al. 2019; Vincent 2011; seed 002 eqs. 21-23).

All three are per-point functions of a ``log_prob`` callable (for an EBM,
``log_prob = -E``; the normalizer drops out because only ``s = grad_x log p``
enters).  They return one value per point, shape ``(...)`` for ``x`` of shape
``(..., d)``; the training loss is their mean.  Gradients flow to the
parameters of ``log_prob`` (the graph is built with ``create_graph=True``).

* **exact** (Hyvarinen 2005; seed 002 eq. 21, last line):

  .. math:: J(x) = \\tfrac12 \\|s_\\theta(x)\\|^2 + \\operatorname{tr} \\nabla_x s_\\theta(x),

  with ``E_p[J] = D_F(p || p_theta) - 1/2 E_p ||grad log p||^2`` (Fisher
  divergence up to a constant of the data).  The trace of the Hessian of
  ``log p`` is computed exactly by ``d`` autograd passes.

* **sliced** (Song et al. 2019; seed 002 eq. 23 after the same integration by parts):

  .. math:: J_v(x) = \\tfrac12 (v^\\top s_\\theta(x))^2 + v^\\top \\nabla_x s_\\theta(x)\\, v,

  or with ``variance_reduction`` the first term replaced by its expectation
  ``1/2 ||s||^2``.  For projections with ``E[v v^T] = I`` (Rademacher or
  standard normal) ``E_v[J_v(x)] = J(x)``: an unbiased estimate with one
  Hessian-vector product per projection.

* **denoising** (Vincent 2011; seed 002 eq. 22 with ``q(x~|x) = N(x, sigma^2 I)``):

  .. math:: J_\\sigma(x, \\varepsilon) = \\tfrac12 \\| s_\\theta(x + \\sigma\\varepsilon) + \\varepsilon/\\sigma \\|^2 .

  By Stein's lemma, exactly ``E[J_sigma] = E_{q_sigma}[J] + d / (2 sigma^2)``
  where ``q_sigma = p * N(0, sigma^2 I)``: denoising SM is exact SM on the
  noised data plus the known constant :func:`denoising_constant`; it tends to
  exact SM as ``sigma -> 0`` (its variance grows like ``d / sigma^4``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .. import _random
from .._args import check_int, check_positive
from ..errors import ParameterError, ShapeError

LogProbFn = Callable[[torch.Tensor], torch.Tensor]


def _score(log_prob: LogProbFn, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x with grad, s(x))`` with the graph kept for second derivatives."""
    xg = x.detach().requires_grad_(True)
    lp = log_prob(xg)
    if lp.shape != x.shape[:-1]:
        raise ShapeError(f"log_prob must map (..., d) to (...); got {tuple(lp.shape)} for x {tuple(x.shape)}")
    (s,) = torch.autograd.grad(lp.sum(), xg, create_graph=True)
    return xg, s


def exact_score_matching(log_prob: LogProbFn, x: torch.Tensor) -> torch.Tensor:
    """Hyvarinen's objective ``1/2 ||s(x)||^2 + tr grad s(x)`` per point, ``(..., d) -> (...)``.

    Exact (no estimator); costs ``d`` extra backward passes.
    """
    with torch.enable_grad():
        xg, s = _score(log_prob, x)
        trace = torch.zeros_like(s[..., 0])
        for i in range(x.shape[-1]):
            (row,) = torch.autograd.grad(s[..., i].sum(), xg, create_graph=True)
            trace = trace + row[..., i]
        return 0.5 * s.pow(2).sum(-1) + trace


def projections(
    x: torch.Tensor,
    num_projections: int = 1,
    distribution: str = "rademacher",
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random slicing directions ``v`` with ``E[v v^T] = I``: shape ``(num_projections, *x.shape)``."""
    check_int(num_projections, "num_projections")
    shape = (num_projections, *x.shape)
    if distribution == "rademacher":
        return _random.randint(2, shape, generator=generator, device=x.device).to(x.dtype) * 2 - 1
    if distribution == "gaussian":
        return _random.randn(shape, generator=generator, dtype=x.dtype, device=x.device)
    raise ParameterError(f"distribution must be 'rademacher' or 'gaussian'; got {distribution!r}")


def sliced_score_matching(
    log_prob: LogProbFn, x: torch.Tensor, v: torch.Tensor, variance_reduction: bool = False
) -> torch.Tensor:
    """Sliced score matching per point, averaged over the given projections.

    Args:
        log_prob: ``(..., d) -> (...)``.
        x: points ``(..., d)``.
        v: projections ``(m, ..., d)`` (``m`` per point) or ``(..., d)`` (one).
        variance_reduction: use ``1/2 ||s||^2`` instead of ``1/2 (v^T s)^2`` (SSM-VR).

    Returns:
        ``(...)``: ``mean_v [1/2 (v^T s)^2 + v^T (grad s) v]``, an unbiased
        estimate of :func:`exact_score_matching` when ``E[v v^T] = I``.
    """
    if v.shape == x.shape:
        v = v.unsqueeze(0)
    if v.shape[1:] != x.shape:
        raise ShapeError(f"v must have shape (m, *x.shape) = (m, {', '.join(map(str, x.shape))}); got {tuple(v.shape)}")
    with torch.enable_grad():
        xg, s = _score(log_prob, x)
        vs = (v * s).sum(-1)  # (m, ...)
        # v^T (grad s) v = v . grad_x (v^T s), one vector-Jacobian product per projection
        hvp = torch.stack(
            [
                (v[j] * torch.autograd.grad(vs[j].sum(), xg, create_graph=True)[0]).sum(-1)
                for j in range(v.shape[0])
            ]
        )
        first = 0.5 * s.pow(2).sum(-1) if variance_reduction else 0.5 * vs.pow(2).mean(0)
        return first + hvp.mean(0)


def denoising_score_matching(
    log_prob: LogProbFn,
    x: torch.Tensor,
    sigma: float,
    eps: torch.Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Denoising score matching ``1/2 ||s(x + sigma eps) + eps / sigma||^2`` per point.

    Args:
        log_prob: ``(..., d) -> (...)``.
        x: clean points ``(..., d)``.
        sigma: noise level ``> 0``.
        eps: standard normal noise of the shape of ``x`` (drawn from ``generator`` when ``None``).
        generator: the ``torch.Generator`` of that draw.

    Returns:
        ``(...)``; its mean estimates ``E_{q_sigma}[exact SM] + d / (2 sigma^2)``.
    """
    check_positive(sigma, "sigma")
    if eps is None:
        eps = _random.randn_like(x, generator)
    elif eps.shape != x.shape:
        raise ShapeError(f"eps must have the shape of x {tuple(x.shape)}; got {tuple(eps.shape)}")
    with torch.enable_grad():
        _, s = _score(log_prob, x + sigma * eps)
        return 0.5 * (s + eps / sigma).pow(2).sum(-1)


def denoising_constant(dim: int, sigma: float) -> float:
    """``d / (2 sigma^2)``: ``E[denoising SM] - E_{q_sigma}[exact SM]`` (exact)."""
    return dim / (2.0 * sigma * sigma)


__all__ = [
    "exact_score_matching",
    "sliced_score_matching",
    "denoising_score_matching",
    "denoising_constant",
    "projections",
]
