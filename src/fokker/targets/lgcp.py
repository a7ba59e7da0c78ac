"""Log-Gaussian Cox process posterior on the Finnish pines data (Møller et al. 1998; Heng et al. 2020).

Discretization of Heng, Bishop, Deligiannidis & Doucet (2020, "Controlled sequential Monte
Carlo", Sec. 5), as used by AFT / CRAFT (Arbel et al. 2021; Matthews et al. 2022), DDS
(Vargas et al. 2023) and CMCD: the unit square is cut into ``M x M`` cells (``M = 40``,
``d = 1600``), ``y_i`` counts the points in cell ``i`` (points on the upper edge go to the
last cell), and the latent log-intensity ``x in R^d`` has

.. math::

    x \\sim \\mathcal N(\\mu \\mathbf 1, K),\\quad
    K_{ij} = \\sigma^2 \\exp\\Big(-\\frac{\\lVert g_i - g_j \\rVert_2}{M \\beta}\\Big),\\quad
    \\log\\gamma(x) = \\log\\mathcal N(x; \\mu\\mathbf 1, K) + \\sum_i \\big(x_i y_i - a\\, e^{x_i}\\big),

with ``g_i in {0..M-1}^2`` the integer cell indices, ``sigma^2 = 1.91``, ``beta = 1/33``,
``mu = log(126) - sigma^2 / 2`` (parameters estimated by Møller et al. 1998) and cell
area ``a = 1 / M^2``.  The Gaussian prior keeps its normalizer and the Poisson term
``log Poisson(y_i | a e^{x_i})`` drops the data-only constants ``-log y_i!`` and
``y_i log a``, exactly as in those codes, so published log Z estimates are comparable
(``pines127.csv``, DDS / CMCD: ~ 503-512; ``pines126.csv`` numbers are not comparable).

Score (exact, ``O(d^2)`` per point via the Cholesky factor ``L`` of ``K``):
``-K^{-1}(x - mu) + y - a e^x``.  ``whitened=True`` gives the same posterior in the
coordinates ``e = L^{-1}(x - mu)`` (AFT's ``use_whitened``; same ``Z``):
``log gamma_w(e) = log N(e; 0, I) + sum_i (x_i y_i - a e^{x_i})``, ``x = L e + mu``.
``log_Z`` is unknown (``None``).
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch

from .._args import check_int, check_positive
from .._random import randn
from ..data import data_file
from ..errors import ParameterError
from .base import LOG_2PI, Target, as_size

__all__ = ["LGCP", "load_pines", "bin_counts"]


def load_pines(points: str | os.PathLike = "pines127") -> np.ndarray:
    """Points ``(n, 2)`` in ``[0, 1]^2``: ``"pines127"`` / ``"pines126"`` (shared data) or a CSV path.

    ``pines127.csv`` has no header (first point duplicated, as DDS / CMCD load it);
    ``pines126.csv`` has a header and an index column (Beyond ELBOs / SCLD).
    """
    if points in ("pines127", "pines126"):
        path = data_file("targets", f"{points}.csv")
    else:
        path = data_file(path=points)
    with open(path) as fh:
        first = fh.readline()
    has_header = not _is_numeric_row(first)
    a = np.genfromtxt(path, delimiter=",", skip_header=1 if has_header else 0, dtype=np.float64)
    if a.ndim != 2:
        raise ParameterError(f"points file {path} must hold one point per row")
    a = a[:, -2:]
    if not np.all(np.isfinite(a)) or a.min() < 0 or a.max() > 1:
        raise ParameterError(f"points in {path} must be finite and lie in [0, 1]^2")
    return a


def _is_numeric_row(line: str) -> bool:
    try:
        [float(v) for v in line.strip().split(",")]
    except ValueError:
        return False
    return True


def bin_counts(points: np.ndarray, grid: int) -> np.ndarray:
    """Counts ``(grid, grid)`` of ``points`` in the cells ``[i/M, (i+1)/M) x [j/M, (j+1)/M)``.

    Row index from the first coordinate; a point on the upper edge (== 1) joins the last cell.
    """
    idx = np.minimum(np.floor(np.asarray(points) * grid).astype(np.int64), grid - 1)
    counts = np.zeros((grid, grid), dtype=np.float64)
    np.add.at(counts, (idx[:, 0], idx[:, 1]), 1.0)
    return counts


class LGCP(Target):
    """Log-Gaussian Cox process posterior on an ``grid x grid`` lattice (``dim = grid^2``).

    Møller, Syversveen & Waagepetersen (1998), "Log Gaussian Cox processes", Scandinavian
    Journal of Statistics 25; discretized as in Heng, Bishop, Deligiannidis & Doucet (2020),
    "Controlled sequential Monte Carlo", Annals of Statistics 48, Sec. 5.

    Args:
        points: ``"pines127"`` (DDS / CMCD), ``"pines126"`` (Beyond ELBOs) or a CSV path of
            points in ``[0, 1]^2``.
        grid: cells per side ``M`` (default 40, ``d = 1600``).
        whitened: parameterize by ``e = L^{-1}(x - mu)`` instead of ``x``.
        signal_variance, length_scale: ``sigma^2`` and ``beta`` of the exponential kernel.

    Buffers (non-persistent: rebuilt from the data): ``counts (d,)``, ``mean`` (scalar ``mu``),
    ``scale_tril (d, d)``.
    """

    name = "lgcp"

    counts: torch.Tensor
    scale_tril: torch.Tensor
    mean: torch.Tensor

    def __init__(
        self,
        points: str | os.PathLike = "pines127",
        grid: int = 40,
        whitened: bool = False,
        signal_variance: float = 1.91,
        length_scale: float = 1.0 / 33.0,
        dtype: torch.dtype | None = None,
    ) -> None:
        check_int(grid, "grid", minimum=1)
        check_positive(signal_variance, "signal_variance")
        check_positive(length_scale, "length_scale")
        pts = load_pines(points)
        super().__init__(grid * grid, log_Z=None, name=f"lgcp_{points}" if isinstance(points, str) and points.startswith("pines") else "lgcp")
        self.grid = grid
        self.whitened = bool(whitened)
        self.num_points = int(pts.shape[0])
        self.area = 1.0 / (grid * grid)
        dtype = dtype or torch.get_default_dtype()
        # exponential kernel on integer cell coordinates, in float64
        ij = torch.cartesian_prod(torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64))
        K = signal_variance * torch.exp(-torch.cdist(ij, ij) / (grid * length_scale))
        L = torch.linalg.cholesky(K)
        mu = math.log(126.0) - 0.5 * signal_variance
        # derived from the data file and the fixed kernel: follow .to() but stay out of state_dict
        # (the 1600 x 1600 factor would add 20 MB to every checkpoint of a sampler holding the target)
        self.register_buffer("counts", torch.as_tensor(bin_counts(pts, grid).reshape(-1), dtype=dtype), persistent=False)
        self.register_buffer("mean", torch.tensor(mu, dtype=dtype), persistent=False)
        self.register_buffer("scale_tril", L.to(dtype), persistent=False)
        self._half_logdet = float(torch.log(torch.diagonal(L)).sum())

    def reference_tensor(self) -> torch.Tensor:
        return self.counts

    # x = L e + mu  and  e = L^{-1} (x - mu), batched over leading dims
    def latent(self, e: torch.Tensor) -> torch.Tensor:
        """Log-intensity ``x = L e + mu`` from whitened coordinates: ``(..., d) -> (..., d)``."""
        return e @ self.scale_tril.mT + self.mean

    def whiten(self, x: torch.Tensor) -> torch.Tensor:
        """``e = L^{-1}(x - mu)``: ``(..., d) -> (..., d)``."""
        r = (x - self.mean).unsqueeze(-1)
        return torch.linalg.solve_triangular(self.scale_tril, r, upper=False).squeeze(-1)

    def log_likelihood(self, x: torch.Tensor) -> torch.Tensor:
        """Discretized Poisson-process log-likelihood ``sum_i x_i y_i - a e^{x_i}`` (no ``log y!``)."""
        return (x * self.counts - self.area * torch.exp(x)).sum(-1)

    def _log_prob(self, z: torch.Tensor) -> torch.Tensor:
        if self.whitened:
            return -0.5 * (z * z).sum(-1) - 0.5 * self.dim * LOG_2PI + self.log_likelihood(self.latent(z))
        e = self.whiten(z)
        return -0.5 * (e * e).sum(-1) - 0.5 * self.dim * LOG_2PI - self._half_logdet + self.log_likelihood(z)

    def _score(self, z: torch.Tensor) -> torch.Tensor:
        if self.whitened:
            x = self.latent(z)
            return -z + (self.counts - self.area * torch.exp(x)) @ self.scale_tril
        e = self.whiten(z)
        prec = torch.linalg.solve_triangular(self.scale_tril.mT, e.unsqueeze(-1), upper=True).squeeze(-1)
        return -prec + self.counts - self.area * torch.exp(z)

    def prior_sample(
        self, sample_shape: torch.Size | tuple[int, ...] | int = (), *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Exact draws of the Gaussian *prior* (in this target's coordinates), e.g. to initialize chains.

        Shape ``(*sample_shape, dim)``; the normals come from ``generator`` (global RNG when ``None``).
        """
        shape = (*as_size(sample_shape), self.dim)
        e = randn(shape, generator=generator, dtype=self.counts.dtype, device=self.counts.device)
        return e if self.whitened else self.latent(e)

    def extra_repr(self) -> str:
        return f"grid={self.grid}, dim={self.dim}, points={self.num_points}, whitened={self.whitened}, log_Z=unknown"
