"""Gaussian-mixture data pushed through a linear SDE: the exact "perfect score network".

For data ``x0 ~ sum_k w_k N(mu_k, Sigma_k)`` and a :class:`~fokker.sde.LinearSDE` with
``x_t = alpha(t) x0 + sigma(t) eps`` (Song et al. 2021, eq. 29; seed 001 eq. 37),

.. math::

    p_t(x) = \\sum_k w_k\\, \\mathcal N\\big(x;\\ \\alpha \\mu_k,\\ C_k\\big), \\qquad
    C_k = \\alpha^2 \\Sigma_k + \\sigma^2 I.

With ``Sigma_k = U_k diag(lambda_k) U_k^T`` (one eigendecomposition, at construction),
``C_k = U_k diag(alpha^2 lambda_k + sigma^2) U_k^T``, so any number of times costs no
factorization.  With responsibilities ``r_k(x)`` and ``y_k = U_k^T (x - alpha mu_k)``:

* score ``grad log p_t(x) = -sum_k r_k C_k^{-1}(x - alpha mu_k)``;
* denoiser ``E[x0 | x_t] = sum_k r_k (mu_k + alpha Sigma_k C_k^{-1} (x - alpha mu_k))``
  (Gaussian conditioning per component);
* noise predictor ``E[eps | x_t] = sum_k r_k sigma C_k^{-1} (x - alpha mu_k)``.

Tweedie's formulas (Efron 2011, eq. 2.8; seed 004) ``E[x0|x_t] = (x + sigma^2 score)/alpha`` and
``E[eps|x_t] = -sigma score`` then hold exactly -- the tests check them.

For the critically-damped Langevin SDE (phase space ``z = (x, v)``, ``v0 ~ N(0, gamma M I)``)
the same eigenbasis splits ``p_t`` into ``d`` independent 2x2 blocks per component:
``C_k = (Phi ⊗ U_k)(lambda-dependent 2x2 blocks)(Phi ⊗ U_k)^T`` with
``block_j = lambda_j [p11, p21]^T[p11, p21] + Sigma_t^{v0}`` (``Sigma_t^{v0}``: the CLD
covariance of ``z_t`` given ``x0 = 0``).  Everything is exact (closed form, no estimate).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .._args import check_finite, check_tensor
from .._random import rand, randn
from ..errors import ParameterError, ShapeError
from ..sde.times import TimeLike, align_time, as_time64
from ..sde.cld import CriticallyDampedLangevin
from ..sde.linear import LinearSDE

__all__ = ["DiffusedGaussianMixture"]

_LOG_2PI = math.log(2 * math.pi)


class DiffusedGaussianMixture(nn.Module):
    """Exact ``p_t``, score, denoiser and noise predictor of GMM data under a linear SDE.

    The marginal of a linear SDE is Gaussian given ``x0`` (Särkkä & Solin 2019, *Applied stochastic
    differential equations*, eqs. 6.2-6.3; Song et al. 2021, eq. 29), so Gaussian-mixture data stay
    a Gaussian mixture; denoiser and noise predictor follow by Gaussian conditioning per component
    and satisfy Tweedie's formula (Robbins 1956; Efron 2011, *Tweedie's formula and selection bias*,
    eq. 2.8) exactly.  For critically-damped Langevin the phase-space marginals are those of
    Dockhorn, Vahdat & Kreis (2022, appendix B.1).  (Seed 001 eq. 37; seed 004 "Tweedie formulas".)

    Args:
        mixture: a :class:`fokker.targets.GaussianMixture` (or any object with ``loc (K, d)``,
            ``scale_tril (K, d, d)`` and ``weights (K,)``).
        sde: a :class:`~fokker.sde.LinearSDE` or :class:`~fokker.sde.CriticallyDampedLangevin`.

    All methods take ``x`` of shape ``(..., d)`` (CLD: ``(..., 2d)``) and ``t`` a float, a 0-d
    tensor or a tensor with ``x``'s leading batch shape, in ``[sde.t_min, sde.T]``.

    Example:
        >>> from fokker.targets import GaussianMixture
        >>> from fokker.sde import VPSDE
        >>> gm = GaussianMixture.isotropic(torch.tensor([[-2.0, 0.0], [2.0, 0.0]]), 0.5)
        >>> oracle = DiffusedGaussianMixture(gm, VPSDE())
        >>> oracle.score(torch.zeros(3, 2), 0.5).shape
        torch.Size([3, 2])
    """

    loc: torch.Tensor
    weights: torch.Tensor
    log_weights: torch.Tensor
    eigvals: torch.Tensor
    eigvecs: torch.Tensor

    def __init__(self, mixture, sde: LinearSDE | CriticallyDampedLangevin) -> None:
        super().__init__()
        if not isinstance(sde, (LinearSDE, CriticallyDampedLangevin)):
            raise TypeError(f"sde must be a LinearSDE or CriticallyDampedLangevin; got {type(sde).__name__}")
        for attr in ("loc", "scale_tril", "weights"):
            if not hasattr(mixture, attr):
                raise TypeError(f"mixture must have a {attr!r} attribute (e.g. fokker.targets.GaussianMixture)")
        loc, L, w = mixture.loc.detach(), mixture.scale_tril.detach(), mixture.weights.detach()
        if loc.dim() != 2 or L.shape != (*loc.shape, loc.shape[1]) or w.shape != loc.shape[:1]:
            raise ShapeError(
                "mixture needs loc (K, d), scale_tril (K, d, d), weights (K,); "
                f"got {tuple(loc.shape)}, {tuple(L.shape)}, {tuple(w.shape)}"
            )
        self.sde = sde
        self.is_cld = isinstance(sde, CriticallyDampedLangevin)
        self.dim = int(loc.shape[1])
        self.mixture = mixture
        cov = (L @ L.mT).to(torch.float64)
        evals, evecs = torch.linalg.eigh(cov)
        if not bool((evals > 0).all()):
            raise ParameterError("mixture covariances must be positive definite")
        self.register_buffer("loc", loc.clone())
        self.register_buffer("weights", w.clone())
        self.register_buffer("log_weights", torch.log(w).clone())
        self.register_buffer("eigvals", evals.to(loc.dtype))
        self.register_buffer("eigvecs", evecs.to(loc.dtype))
        ev_shape = sde.event_shape
        want = (2 * self.dim,) if self.is_cld else (self.dim,)
        if ev_shape is not None and tuple(ev_shape) != want:
            raise ShapeError(f"sde.event_shape {ev_shape} does not match the mixture's event shape {want}")
        self._want = want[0]

    # ------------------------------------------------------------ internals
    def _check(self, x: torch.Tensor, t: TimeLike) -> None:
        check_tensor(x, "x")
        if x.dim() < 1 or x.shape[-1] != self._want:
            raise ShapeError(f"x must have shape (..., {self._want}); got {tuple(x.shape)}")
        check_finite(x, "x")
        self.sde.check_t(t)

    def _coef(self, c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """float64 time coefficient -> x's dtype, shape (..., 1, 1) to broadcast over (K, d)."""
        c = align_time(c, x, 1)
        return c.unsqueeze(-1) if c.dim() else c

    def _rotate(self, z: torch.Tensor) -> torch.Tensor:
        """``U_k^T z_k`` for ``z`` (..., K, d)."""
        return torch.einsum("kji,...kj->...ki", self.eigvecs.to(z), z)

    def _unrotate(self, y: torch.Tensor) -> torch.Tensor:
        """``U_k y_k`` for ``y`` (..., K, d)."""
        return torch.einsum("kij,...kj->...ki", self.eigvecs.to(y), y)

    def _parts(self, x: torch.Tensor, t: TimeLike) -> dict[str, torch.Tensor]:
        """Per-component log densities and whitened residuals (exact)."""
        t64 = as_time64(t, x.device)
        lam = self.eigvals.to(x)
        mu = self.loc.to(x)
        if not self.is_cld:
            c = self.sde.coefficients(t64)
            al = self._coef(c.alpha, x)
            s2 = self._coef(c.sigma * c.sigma, x)
            y = self._rotate(x.unsqueeze(-2) - al * mu)  # (..., K, d)
            v = al * al * lam + s2
            Py = y / v  # eigen-coordinates of C_k^{-1}(x - alpha mu_k)
            logn = -0.5 * (y * Py + torch.log(v) + _LOG_2PI).sum(-1)
            return {"logn": logn, "Py": Py, "al": al, "s2": s2, "lam": lam, "mu": mu}
        d = self.dim
        p11, p12, p21, p22 = (self._coef(p, x) for p in self.sde.mean_coefs(t64))
        c11, c12, c22 = (self._coef(c, x) for c in self.sde.cov(t64, v0_random=True))
        xs, vs = x[..., :d].unsqueeze(-2), x[..., d:].unsqueeze(-2)
        yx, yv = self._rotate(xs - p11 * mu), self._rotate(vs - p21 * mu)
        a = p11 * p11 * lam + c11
        b = p11 * p21 * lam + c12
        c = p21 * p21 * lam + c22
        det = a * c - b * b
        Pyx, Pyv = (c * yx - b * yv) / det, (a * yv - b * yx) / det
        logn = -0.5 * (yx * Pyx + yv * Pyv + torch.log(det) + 2 * _LOG_2PI).sum(-1)
        return {"logn": logn, "Pyx": Pyx, "Pyv": Pyv, "p11": p11, "p21": p21, "lam": lam, "mu": mu,
                "c11": c11, "c12": c12, "c22": c22}

    def _resp(self, logn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lw = self.log_weights.to(logn) + logn
        lp = torch.logsumexp(lw, -1)
        return lp, torch.exp(lw - lp.unsqueeze(-1))

    # ------------------------------------------------------------ public
    def log_prob(self, x: torch.Tensor, t: TimeLike) -> torch.Tensor:
        """Exact ``log p_t(x)``; ``(..., d) -> (...)``."""
        self._check(x, t)
        return self._resp(self._parts(x, t)["logn"])[0]

    def responsibilities(self, x: torch.Tensor, t: TimeLike) -> torch.Tensor:
        """Posterior component probabilities ``r_k(x)`` under ``p_t``; ``(..., K)``."""
        self._check(x, t)
        return self._resp(self._parts(x, t)["logn"])[1]

    def score(self, x: torch.Tensor, t: TimeLike) -> torch.Tensor:
        """Exact ``grad_x log p_t(x)``; ``(..., d) -> (..., d)``."""
        self._check(x, t)
        return self._score(x, t)

    def _score(self, x: torch.Tensor, t: TimeLike) -> torch.Tensor:
        p = self._parts(x, t)
        r = self._resp(p["logn"])[1].unsqueeze(-1)
        if not self.is_cld:
            return -(r * self._unrotate(p["Py"])).sum(-2)
        sx = -(r * self._unrotate(p["Pyx"])).sum(-2)
        sv = -(r * self._unrotate(p["Pyv"])).sum(-2)
        return torch.cat([sx, sv], -1)

    def score_fn(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Unchecked score, for solver inner loops (``sde.reverse(oracle.score_fn)``)."""
        return self._score(x, t)

    def denoise(self, x: torch.Tensor, t: TimeLike) -> torch.Tensor:
        """Exact ``E[x0 | x_t = x]`` by Gaussian conditioning per component; ``(..., d)``."""
        self._check(x, t)
        p = self._parts(x, t)
        r = self._resp(p["logn"])[1].unsqueeze(-1)
        if not self.is_cld:
            post = p["mu"] + self._unrotate(p["al"] * p["lam"] * p["Py"])
        else:
            post = p["mu"] + self._unrotate(p["lam"] * (p["p11"] * p["Pyx"] + p["p21"] * p["Pyv"]))
        return (r * post).sum(-2)

    def eps(self, x: torch.Tensor, t: TimeLike) -> torch.Tensor:
        """Exact ``E[eps | x_t = x]`` for ``x_t = alpha x0 + sigma eps`` (CLD: ``z_t = mean(x0) + L_t eps``)."""
        self._check(x, t)
        p = self._parts(x, t)
        r = self._resp(p["logn"])[1].unsqueeze(-1)
        if not self.is_cld:
            return (r * self._unrotate(p["s2"].sqrt() * p["Py"])).sum(-2)
        # E[eps|z, k] = L^{-1}(z - m(E[x0|z,k])) = L^{-1} Sigma_t^{v0} C_k^{-1}(z - m_k) = L^T C_k^{-1}(z - m_k)
        l11 = p["c11"].clamp_min(0).sqrt()
        l21 = torch.where(l11 > 0, p["c12"] / torch.where(l11 > 0, l11, 1.0), 0.0)
        l22 = (p["c22"] - l21 * l21).clamp_min(0).sqrt()
        ex = (r * self._unrotate(l11 * p["Pyx"] + l21 * p["Pyv"])).sum(-2)
        ev = (r * self._unrotate(l22 * p["Pyv"])).sum(-2)
        return torch.cat([ex, ev], -1)

    def sample(
        self,
        sample_shape: torch.Size | tuple[int, ...] | int,
        t: TimeLike,
        *,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Exact samples ``(*sample_shape, d)`` of ``p_t``: ``x0`` from the mixture (ancestral), then
        the SDE's marginal.  Every draw comes from ``generator`` (the global RNG when ``None``)."""
        self.sde.check_t(t)
        shape = torch.Size((sample_shape,) if isinstance(sample_shape, int) else sample_shape)
        num_samples = shape.numel()
        u = rand((num_samples,), generator=generator, dtype=torch.float64, device=self.loc.device)
        cdf = torch.cumsum(self.weights.to(torch.float64), 0)
        k = torch.searchsorted(cdf / cdf[-1], u, right=True).clamp(max=cdf.numel() - 1)  # inverse CDF
        L = torch.linalg.cholesky((self.eigvecs * self.eigvals.unsqueeze(-2)) @ self.eigvecs.mT)
        z = randn((num_samples, self.dim, 1), generator=generator, dtype=self.loc.dtype, device=self.loc.device)
        x0 = self.loc[k] + (L[k] @ z).squeeze(-1)
        if isinstance(t, torch.Tensor) and t.dim() > 0:
            t = t.reshape(-1) if t.numel() == num_samples else t
        noise_shape = (num_samples, 2 * self.dim) if self.is_cld else x0.shape
        noise = randn(noise_shape, generator=generator, dtype=x0.dtype, device=x0.device)
        xt, _ = self.sde.sample_marginal(x0, t, noise=noise)
        return xt.reshape(*shape, xt.shape[-1])

    def extra_repr(self) -> str:
        return f"K={self.loc.shape[0]}, dim={self.dim}, sde={type(self.sde).__name__}"
