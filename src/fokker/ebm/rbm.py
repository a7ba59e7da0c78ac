"""Bernoulli-Bernoulli restricted Boltzmann machine (seed 000; Hinton 2002; Salakhutdinov & Murray 2008).

Energy and conditionals (``W: (n_visible, n_hidden)``, biases ``b``, ``c``):

.. math::  E(v,h) = -v^\\top W h - b^\\top v - c^\\top h, \\quad
           p(h_j = 1 \\mid v) = \\sigma(c_j + (W^\\top v)_j), \\quad
           p(v_i = 1 \\mid h) = \\sigma(b_i + (W h)_i),

free energy ``F(v) = -b^T v - sum_j softplus(c_j + (W^T v)_j)`` with
``p(v) = exp(-F(v)) / Z``.  The log-likelihood gradient (seed 000:
``E_data[v h^T] - E_model[v h^T]``) equals minus the gradient of
``mean F(v_data) - mean F(v_model)``; :meth:`RBM.loss` is that surrogate with
negatives from ``k`` block-Gibbs sweeps started at the data (CD-k) or from
persistent chains (PCD, Tieleman 2008).

``log Z``: exact by enumeration over the smaller layer when
``min(n_visible, n_hidden) <= 20`` (:func:`fokker.analytic.rbm.rbm_log_Z`),
otherwise annealed importance sampling from a base-rate RBM (:meth:`RBM.ais`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.functional import softplus

from .._args import check_int, check_positive, check_tensor, argument_checks_enabled
from ..analytic.rbm import MAX_ENUMERATED_UNITS, rbm_free_energy, rbm_log_Z
from ..errors import DomainError, ParameterError, ShapeError


@dataclass
class RBMAISResult:
    """Output of :meth:`RBM.ais`.

    Attributes:
        log_Z: ``log Z_hat = log Z_A + log mean(w)`` (unbiased in ``Z``, biased low in ``log Z``).
        log_Z_se: delta-method standard error of ``log Z_hat``: ``sd(w) / (sqrt(n) mean(w))``.
        log_weights: ``(n_chains,)`` float64 importance log-weights ``log w``.
        log_Z_base: exact ``log Z_A`` of the base-rate model.
        ess: effective sample size ``(sum w)^2 / sum w^2``.
    """

    log_Z: float
    log_Z_se: float
    log_weights: torch.Tensor
    log_Z_base: float
    ess: float

    @property
    def bounds(self) -> tuple[float, float]:
        """``(log(Z_hat - 3 sd), log(Z_hat + 3 sd))`` as reported by Salakhutdinov & Murray (lower may be -inf)."""
        lw = self.log_weights
        n = lw.numel()
        m = lw.max()
        w = torch.exp(lw - m)
        sd = float(w.std() / math.sqrt(n) / w.mean())
        lo = self.log_Z + math.log(1 - 3 * sd) if 3 * sd < 1 else -math.inf
        return lo, self.log_Z + math.log1p(3 * sd)


def ais_betas(n_betas: int) -> torch.Tensor:
    """Inverse temperatures ``0 = beta_0 < ... < beta_K = 1`` spaced as in Salakhutdinov & Murray (2008).

    Their 14 500 steps put 500 in ``[0, 0.5)``, 4 000 in ``[0.5, 0.9)`` and
    10 000 in ``[0.9, 1]``; this keeps those proportions for any ``n_betas``.
    """
    check_int(n_betas, "n_betas", minimum=3)
    n1 = max(1, round(n_betas * 500 / 14500))
    n2 = max(1, round(n_betas * 4000 / 14500))
    n3 = max(1, n_betas - n1 - n2)
    return torch.cat(
        [
            torch.linspace(0.0, 0.5, n1 + 1, dtype=torch.float64)[:-1],
            torch.linspace(0.5, 0.9, n2 + 1, dtype=torch.float64)[:-1],
            torch.linspace(0.9, 1.0, n3 + 1, dtype=torch.float64),
        ]
    )


def base_rate_bias(data: torch.Tensor, smoothing: float = 1.0) -> torch.Tensor:
    """Visible biases of the base-rate model: ``logit`` of the smoothed data marginals ``(n_visible,)``.

    ``p_i = (sum_n v_ni + smoothing) / (N + 2 smoothing)`` (a Beta prior keeps
    the logits finite for units that are always on or off).
    """
    n = data.shape[0]
    p = (data.sum(0) + smoothing) / (n + 2 * smoothing)
    return torch.log(p) - torch.log1p(-p)


class RBM(nn.Module):
    """Bernoulli-Bernoulli RBM with CD-k / PCD training and exact or AIS ``log Z``.

    Args:
        n_visible, n_hidden: layer sizes.
        k: Gibbs sweeps per negative sample in :meth:`loss`.
        persistent: PCD (chains kept across calls) instead of CD-k (chains restart at the data).
        n_chains: number of persistent chains (PCD only).
        init_std: std of the initial weights (biases start at 0).
        dtype, device: of the parameters.

    Example::

        >>> rbm = RBM(6, 4)
        >>> v = torch.bernoulli(torch.full((32, 6), 0.5))
        >>> loss = rbm.loss(v); loss.backward()     # gradient = -(CD-1 log-likelihood gradient)
        >>> ll = rbm.log_likelihood(v)              # exact: enumerates 2^4 hidden states
    """

    def __init__(
        self,
        n_visible: int,
        n_hidden: int,
        k: int = 1,
        persistent: bool = False,
        n_chains: int = 100,
        init_std: float = 0.01,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.n_visible = check_int(n_visible, "n_visible")
        self.n_hidden = check_int(n_hidden, "n_hidden")
        self.k = check_int(k, "k")
        self.persistent = bool(persistent)
        check_positive(init_std, "init_std")
        dtype = dtype or torch.get_default_dtype()
        self.W = nn.Parameter(init_std * torch.randn(n_visible, n_hidden, dtype=dtype, device=device))
        self.b = nn.Parameter(torch.zeros(n_visible, dtype=dtype, device=device))
        self.c = nn.Parameter(torch.zeros(n_hidden, dtype=dtype, device=device))
        if self.persistent:
            check_int(n_chains, "n_chains")
            self.register_buffer("chains", torch.bernoulli(torch.full((n_chains, n_visible), 0.5, dtype=dtype, device=device)))
        else:
            self.chains = None

    def extra_repr(self) -> str:
        return f"n_visible={self.n_visible}, n_hidden={self.n_hidden}, k={self.k}, persistent={self.persistent}"

    # ------------------------------------------------------------- checks
    def _check_visible(self, v: torch.Tensor, name: str = "v") -> torch.Tensor:
        check_tensor(v, name)
        if v.dim() == 0 or v.shape[-1] != self.n_visible:
            raise ShapeError(f"{name} must have shape (..., {self.n_visible}); got {tuple(v.shape)}")
        if argument_checks_enabled() and not bool(((v == 0) | (v == 1)).all()):
            raise DomainError(f"{name} must be binary (entries 0 or 1)")
        return v

    # ------------------------------------------------------------- energy
    def energy(self, v: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """``E(v, h) = -v^T W h - b^T v - c^T h``: ``(..., n_v), (..., n_h) -> (...)``."""
        return -((v @ self.W) * h).sum(-1) - v @ self.b - h @ self.c

    def free_energy(self, v: torch.Tensor) -> torch.Tensor:
        """``F(v) = -log sum_h exp(-E(v, h))``: ``(..., n_visible) -> (...)``."""
        return rbm_free_energy(self.W, self.b, self.c, v)

    def prob_h(self, v: torch.Tensor) -> torch.Tensor:
        """``p(h = 1 | v) = sigmoid(c + W^T v)``."""
        return torch.sigmoid(self.c + v @ self.W)

    def prob_v(self, h: torch.Tensor) -> torch.Tensor:
        """``p(v = 1 | h) = sigmoid(b + W h)``."""
        return torch.sigmoid(self.b + h @ self.W.mT)

    def sample_h(self, v: torch.Tensor) -> torch.Tensor:
        return torch.bernoulli(self.prob_h(v))

    def sample_v(self, h: torch.Tensor) -> torch.Tensor:
        return torch.bernoulli(self.prob_v(h))

    @torch.no_grad()
    def gibbs(self, v: torch.Tensor, k: int = 1) -> torch.Tensor:
        """``k`` block-Gibbs sweeps ``v -> h ~ p(h|v) -> v ~ p(v|h)``; detached ``(..., n_visible)``."""
        check_int(k, "k", minimum=0)
        for _ in range(k):
            v = self.sample_v(self.sample_h(v))
        return v

    @torch.no_grad()
    def sample(self, sample_shape: torch.Size | tuple[int, ...] = (), steps: int = 1000,
               init: torch.Tensor | None = None) -> torch.Tensor:
        """Approximate samples ``(*sample_shape, n_visible)``: ``steps`` Gibbs sweeps per independent chain."""
        shape = torch.Size(sample_shape)
        if init is None:
            init = torch.bernoulli(torch.full((*shape, self.n_visible), 0.5, dtype=self.W.dtype, device=self.W.device))
        else:
            self._check_visible(init, "init")
        return self.gibbs(init, steps)

    # ----------------------------------------------------------- training
    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        """CD-k / PCD surrogate ``mean F(v_data) - mean F(v_neg)`` (negatives detached).

        Its gradient is minus the CD-k (or PCD) estimate of the mean
        log-likelihood gradient; its value is not the log-likelihood.
        """
        self._check_visible(batch, "batch")
        if self.persistent:
            self.chains = self.gibbs(self.chains, self.k)
            neg = self.chains
        else:
            neg = self.gibbs(batch, self.k)
        return self.free_energy(batch).mean() - self.free_energy(neg).mean()

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.loss(batch)

    # ------------------------------------------------------------- log Z
    def log_Z_exact(self) -> torch.Tensor:
        """Exact ``log Z`` (0-d float64) by enumeration over the smaller layer (``<= 20`` units)."""
        return rbm_log_Z(self.W, self.b, self.c)

    def log_Z(self, method: str = "auto", **ais_kwargs) -> float:
        """``log Z``: ``"exact"``, ``"ais"`` (point estimate), or ``"auto"`` (exact when ``min(n_v, n_h) <= 20``)."""
        if method == "auto":
            method = "exact" if min(self.n_visible, self.n_hidden) <= MAX_ENUMERATED_UNITS else "ais"
        if method == "exact":
            return float(self.log_Z_exact())
        if method == "ais":
            return self.ais(**ais_kwargs).log_Z
        raise ParameterError(f"method must be 'auto', 'exact' or 'ais'; got {method!r}")

    def log_likelihood(self, v: torch.Tensor, log_Z: float | torch.Tensor | None = None) -> torch.Tensor:
        """``log p(v) = -F(v) - log Z`` per row (float64); ``log_Z`` defaults to :meth:`log_Z` ``("auto")``."""
        self._check_visible(v)
        lz = self.log_Z() if log_Z is None else log_Z
        with torch.no_grad():
            F = rbm_free_energy(*(t.detach().double() for t in (self.W, self.b, self.c)), v.double())
        return -F - lz

    def log_prob(self, v: torch.Tensor) -> torch.Tensor:
        """Normalized ``log p(v)`` (float64, no gradient): exact when ``min(n_v, n_h) <= 20``, else with an AIS ``log Z``."""
        return self.log_likelihood(v)

    @torch.no_grad()
    def ais(
        self,
        n_chains: int = 100,
        n_betas: int = 14_500,
        base_bias: torch.Tensor | None = None,
        data: torch.Tensor | None = None,
        betas: torch.Tensor | None = None,
    ) -> RBMAISResult:
        """Annealed importance sampling estimate of ``log Z`` (Salakhutdinov & Murray 2008).

        Path from the base-rate model ``A`` (visible biases ``b_A``, no
        couplings) to this RBM ``B``: the joint intermediate distributions are
        ``p_beta(v, h) ∝ exp(-(1 - beta) E_A(v) - beta E_B(v, h))``, whose visible marginal is

        .. math:: p^*_\\beta(v) = e^{(1-\\beta) b_A^\\top v + \\beta b^\\top v}
                  \\prod_j \\big(1 + e^{\\beta (c_j + (W^\\top v)_j)}\\big),

        with ``log Z_A = sum_i softplus(b_A,i) + n_hidden log 2``.  Each chain
        starts from an exact draw of ``A``, adds
        ``log p*_{beta_k}(v) - log p*_{beta_{k-1}}(v)`` and moves by one
        block-Gibbs sweep that leaves ``p_{beta_k}`` invariant.  Computed in float64.

        Args:
            n_chains: independent AIS runs.
            n_betas: number of intermediate temperatures (schedule :func:`ais_betas`).
            base_bias: ``b_A`` ``(n_visible,)``; default :func:`base_rate_bias` of ``data``, else zeros.
            data: binary data ``(N, n_visible)`` for the base rates.
            betas: an explicit increasing schedule from 0 to 1 (overrides ``n_betas``).
        """
        check_int(n_chains, "n_chains")
        W, b, c = (t.detach().double() for t in (self.W, self.b, self.c))
        dev = W.device
        if base_bias is None:
            base_bias = base_rate_bias(self._check_visible(data, "data").double()) if data is not None else torch.zeros_like(b)
        base_bias = base_bias.detach().to(dev, torch.float64)
        if base_bias.shape != (self.n_visible,):
            raise ShapeError(f"base_bias must have shape ({self.n_visible},); got {tuple(base_bias.shape)}")
        if betas is None:
            betas = ais_betas(n_betas)
        betas = betas.to(dev, torch.float64)
        if betas.dim() != 1 or betas.numel() < 2 or bool(betas[0] != 0) or bool(betas[-1] != 1) or bool((betas.diff() <= 0).any()):
            raise ParameterError("betas must increase strictly from 0 to 1")

        def log_p_star(v: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
            return (1 - beta) * (v @ base_bias) + beta * (v @ b) + softplus(beta * (c + v @ W)).sum(-1)

        v = torch.bernoulli(torch.sigmoid(base_bias).expand(n_chains, -1).contiguous())
        log_w = torch.zeros(n_chains, dtype=torch.float64, device=dev)
        K = betas.numel() - 1
        for k in range(1, K + 1):
            bk, bprev = betas[k], betas[k - 1]
            log_w = log_w + log_p_star(v, bk) - log_p_star(v, bprev)
            if k < K:
                h = torch.bernoulli(torch.sigmoid(bk * (c + v @ W)))
                v = torch.bernoulli(torch.sigmoid((1 - bk) * base_bias + bk * (b + h @ W.mT)))
        log_Z_A = float(softplus(base_bias).sum()) + self.n_hidden * math.log(2.0)
        m = log_w.max()
        w = torch.exp(log_w - m)
        mean_w = w.mean()
        log_Z = log_Z_A + float(m + torch.log(mean_w))
        log_Z_se = float(w.std() / math.sqrt(n_chains) / mean_w) if n_chains > 1 else math.inf
        ess = float(w.sum() ** 2 / w.pow(2).sum())
        return RBMAISResult(log_Z, log_Z_se, log_w, log_Z_A, ess)


__all__ = ["RBM", "RBMAISResult", "ais_betas", "base_rate_bias"]
