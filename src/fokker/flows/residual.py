"""Invertible residual flow (i-ResNet, Behrmann et al. 2019; Residual Flows, Chen et al. 2019).

Seed 002, eqs. (14)-(16).  In the density direction (data ``x`` -> noise ``z``)

.. math::

    z = F(x) = x + g(x), \\quad \\operatorname{Lip}(g) < 1, \\qquad
    \\log|\\det J_F(x)| = \\operatorname{tr}\\log(I + J_g(x))
                        = \\sum_{k\\ge 1} \\frac{(-1)^{k+1}}{k} \\operatorname{tr}(J_g^k).

fokker layers map noise -> data, so the layer's *inverse* is the cheap residual
map ``x -> x + g(x)`` (one network pass for ``log_prob``) and its *forward* is the
fixed-point iteration ``x_{n+1} = z - g(x_n)`` (Banach: converges geometrically at
rate ``Lip(g) <= c``).

``g`` is an MLP of spectrally-normalised linear maps (:class:`fokker.nets.SpectralNormLinear`
in its ``"bound"`` mode) and 1-Lipschitz LipSwish activations.  Each weight is divided by ``max(1, sigma_hat / c)`` where ``sigma_hat``
is the power-iteration estimate of its largest singular value (a lower bound that
tightens every training step), so ``Lip(g) <= prod_i c sigma_i / sigma_hat_i ~ c^L < 1``;
:meth:`ResidualFlow.lipschitz_bound` returns the exact bound ``prod_i ||W_i||_2``.

Log-det estimators (``log_det=``):

* ``"exact"``: ``slogdet(I + J_g)`` from the full autograd Jacobian (``D`` backward
  passes; for small ``D``).  Exact.
* ``"series"``: the power series truncated after ``num_terms`` terms with Hutchinson's
  estimator ``tr(A) = E[v^T A v]``, ``v ~ N(0, I)`` (or Rademacher).  Biased (truncation).
* ``"roulette"``: the Russian-roulette estimator of Chen et al. (2019, eq. 6):
  ``N = num_exact_terms + K`` with ``K ~ Geometric(p)`` drawn independently per example
  and term ``k`` re-weighted by ``1 / P(N >= k)``::

      sum_{k=1}^{N} (-1)^{k+1}/k * v^T J_g^k v / P(N >= k)

  Unbiased for ``log det(I + J_g)`` (its gradient is unbiased too; the estimator is
  differentiated directly, not through the Neumann gradient series).  Its variance is
  finite when ``Lip(g)^2 < 1 - p`` (terms shrink like ``Lip(g)^k`` while the weights grow
  like ``(1 - p)^{-k}``): lower ``geom_p`` or raise ``num_exact_terms`` for ``c`` near 1.

The estimators draw a probe ``v`` and (roulette) the truncation ``N``; the layer is then
``stochastic_log_det`` and its log-det methods take ``generator=``.

All vector-Jacobian products use ``create_graph`` when gradients are on, so second
derivatives (score matching) flow through every estimator.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import _random
from .._args import check_int, check_last_dim, check_positive, check_tensor
from ..errors import NotInvertibleError, ParameterError
from ..nets import SpectralNormLinear, check_hidden
from .base import Bijection

__all__ = ["LipSwish", "SpectralNormLinear", "ResidualFlow"]

_LOG_DETS = ("exact", "series", "roulette")


class LipSwish(nn.Module):
    """``x sigmoid(beta x) / 1.1`` with ``beta = softplus(.)`` (Chen et al. 2019, Residual Flows, sec. 4): 1-Lipschitz, smooth.

    ``max_x d/dx [x sigmoid(beta x)] ~ 1.0998`` for every ``beta > 0``, hence the 1.1.
    """

    def __init__(self) -> None:
        super().__init__()
        self.beta_raw = nn.Parameter(torch.tensor(0.5413))  # softplus(0.5413) = 1

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(F.softplus(self.beta_raw) * x) / 1.1


class _ImplicitSolve(torch.autograd.Function):
    """Identity whose backward applies ``solve`` to the incoming gradient (implicit differentiation)."""

    @staticmethod
    def forward(ctx, x: Tensor, solve) -> Tensor:  # type: ignore[override]
        ctx.solve = solve
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return ctx.solve(grad), None


class ResidualFlow(Bijection):
    """One invertible residual block ``x -> x + g(x)`` (data -> noise), as a noise -> data layer.

    Behrmann et al. (2019), i-ResNet, sec. 2-3 (fixed-point inverse, power series of the
    log-det); Chen et al. (2019), Residual Flows, sec. 3 (Russian-roulette estimator) and
    sec. 4 (LipSwish).  ``log det(I + J_g) = sum_k (-1)^{k+1} tr(J_g^k) / k``.

    Args:
        features: event size ``D``; inputs ``(..., D)``.
        hidden: hidden widths of ``g``.
        coeff: spectral-norm coefficient ``c < 1`` of every linear map.
        num_power_iterations: power-iteration steps per weight change (training mode).
        log_det: ``"exact"``, ``"series"`` or ``"roulette"`` (see the module docstring).
        num_terms: number of terms of the truncated series (``"series"``).
        num_exact_terms: terms always computed by the roulette estimator.
        geom_p: success probability ``p`` of the roulette's geometric draw.
        atol, rtol: fixed-point tolerance ``|x_{n+1} - x_n| <= atol + rtol (|x_n| + |z|)`` (checked
            every 10 iterations), each floored at ``4 eps`` of the input dtype so float32 can meet it;
            ``max_iter``: iteration cap, exceeded -> ``NotInvertibleError``.
        probe: Hutchinson probe distribution, ``"gaussian"`` or ``"rademacher"``.

    The forward (fixed point) is differentiable to first order by implicit
    differentiation (the incoming gradient ``a`` is replaced by the solution of
    ``b = a - J_g^T b``); the inverse and the log-det estimators to any order.

    Example:
        >>> layer = ResidualFlow(2, hidden=(16,), log_det="exact")
        >>> y = torch.randn(4, 2)
        >>> torch.allclose(layer(layer.inv(y)), y, atol=1e-5)
        True
    """

    def __init__(
        self,
        features: int,
        hidden: tuple[int, ...] | list[int] = (64, 64),
        coeff: float = 0.9,
        num_power_iterations: int = 1,
        log_det: str = "roulette",
        num_terms: int = 10,
        num_exact_terms: int = 2,
        geom_p: float = 0.5,
        atol: float = 1e-10,
        rtol: float = 1e-8,
        max_iter: int = 1000,
        probe: str = "gaussian",
    ) -> None:
        super().__init__(event_dim=1)
        self.features = dim = check_int(features, "features")
        hidden = check_hidden(hidden)
        if log_det not in _LOG_DETS:
            raise ParameterError(f"log_det must be one of {_LOG_DETS}; got {log_det!r}")
        self.log_det = log_det
        if probe not in ("gaussian", "rademacher"):
            raise ParameterError(f"probe must be 'gaussian' or 'rademacher'; got {probe!r}")
        self.probe = probe
        self.num_terms = check_int(num_terms, "num_terms")
        self.num_exact_terms = check_int(num_exact_terms, "num_exact_terms", minimum=0)
        check_positive(geom_p, "geom_p")
        if geom_p >= 1:
            raise ParameterError(f"geom_p must lie in (0, 1); got {geom_p!r}")
        self.geom_p = float(geom_p)
        check_positive(atol, "atol")
        check_positive(rtol, "rtol")
        self.atol, self.rtol = float(atol), float(rtol)
        self.max_iter = check_int(max_iter, "max_iter")
        check_positive(coeff, "coeff")
        if coeff >= 1:
            raise ParameterError(f"coeff must lie in (0, 1) for an invertible residual block; got {coeff!r}")
        sizes = [dim, *hidden, dim]
        self.linears = nn.ModuleList(
            SpectralNormLinear(a, b, coeff, num_power_iterations, mode="bound") for a, b in zip(sizes[:-1], sizes[1:])
        )
        self.activations = nn.ModuleList(LipSwish() for _ in sizes[1:-1])

    # -- g as a pure function of (x, weights) ---------------------------------------
    stochastic_log_det = property(lambda self: self.log_det != "exact")  # type: ignore[assignment]

    def _weights(self) -> list[Tensor]:
        """Normalised weights, computed once per public call (a power-iteration step after a weight change)."""
        return [lin.normalized_weight() for lin in self.linears]

    def _g(self, x: Tensor, weights: list[Tensor]) -> Tensor:
        h = x
        for i, (lin, w) in enumerate(zip(self.linears, weights)):
            h = F.linear(h, w, lin.bias)
            if i < len(self.activations):
                h = self.activations[i](h)
        return h

    def g(self, x: Tensor) -> Tensor:
        """The residual branch ``g(x)``, ``(..., D) -> (..., D)``."""
        return self._g(x, self._weights())

    def lipschitz_bound(self) -> Tensor:
        """``prod_i ||W_i||_2`` of the normalised weights: an exact upper bound on ``Lip(g)``."""
        with torch.no_grad():
            ws = [lin.weight / torch.clamp((lin.u @ lin.weight @ lin.v) / lin.coeff, min=1.0) for lin in self.linears]
            return torch.stack([torch.linalg.matrix_norm(w, ord=2) for w in ws]).prod()

    # -- log det(I + J_g(x)) ----------------------------------------------------------
    def _roulette_weights(
        self, batch_shape: torch.Size, device: torch.device, dtype: torch.dtype, generator: torch.Generator | None
    ) -> Tensor:
        """``(K_max, *batch)`` coefficients ``1{k <= N} / P(N >= k)``, ``N = num_exact_terms + Geometric(p)``."""
        # K ~ Geometric(p) on {0, 1, ...} by inversion: floor(log U / log(1 - p)), drawn on the CPU
        u = _random.rand(batch_shape, generator=generator, dtype=torch.float64)
        k_extra = torch.floor(torch.log1p(-u) / math.log1p(-self.geom_p))
        total = self.num_exact_terms + k_extra
        k_max = max(int(total.max()) if total.numel() else 0, 1)
        ks = torch.arange(1, k_max + 1, dtype=torch.float64).reshape(-1, *([1] * len(batch_shape)))
        surv = torch.clamp(ks - self.num_exact_terms, min=0) * math.log1p(-self.geom_p)  # log P(N >= k)
        w = torch.where(ks <= total, torch.exp(-surv), torch.zeros((), dtype=torch.float64))
        return w.to(device=device, dtype=dtype)

    def log_det_jacobian(
        self, x: Tensor, weights: list[Tensor] | None = None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """``(g(x), log det(I + J_g(x)))`` with the configured estimator; shapes ``(..., D)``, ``(...)``.

        Exact with ``log_det="exact"``; otherwise an estimate whose probe (and roulette
        truncation) are drawn from ``generator``.
        """
        weights = self._weights() if weights is None else weights
        grad_on = torch.is_grad_enabled()
        with torch.enable_grad():
            xg = x if x.requires_grad else x.detach().requires_grad_(True)
            gx = self._g(xg, weights)
            batch = x.shape[:-1]
            if self.log_det == "exact":
                rows = []
                for i in range(self.features):
                    e = torch.zeros_like(gx)
                    e[..., i] = 1
                    (r,) = torch.autograd.grad(gx, xg, e, create_graph=grad_on, retain_graph=True)
                    rows.append(r)
                jac = torch.stack(rows, dim=-2)  # jac[..., i, :] = d g_i / d x
                eye = torch.eye(self.features, dtype=x.dtype, device=x.device)
                ld = torch.linalg.slogdet(eye + jac)[1]
            else:
                if self.log_det == "series":
                    coef = torch.ones(self.num_terms, *batch, dtype=x.dtype, device=x.device)
                else:
                    coef = self._roulette_weights(batch, x.device, x.dtype, generator)
                v = _random.randn_like(x, generator)
                if self.probe == "rademacher":
                    v = torch.where(v >= 0, 1.0, -1.0).to(x.dtype)
                w = v
                ld = torch.zeros(batch, dtype=x.dtype, device=x.device)
                for k in range(1, coef.shape[0] + 1):
                    (w,) = torch.autograd.grad(gx, xg, w, create_graph=grad_on, retain_graph=True)
                    ld = ld + ((-1) ** (k + 1) / k) * coef[k - 1] * (w * v).sum(-1)
        if not grad_on:
            gx, ld = gx.detach(), ld.detach()
        return gx, ld

    # -- the two directions --------------------------------------------------------------
    def inverse_and_ladj(
        self, y: Tensor, context: Tensor | None = None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Density direction ``z = y + g(y)`` and ``log det(I + J_g(y))`` (estimate or exact)."""
        self._check_context(context)
        check_tensor(y, "y")
        check_last_dim(y, self.features, "y")
        gy, ld = self.log_det_jacobian(y, generator=generator)
        return y + gy, ld

    def ladj(self, x: Tensor, y: Tensor, context: Tensor | None = None) -> Tensor:
        """Forward log-det ``-log det(I + J_g(y))``, evaluated at the data side ``y`` (no solve)."""
        return -self.log_det_jacobian(y)[1]

    def call(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """Sampling direction without the log-det: the fixed point ``x + g(x) = z``."""
        self._check_context(context)
        check_tensor(z, "z")
        check_last_dim(z, self.features, "z")
        return self._fixed_point(z, self._weights())

    def call_and_ladj(
        self, z: Tensor, context: Tensor | None = None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Sampling direction: ``x`` with ``x + g(x) = z`` by fixed-point iteration; ``-log det(I + J_g(x))``."""
        self._check_context(context)
        check_tensor(z, "z")
        check_last_dim(z, self.features, "z")
        weights = self._weights()
        x = self._fixed_point(z, weights)
        _, ld = self.log_det_jacobian(x, weights, generator)
        return x, -ld

    def _tolerances(self, dtype: torch.dtype) -> tuple[float, float]:
        floor = 4 * torch.finfo(dtype).eps
        return max(self.atol, floor), max(self.rtol, floor)

    def _fixed_point(self, z: Tensor, weights: list[Tensor]) -> Tensor:
        atol, rtol = self._tolerances(z.dtype)
        with torch.no_grad():
            zd = z.detach()
            wd = [w.detach() for w in weights]
            x = zd.clone()
            converged = False
            for it in range(1, self.max_iter + 1):
                x_new = zd - self._g(x, wd)
                if it % 10 == 0 or it == self.max_iter:
                    err = (x_new - x).abs() - (atol + rtol * (x.abs() + zd.abs()))
                    if bool((err <= 0).all()):
                        x = x_new
                        converged = True
                        break
                x = x_new
            if not converged:
                raise NotInvertibleError(
                    f"ResidualFlow fixed-point inverse did not reach atol={atol:.3g}, rtol={rtol:.3g} in "
                    f"max_iter={self.max_iter} iterations (Lipschitz bound {float(self.lipschitz_bound()):.4f}); "
                    "increase max_iter or lower coeff"
                )
        needs_grad = torch.is_grad_enabled() and (z.requires_grad or any(w.requires_grad for w in weights))
        if not needs_grad:
            return x
        # implicit differentiation: x = z - g(x*) carries d/dz and d/dtheta of F(x, z) = z - g(x);
        # _ImplicitSolve maps the incoming gradient a to b = (I + J_g^T)^{-1} a by the same contraction
        x_out = z - self._g(x, weights)
        x0 = x.detach().requires_grad_(True)
        with torch.enable_grad():
            g0 = self._g(x0, [w.detach() for w in weights])

        def solve(a: Tensor) -> Tensor:
            b = a
            for _ in range(self.max_iter):
                (jtb,) = torch.autograd.grad(g0, x0, b, retain_graph=True)
                b_new = a - jtb
                if bool(((b_new - b).abs() <= atol + rtol * (b.abs() + a.abs())).all()):
                    return b_new
                b = b_new
            return b

        return _ImplicitSolve.apply(x_out, solve)

    def extra_repr(self) -> str:
        return f"features={self.features}, log_det={self.log_det!r}"
