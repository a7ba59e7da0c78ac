"""Bernoulli-Bernoulli restricted Boltzmann machine (seed 000; Hinton 2002; Salakhutdinov & Murray 2008).

Energy and conditionals (``W: (num_visible, num_hidden)``, biases ``b``, ``c``):

.. math::  E(v,h) = -v^\\top W h - b^\\top v - c^\\top h, \\quad
           p(h_j = 1 \\mid v) = \\sigma(c_j + (W^\\top v)_j), \\quad
           p(v_i = 1 \\mid h) = \\sigma(b_i + (W h)_i),

free energy ``F(v) = -b^T v - sum_j softplus(c_j + (W^T v)_j)`` with
``p(v) = exp(-F(v)) / Z``.  The log-likelihood gradient (Hinton 2002, eq. 5; seed 000:
``E_data[v h^T] - E_model[v h^T]``) equals minus the gradient of
``mean F(v_data) - mean F(v_model)``; :meth:`RBM.loss` is that surrogate with
negatives from ``k`` block-Gibbs sweeps started at the data (CD-k) or from
persistent chains (PCD, Tieleman 2008).

``log Z``: exact by enumeration over the smaller layer when
``min(num_visible, num_hidden) <= 20`` (:func:`fokker.analytic.rbm.rbm_log_Z`),
otherwise annealed importance sampling from a base-rate RBM (:meth:`RBM.ais`), which
returns a :class:`fokker.importance.LogZEstimate`.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.functional import softplus

from .. import _random
from .._args import argument_checks_enabled, check_int, check_positive, check_tensor
from .._progress import progress_bar
from ..analytic.rbm import MAX_ENUMERATED_UNITS, rbm_free_energy, rbm_log_Z
from ..errors import DomainError, ParameterError, ShapeError
from ..importance import LogZEstimate


def _bernoulli(p: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Bernoulli draws with probabilities ``p`` (``u < p``, ``u ~ U[0, 1)`` from ``generator``), in ``p``'s dtype."""
    return (_random.rand_like(p, generator) < p).to(p.dtype)


def ais_betas(num_steps: int) -> torch.Tensor:
    """Inverse temperatures ``0 = beta_0 < ... < beta_K = 1`` spaced as in Salakhutdinov & Murray (2008), Sec. 4.2.

    Their 14 500 steps put 500 in ``[0, 0.5)``, 4 000 in ``[0.5, 0.9)`` and
    10 000 in ``[0.9, 1]``; this keeps those proportions for any ``num_steps`` (``K``, about
    ``num_steps + 1`` temperatures).
    """
    check_int(num_steps, "num_steps", minimum=3)
    n1 = max(1, round(num_steps * 500 / 14500))
    n2 = max(1, round(num_steps * 4000 / 14500))
    n3 = max(1, num_steps - n1 - n2)
    return torch.cat(
        [
            torch.linspace(0.0, 0.5, n1 + 1, dtype=torch.float64)[:-1],
            torch.linspace(0.5, 0.9, n2 + 1, dtype=torch.float64)[:-1],
            torch.linspace(0.9, 1.0, n3 + 1, dtype=torch.float64),
        ]
    )


def base_rate_bias(data: torch.Tensor, smoothing: float = 1.0) -> torch.Tensor:
    """Visible biases of the base-rate model: ``logit`` of the smoothed data marginals ``(num_visible,)``.

    ``p_i = (sum_n v_ni + smoothing) / (N + 2 smoothing)`` (a Beta prior keeps
    the logits finite for units that are always on or off).
    """
    n = data.shape[0]
    p = (data.sum(0) + smoothing) / (n + 2 * smoothing)
    return torch.log(p) - torch.log1p(-p)


