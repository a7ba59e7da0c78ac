"""Emerging convolutions (Hoogeboom, van den Berg & Welling 2019, sec. 3.1): invertible ``k x k``
convolutions for image flows, exact log-det.

A *causal* convolution whose kernel sees only the pixels before the centre (raster order: rows
above, and to the left on the same row) and, at the centre, only the channels up to the output
channel, with a positive centre diagonal ``exp(log_s)``, is a linear map of the image whose matrix
is lower triangular in the pixel-major order ``(h, w, c)``:
``log|det| = H W sum_c log_s_c`` (exact).  Composing it with an *anti-causal* one (the same
construction on the image flipped in ``C``, ``H`` and ``W``: upper triangular) gives an emerging
convolution whose receptive field is a full ``k x k`` window.

In the density direction (data -> noise) the layer is these two convolutions (one pass each); the
sampling direction solves the two triangular systems.  The solve builds the ``N x N`` matrix of
each convolution (``N = C H W``) from its responses to the unit images and calls
``torch.linalg.solve_triangular`` (exact to rounding, differentiable): memory ``O(N^2)``, meant for
the small images of this library's tests and validations (the paper inverts by sequential
substitution).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._args import check_int
from ..errors import ParameterError, ShapeError
from .base import Bijection

__all__ = ["EmergingConv"]


def _causal_mask(channels: int, kernel_size: int) -> Tensor:
    """``(C, C, k, k)``: pixels before the centre, and at the centre input channels below the output one."""
    k, c0 = kernel_size, kernel_size // 2
    r = torch.arange(k)[:, None].expand(k, k)
    s = torch.arange(k)[None, :].expand(k, k)
    before = (r < c0) | ((r == c0) & (s < c0))
    centre = (r == c0) & (s == c0)
    lower = torch.arange(channels)[None, :] < torch.arange(channels)[:, None]  # [o, i]: i < o
    return before[None, None] | (centre[None, None] & lower[:, :, None, None])


class EmergingConv(Bijection):
    """Emerging ``k x k`` convolution on ``(..., C, H, W)`` images (Hoogeboom et al. 2019, sec. 3.1, eq. 8).

    Density direction (data ``y`` -> noise ``x``): ``x = K_2 * (K_1 * y)`` with ``K_1`` causal and
    ``K_2`` anti-causal (see the module docstring), zero padding; ``log|det dx/dy| = H W
    (sum log_s_1 + sum log_s_2)`` (exact).  Sampling solves the two triangular systems (exact to
    rounding; ``O((C H W)^2)`` memory).  Starts at the identity (zero off-centre weights,
    ``log_s = 0``).

    Args:
        channels: ``C``.
        kernel_size: odd ``k`` (3 in the paper).
    """

    def __init__(self, channels: int, kernel_size: int = 3) -> None:
        super().__init__(event_dim=3)
        C = self.channels = check_int(channels, "channels")
        k = self.kernel_size = check_int(kernel_size, "kernel_size")
        if k % 2 == 0:
            raise ParameterError(f"kernel_size must be odd; got {k}")
        self.register_buffer("mask", _causal_mask(C, k), persistent=False)
        self.weight = nn.Parameter(torch.zeros(2, C, C, k, k))
        self.log_s = nn.Parameter(torch.zeros(2, C))

    def _kernel(self, j: int) -> Tensor:
        c0 = self.kernel_size // 2
        centre = torch.zeros_like(self.weight[j])
        centre[:, :, c0, c0] = torch.diag_embed(torch.exp(self.log_s[j]))
        return torch.where(self.mask, self.weight[j], 0.0) + centre

    def _conv(self, v: Tensor, j: int) -> Tensor:
        """Convolution ``j`` (0 causal, 1 anti-causal) of ``v`` ``(n, C, H, W)``."""
        flip = (-3, -2, -1)
        if j == 1:
            v = v.flip(flip)
        out = F.conv2d(v, self._kernel(j), padding=self.kernel_size // 2)
        return out.flip(flip) if j == 1 else out

    def _solve(self, r: Tensor, j: int) -> Tensor:
        """``v`` with ``conv_j(v) = r`` for ``r`` ``(n, C, H, W)``: a triangular solve in pixel-major order."""
        flip = (-3, -2, -1)
        if j == 1:  # flip(conv(flip(v))) = r  <=>  conv(flip v) = flip r
            r = r.flip(flip)
        C, H, W = r.shape[-3:]
        N = C * H * W
        eye = torch.eye(N, dtype=r.dtype, device=r.device).reshape(N, C, H, W)
        M = F.conv2d(eye, self._kernel(j), padding=self.kernel_size // 2).reshape(N, N).T  # M[:, m] = conv(e_m)
        order = torch.arange(N, device=r.device).reshape(C, H, W).permute(1, 2, 0).reshape(-1)  # (h, w, c) -> index
        M = M[order][:, order]  # lower triangular
        rhs = r.reshape(-1, N)[:, order].T
        v = torch.linalg.solve_triangular(M, rhs, upper=False).T
        v = v[:, torch.argsort(order)].reshape(r.shape)
        return v.flip(flip) if j == 1 else v

    def _check(self, v: Tensor, name: str, context: Tensor | None) -> tuple[int, ...]:
        self._check_context(context)
        if v.dim() < 3 or v.shape[-3] != self.channels:
            raise ShapeError(f"{name} must have shape (..., {self.channels}, H, W); got shape {tuple(v.shape)}")
        return tuple(v.shape[:-3])

    def _ladj(self, v: Tensor, batch: tuple[int, ...]) -> Tensor:
        return (self.log_s.sum() * (v.shape[-1] * v.shape[-2])).expand(batch)

    def inverse_and_ladj(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``x = K_2 * (K_1 * y)`` and ``log|det dx/dy|`` (exact)."""
        batch = self._check(y, "y", context)
        flat = y.reshape(-1, *y.shape[-3:])
        x = self._conv(self._conv(flat, 0), 1)
        return x.reshape(y.shape), self._ladj(y, batch)

    def call_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``y`` with ``K_2 * (K_1 * y) = x`` (two triangular solves) and ``log|det dy/dx|``."""
        batch = self._check(x, "x", context)
        flat = x.reshape(-1, *x.shape[-3:])
        y = self._solve(self._solve(flat, 1), 0)
        return y.reshape(x.shape), -self._ladj(x, batch)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, kernel_size={self.kernel_size}"
