"""Convergence diagnostics: rank-normalized split R-hat, bulk and tail ESS, MCSE.

Vehtari, Gelman, Simpson, Carpenter & Buerkner (2021), "Rank-normalization,
folding, and localization: an improved R-hat for assessing convergence of
MCMC", Bayesian Analysis 16(2):

* split each chain in halves; rank-normalize the pooled draws,
  ``z = Phi^{-1}((r - 3/8) / (S + 1/4))``;
* **bulk ESS** = ESS of the rank-normalized split chains;
* **tail ESS** = min of the ESS of the indicators ``I(x <= q_05)`` and ``I(x <= q_95)``;
* **R-hat** = max of the split R-hat of the rank-normalized draws and of the
  rank-normalized folded draws ``|x - median|``.

The ESS and R-hat formulas themselves are Pyro's (``pyro.ops.stats``:
Geyer's initial monotone sequence estimator of the Stan reference manual and
Gelman-Rubin).  Inputs are ``(chains, draws, ...)``; results have the
trailing shape.  The MCSE of a posterior mean is ``sd / sqrt(ESS)`` with the
ESS of the raw (not rank-normalized) split chains.
"""

from __future__ import annotations

import torch

__all__ = ["split_chains", "rank_normalize", "ess_bulk", "ess_tail", "ess_mean", "rhat", "mcse_mean"]


def split_chains(x: torch.Tensor) -> torch.Tensor:
    """``(C, N, ...) -> (2C, N // 2, ...)`` (drops the middle draw when ``N`` is odd)."""
    n = x.shape[1] // 2
    return torch.cat([x[:, :n], x[:, x.shape[1] - n :]], dim=0)


def rank_normalize(x: torch.Tensor) -> torch.Tensor:
    """Normal scores of the pooled ranks (average ranks for ties), same shape as ``x`` ``(C, N, ...)``."""
    c, n = x.shape[:2]
    flat = x.reshape(c * n, -1)
    order = flat.argsort(0)
    ranks = torch.empty_like(flat)
    ar = torch.arange(1, c * n + 1, dtype=flat.dtype, device=flat.device).unsqueeze(-1).expand_as(flat)
    ranks.scatter_(0, order, ar)
    # average ranks over ties: rank of each value = mean of the ranks sharing that value
    sorted_vals = flat.gather(0, order)
    tied = (sorted_vals[1:] == sorted_vals[:-1]).any(0) if flat.shape[0] > 1 else torch.zeros(flat.shape[1], dtype=torch.bool)
    for j in torch.nonzero(tied).flatten().tolist():  # one host sync; columns without ties need nothing
        v, inv, counts = torch.unique_consecutive(sorted_vals[:, j], return_inverse=True, return_counts=True)
        sums = torch.zeros(v.numel(), dtype=flat.dtype, device=flat.device).index_add_(0, inv, ar[:, j])
        ranks[order[:, j], j] = (sums / counts)[inv]
    p = (ranks - 0.375) / (c * n + 0.25)
    z = torch.special.ndtri(p)
    return z.reshape(x.shape)


def _ess(x: torch.Tensor) -> torch.Tensor:
    from pyro.ops.stats import effective_sample_size  # imported lazily: pyro is heavy

    x = x.double()
    const = (x.amax((0, 1)) - x.amin((0, 1))) == 0
    ess = effective_sample_size(x, chain_dim=0, sample_dim=1)
    return torch.where(const, torch.full_like(ess, float("nan")), ess)


def ess_mean(x: torch.Tensor) -> torch.Tensor:
    """ESS of the split chains of the raw draws (for the MCSE of a mean)."""
    return _ess(split_chains(x))


def ess_bulk(x: torch.Tensor) -> torch.Tensor:
    """Bulk ESS: ESS of the rank-normalized split chains."""
    return _ess(rank_normalize(split_chains(x)))


def ess_tail(x: torch.Tensor) -> torch.Tensor:
    """Tail ESS: min over the 5% and 95% quantile indicators of their split-chain ESS."""
    xs = split_chains(x)
    flat = xs.reshape(-1, *xs.shape[2:]).double()
    q = torch.quantile(flat, torch.tensor([0.05, 0.95], dtype=flat.dtype, device=flat.device), dim=0)
    lo = _ess((xs <= q[0]).double())
    hi = _ess((xs <= q[1]).double())
    return torch.minimum(lo, hi)


def rhat(x: torch.Tensor) -> torch.Tensor:
    """Rank-normalized split R-hat: max of the bulk and folded (tail) versions."""
    from pyro.ops.stats import gelman_rubin

    xs = split_chains(x).double()
    bulk = gelman_rubin(rank_normalize(xs), chain_dim=0, sample_dim=1)
    med = xs.reshape(-1, *xs.shape[2:]).median(0).values
    tail = gelman_rubin(rank_normalize((xs - med).abs()), chain_dim=0, sample_dim=1)
    return torch.maximum(bulk, tail)


def mcse_mean(x: torch.Tensor) -> torch.Tensor:
    """Monte-Carlo standard error of the posterior mean, ``sd / sqrt(ESS_mean)``."""
    sd = x.reshape(-1, *x.shape[2:]).double().std(0)
    return sd / ess_mean(x).sqrt()
