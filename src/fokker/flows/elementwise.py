"""Elementwise monotone maps ``y_i = h(x_i; theta_i)``: the univariate pieces of coupling
and autoregressive layers (the "transformers" of Papamakarios et al. 2021, sec. 3.1; seed 002,
"coupling flows" / "autoregressive flows").

Each map is a plain object (no parameters of its own) with

* ``num_params``: how many unconstrained numbers ``theta_i`` one coordinate needs;
* ``forward(x, params) -> (y, ladj)`` and ``inverse(y, params) -> (x, ladj_inv)``,
  with ``params`` of shape ``x.shape + (num_params,)`` and elementwise log-derivatives
  ``log|h'(x)|`` (forward) and ``log|(h^{-1})'(y)|`` (inverse) of the shape of ``x``.

All maps are exact (closed-form forward, inverse and derivative); all stay finite in
float32 for arbitrarily large inputs and parameters (soft clamps, linear tails).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .._args import check_int, check_positive
from ..errors import ParameterError

__all__ = ["ElementwiseMap", "Additive", "Affine", "RationalQuadratic", "soft_clamp"]


def soft_clamp(x: Tensor, bound: float) -> Tensor:
    """``bound * tanh(x / bound)``: identity near 0, smoothly limited to ``(-bound, bound)``."""
    return bound * torch.tanh(x / bound)


class ElementwiseMap:
    """Interface of a monotone increasing univariate map with ``num_params`` parameters.

    The "transformer" of an autoregressive or coupling flow (Papamakarios et al. 2021, sec. 3.1):
    ``forward(x, params) -> (h(x), log h'(x))`` and ``inverse(y, params) -> (h^{-1}(y),
    log (h^{-1})'(y))``, elementwise, ``params`` of shape ``x.shape + (num_params,)``.
    """

    num_params: int = 0

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def call(self, x: Tensor, params: Tensor) -> Tensor:
        """``h(x)`` alone (maps may skip the derivative)."""
        return self.forward(x, params)[0]

    def inv(self, y: Tensor, params: Tensor) -> Tensor:
        """``h^{-1}(y)`` alone."""
        return self.inverse(y, params)[0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Additive(ElementwiseMap):
    """NICE's additive map ``y = x + t`` (Dinh et al. 2015, sec. 3.2; seed 003): unit Jacobian."""

    num_params = 1

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        return x + params[..., 0], torch.zeros_like(x)

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        return y - params[..., 0], torch.zeros_like(y)


class Affine(ElementwiseMap):
    """RealNVP's affine map (Dinh et al. 2017, sec. 3.3; seed 003), written in the density direction.

    Data ``y`` -> noise ``x`` is ``x = y * exp(s) + t`` (RealNVP's and Glow's coupling
    equation, zuko's convention); the layer direction noise -> data is its inverse
    ``y = (x - t) * exp(-s)``.  ``params[..., 0]`` is the shift ``t``, ``params[..., 1]``
    the raw log-scale; the log-scale is soft-clamped, ``s = B tanh(raw / B)``, so
    ``exp(+-s)`` stays in ``[e^-B, e^B]`` however large the network's activations get.
    ``log|h'(x)| = -s`` (exact).

    Args:
        scale_bound: ``B`` (default 7, about the range of zuko's soft clip with slope 1e-3).
    """

    num_params = 2

    def __init__(self, scale_bound: float = 7.0) -> None:
        check_positive(scale_bound, "scale_bound")
        self.scale_bound = float(scale_bound)

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        s = soft_clamp(params[..., 1], self.scale_bound)
        return (x - params[..., 0]) * torch.exp(-s), -s

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        s = soft_clamp(params[..., 1], self.scale_bound)
        return y * torch.exp(s) + params[..., 0], s

    def __repr__(self) -> str:
        return f"Affine(scale_bound={self.scale_bound})"


class RationalQuadratic(ElementwiseMap):
    """Monotone rational-quadratic spline with linear (identity) tails (Durkan et al. 2019).

    On ``[-B, B]`` the map is a spline of ``K`` rational-quadratic pieces through knots
    ``(x_k, y_k)`` with derivatives ``d_k`` (``d_0 = d_K = 1``, so it joins the identity
    tails with a continuous derivative).  In bin ``k``, with ``w = x_{k+1} - x_k``,
    ``h = y_{k+1} - y_k``, ``s = h / w`` and ``xi = (x - x_k) / w``:

    .. math::

        y = y_k + h\\,\\frac{s\\xi^2 + d_k\\xi(1-\\xi)}{s + (d_{k+1} + d_k - 2s)\\xi(1-\\xi)},\\qquad
        \\frac{dy}{dx} = \\frac{s^2[d_{k+1}\\xi^2 + 2s\\xi(1-\\xi) + d_k(1-\\xi)^2]}
        {[s + (d_{k+1} + d_k - 2s)\\xi(1-\\xi)]^2}.

    The inverse solves the quadratic ``a xi^2 + b xi + c = 0`` with the cancellation-free
    root ``xi = 2c / (-b - sqrt(b^2 - 4ac))`` (discriminant clamped at 0, ``xi`` clamped to
    ``[0, 1]``); inputs outside the box are clamped before the spline arithmetic and
    selected away with ``torch.where``, so values like ``1e30`` in float32 give finite
    outputs and finite gradients.

    ``params`` (``3K - 1`` per coordinate): ``K`` raw widths, ``K`` raw heights,
    ``K - 1`` raw interior derivatives.  Raw zeros give the identity map.

    Args:
        bins: ``K``.
        bound: half-width ``B`` of the box ``[-B, B]``.
        min_width, min_height, min_derivative: lower limits keeping the spline
            strictly monotone and invertible.
    """

    def __init__(
        self,
        bins: int = 8,
        bound: float = 5.0,
        min_width: float = 1e-3,
        min_height: float = 1e-3,
        min_derivative: float = 1e-3,
    ) -> None:
        self.bins = check_int(bins, "bins", minimum=1)
        check_positive(bound, "bound")
        for name, v in (("min_width", min_width), ("min_height", min_height)):
            check_positive(v, name)
            if v * bins >= 1:
                raise ParameterError(f"{name} * bins must be < 1; got {name}={v}, bins={bins}")
        check_positive(min_derivative, "min_derivative")
        if min_derivative >= 1:
            raise ParameterError(f"min_derivative must be < 1; got {min_derivative}")
        self.bound = float(bound)
        self.min_width = float(min_width)
        self.min_height = float(min_height)
        self.min_derivative = float(min_derivative)
        # softplus(raw + shift) + min_derivative == 1 at raw == 0 (identity at init)
        self._dshift = math.log(math.expm1(1.0 - self.min_derivative))
        self.num_params = 3 * self.bins - 1

    def __repr__(self) -> str:
        return f"RationalQuadratic(bins={self.bins}, bound={self.bound})"

    def _knots(self, params: Tensor) -> tuple[Tensor, Tensor]:
        """Knots ``(..., 2, K + 1)`` (row 0: x, row 1: y) and derivatives ``(..., K + 1)``."""
        K, B = self.bins, self.bound
        wh = params[..., : 2 * K].unflatten(-1, (2, K))
        # softmax per row, written out: torch's softmax is slow on CPU for a short last
        # dim of a strided view; subtracting each row's max keeps it overflow-free
        e = torch.exp(wh - wh.amax(-1, keepdim=True))
        wh = e / e.sum(-1, keepdim=True)
        if self.min_width == self.min_height:
            wh = wh * (1 - self.min_width * K) + self.min_width
        else:
            lo = wh.new_tensor([[self.min_width], [self.min_height]])
            wh = wh * (1 - lo * K) + lo
        # interior knots from the cumulative sums; end knots pinned exactly at -B and B
        c = torch.cumsum(wh[..., :-1], -1)
        knots = F.pad(F.pad(c, (1, 0), value=0.0), (0, 1), value=1.0) * (2 * B) - B
        d = F.softplus(params[..., 2 * K :] + self._dshift) + self.min_derivative
        d = F.pad(d, (1, 1), value=1.0)
        return knots, d

    def _segment(self, v: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, ...]:
        """Bin containing ``v`` (clamped into the box) and that bin's knots and slopes."""
        knots, d = self._knots(params)
        ref = knots[..., 1 if inverse else 0, 1:-1]
        k = (v[..., None] >= ref).sum(-1, keepdim=True)
        kk = torch.cat([k, k + 1], -1)
        xy = torch.gather(knots, -1, kk.unsqueeze(-2).expand(*kk.shape[:-1], 2, 2))
        x0, x1 = xy[..., 0, :].unbind(-1)
        y0, y1 = xy[..., 1, :].unbind(-1)
        d0, d1 = torch.gather(d, -1, kk).unbind(-1)
        return x0, x1, y0, y1, d0, d1

    @staticmethod
    def _log_slope(xi: Tensor, s: Tensor, d0: Tensor, d1: Tensor) -> Tensor:
        t = xi * (1 - xi)
        den = s + (d1 + d0 - 2 * s) * t
        num = d1 * xi * xi + 2 * s * t + d0 * (1 - xi) * (1 - xi)
        return torch.log(s * s * num / (den * den))

    def _forward(self, x: Tensor, params: Tensor, with_ladj: bool) -> tuple[Tensor, Tensor | None]:
        B = self.bound
        inside = (x > -B) & (x < B)
        xc = x.clamp(-B, B)
        x0, x1, y0, y1, d0, d1 = self._segment(xc, params, inverse=False)
        w, h = x1 - x0, y1 - y0
        s = h / w
        xi = ((xc - x0) / w).clamp(0, 1)
        t = xi * (1 - xi)
        y = y0 + h * (s * xi * xi + d0 * t) / (s + (d1 + d0 - 2 * s) * t)
        y = torch.where(inside, y, x)
        if not with_ladj:
            return y, None
        return y, torch.where(inside, self._log_slope(xi, s, d0, d1), torch.zeros_like(x))

    def _inverse(self, y: Tensor, params: Tensor, with_ladj: bool) -> tuple[Tensor, Tensor | None]:
        B = self.bound
        inside = (y > -B) & (y < B)
        yc = y.clamp(-B, B)
        x0, x1, y0, y1, d0, d1 = self._segment(yc, params, inverse=True)
        w, h = x1 - x0, y1 - y0
        s = h / w
        dy = yc - y0
        dd = d1 + d0 - 2 * s
        a = h * (s - d0) + dy * dd
        b = h * d0 - dy * dd
        c = -s * dy
        disc = (b * b - 4 * a * c).clamp_min(0)
        # for a monotone spline -b - sqrt(disc) < 0 in exact arithmetic (c <= 0 and the root
        # lies in [0, 1]); the guard keeps float32 rounding from dividing by zero
        den = -b - torch.sqrt(disc)
        den = torch.where(den < 0, den, torch.full_like(den, -torch.finfo(den.dtype).tiny))
        xi = (2 * c / den).clamp(0, 1)
        x = torch.where(inside, x0 + xi * w, y)
        if not with_ladj:
            return x, None
        return x, torch.where(inside, -self._log_slope(xi, s, d0, d1), torch.zeros_like(y))

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        y, l = self._forward(x, params, True)
        return y, l  # type: ignore[return-value]

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        x, l = self._inverse(y, params, True)
        return x, l  # type: ignore[return-value]

    def call(self, x: Tensor, params: Tensor) -> Tensor:
        return self._forward(x, params, False)[0]

    def inv(self, y: Tensor, params: Tensor) -> Tensor:
        return self._inverse(y, params, False)[0]
