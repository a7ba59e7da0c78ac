"""Linear (affine-drift) SDEs with closed-form Gaussian marginals.

Seed 001, Proposition 1 (eqs. 29-30): for ``dX = a(t) X dt + g(t) dW``,

.. math::

    X_t \\mid X_s = x \\sim \\mathcal N\\big(\\tfrac{\\alpha(t)}{\\alpha(s)} x,\\;
        \\sigma^2_{t|s} I\\big), \\qquad
    \\alpha(t) = e^{\\int_0^t a}, \\quad
    \\sigma^2_{t|s} = \\int_s^t e^{2\\int_u^t a}\\, g^2(u)\\, du
        = \\sigma^2(t) - \\tfrac{\\alpha(t)^2}{\\alpha(s)^2} \\sigma^2(s).

The *marginal* ``marginal(x0, t) = N(alpha(t) x0, sigma(t)^2 I)`` (Song et al. 2021, eq. 29; seed 001 eq. 37)
is the law of ``X_t`` given clean data ``x0``; the schedule satisfies the ODE
``(sigma^2)' = 2 a sigma^2 + g^2`` so it is consistent with the SDE.  When
``sigma(0) > 0`` (the VE SDE's ``sigma_min``) the SDE is started from
``X_0 ~ N(alpha(0) x0, sigma(0)^2 I)``.  Conversely (Kingma et al. 2021, appendix A; seed 001 eq. 36) a schedule
``(alpha, sigma)`` with non-increasing log-SNR ``rho = log(alpha^2 / sigma^2)``
defines ``a = alpha'/alpha`` and ``g^2 = -sigma^2 rho'``
(:meth:`LinearSDE.from_schedule`).

Everything here is exact (closed form), computed in float64 and cast to the
dtype of the inputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.distributions import Independent, Normal

from ..errors import DomainError, ParameterError, ShapeError
from .base import SDE
from .schedule import Coefficients
from .times import TimeLike, align_time, as_time64, out_dtype

__all__ = ["LinearSDE", "ScheduleSDE"]


class LinearSDE(SDE):
    """``dX = f(t) X dt + g(t) dW`` with closed-form ``alpha(t)``, ``sigma(t)`` and transitions.

    Särkkä & Solin (2019), *Applied SDEs*, sec. 6.1; Song et al. (2021), eqs. 5-6 and 29.
    Satisfies the :class:`~fokker.sde.Schedule` protocol (``alpha``, ``sigma``, ``f``, ``g2``,
    ``log_snr``, ``coefficients``), which is all other packages use.

    **Subclassing.** Implement four hooks, each a function of a float64 time tensor returning a
    float64 tensor of its shape (they are the only schedule-specific code; domain checks,
    dtype casts and every public method are inherited):

    * ``_log_alpha(t)``: ``log alpha(t) = int_0^t f``;
    * ``_sigma2(t)``: ``sigma(t)^2``;
    * ``_f(t)``: the drift coefficient ``f(t)``;
    * ``_g2(t)``: the squared diffusion ``g(t)^2 = (sigma^2)' - 2 f sigma^2``;
    * optionally ``_transition_var(s, t)`` when a cancellation-free form of
      ``sigma^2(t) - (alpha(t)/alpha(s))^2 sigma^2(s)`` exists, and ``time_at_log_snr`` when
      the log-SNR has a closed-form inverse.

    ``tests/sde/test_linear.py`` checks any subclass against autograd derivatives of its own
    ``alpha`` and ``sigma``; :meth:`from_schedule` builds one from two functions.
    """

    #: Fraction of ``[t_min, T]`` cut off where ``sigma(t_min) = 0``: the score is singular there
    #: (Song et al. 2021 sample down to ``t = 1e-3``).
    SCORE_T_EPS = 1e-3

    additive_noise = True

    # ------------------------------------------------------------ hooks (float64)
    def _log_alpha(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _sigma2(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _f(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _g2(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _transition_var(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ratio2 = torch.exp(2.0 * (self._log_alpha(t) - self._log_alpha(s)))
        return (self._sigma2(t) - ratio2 * self._sigma2(s)).clamp_min(0.0)

    # ------------------------------------------------------------ SDE hooks
    def _drift(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self._f(t).to(x.dtype) * x

    def _diffusion(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self._g2(t).sqrt().to(x.dtype)

    # ------------------------------------------------------------ schedule
    def _schedule(self, fn: Callable[[torch.Tensor], torch.Tensor], t: TimeLike, name: str = "t") -> torch.Tensor:
        self.check_t(t, name)
        return fn(as_time64(t)).to(out_dtype(t))

    def alpha(self, t: TimeLike) -> torch.Tensor:
        """Mean coefficient ``alpha(t) = exp(int_0^t a)``; shape of ``t``, dtype of ``t`` (float: default)."""
        return self._schedule(lambda u: torch.exp(self._log_alpha(u)), t)

    def sigma(self, t: TimeLike) -> torch.Tensor:
        """Marginal standard deviation ``sigma(t)``."""
        return self._schedule(lambda u: self._sigma2(u).sqrt(), t)

    def log_snr(self, t: TimeLike) -> torch.Tensor:
        """``rho(t) = log(alpha(t)^2 / sigma(t)^2)`` (``+inf`` where ``sigma = 0``)."""
        return self._schedule(lambda u: 2.0 * self._log_alpha(u) - torch.log(self._sigma2(u)), t)

    def f(self, t: TimeLike, y: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        """Drift coefficient ``f(t) = d log alpha / dt`` (the drift is ``f(t) x``).

        With a state ``y`` (torchsde's protocol ``f(t, y)``): the drift ``f(t) y``, unchecked.
        """
        if y is not None:
            return super().f(t, y)  # type: ignore[arg-type]
        return self._schedule(self._f, t)

    def g(self, t: TimeLike, y: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        """Diffusion ``g(t)``.  With a state ``y`` (torchsde protocol ``g(t, y)``): ``g(t)`` expanded to ``y``."""
        if y is not None:
            return super().g(t, y)  # type: ignore[arg-type]
        return self._schedule(lambda u: self._g2(u).sqrt(), t)

    def g2(self, t: TimeLike) -> torch.Tensor:
        """Squared diffusion ``g(t)^2``."""
        return self._schedule(self._g2, t)

    def coefficients(self, t: TimeLike) -> Coefficients:
        """``alpha, sigma, f, g^2`` at ``t`` in float64, in one call (see :class:`~fokker.sde.Coefficients`)."""
        self.check_t(t)
        t64 = as_time64(t)
        la = self._log_alpha(t64)
        return Coefficients(
            t64,
            torch.exp(la).expand_as(t64),
            self._sigma2(t64).sqrt().expand_as(t64),
            self._f(t64).expand_as(t64),
            self._g2(t64).expand_as(t64),
        )

    def time_at_log_snr(self, log_snr: torch.Tensor | float, num_iterations: int = 100) -> torch.Tensor:
        """The time ``t`` in ``[t_min, T]`` with ``lambda(t) = log_snr`` (float64, shape of ``log_snr``).

        Vectorized bisection on the non-increasing log-SNR; 100 halvings reach float64
        resolution of the interval.  Values outside ``[lambda(T), lambda(t_min)]`` clip to the
        end points.
        """
        lam = torch.as_tensor(log_snr, dtype=torch.float64)
        lo = torch.full_like(lam, self.t_min)
        hi = torch.full_like(lam, self.T)
        for _ in range(num_iterations):
            mid = 0.5 * (lo + hi)
            above = (2.0 * self._log_alpha(mid) - torch.log(self._sigma2(mid))) > lam  # the root lies to the right
            lo = torch.where(above, mid, lo)
            hi = torch.where(above, hi, mid)
        return 0.5 * (lo + hi)

    def score_domain(self) -> tuple[float, float]:
        """``(t_lo, T)``: the times where the score of ``p_t`` exists for any data.

        ``t_lo = t_min`` when ``sigma(t_min) > 0`` (e.g. VE with ``sigma_min``), else
        ``t_min + SCORE_T_EPS (T - t_min)``: at ``sigma = 0`` the score of data is singular.
        """
        s2 = float(self._sigma2(torch.tensor(self.t_min, dtype=torch.float64)))
        lo = self.t_min if s2 > 0 else self.t_min + self.SCORE_T_EPS * (self.T - self.t_min)
        return lo, self.T

    # ------------------------------------------------------------ marginals
    def _coefs(self, x: torch.Tensor, t: TimeLike, name: str = "t") -> tuple[torch.Tensor, torch.Tensor]:
        t64 = as_time64(t, x.device)
        al = align_time(torch.exp(self._log_alpha(t64)), x, self.event_dim, name)
        sg = align_time(self._sigma2(t64).sqrt(), x, self.event_dim, name)
        return al, sg

    def _normal(self, loc: torch.Tensor, scale: torch.Tensor) -> Independent:
        return Independent(Normal(loc, scale.expand_as(loc), validate_args=False), self.event_dim)

    def marginal(self, x0: torch.Tensor, t: TimeLike) -> Independent:
        """``p(x_t | x0) = N(alpha(t) x0, sigma(t)^2 I)`` as a distribution over the event (Song et al. 2021, eq. 29)."""
        self.check_x(x0, "x0")
        self.check_t(t)
        al, sg = self._coefs(x0, t)
        return self._normal(al * x0, sg)

    def sample_marginal(
        self, x0: torch.Tensor, t: TimeLike, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x_t, eps)`` with ``x_t = alpha(t) x0 + sigma(t) eps``, ``eps ~ N(0, I)`` (or ``noise``)."""
        self.check_x(x0, "x0")
        self.check_t(t)
        if noise is None:
            noise = torch.randn_like(x0)
        elif noise.shape != x0.shape:
            raise ShapeError(f"noise must have the shape of x0 {tuple(x0.shape)}; got {tuple(noise.shape)}")
        al, sg = self._coefs(x0, t)
        return al * x0 + sg * noise, noise

    def transition_coefs(self, s: TimeLike, t: TimeLike) -> tuple[torch.Tensor, torch.Tensor]:
        """``(alpha(t)/alpha(s), sigma_{t|s})`` in float64 (shape: broadcast of ``s`` and ``t``)."""
        self.check_t(s, "s")
        self.check_t(t, "t")
        s64, t64 = as_time64(s), as_time64(t)
        if isinstance(s, torch.Tensor) or isinstance(t, torch.Tensor):
            from .._args import argument_checks_enabled

            if argument_checks_enabled() and bool((s64.to(t64.device) > t64).any()):
                raise DomainError("transition needs s <= t; got some s > t")
        elif float(s) > float(t):
            raise DomainError(f"transition needs s <= t; got s={s!r} > t={t!r}")
        s64 = s64.to(t64.device)
        ratio = torch.exp(self._log_alpha(t64) - self._log_alpha(s64))
        return ratio, self._transition_var(s64, t64).sqrt()

    def transition(self, xs: torch.Tensor, s: TimeLike, t: TimeLike) -> Independent:
        """``p_{t|s}(. | xs) = N(alpha(t)/alpha(s) xs, sigma^2_{t|s} I)`` (Särkkä & Solin 2019, eq. 6.2), ``s <= t``."""
        self.check_x(xs, "xs")
        ratio, std = self.transition_coefs(s, t)
        ed = self.event_dim
        return self._normal(align_time(ratio, xs, ed, "t") * xs, align_time(std, xs, ed, "t"))

    def prior(
        self,
        event_shape: tuple[int, ...] | None = None,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> Independent:
        """Gaussian approximation ``N(0, sigma(T)^2 I)`` of ``p_T`` (exact when the data is 0)."""
        shape = event_shape if event_shape is not None else self.event_shape
        if shape is None:
            raise ShapeError("prior needs event_shape (this SDE was built without one), e.g. prior((d,))")
        if self.event_shape is not None and tuple(shape) != self.event_shape:
            raise ShapeError(f"event_shape must be {self.event_shape}; got {tuple(shape)}")
        dtype = dtype or torch.get_default_dtype()
        std = float(self._sigma2(torch.tensor(self.T, dtype=torch.float64)).sqrt())
        loc = torch.zeros(tuple(shape), dtype=dtype, device=device)
        return Independent(Normal(loc, torch.full_like(loc, std)), len(tuple(shape)))

    # ------------------------------------------------------------ builders
    @staticmethod
    def from_schedule(
        alpha_fn: Callable[[torch.Tensor], torch.Tensor],
        sigma_fn: Callable[[torch.Tensor], torch.Tensor],
        T: float = 1.0,
        t_min: float = 0.0,
        event_shape: tuple[int, ...] | None = None,
        num_check_points: int = 1001,
    ) -> "ScheduleSDE":
        """The linear SDE of a schedule (Kingma et al. 2021, appendix A): ``f = alpha'/alpha``, ``g^2 = -sigma^2 rho'``.

        ``alpha_fn``, ``sigma_fn``: elementwise differentiable torch functions of a float64
        time tensor.  Raises :class:`~fokker.errors.ParameterError` unless ``alpha > 0``,
        ``sigma >= 0`` and the log-SNR is non-increasing on a ``num_check_points``-point grid.
        """
        return ScheduleSDE(alpha_fn, sigma_fn, T=T, t_min=t_min, event_shape=event_shape, num_check_points=num_check_points)


def _positive_number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ParameterError(f"{name} must be a positive finite number; got {value!r}")
    return float(value)


class ScheduleSDE(LinearSDE):
    """Linear SDE built from any schedule ``(alpha(t), sigma(t))`` (see :meth:`LinearSDE.from_schedule`).

    ``a(t)`` and ``g^2(t)`` come from autograd derivatives of the schedule in float64 (exact
    up to rounding).
    """

    def __init__(
        self,
        alpha_fn: Callable[[torch.Tensor], torch.Tensor],
        sigma_fn: Callable[[torch.Tensor], torch.Tensor],
        T: float = 1.0,
        t_min: float = 0.0,
        event_shape: tuple[int, ...] | None = None,
        num_check_points: int = 1001,
    ) -> None:
        super().__init__(T=T, t_min=t_min, event_shape=event_shape)
        if not callable(alpha_fn) or not callable(sigma_fn):
            raise TypeError("alpha_fn and sigma_fn must be callables of a float64 time tensor")
        self.alpha_fn = alpha_fn
        self.sigma_fn = sigma_fn
        grid = torch.linspace(self.t_min, self.T, num_check_points, dtype=torch.float64)
        al = self._call(alpha_fn, grid, "alpha_fn")
        sg = self._call(sigma_fn, grid, "sigma_fn")
        if not bool(torch.isfinite(al).all()) or not bool((al > 0).all()):
            raise ParameterError("alpha_fn must be positive and finite on [t_min, T]")
        if not bool(torch.isfinite(sg).all()) or not bool((sg >= 0).all()):
            raise ParameterError("sigma_fn must be non-negative and finite on [t_min, T]")
        rho = 2 * torch.log(al) - 2 * torch.log(sg)
        drho = rho[1:] - rho[:-1]
        finite = torch.isfinite(rho[1:]) & torch.isfinite(rho[:-1])
        scale = rho[torch.isfinite(rho)].abs().max() if bool(torch.isfinite(rho).any()) else torch.tensor(1.0)
        bad = finite & (drho > 1e-10 * (1.0 + float(scale)))
        g2 = self._g2(grid)
        bad = bad | (g2[1:] < -1e-10 * (1.0 + g2.abs().max()))
        if bool(bad.any()):
            i = int(torch.nonzero(bad)[0])
            raise ParameterError(
                "the schedule's log-SNR rho(t) = log(alpha^2/sigma^2) must be non-increasing on "
                f"[t_min, T]; it increases near t={float(grid[i]):.6g}"
            )

    @staticmethod
    def _call(fn: Callable[[torch.Tensor], torch.Tensor], t: torch.Tensor, name: str) -> torch.Tensor:
        out = fn(t)
        if not isinstance(out, torch.Tensor):
            out = torch.as_tensor(out, dtype=torch.float64)
        out = out.to(torch.float64)
        if out.shape != t.shape:
            raise ShapeError(f"{name} must be elementwise (output shape {tuple(t.shape)}); got {tuple(out.shape)}")
        return out

    def _value_and_grad(
        self, fn: Callable[[torch.Tensor], torch.Tensor], t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            tt = t.detach().clone().requires_grad_(True)
            v = torch.as_tensor(fn(tt)).to(torch.float64)
            if not v.requires_grad:  # constant in t
                return v.detach().expand_as(t), torch.zeros_like(t)
            (dv,) = torch.autograd.grad(v.sum(), tt, allow_unused=True)
        return v.detach(), (torch.zeros_like(t) if dv is None else dv)

    def _log_alpha(self, t: torch.Tensor) -> torch.Tensor:
        return torch.log(self.alpha_fn(t).to(torch.float64))

    def _sigma2(self, t: torch.Tensor) -> torch.Tensor:
        return self.sigma_fn(t).to(torch.float64) ** 2

    def _f(self, t: torch.Tensor) -> torch.Tensor:
        al, dal = self._value_and_grad(self.alpha_fn, t)
        return dal / al

    def _g2(self, t: torch.Tensor) -> torch.Tensor:
        # g^2 = -sigma^2 rho' = (sigma^2)' - 2 f sigma^2   (Kingma et al. 2021, appendix A)
        sg, dsg = self._value_and_grad(self.sigma_fn, t)
        return 2.0 * sg * dsg - 2.0 * self._f(t) * sg * sg

