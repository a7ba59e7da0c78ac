"""Critically-damped Langevin diffusion (Dockhorn, Vahdat & Kreis 2022; seed 002 eq. 34).

Phase space ``z = (x, v)`` with ``x, v`` in ``R^d``, stored as ``z = cat([x, v], -1)`` of
shape ``(..., 2d)``:

.. math::

    d\\begin{pmatrix} x \\\\ v \\end{pmatrix}
    = \\beta \\begin{pmatrix} M^{-1} v \\\\ -x - \\Gamma M^{-1} v \\end{pmatrix} dt
      + \\begin{pmatrix} 0 \\\\ \\sqrt{2 \\Gamma \\beta}\\, dW \\end{pmatrix},
    \\qquad \\Gamma^2 = 4M \\text{ (critical damping)}.

Each coordinate pair ``(x_i, v_i)`` follows the 2-D linear SDE ``dz = A z dt + B dW`` with
``A = beta [[0, 1/M], [-1, -Gamma/M]]``.  Critical damping makes ``lambda = -beta/sqrt(M)``
a double eigenvalue, ``N = A - lambda I`` nilpotent, hence the exact closed forms

.. math::

    e^{A t} = e^{\\lambda t}(I + N t), \\qquad
    \\Sigma(t) = e^{At}\\Sigma_0 e^{A^\\top t}
       + D I_0(t) + (N D + D N^\\top) I_1(t) + N D N^\\top I_2(t),

with ``D = diag(0, 2 Gamma beta)`` and ``I_k(t) = int_0^t u^k e^{2 lambda u} du``.  The
equilibrium is ``N(0, I) x N(0, M I)``; the data starts at ``v0 ~ N(0, gamma M I)``.
All formulas are exact (float64).
"""

from __future__ import annotations

import math

import torch
from torch.distributions import Distribution, constraints

from ..errors import ParameterError, ShapeError
from .base import SDE
from .linear import _positive_number
from .times import TimeLike, align_time, as_time64

__all__ = ["CriticallyDampedLangevin", "PhaseSpaceNormal"]

_LOG_2PI = math.log(2 * math.pi)


