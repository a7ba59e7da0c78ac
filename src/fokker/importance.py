"""One summary of importance weights: :class:`LogZEstimate`, returned by every log Z estimator.

Annealed importance sampling and SMC (``fokker.mcmc.AIS``, ``fokker.mcmc.SMC``), the RBM's
AIS (``fokker.ebm.RBM.ais``) and the learned diffusion samplers (``fokker.samplers.DDS``,
``PIS``, ``DIS``) all produce unnormalized log weights ``log w_i`` whose mean weight is an
unbiased estimate of ``Z``.  From ``n`` of them (Owen 2013, *Monte Carlo theory, methods
and examples*, ch. 9):

.. math::

    \\widehat{\\log Z} = \\log \\tfrac1n \\textstyle\\sum_i w_i, \\qquad
    \\mathrm{se} = \\frac{\\mathrm{sd}(w)}{\\sqrt n\\, \\bar w} \\;\\text{(delta method)}, \\qquad
    \\mathrm{ESS} = \\frac{(\\sum_i w_i)^2}{n \\sum_i w_i^2} \\in (0, 1],

``ELBO = mean(log w) <= log Z`` in expectation (Jensen), and, when paths can be drawn from
the target's own path measure, ``EUBO = mean(log w) >= log Z`` over those paths.
``log_Z`` of a finite sample is biased low (Jensen again) but consistent; ``stderr`` is an
asymptotic estimate and is unreliable when ``ess`` is small.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from .errors import NonFiniteError, ShapeError

__all__ = ["LogZEstimate", "log_mean_exp", "log_mean_exp_stderr"]


def log_mean_exp(log_w: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``log mean exp(log_w)`` along ``dim``, computed stably."""
    return torch.logsumexp(log_w, dim) - math.log(log_w.shape[dim])


def log_mean_exp_stderr(log_w: torch.Tensor) -> float:
    """Delta-method standard error ``sd(w) / (sqrt(n) mean(w))`` of ``log mean w`` (1-d ``log_w``)."""
    n = log_w.numel()
    if n < 2:
        return math.nan
    w = torch.exp(log_w.double() - log_w.double().max())
    return float(w.std() / (math.sqrt(n) * w.mean()))


@dataclass(frozen=True)
class LogZEstimate:
    """An importance-sampling estimate of ``log Z`` with its diagnostics.

    Attributes:
        log_Z: ``log`` of an unbiased estimate of ``Z`` (``log mean w``).
        stderr: standard error of ``log_Z`` (delta method; see the module docstring).
        ess: normalized effective sample size in ``(0, 1]`` (a fraction, not a count).
        elbo: ``mean(log w)``, a lower bound on ``log Z`` in expectation (``None`` where the
            estimator has no per-sample weights with that meaning, e.g. resampling SMC).
        elbo_stderr: Monte-Carlo standard error of ``elbo``.
        eubo: ``mean(log w)`` over paths of the target's path measure, an upper bound in
            expectation; ``None`` when not computed (no exact target samples).
        num_samples: number of weights ``n``.
        num_target_evals: evaluations of the target's log density (and score) spent.
        log_weights: the ``(n,)`` log weights, when kept.
        samples: the ``(n, dim)`` weighted samples, when kept.
        details: estimator-specific extras (acceptance rates, resampling counts, ...).

    ``float(estimate)`` is ``log_Z``.
    """

    log_Z: float
    stderr: float
    ess: float
    elbo: float | None = None
    elbo_stderr: float | None = None
    eubo: float | None = None
    num_samples: int = 0
    num_target_evals: int | None = None
    log_weights: torch.Tensor | None = field(default=None, repr=False, compare=False)
    samples: torch.Tensor | None = field(default=None, repr=False, compare=False)
    details: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __float__(self) -> float:
        return float(self.log_Z)

    @classmethod
    def from_log_weights(
        cls,
        log_weights: torch.Tensor,
        *,
        samples: torch.Tensor | None = None,
        eubo_log_weights: torch.Tensor | None = None,
        num_target_evals: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> "LogZEstimate":
        """Summarize ``(n,)`` unnormalized log weights (``-inf`` allowed: a weight of zero).

        Raises :class:`~fokker.errors.NonFiniteError` on NaN or ``+inf`` weights, or when every
        weight is zero: such a result would be a NaN estimate passed on silently.
        """
        lw = _check_log_weights(log_weights, "log_weights")
        n = lw.numel()
        lw64 = lw.double()
        lse = torch.logsumexp(lw64, 0)
        log_Z = float(lse - math.log(n))
        ess = float(torch.exp(2 * lse - torch.logsumexp(2 * lw64, 0)) / n)
        finite = torch.isfinite(lw64)
        if bool(finite.all()):
            elbo = float(lw64.mean())
            elbo_se = float(lw64.std() / math.sqrt(n)) if n > 1 else math.nan
        else:  # a zero weight makes the ELBO -inf: the bound is vacuous, and says so
            elbo, elbo_se = -math.inf, math.nan
        eubo = None
        if eubo_log_weights is not None:
            eubo = float(_check_log_weights(eubo_log_weights, "eubo_log_weights").double().mean())
        return cls(
            log_Z=log_Z,
            stderr=log_mean_exp_stderr(lw64),
            ess=ess,
            elbo=elbo,
            elbo_stderr=elbo_se,
            eubo=eubo,
            num_samples=n,
            num_target_evals=num_target_evals,
            log_weights=lw.detach(),
            samples=None if samples is None else samples.detach(),
            details=dict(details or {}),
        )

    def __repr__(self) -> str:
        parts = [f"log_Z={self.log_Z:.6g}", f"stderr={self.stderr:.3g}", f"ess={self.ess:.3g}"]
        if self.elbo is not None:
            parts.append(f"elbo={self.elbo:.6g}")
        if self.eubo is not None:
            parts.append(f"eubo={self.eubo:.6g}")
        parts.append(f"num_samples={self.num_samples}")
        return f"LogZEstimate({', '.join(parts)})"


def _check_log_weights(log_weights: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(log_weights, torch.Tensor) or not log_weights.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor")
    if log_weights.dim() != 1 or log_weights.numel() < 1:
        raise ShapeError(f"{name} must be a non-empty 1-d tensor (n,); got shape {tuple(log_weights.shape)}")
    bad = torch.isnan(log_weights) | (log_weights == math.inf)
    if bool(bad.any()):
        raise NonFiniteError(
            f"{name}: {int(bad.sum())} of {log_weights.numel()} log weights are NaN or +inf; "
            "the sampler or the target produced non-finite values"
        )
    if not bool(torch.isfinite(log_weights).any()):
        raise NonFiniteError(f"{name}: every weight is zero (all log weights are -inf); no estimate exists")
    return log_weights
