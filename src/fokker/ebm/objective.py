"""The :class:`Objective` protocol and the score-matching objectives as modules.

An objective is an ``nn.Module`` called as ``objective(model, x) -> scalar``,
where ``model`` is a :class:`fokker.targets.Target` (typically an
:class:`~fokker.ebm.EnergyModel`, ``log_prob = -E``) and ``x`` a data batch
``(n, d)``.  Objectives that carry state (a replay buffer, a learned ``log Z``)
allocate it in :meth:`Objective.setup`, which :class:`~fokker.ebm.EBM` calls
once with the model so the state follows the model's dim, dtype and device
and lands in the ``state_dict`` (checkpoints resume it).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .._args import check_int, check_positive
from ..errors import ParameterError
from .score_matching import (
    denoising_constant,
    denoising_score_matching,
    exact_score_matching,
    projections,
    sliced_score_matching,
)


def log_prob_fn(model: object) -> Callable[[torch.Tensor], torch.Tensor]:
    """The unchecked ``log_prob`` of a Target, or the callable itself."""
    fn = getattr(model, "log_prob_unchecked", None)
    if fn is not None:
        return fn
    if callable(model):
        return model  # type: ignore[return-value]
    raise TypeError(f"model must be a fokker Target or a log_prob callable; got {type(model).__name__}")


class Objective(nn.Module):
    """Base class: ``forward(model, x) -> scalar loss`` to minimize.

    Objectives that draw random numbers (projections, noise, MCMC negatives) draw them from
    the global torch RNG, which ``fokker.train.fit(seed=...)`` controls.
    """

    def setup(self, model: nn.Module) -> None:
        """Allocate state that depends on the model (dim, dtype, device). Default: nothing."""

    def forward(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


class ExactScoreMatching(Objective):
    """Mean of ``1/2 ||s||^2 + tr grad s``: Hyvarinen (2005), "Estimation of non-normalized statistical
    models by score matching", JMLR 6, Theorem 1 / eq. (4); seed 002 eq. 21.  Exact, ``d`` backward passes."""

    def forward(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return exact_score_matching(log_prob_fn(model), x).mean()


class SlicedScoreMatching(Objective):
    """Sliced score matching (Song, Garg, Shi & Ermon 2019, "Sliced score matching", eq. (8); seed 002 eq. 23).

    ``num_projections`` random directions per point.

    Args:
        num_projections: random directions per point (``>= 1``).
        distribution: ``"rademacher"`` or ``"gaussian"`` (both have ``E[v v^T] = I``).
        variance_reduction: SSM-VR (``1/2 ||s||^2`` in place of ``1/2 (v^T s)^2``).
    """

    def __init__(self, num_projections: int = 1, distribution: str = "rademacher", variance_reduction: bool = False):
        super().__init__()
        self.num_projections = check_int(num_projections, "num_projections")
        if distribution not in ("rademacher", "gaussian"):
            raise ParameterError(f"distribution must be 'rademacher' or 'gaussian'; got {distribution!r}")
        self.distribution = distribution
        self.variance_reduction = bool(variance_reduction)

    def forward(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        v = projections(x, self.num_projections, self.distribution)
        return sliced_score_matching(log_prob_fn(model), x, v, self.variance_reduction).mean()


class DenoisingScoreMatching(Objective):
    """Denoising score matching at noise level ``sigma``: Vincent (2011), "A connection between score
    matching and denoising autoencoders", Neural Computation 23, eq. (7); seed 002 eq. 22.

    The minimizer is the noised data density ``p * N(0, sigma^2 I)``, not ``p``.
    With ``subtract_constant`` (default) the reported loss is the DSM value
    minus ``d / (2 sigma^2)``, an unbiased estimate of exact SM on the noised
    data (same gradient, comparable values).
    """

    def __init__(self, sigma: float = 0.1, subtract_constant: bool = True) -> None:
        super().__init__()
        check_positive(sigma, "sigma")
        self.sigma = float(sigma)
        self.subtract_constant = bool(subtract_constant)

    def forward(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        loss = denoising_score_matching(log_prob_fn(model), x, self.sigma).mean()
        if self.subtract_constant:
            loss = loss - denoising_constant(x.shape[-1], self.sigma)
        return loss


def exact() -> ExactScoreMatching:
    """Exact (Hyvarinen) score matching objective."""
    return ExactScoreMatching()


def sliced(num_projections: int = 1, distribution: str = "rademacher", variance_reduction: bool = False) -> SlicedScoreMatching:
    """Sliced score matching objective (see :class:`SlicedScoreMatching`)."""
    return SlicedScoreMatching(num_projections, distribution, variance_reduction)


def denoising(sigma: float = 0.1, subtract_constant: bool = True) -> DenoisingScoreMatching:
    """Denoising score matching objective at noise level ``sigma``."""
    return DenoisingScoreMatching(sigma, subtract_constant)


__all__ = [
    "Objective",
    "ExactScoreMatching",
    "SlicedScoreMatching",
    "DenoisingScoreMatching",
    "exact",
    "sliced",
    "denoising",
    "log_prob_fn",
]
