"""Linear layers ``y = W x`` with ``W`` a matrix function of free parameters, conditional too.

* :class:`Householder`: ``W = H_K ... H_1``, ``H_k = I - 2 v_k v_k^T / |v_k|^2`` (Tomczak &
  Welling 2016): orthogonal, ``log|det W| = 0``, ``W^{-1} = H_1 ... H_K``.
* :class:`MatrixExponential`: ``W = exp(M)`` (Hoogeboom et al. 2020, the convolution exponential,
  sec. 2): ``log|det W| = tr M``, ``W^{-1} = exp(-M)``; torch's ``matrix_exp`` (scaling and
  squaring, accurate to rounding) instead of Pyro's truncated power series.
* :class:`Orthogonal`: ``W = exp(A - A^T)``, a rotation (``det W = 1``), ``W^{-1} = W^T``.

With ``context_dim > 0`` the parameters are ``theta + MLP(c)`` (the MLP's last layer starts at
zero, so every context starts at the unconditional layer): ``W(c)`` per context, as Pyro's
``ConditionalHouseholder`` / ``ConditionalMatrixExponential``.  All log-dets are exact.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .._args import check_int
from ..nets import MLP, check_hidden
from .base import Bijection

__all__ = ["Householder", "MatrixExponential", "Orthogonal"]


class _ContextMatrix(Bijection):
    """A vector layer whose parameter tensor ``theta`` (shape ``shape``) may be shifted by ``MLP(c)``."""

    def __init__(self, features: int, shape: tuple[int, ...], init: Tensor, context_dim: int,
                 hidden: Sequence[int], activation: type[nn.Module]) -> None:
        hidden = check_hidden(hidden)
        super().__init__(event_dim=1, context_dim=context_dim)
        self.features = features
        self._shape = shape
        self.weight = nn.Parameter(init.reshape(shape))
        if context_dim:
            self.net = MLP(context_dim, math.prod(shape), hidden, activation, zero_output=True)

    def _theta(self, context: Tensor | None) -> Tensor:
        if not self.context_dim:
            return self.weight
        assert context is not None
        return self.weight + self.net(context).unflatten(-1, self._shape)

    def _check(self, v: Tensor, name: str, context: Tensor | None) -> None:
        self._check_input(v, name, self.features)
        self._check_context(context)

    @staticmethod
    def _batch(v: Tensor, theta_batch: torch.Size) -> torch.Size:
        return torch.broadcast_shapes(v.shape[:-1], theta_batch)

    def extra_repr(self) -> str:
        return f"features={self.features}, context_dim={self.context_dim}"


class Householder(_ContextMatrix):
    """Householder flow layer ``y = H_K ... H_1 x`` (Tomczak & Welling 2016, sec. 3, eq. 6).

    ``H_k = I - 2 v_k v_k^T / |v_k|^2`` is a reflection: ``W`` is orthogonal, ``log|det W| = 0``
    (exact) and ``W^{-1} = H_1 ... H_K`` (each reflection is its own inverse).  ``K`` reflections
    reach every orthogonal matrix of determinant ``(-1)^K`` when ``K >= d``.

    Args:
        features: ``d``.
        num_reflections: ``K`` (default ``d``).
        context_dim: context size (0: unconditional; else ``v = v_0 + MLP(c)``).
        hidden, activation: the context network.
    """

    def __init__(self, features: int, num_reflections: int | None = None, context_dim: int = 0,
                 hidden: Sequence[int] = (64, 64), activation: type[nn.Module] = nn.ReLU) -> None:
        d = check_int(features, "features")
        K = d if num_reflections is None else check_int(num_reflections, "num_reflections")
        super().__init__(d, (K, d), torch.randn(K, d) / math.sqrt(d), context_dim, hidden, activation)
        self.num_reflections = K

    def _reflect(self, v: Tensor, context: Tensor | None, reverse: bool) -> Tensor:
        vs = self._theta(context)  # (*cbatch, K, d)
        norm = (vs * vs).sum(-1).clamp_min(torch.finfo(vs.dtype).tiny)
        order = range(self.num_reflections - 1, -1, -1) if reverse else range(self.num_reflections)
        for k in order:
            u = vs[..., k, :]
            v = v - (2 * (v * u).sum(-1, keepdim=True) / norm[..., k, None]) * u
        return v

    def call_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self._check(x, "x", context)
        y = self._reflect(x, context, reverse=False)
        return y, y.new_zeros(y.shape[:-1])

    def inverse_and_ladj(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self._check(y, "y", context)
        x = self._reflect(y, context, reverse=True)
        return x, x.new_zeros(x.shape[:-1])

    def extra_repr(self) -> str:
        return f"features={self.features}, num_reflections={self.num_reflections}, context_dim={self.context_dim}"


class MatrixExponential(_ContextMatrix):
    """Matrix exponential layer ``y = exp(M) x`` (Hoogeboom et al. 2020, sec. 2; Pyro's ``MatrixExponential``).

    ``exp(M)`` is invertible for every ``M`` (``exp(M)^{-1} = exp(-M)``), ``log|det exp(M)| = tr M``
    (exact), so ``M`` is free.  ``exp`` is torch's ``matrix_exp`` (scaling and squaring with a
    Pade / Taylor approximant, accurate to rounding); starts at ``M = 0`` (the identity).

    Args:
        features: ``d``.
        context_dim: context size (0: unconditional; else ``M = M_0 + MLP(c)``).
        hidden, activation: the context network.
    """

    def __init__(self, features: int, context_dim: int = 0, hidden: Sequence[int] = (64, 64),
                 activation: type[nn.Module] = nn.ReLU) -> None:
        d = check_int(features, "features")
        super().__init__(d, (d, d), self._init(d), context_dim, hidden, activation)

    @staticmethod
    def _init(d: int) -> Tensor:
        return torch.zeros(d, d)

    def _generator(self, context: Tensor | None) -> Tensor:
        """``M`` (``(*cbatch, d, d)``)."""
        return self._theta(context)

    def _ladj(self, M: Tensor, v: Tensor) -> Tensor:
        tr = torch.diagonal(M, dim1=-2, dim2=-1).sum(-1)
        return tr.expand(self._batch(v, M.shape[:-2]))

    @staticmethod
    def _matvec(W: Tensor, v: Tensor) -> Tensor:
        return (W @ v[..., None])[..., 0]

    def call_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self._check(x, "x", context)
        M = self._generator(context)
        return self._matvec(torch.linalg.matrix_exp(M), x), self._ladj(M, x)

    def inverse_and_ladj(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self._check(y, "y", context)
        M = self._generator(context)
        return self._matvec(torch.linalg.matrix_exp(-M), y), -self._ladj(M, y)


class Orthogonal(MatrixExponential):
    """Rotation layer ``y = exp(A - A^T) x`` (the exponential map onto SO(d); Lezcano-Casado &
    Martinez-Rubio 2019, sec. 3; zuko's ``RotationTransform``).

    ``A - A^T`` is skew-symmetric, so ``W = exp(A - A^T)`` is orthogonal with ``det W = 1``:
    ``log|det W| = 0`` (exact) and ``W^{-1} = W^T``.  Starts at a random rotation (``A`` with
    entries of standard deviation ``1 / sqrt(d)``), like :class:`~fokker.flows.linear.InvertibleLinear`.

    Args: as :class:`MatrixExponential` (with a context, ``A = A_0 + MLP(c)``).
    """

    @staticmethod
    def _init(d: int) -> Tensor:
        return torch.randn(d, d) / math.sqrt(d)

    def _generator(self, context: Tensor | None) -> Tensor:
        A = self._theta(context)
        return A - A.transpose(-1, -2)

    def _ladj(self, M: Tensor, v: Tensor) -> Tensor:
        return v.new_zeros(self._batch(v, M.shape[:-2]))

    def inverse_and_ladj(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self._check(y, "y", context)
        M = self._generator(context)
        return self._matvec(torch.linalg.matrix_exp(M).transpose(-1, -2), y), self._ladj(M, y)
