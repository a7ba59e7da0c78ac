r"""Parameterizations of a diffusion network and the exact conversions between them.

For a linear forward SDE the marginal is :math:`x_t = \alpha(t) x_0 + \sigma(t)\varepsilon`
(Song et al. 2021, eq. 29; seed 001, Prop. 1).  A network may predict any of four equivalent
quantities (Ho et al. 2020 for ``eps``; Salimans & Ho 2022, sec. 4, for ``v``; seed 001 eqs. 53-56);
Tweedie's formulas (Efron 2011, *Tweedie's formula and selection bias*, eq. 2.8; seed 004,
"Tweedie formulas") tie them to the score :math:`s = \nabla_x \log p_t(x)`:

.. math::

    \hat x_0 = \frac{x + \sigma^2 s}{\alpha}, \qquad
    \hat\varepsilon = -\sigma s = \frac{x - \alpha \hat x_0}{\sigma}, \qquad
    \hat v = \alpha \hat\varepsilon - \sigma \hat x_0 .

Every function here is a pure map of tensors ``(x, out, alpha, sigma)``: ``x`` and
``out`` have the same shape ``(batch, *event)``, ``alpha`` and ``sigma`` are
broadcastable to it (use :func:`expand_like` to lift a ``(batch,)`` tensor).
The conversions are exact algebra (they round-trip to rounding error); whether the
result *is* the score depends only on whether ``out`` is the exact posterior mean.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import ParameterError

PARAMETERIZATIONS = ("eps", "x0", "score", "v")

__all__ = [
    "PARAMETERIZATIONS",
    "expand_like",
    "to_x0",
    "to_eps",
    "to_score",
    "to_v",
    "convert",
    "check_parameterization",
]


def expand_like(c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape a per-sample coefficient ``(batch,)`` (or a scalar) to broadcast against ``x``."""
    if c.dim() == 0:
        return c.to(x.dtype)
    return c.to(x.dtype).reshape(c.shape + (1,) * (x.dim() - c.dim()))


def check_parameterization(name: str) -> str:
    if name not in PARAMETERIZATIONS:
        raise ParameterError(f"parameterization must be one of {PARAMETERIZATIONS}; got {name!r}")
    return name


def _x0_eps(x: torch.Tensor, out: torch.Tensor, kind: str, alpha: torch.Tensor, sigma: torch.Tensor):
    """``(x0_hat, eps_hat)`` from a prediction of type ``kind`` (exact algebra)."""
    if kind == "eps":
        return (x - sigma * out) / alpha, out
    if kind == "x0":
        return out, (x - alpha * out) / sigma
    if kind == "score":
        return (x + sigma**2 * out) / alpha, -sigma * out
    if kind == "v":
        # [x; v] = [[a, s], [-s, a]] [x0; eps]  ->  invert the 2x2 rotation-scaling.
        r2 = alpha**2 + sigma**2
        return (alpha * x - sigma * out) / r2, (sigma * x + alpha * out) / r2
    raise ParameterError(f"parameterization must be one of {PARAMETERIZATIONS}; got {kind!r}")


def to_x0(x: torch.Tensor, out: torch.Tensor, kind: str, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    r"""Denoiser :math:`\hat x_0 = (x - \sigma\hat\varepsilon)/\alpha` (Tweedie denoiser; Efron 2011, eq. 2.8; seed 004)."""
    if kind == "x0":
        return out
    return _x0_eps(x, out, kind, alpha, sigma)[0]


def to_eps(x: torch.Tensor, out: torch.Tensor, kind: str, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    r"""Noise prediction :math:`\hat\varepsilon = -\sigma s` (Tweedie noise predictor; Efron 2011, eq. 2.8; seed 004)."""
    if kind == "eps":
        return out
    if kind == "score":
        return -sigma * out
    return _x0_eps(x, out, kind, alpha, sigma)[1]


def to_score(x: torch.Tensor, out: torch.Tensor, kind: str, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    r"""Score :math:`s = -\hat\varepsilon/\sigma = -(x - \alpha\hat x_0)/\sigma^2` (Song et al. 2021, eq. 7; seed 001 eqs. 55-56)."""
    if kind == "score":
        return out
    if kind == "eps":
        return -out / sigma
    if kind == "x0":
        return -(x - alpha * out) / sigma**2
    return -_x0_eps(x, out, kind, alpha, sigma)[1] / sigma


def to_v(x: torch.Tensor, out: torch.Tensor, kind: str, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    r"""Velocity :math:`\hat v = \alpha\hat\varepsilon - \sigma\hat x_0` (Salimans & Ho 2022)."""
    if kind == "v":
        return out
    x0, eps = _x0_eps(x, out, kind, alpha, sigma)
    return alpha * eps - sigma * x0


_TO: dict[str, Callable[..., torch.Tensor]] = {"x0": to_x0, "eps": to_eps, "score": to_score, "v": to_v}


def convert(
    x: torch.Tensor, out: torch.Tensor, src: str, dst: str, alpha: torch.Tensor, sigma: torch.Tensor
) -> torch.Tensor:
    """Convert a prediction ``out`` of type ``src`` into type ``dst`` at the noisy point ``x``."""
    check_parameterization(src)
    check_parameterization(dst)
    return _TO[dst](x, out, src, alpha, sigma)
