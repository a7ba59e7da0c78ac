"""Exact partition function of a Bernoulli-Bernoulli RBM by enumeration over the smaller layer.

Energy (Smolensky 1986; Hinton 2002, "Training products of experts by minimizing contrastive
divergence", Sec. 5; seed 000, "restricted Boltzmann machines") with
``W: (num_visible, num_hidden)``, visible bias ``b``, hidden bias ``c``:

.. math::  E(v, h) = -v^\\top W h - b^\\top v - c^\\top h,
           \\qquad v \\in \\{0,1\\}^{n_v},\\ h \\in \\{0,1\\}^{n_h}.

The units of one layer are conditionally independent given the other, so one
layer sums out in closed form:

.. math::  \\log Z = \\operatorname{logsumexp}_{h}\\Big[c^\\top h
                     + \\textstyle\\sum_i \\operatorname{softplus}(b_i + (W h)_i)\\Big]
                   = \\operatorname{logsumexp}_{v}\\Big[b^\\top v
                     + \\textstyle\\sum_j \\operatorname{softplus}(c_j + (W^\\top v)_j)\\Big].

:func:`rbm_log_Z` enumerates the ``2^min(n_v, n_h)`` states of the smaller
layer in chunks, in float64 with a streaming logsumexp.  Exact up to float64
rounding; it refuses layers larger than ``max_units`` (default 20, about a
million states) — use AIS (:meth:`fokker.ebm.RBM.ais`) there.
"""

from __future__ import annotations

import torch
from torch.nn.functional import softplus

from ..errors import ParameterError, ShapeError

MAX_ENUMERATED_UNITS = 20


def enumerate_binary(num_units: int, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None,
                     start: int = 0, stop: int | None = None) -> torch.Tensor:
    """Binary states ``start..stop-1`` of ``num_units`` units as rows ``(stop - start, num_units)`` (bit ``i`` = unit ``i``)."""
    if isinstance(num_units, bool) or not isinstance(num_units, int) or num_units < 0:
        raise ParameterError(f"num_units must be an integer >= 0; got {num_units!r}")
    stop = 2**num_units if stop is None else stop
    codes = torch.arange(start, stop, device=device, dtype=torch.int64)
    bits = torch.arange(num_units, device=device, dtype=torch.int64)
    return ((codes.unsqueeze(-1) >> bits) & 1).to(dtype)


def _check_params(W: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> None:
    if W.dim() != 2:
        raise ShapeError(f"W must have shape (num_visible, num_hidden); got {tuple(W.shape)}")
    nv, nh = W.shape
    if b.shape != (nv,):
        raise ShapeError(f"b (visible bias) must have shape ({nv},); got {tuple(b.shape)}")
    if c.shape != (nh,):
        raise ShapeError(f"c (hidden bias) must have shape ({nh},); got {tuple(c.shape)}")


def rbm_log_Z(
    W: torch.Tensor,
    b: torch.Tensor,
    c: torch.Tensor,
    max_units: int = MAX_ENUMERATED_UNITS,
    chunk_size: int = 2**14,
) -> torch.Tensor:
    """Exact ``log Z`` of the RBM ``(W, b, c)`` as a 0-d float64 tensor (on ``W``'s device).

    Args:
        W: weights ``(num_visible, num_hidden)``.
        b: visible bias ``(num_visible,)``.
        c: hidden bias ``(num_hidden,)``.
        max_units: largest enumerated layer (``2^max_units`` states).
        chunk_size: states per chunk (bounds memory to ``chunk_size * max(n_v, n_h)``).
    """
    _check_params(W, b, c)
    W, b, c = (t.detach().to(torch.float64) for t in (W, b, c))
    nv, nh = W.shape
    if min(nv, nh) > max_units:
        raise ParameterError(
            f"exact log Z enumerates 2^min(num_visible, num_hidden) states; min({nv}, {nh}) > max_units={max_units}: "
            "use AIS (RBM.ais) instead"
        )
    if nh <= nv:  # enumerate h: bias c on the enumerated layer, softplus over the visible layer
        enum_bias, other_bias, M = c, b, W  # (W h)_i
    else:  # enumerate v
        enum_bias, other_bias, M = b, c, W.mT
    n = enum_bias.shape[0]
    total = 2**n
    acc = torch.full((), -torch.inf, dtype=torch.float64, device=W.device)
    for start in range(0, total, chunk_size):
        s = enumerate_binary(n, torch.float64, W.device, start, min(total, start + chunk_size))
        terms = s @ enum_bias + softplus(other_bias + s @ M.mT).sum(-1)
        acc = torch.logaddexp(acc, torch.logsumexp(terms, 0))
    return acc


def rbm_free_energy(W: torch.Tensor, b: torch.Tensor, c: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``F(v) = -b^T v - sum_j softplus(c_j + (W^T v)_j)``: ``(..., num_visible) -> (...)``."""
    return -(v @ b) - softplus(c + v @ W).sum(-1)


def rbm_log_likelihood(W: torch.Tensor, b: torch.Tensor, c: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Exact ``log p(v) = -F(v) - log Z`` in float64: ``(..., num_visible) -> (...)``."""
    _check_params(W, b, c)
    log_Z = rbm_log_Z(W, b, c)
    W64, b64, c64 = (t.detach().to(torch.float64) for t in (W, b, c))
    return -rbm_free_energy(W64, b64, c64, v.to(torch.float64)) - log_Z


__all__ = ["rbm_log_Z", "rbm_log_likelihood", "rbm_free_energy", "enumerate_binary", "MAX_ENUMERATED_UNITS"]