class RBM(nn.Module):
    """Bernoulli-Bernoulli RBM with CD-k / PCD training and exact or AIS ``log Z``.

    Smolensky (1986); trained by contrastive divergence (Hinton 2002, "Training products of
    experts by minimizing contrastive divergence", Neural Computation 14, eq. (5)) or
    persistent CD (Tieleman 2008, ICML, Sec. 3); ``log Z`` by enumeration or by AIS
    (Salakhutdinov & Murray 2008, "On the quantitative analysis of deep belief networks",
    ICML, Sec. 4).

    Args:
        num_visible, num_hidden: layer sizes.
        k: Gibbs sweeps per negative sample in :meth:`loss`.
        persistent: PCD (chains kept across calls) instead of CD-k (chains restart at the data).
        num_chains: number of persistent chains (PCD only).
        init_std: std of the initial weights (biases start at 0).
        dtype, device: of the parameters.
        generator: the ``torch.Generator`` of the initial weights and chains.

    The training loss draws its Gibbs samples from the global RNG (``fokker.train.fit(seed=)``).

    Example::

        >>> rbm = RBM(6, 4)
        >>> v = torch.bernoulli(torch.full((32, 6), 0.5))
        >>> loss = rbm.loss(v); loss.backward()     # gradient = -(CD-1 log-likelihood gradient)
        >>> ll = rbm.log_likelihood(v)              # exact: enumerates 2^4 hidden states
    """

    def __init__(
        self,
        num_visible: int,
        num_hidden: int,
        k: int = 1,
        persistent: bool = False,
        num_chains: int = 100,
        init_std: float = 0.01,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.num_visible = check_int(num_visible, "num_visible")
        self.num_hidden = check_int(num_hidden, "num_hidden")
        self.k = check_int(k, "k")
        self.persistent = bool(persistent)
        check_positive(init_std, "init_std")
        dtype = dtype or torch.get_default_dtype()
        W = _random.randn((num_visible, num_hidden), generator=generator, dtype=dtype, device=device)
        self.W = nn.Parameter(init_std * W)
        self.b = nn.Parameter(torch.zeros(num_visible, dtype=dtype, device=device))
        self.c = nn.Parameter(torch.zeros(num_hidden, dtype=dtype, device=device))
        if self.persistent:
            check_int(num_chains, "num_chains")
            half = torch.full((num_chains, num_visible), 0.5, dtype=dtype, device=device)
            self.register_buffer("chains", _bernoulli(half, generator))
        else:
            self.chains = None

    def extra_repr(self) -> str:
        return f"num_visible={self.num_visible}, num_hidden={self.num_hidden}, k={self.k}, persistent={self.persistent}"

    # ------------------------------------------------------------- checks
    def _check_visible(self, v: torch.Tensor, name: str = "v") -> torch.Tensor:
        check_tensor(v, name)
        if v.dim() == 0 or v.shape[-1] != self.num_visible:
            raise ShapeError(f"{name} must have shape (..., {self.num_visible}); got {tuple(v.shape)}")
        if argument_checks_enabled() and not bool(((v == 0) | (v == 1)).all()):
            raise DomainError(f"{name} must be binary (entries 0 or 1)")
        return v

    # ------------------------------------------------------------- energy
    def energy(self, v: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """``E(v, h) = -v^T W h - b^T v - c^T h``: ``(..., n_v), (..., n_h) -> (...)``."""
        return -((v @ self.W) * h).sum(-1) - v @ self.b - h @ self.c

    def free_energy(self, v: torch.Tensor) -> torch.Tensor:
        """``F(v) = -log sum_h exp(-E(v, h))``: ``(..., num_visible) -> (...)``."""
        return rbm_free_energy(self.W, self.b, self.c, v)

    def prob_h(self, v: torch.Tensor) -> torch.Tensor:
        """``p(h = 1 | v) = sigmoid(c + W^T v)``."""
        return torch.sigmoid(self.c + v @ self.W)

    def prob_v(self, h: torch.Tensor) -> torch.Tensor:
        """``p(v = 1 | h) = sigmoid(b + W h)``."""
        return torch.sigmoid(self.b + h @ self.W.mT)

    def sample_h(self, v: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """``h ~ p(h | v)``."""
        return _bernoulli(self.prob_h(v), generator)

    def sample_v(self, h: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """``v ~ p(v | h)``."""
        return _bernoulli(self.prob_v(h), generator)

    @torch.no_grad()
    def gibbs(self, v: torch.Tensor, k: int = 1, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """``k`` block-Gibbs sweeps ``v -> h ~ p(h|v) -> v ~ p(v|h)``; detached ``(..., num_visible)``."""
        check_int(k, "k", minimum=0)
        for _ in range(k):
            v = self.sample_v(self.sample_h(v, generator=generator), generator=generator)
        return v

    @torch.no_grad()
    def sample(
        self,
        sample_shape: torch.Size | tuple[int, ...] | int = (),
        num_steps: int = 1000,
        init: torch.Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Approximate samples ``(*sample_shape, num_visible)``: ``num_steps`` Gibbs sweeps per independent chain.

        Chains start from ``init`` or from fair coin flips; randomness from ``generator``.
        """
        check_int(num_steps, "num_steps", minimum=0)
        shape = torch.Size((sample_shape,) if isinstance(sample_shape, int) else sample_shape)
        if init is None:
            half = torch.full((*shape, self.num_visible), 0.5, dtype=self.W.dtype, device=self.W.device)
            init = _bernoulli(half, generator)
        else:
            self._check_visible(init, "init")
        return self.gibbs(init, num_steps, generator=generator)

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
    @property
    def has_exact_log_Z(self) -> bool:
        """Whether :attr:`log_Z` can be enumerated (``min(num_visible, num_hidden) <= 20``)."""
        return min(self.num_visible, self.num_hidden) <= MAX_ENUMERATED_UNITS

    @property
    def log_Z(self) -> float:
        """Exact ``log Z`` by enumeration over the smaller layer (``<= 20`` units; float64).

        Larger machines raise :class:`~fokker.errors.ParameterError`: estimate ``log Z`` with
        :meth:`ais`, which returns a :class:`~fokker.importance.LogZEstimate`.
        """
        if not self.has_exact_log_Z:
            raise ParameterError(
                f"log Z of an RBM with {self.num_visible} visible and {self.num_hidden} hidden units cannot be "
                f"enumerated (more than {MAX_ENUMERATED_UNITS} units in each layer); estimate it with rbm.ais()"
            )
        return float(rbm_log_Z(self.W, self.b, self.c))

    def log_likelihood(self, v: torch.Tensor, log_Z: float | torch.Tensor | None = None) -> torch.Tensor:
        """``log p(v) = -F(v) - log Z`` per row (float64).

        ``log_Z`` defaults to the exact :attr:`log_Z` when it can be enumerated, else to the AIS
        estimate :meth:`ais` with its defaults (then ``log p`` is an estimate).
        """
        self._check_visible(v)
        if log_Z is None:
            lz = self.log_Z if self.has_exact_log_Z else self.ais(progress=False).log_Z
        else:
            lz = log_Z
        with torch.no_grad():
            F = rbm_free_energy(*(t.detach().double() for t in (self.W, self.b, self.c)), v.double())
        return -F - lz

    def log_prob(self, v: torch.Tensor) -> torch.Tensor:
        """Normalized ``log p(v)`` (float64, no gradient): exact when ``min(n_v, n_h) <= 20``, else with an AIS ``log Z``."""
        return self.log_likelihood(v)

    @torch.no_grad()
    def ais(
        self,
        num_chains: int = 100,
        num_steps: int = 14_500,
        base_bias: torch.Tensor | None = None,
        data: torch.Tensor | None = None,
        betas: torch.Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        progress: bool | None = None,
    ) -> LogZEstimate:
        """Annealed importance sampling estimate of ``log Z`` (Salakhutdinov & Murray 2008, Sec. 4; Neal 2001).

        Path from the base-rate model ``A`` (visible biases ``b_A``, no
        couplings) to this RBM ``B``: the joint intermediate distributions are
        ``p_beta(v, h) ∝ exp(-(1 - beta) E_A(v) - beta E_B(v, h))``, whose visible marginal is

        .. math:: p^*_\\beta(v) = e^{(1-\\beta) b_A^\\top v + \\beta b^\\top v}
                  \\prod_j \\big(1 + e^{\\beta (c_j + (W^\\top v)_j)}\\big),

        with ``log Z_A = sum_i softplus(b_A,i) + num_hidden log 2``.  Each chain
        starts from an exact draw of ``A``, adds
        ``log p*_{beta_k}(v) - log p*_{beta_{k-1}}(v)`` and moves by one
        block-Gibbs sweep that leaves ``p_{beta_k}`` invariant.  Computed in float64.

        Args:
            num_chains: independent AIS runs.
            num_steps: number of annealing steps ``K`` (schedule :func:`ais_betas`).
            base_bias: ``b_A`` ``(num_visible,)``; default :func:`base_rate_bias` of ``data``, else zeros.
            data: binary data ``(N, num_visible)`` for the base rates.
            betas: an explicit increasing schedule from 0 to 1 (overrides ``num_steps``).
            generator: the ``torch.Generator`` of the chains (``seed``: one seeded with it).
            progress: tqdm bar over the temperatures (``None``: on a terminal only).

        Returns:
            a :class:`~fokker.importance.LogZEstimate` whose log weights are
            ``log Z_A + log w`` (so ``log_Z = log Z_A + log mean w``, unbiased in ``Z``, biased
            low in ``log Z``; ``stderr`` the delta-method ``sd(w) / (sqrt(n) mean(w))``; ``ess`` a
            fraction; ``elbo = log Z_A + mean log w``).  ``details``: ``log_Z_base`` (``log Z_A``)
            and ``bounds``, ``(log(Z_hat - 3 sd), log(Z_hat + 3 sd))`` as reported by Salakhutdinov
            & Murray (the lower one ``-inf`` when ``3 sd >= Z_hat``), with ``sd`` the standard
            error of ``Z_hat``.
        """
        check_int(num_chains, "num_chains")
        W, b, c = (t.detach().double() for t in (self.W, self.b, self.c))
        dev = W.device
        gen = _random.make_generator(generator, seed, dev)
        if base_bias is None:
            base_bias = base_rate_bias(self._check_visible(data, "data").double()) if data is not None else torch.zeros_like(b)
        base_bias = base_bias.detach().to(dev, torch.float64)
        if base_bias.shape != (self.num_visible,):
            raise ShapeError(f"base_bias must have shape ({self.num_visible},); got {tuple(base_bias.shape)}")
        if betas is None:
            betas = ais_betas(num_steps)
        betas = betas.to(dev, torch.float64)
        if betas.dim() != 1 or betas.numel() < 2 or bool(betas[0] != 0) or bool(betas[-1] != 1) or bool((betas.diff() <= 0).any()):
            raise ParameterError("betas must increase strictly from 0 to 1")

        def log_p_star(v: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
            return (1 - beta) * (v @ base_bias) + beta * (v @ b) + softplus(beta * (c + v @ W)).sum(-1)

        v = _bernoulli(torch.sigmoid(base_bias).expand(num_chains, -1).contiguous(), gen)
        log_w = torch.zeros(num_chains, dtype=torch.float64, device=dev)
        K = betas.numel() - 1
        for k in progress_bar(range(1, K + 1), progress=progress, desc="RBM AIS"):
            bk, bprev = betas[k], betas[k - 1]
            log_w = log_w + log_p_star(v, bk) - log_p_star(v, bprev)
            if k < K:
                h = _bernoulli(torch.sigmoid(bk * (c + v @ W)), gen)
                v = _bernoulli(torch.sigmoid((1 - bk) * base_bias + bk * (b + h @ W.mT)), gen)
        log_Z_A = float(softplus(base_bias).sum()) + self.num_hidden * math.log(2.0)
        est = LogZEstimate.from_log_weights(
            log_w + log_Z_A, num_target_evals=num_chains * K, details={"log_Z_base": log_Z_A}
        )
        sd = est.stderr  # sd(Z_hat) / Z_hat
        lo = est.log_Z + math.log(1 - 3 * sd) if 3 * sd < 1 else -math.inf
        est.details["bounds"] = (lo, est.log_Z + math.log1p(3 * sd))
        return est


__all__ = ["RBM", "ais_betas", "base_rate_bias"]