class PhaseSpaceNormal(Distribution):
    """Gaussian on ``z = (x, v)`` (``(..., 2d)``) whose pairs ``(x_i, v_i)`` share one 2x2 covariance.

    ``cov = (sxx, sxv, svv)``: tensors broadcastable to ``loc[..., :d]``.  Pairs are independent
    across ``i``; ``log_prob`` sums over the ``2d`` event entries.  Exact.
    """

    arg_constraints = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, loc: torch.Tensor, sxx: torch.Tensor, sxv: torch.Tensor, svv: torch.Tensor) -> None:
        self.loc = loc
        d = loc.shape[-1] // 2
        shape = loc[..., :d].shape
        self.sxx, self.sxv, self.svv = (c.expand(shape) for c in (sxx, sxv, svv))
        super().__init__(loc.shape[:-1], loc.shape[-1:], validate_args=False)

    @property
    def mean(self) -> torch.Tensor:
        return self.loc

    @property
    def variance(self) -> torch.Tensor:
        return torch.cat([self.sxx, self.svv], -1)

    def _chol(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        l11 = self.sxx.clamp_min(0).sqrt()
        l21 = torch.where(l11 > 0, self.sxv / torch.where(l11 > 0, l11, 1.0), 0.0)
        l22 = (self.svv - l21 * l21).clamp_min(0).sqrt()
        return l11, l21, l22

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        eps = torch.randn(torch.Size(sample_shape) + self.loc.shape, dtype=self.loc.dtype, device=self.loc.device)
        return self.loc + self.scale_mul(eps)

    def scale_mul(self, eps: torch.Tensor) -> torch.Tensor:
        """``L eps`` per pair (``L`` the Cholesky factor): maps standard normals to centred samples."""
        d = eps.shape[-1] // 2
        l11, l21, l22 = self._chol()
        ex, ev = eps[..., :d], eps[..., d:]
        return torch.cat([l11 * ex, l21 * ex + l22 * ev], -1)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        d = value.shape[-1] // 2
        dz = value - self.loc
        dx, dv = dz[..., :d], dz[..., d:]
        det = self.sxx * self.svv - self.sxv**2
        quad = (self.svv * dx * dx - 2 * self.sxv * dx * dv + self.sxx * dv * dv) / det
        return -0.5 * (quad + torch.log(det) + 2 * _LOG_2PI).sum(-1)


class CriticallyDampedLangevin(SDE):
    """CLD forward SDE on ``z = cat([x, v], -1)``, ``(..., 2d)`` (Dockhorn et al. 2022 defaults).

    Args:
        beta: time scale ``beta`` (> 0).
        M: mass (> 0); the friction is ``Gamma = 2 sqrt(M)`` (critical damping).
        gamma: initial velocity variance factor: ``v0 ~ N(0, gamma M I)``.
        Gamma: optional; must equal ``2 sqrt(M)`` if given.
    """

    additive_noise = True

    def __init__(
        self,
        beta: float = 4.0,
        M: float = 0.25,
        gamma: float = 0.04,
        Gamma: float | None = None,
        T: float = 1.0,
        t_min: float = 0.0,
        event_shape: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__(T=T, t_min=t_min, event_shape=event_shape)
        self.beta = _positive_number(beta, "beta")
        self.M = _positive_number(M, "M")
        self.gamma = _positive_number(gamma, "gamma")
        crit = 2.0 * math.sqrt(self.M)
        if Gamma is not None and abs(_positive_number(Gamma, "Gamma") - crit) > 1e-12 * crit:
            raise ParameterError(f"Gamma must equal 2 sqrt(M) = {crit!r} (critical damping); got {Gamma!r}")
        self.Gamma = crit
        self.lam = -self.beta / math.sqrt(self.M)  # double eigenvalue of A
        b, M_, G = self.beta, self.M, self.Gamma
        self._A = ((0.0, b / M_), (-b, -b * G / M_))
        self._N = ((b * G / (2 * M_), b / M_), (-b, -b * G / (2 * M_)))
        self._D22 = 2.0 * G * b
        if event_shape is not None and (len(event_shape) != 1 or event_shape[0] % 2):
            raise ParameterError(f"event_shape must be (2d,) for CLD; got {event_shape}")

    def check_x(self, x: torch.Tensor, name: str = "x") -> torch.Tensor:
        super().check_x(x, name)
        if x.shape[-1] % 2:
            raise ShapeError(f"{name} must have shape (..., 2d) = cat([x, v], -1); got last dim {x.shape[-1]}")
        return x

    # ------------------------------------------------------------ closed forms (float64)
    def _phi(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``exp(A t) = e^{lambda t}(I + N t)`` entries ``(p11, p12, p21, p22)``."""
        e = torch.exp(self.lam * t)
        (n11, n12), (n21, n22) = self._N
        return e * (1 + n11 * t), e * n12 * t, e * n21 * t, e * (1 + n22 * t)

    def _Q(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Noise covariance ``int_0^t e^{Au} D e^{A^T u} du`` entries ``(q11, q12, q22)``."""
        c = 2.0 * self.lam
        e = torch.exp(c * t)
        i0 = torch.expm1(c * t) / c
        i1 = e * (t / c - 1 / c**2) + 1 / c**2
        i2 = e * (t * t / c - 2 * t / c**2 + 2 / c**3) - 2 / c**3
        (n11, n12), (n21, n22) = self._N
        D = self._D22
        # D = diag(0, D): N D = [[0, n12 D], [0, n22 D]]; N D N^T = D [[n12^2, n12 n22], [n12 n22, n22^2]]
        q11 = D * n12 * n12 * i2
        q12 = D * n12 * i1 + D * n12 * n22 * i2
        q22 = D * i0 + 2 * D * n22 * i1 + D * n22 * n22 * i2
        return q11, q12, q22

    def mean_coefs(self, t: TimeLike) -> tuple[torch.Tensor, ...]:
        """``exp(A t)`` entries ``(p11, p12, p21, p22)`` (float64, shape of ``t``)."""
        self.check_t(t)
        return self._phi(as_time64(t))

    def _cov(self, t: torch.Tensor, v0_random: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q11, q12, q22 = self._Q(t)
        if not v0_random:
            return q11, q12, q22
        p11, p12, p21, p22 = self._phi(t)
        s0 = self.gamma * self.M
        return q11 + s0 * p12 * p12, q12 + s0 * p12 * p22, q22 + s0 * p22 * p22

    def cov(self, t: TimeLike, v0_random: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-pair covariance ``(sxx, sxv, svv)`` of ``z_t`` given ``x0`` (and ``v0`` if not random)."""
        self.check_t(t)
        return self._cov(as_time64(t), v0_random)

    # ------------------------------------------------------------ SDE hooks
    def _drift(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        d = z.shape[-1] // 2
        x, v = z[..., :d], z[..., d:]
        b, M_, G = self.beta, self.M, self.Gamma
        return torch.cat([(b / M_) * v, -b * x - (b * G / M_) * v], -1)

    def _diffusion(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        d = z.shape[-1] // 2
        g = z.new_zeros(z.shape[-1])
        g[d:] = math.sqrt(self._D22)
        return g

    # ------------------------------------------------------------ marginals
    def _dist(
        self, mx: torch.Tensor, mv: torch.Tensor, cov: tuple[torch.Tensor, ...], ref: torch.Tensor
    ) -> PhaseSpaceNormal:
        c = [align_time(c_, ref, 1) for c_ in cov]
        return PhaseSpaceNormal(torch.cat([mx, mv], -1), *c)

    def marginal(self, x0: torch.Tensor, t: TimeLike, v0: torch.Tensor | None = None) -> PhaseSpaceNormal:
        """Law of ``z_t`` given ``x0`` (``(..., d)``) and either ``v0`` or ``v0 ~ N(0, gamma M I)``."""
        from .._args import check_finite, check_tensor

        check_tensor(x0, "x0")
        check_finite(x0, "x0")
        self.check_t(t)
        if v0 is not None and v0.shape != x0.shape:
            raise ShapeError(f"v0 must have the shape of x0 {tuple(x0.shape)}; got {tuple(v0.shape)}")
        t64 = as_time64(t, x0.device)
        p11, p12, p21, p22 = (align_time(p, x0, 1) for p in self._phi(t64))
        mx, mv = p11 * x0, p21 * x0
        if v0 is not None:
            mx, mv = mx + p12 * v0, mv + p22 * v0
        return self._dist(mx, mv, self._cov(t64, v0 is None), x0)

    def sample_marginal(
        self, x0: torch.Tensor, t: TimeLike, v0: torch.Tensor | None = None, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z_t, eps)`` with ``z_t = mean + L eps`` (``L``: per-pair Cholesky factor), ``eps`` ``(..., 2d)``."""
        dist = self.marginal(x0, t, v0)
        if noise is None:
            noise = torch.randn_like(dist.loc)
        elif noise.shape != dist.loc.shape:
            raise ShapeError(f"noise must have shape {tuple(dist.loc.shape)}; got {tuple(noise.shape)}")
        return dist.loc + dist.scale_mul(noise), noise

    def transition(self, zs: torch.Tensor, s: TimeLike, t: TimeLike) -> PhaseSpaceNormal:
        """``p(z_t | z_s)``: mean ``exp(A (t-s)) z_s``, covariance ``Q(t - s)`` (time-homogeneous)."""
        self.check_x(zs, "zs")
        self.check_t(s, "s")
        self.check_t(t, "t")
        dt = as_time64(t, zs.device) - as_time64(s, zs.device)
        if bool((dt < 0).any()):
            from ..errors import DomainError

            raise DomainError("transition needs s <= t")
        d = zs.shape[-1] // 2
        p11, p12, p21, p22 = (align_time(p, zs, 1) for p in self._phi(dt))
        x, v = zs[..., :d], zs[..., d:]
        return self._dist(p11 * x + p12 * v, p21 * x + p22 * v, self._Q(dt), zs)

    def prior(
        self,
        event_shape: tuple[int, ...] | None = None,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> PhaseSpaceNormal:
        """Equilibrium ``N(0, I) x N(0, M I)`` on ``(2d,)``."""
        shape = event_shape if event_shape is not None else self.event_shape
        if shape is None or len(shape) != 1 or shape[0] % 2:
            raise ShapeError(f"prior needs event_shape (2d,); got {shape}")
        loc = torch.zeros(shape, dtype=dtype or torch.get_default_dtype(), device=device)
        one = torch.ones((), dtype=loc.dtype, device=loc.device)
        return PhaseSpaceNormal(loc, one, 0 * one, self.M * one)

    def extra_repr(self) -> str:
        return f"beta={self.beta:g}, M={self.M:g}, Gamma={self.Gamma:g}, gamma={self.gamma:g}, " + super().extra_repr()
