"""Bayesian logistic regression posteriors and the data sets of the sampling benchmarks.

Unnormalized posterior over weights ``w in R^d`` (``log_Z`` unknown: ``None``):

.. math::

    \\log\\gamma(w) = \\sum_{n=1}^N \\big[y_n\\, x_n^\\top w - \\operatorname{softplus}(x_n^\\top w)\\big]
                    + \\log\\mathcal N(w;\\, 0,\\, s^2 I),

i.e. ``y_n ~ Bernoulli(sigmoid(x_n^T w))`` with labels in ``{0, 1}`` and a normalized
Gaussian prior of standard deviation ``s = prior_scale`` (``prior_scale=None``: no prior,
likelihood only).  Score (exact): ``X^T (y - sigmoid(X w)) - w / s^2``.

Loaders follow the recipe of DDS (Vargas, Grathwohl & Doucet 2023) and "Beyond ELBOs"
(Blessing et al. 2024), see ``shared/validation/targets/README.md``: standardize every
feature column (mean 0, population standard deviation 1; a constant column is only
centred), prepend an intercept column of ones, map labels to ``{0, 1}``, prior ``N(0, I)``.
The data files are read from ``shared/validation/targets`` (or ``$FOKKER_DATA``, or an
explicit ``path``) and are never copied into the repository.

========================  =====  ==========  ================================================
loader                    N      d           labels
========================  =====  ==========  ================================================
``breast_cancer()``       569    31          scikit-learn's ``load_breast_cancer`` (0/1)
``ionosphere(path)``      351    35          ``ionosphere.csv`` last column in {-1, +1}
``sonar(path)``           208    61          ``sonar.csv`` last column in {-1, +1}
``german_credit(path)``   1000   25          ``german.data-numeric`` last column in {1, 2}
========================  =====  ==========  ================================================
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
import torch.nn.functional as F

from .._args import check_positive, check_tensor
from ..data import data_file
from ..errors import DeviceDtypeError, ParameterError, ShapeError
from .base import LOG_2PI, Target

__all__ = ["LogisticRegression", "breast_cancer", "ionosphere", "sonar", "german_credit", "standardize"]

_PathLike = str | os.PathLike | None


class LogisticRegression(Target):
    """Posterior of Bayesian logistic regression with design ``X (N, d)`` and labels ``y (N,)`` in {0, 1}.

    Gelman et al. (2013), "Bayesian Data Analysis", 3rd ed., Sec. 16.2; the benchmark setting
    (standardized features, intercept, ``N(0, I)`` prior) of Vargas, Grathwohl & Doucet (2023),
    "Denoising diffusion samplers", ICLR, and Blessing et al. (2024, "Beyond ELBOs").

    Args:
        X: design matrix, shape ``(N, d)`` (include an intercept column yourself, or use a loader).
        y: labels, shape ``(N,)``, values in ``{0, 1}`` (same dtype / device as ``X``).
        prior_scale: standard deviation of the ``N(0, s^2 I)`` prior; ``None`` for no prior.

    Buffers ``X`` and ``y`` follow ``.to()``.  ``log_Z`` is ``None`` (unknown).
    """

    name = "logistic_regression"

    X: torch.Tensor
    y: torch.Tensor

    def __init__(
        self, X: torch.Tensor, y: torch.Tensor, prior_scale: float | None = 1.0, name: str | None = None
    ) -> None:
        check_tensor(X, "X")
        if X.dim() != 2 or X.shape[0] < 1 or X.shape[1] < 1:
            raise ShapeError(f"X must have shape (N, d); got shape {tuple(X.shape)}")
        if not isinstance(y, torch.Tensor):
            raise TypeError(f"y must be a torch.Tensor, got {type(y).__name__}")
        if tuple(y.shape) != (X.shape[0],):
            raise ShapeError(f"y must have shape ({X.shape[0]},) to match X; got shape {tuple(y.shape)}")
        if y.device != X.device:
            raise DeviceDtypeError(f"y is on device {y.device} but X is on {X.device}")
        y = y.to(X.dtype)
        if not bool(torch.isfinite(X).all()):
            raise ParameterError("X must be finite; it contains NaN or inf")
        if not bool(((y == 0) | (y == 1)).all()):
            raise ParameterError("y must hold labels in {0, 1}")
        if prior_scale is not None:
            check_positive(prior_scale, "prior_scale")
        super().__init__(int(X.shape[1]), log_Z=None, name=name)
        self.prior_scale = None if prior_scale is None else float(prior_scale)
        self.register_buffer("X", X.detach().clone())
        self.register_buffer("y", y.detach().clone())

    @property
    def num_data(self) -> int:
        return int(self.X.shape[0])

    def log_likelihood(self, w: torch.Tensor) -> torch.Tensor:
        """``sum_n log Bernoulli(y_n | sigmoid(x_n^T w))``: ``(..., d) -> (...)``."""
        logits = w @ self.X.mT
        return (self.y * logits - F.softplus(logits)).sum(-1)

    def log_prior(self, w: torch.Tensor) -> torch.Tensor:
        """``log N(w; 0, s^2 I)`` (0 without a prior): ``(..., d) -> (...)``."""
        if self.prior_scale is None:
            return w.new_zeros(w.shape[:-1])
        s = self.prior_scale
        return -0.5 * (w * w).sum(-1) / s**2 - self.dim * (math.log(s) + 0.5 * LOG_2PI)

    def _log_prob(self, w: torch.Tensor) -> torch.Tensor:
        return self.log_likelihood(w) + self.log_prior(w)

    def _score(self, w: torch.Tensor) -> torch.Tensor:
        g = (self.y - torch.sigmoid(w @ self.X.mT)) @ self.X
        if self.prior_scale is not None:
            g = g - w / self.prior_scale**2
        return g

    def extra_repr(self) -> str:
        return f"N={self.num_data}, dim={self.dim}, prior_scale={self.prior_scale}, log_Z=unknown"


# ------------------------------------------------------------------ loaders
def standardize(X: np.ndarray, intercept: bool = True) -> np.ndarray:
    """Columns to mean 0 / population sd 1 (constant columns only centred), then a ones column first."""
    X = np.asarray(X, dtype=np.float64)
    sd = X.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    Z = (X - X.mean(axis=0)) / sd
    if intercept:
        Z = np.concatenate([np.ones((Z.shape[0], 1)), Z], axis=1)
    return Z


def _make(
    X: np.ndarray, y01: np.ndarray, name: str, prior_scale: float | None, dtype: torch.dtype | None, device
) -> LogisticRegression:
    dtype = dtype or torch.get_default_dtype()
    Xt = torch.as_tensor(standardize(X), dtype=dtype, device=device)
    yt = torch.as_tensor(y01, dtype=dtype, device=device)
    return LogisticRegression(Xt, yt, prior_scale=prior_scale, name=name)


def _read_csv_pm1(path) -> tuple[np.ndarray, np.ndarray]:
    a = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64)
    X, y = a[:, :-1], a[:, -1]
    if not np.all(np.isin(y, (-1.0, 1.0))):
        raise ParameterError(f"labels in {path} must be -1 or +1 (last column)")
    return X, (y + 1) / 2


def breast_cancer(
    prior_scale: float | None = 1.0, dtype: torch.dtype | None = None, device=None
) -> LogisticRegression:
    """Wisconsin breast cancer (scikit-learn ``load_breast_cancer``): N = 569, d = 31 with intercept."""
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    return _make(X, y.astype(np.float64), "breast_cancer", prior_scale, dtype, device)


def ionosphere(
    path: _PathLike = None, prior_scale: float | None = 1.0, dtype: torch.dtype | None = None, device=None
) -> LogisticRegression:
    """UCI ionosphere (``ionosphere.csv``): N = 351, d = 35 with intercept (the all-zero column 2 is kept)."""
    X, y = _read_csv_pm1(data_file("targets", "ionosphere.csv", path=path))
    return _make(X, y, "ionosphere", prior_scale, dtype, device)


def sonar(
    path: _PathLike = None, prior_scale: float | None = 1.0, dtype: torch.dtype | None = None, device=None
) -> LogisticRegression:
    """UCI sonar (``sonar.csv``): N = 208, d = 61 with intercept."""
    X, y = _read_csv_pm1(data_file("targets", "sonar.csv", path=path))
    return _make(X, y, "sonar", prior_scale, dtype, device)


def german_credit(
    path: _PathLike = None, prior: bool = True, dtype: torch.dtype | None = None, device=None
) -> LogisticRegression:
    """UCI German credit, numeric version (``german.data-numeric``): N = 1000, d = 25 with intercept.

    Labels ``{1, 2}`` map to ``{0, 1}``.  ``prior=True``: ``N(0, I)`` prior (DDS);
    ``prior=False``: likelihood only, the variant of the "Beyond ELBOs" code.
    """
    a = np.loadtxt(data_file("targets", "german.data-numeric", path=path), dtype=np.float64)
    X, y = a[:, :-1], a[:, -1]
    if not np.all(np.isin(y, (1.0, 2.0))):
        raise ParameterError("labels of german.data-numeric must be 1 or 2 (last column)")
    return _make(X, y - 1.0, "german_credit", 1.0 if prior else None, dtype, device)
