"""Masked autoregressive layers (MADE, MAF, IAF) over any elementwise monotone map.

MADE (Germain et al. 2015) gives every input an order rank ``r_i`` in ``1..d`` and
every hidden unit a degree; masks allow a connection only "forward in order", so the
output block for coordinate ``i`` depends on the coordinates with a smaller rank
(and on the context vector, degree 0) only.

One generic layer (seed 002 "autoregressive flows"; Papamakarios et al. 2017 for MAF,
Kingma et al. 2016 for IAF), noise ``x`` -> data ``y``, ``y_i = h(x_i; theta_i)``:

* **MAF** (``one_pass="inverse"``): ``theta_i = theta(y_{<i}, c)``.  The density
  direction ``x = T^{-1}(y)`` and its log-det take one MADE call; sampling is
  sequential (``d`` MADE calls).
* **IAF** (``one_pass="forward"``): ``theta_i = theta(x_{<i}, c)``.  Sampling and the
  forward log-det take one MADE call; the density direction is sequential.

The Jacobian is triangular in the order ``r``; ``log|det J| = sum_i log h'(x_i; theta_i)``
(exact).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._args import check_int
from ..errors import ParameterError
from ..nets import check_hidden, make_activation
from .base import Bijection, broadcast_context
from .elementwise import Affine, ElementwiseMap, RationalQuadratic
from .monotone import DeepSigmoid, SumOfSquares, UnconstrainedMonotone

__all__ = [
    "MaskedLinear",
    "MADE",
    "MaskedAutoregressive",
    "MAF",
    "IAF",
    "SplineAutoregressive",
    "NeuralAutoregressive",
    "UnconstrainedNeuralAutoregressive",
    "SumOfSquaresAutoregressive",
]


class MaskedLinear(nn.Linear):
    """``y = x (W * M)^T + b`` with a fixed binary mask ``M`` (``out x in``) (Germain et al. 2015, sec. 4).

    Shapes: ``(..., in) -> (..., out)``; ``mask`` is ``(out, in)``.
    """

    def __init__(self, mask: Tensor) -> None:
        out_features, in_features = mask.shape
        super().__init__(in_features, out_features)
        self.register_buffer("mask", mask.to(self.weight.dtype), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """Masked autoencoder for distribution estimation (Germain et al. 2015, sec. 4): ``(..., d [+ c]) -> (..., d, P)``.

    Output ``[..., i, :]`` depends only on inputs ``j`` with ``rank[j] < rank[i]`` and on
    the context.  Hidden degrees cycle through ``1..d-1`` (``0..d-1`` with a context, so
    the first coordinate in the order depends on the context too).

    Args:
        features: ``d``.
        num_params: ``P`` outputs per coordinate.
        hidden: hidden layer sizes.
        context_dim: size of the context vector appended to the input.
        rank: the order, a permutation of ``1..d`` (default ``1..d``).
        activation: activation class.
    """

    def __init__(
        self,
        features: int,
        num_params: int,
        hidden: Sequence[int] = (64, 64),
        context_dim: int = 0,
        rank: Tensor | None = None,
        activation: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        d = check_int(features, "features")
        hidden = check_hidden(hidden)
        check_int(num_params, "num_params")
        check_int(context_dim, "context_dim", minimum=0)
        self.features, self.num_params, self.context_dim = d, num_params, context_dim
        if rank is None:
            rank = torch.arange(1, d + 1)
        rank = torch.as_tensor(rank, dtype=torch.long)
        if sorted(rank.tolist()) != list(range(1, d + 1)):
            raise ParameterError(f"rank must be a permutation of 1..{d}; got {rank.tolist()}")
        self.register_buffer("rank", rank, persistent=False)
        deg_in = torch.cat([rank, torch.zeros(context_dim, dtype=torch.long)])
        layers: list[nn.Module] = []
        prev = deg_in
        for h in hidden:
            if context_dim:  # degree-0 units see the context only: they feed rank-1 outputs
                deg = torch.arange(h) % d
            else:  # degrees 1..d-1 (all 0 when d == 1: outputs are then learned constants)
                deg = torch.arange(h) % max(d - 1, 1) + min(1, d - 1)
            layers += [MaskedLinear(deg[:, None] >= prev[None, :]), make_activation(activation)]
            prev = deg
        deg_out = rank.repeat_interleave(num_params)
        layers.append(MaskedLinear(deg_out[:, None] > prev[None, :]))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        if self.context_dim:
            assert context is not None
            context = broadcast_context(context, x.shape[:-1])
            x = torch.cat([x.expand(*context.shape[:-1], x.shape[-1]), context], -1)
        return self.net(x).unflatten(-1, (self.features, self.num_params))


class MaskedAutoregressive(Bijection):
    """Generic masked autoregressive layer ``y_i = h(x_i; theta(v_{<i}, c))`` (noise -> data).

    Papamakarios et al. (2017), MAF, sec. 3 (``v = y``); Kingma et al. (2016), IAF, sec. 4
    (``v = x``); the map ``h`` is any :class:`~fokker.flows.elementwise.ElementwiseMap`
    (zuko's ``MaskedAutoregressiveTransform`` idea).  ``log|det J| = sum_i log h'(x_i; theta_i)``
    (triangular Jacobian in the order ``rank``; exact).

    Args:
        transform: elementwise monotone map ``h``.
        features: ``d``.
        hidden: MADE hidden sizes.
        context_dim: context vector size (0 = unconditional).
        rank: autoregressive order (a permutation of ``1..d``; default ``1..d``).
        one_pass: ``"inverse"`` (MAF: ``v = y``, density in one pass) or ``"forward"``
            (IAF: ``v = x``, sampling in one pass).
        activation: MADE activation class.

    Shapes: ``(*batch, d)``; context ``(*batch, context_dim)`` (broadcast).
    """

    def __init__(
        self,
        transform: ElementwiseMap,
        features: int,
        hidden: Sequence[int] = (64, 64),
        context_dim: int = 0,
        rank: Tensor | None = None,
        one_pass: str = "inverse",
        activation: type[nn.Module] = nn.ReLU,
    ) -> None:
        if one_pass not in ("inverse", "forward"):
            raise ParameterError(f"one_pass must be 'inverse' (MAF) or 'forward' (IAF); got {one_pass!r}")
        super().__init__(event_dim=1, context_dim=context_dim)
        if not isinstance(transform, ElementwiseMap):
            raise ParameterError(f"transform must be an ElementwiseMap (Affine, RationalQuadratic, ...); got {transform!r}")
        self.transform = transform
        self.features = check_int(features, "features")
        self.one_pass = one_pass
        self.made = MADE(features, transform.num_params, hidden, context_dim, rank, activation)

    def _prep(self, v: Tensor, name: str, context: Tensor | None) -> None:
        self._check_input(v, name, self.features)
        self._check_context(context)

    def _sweeps(self, v: Tensor, context: Tensor | None, inverse: bool, n: int) -> Tensor:
        # fixed-point sweeps: after k sweeps the coordinates of rank <= k are exact
        h = self.transform.inv if inverse else self.transform.call
        out = v
        for _ in range(n):
            out = h(v, self.made(out, context))
        return out

    def _sequential(self, v: Tensor, context: Tensor | None, inverse: bool) -> tuple[Tensor, Tensor]:
        out = self._sweeps(v, context, inverse, self.features - 1)
        h = self.transform.inverse if inverse else self.transform.forward
        out, ladj = h(v, self.made(out, context))
        return out, ladj.sum(-1)

    def call(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """``y = T(x)`` without the log-det (sampling)."""
        self._prep(x, "x", context)
        if self.one_pass == "forward":
            return self.transform.call(x, self.made(x, context))
        return self._sweeps(x, context, inverse=False, n=self.features)

    def call_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self._prep(x, "x", context)
        if self.one_pass == "forward":
            y, l = self.transform.forward(x, self.made(x, context))
            return y, l.sum(-1)
        return self._sequential(x, context, inverse=False)

    def inverse_and_ladj(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self._prep(y, "y", context)
        if self.one_pass == "inverse":
            x, l = self.transform.inverse(y, self.made(y, context))
            return x, l.sum(-1)
        return self._sequential(y, context, inverse=True)

    def ladj(self, x: Tensor, y: Tensor, context: Tensor | None = None) -> Tensor:
        """One MADE call in both modes: ``theta`` from ``y`` (MAF) or from ``x`` (IAF)."""
        if self.one_pass == "inverse":
            return -self.transform.inverse(y, self.made(y, context))[1].sum(-1)
        return self.transform.forward(x, self.made(x, context))[1].sum(-1)

    def extra_repr(self) -> str:
        return (
            f"transform={self.transform!r}, features={self.features}, "
            f"context_dim={self.context_dim}, one_pass={self.one_pass!r}"
        )


class MAF(MaskedAutoregressive):
    """Masked autoregressive flow layer (Papamakarios et al. 2017, sec. 3), affine.

    Density direction (data ``y`` -> noise ``x``) ``x_i = y_i exp(s_i) + t_i`` with
    ``(t_i, s_i) = MADE(y_{<i}, c)`` in one network pass; sampling is sequential (``d``
    passes).  ``log|det dx/dy| = sum_i s_i`` (exact), ``s`` soft-clamped to ``(-B, B)``.

    Args:
        features: ``d``; inputs ``(..., d)``.
        hidden: MADE hidden sizes.
        context_dim: context size (0 = unconditional).
        rank: autoregressive order (a permutation of ``1..d``).
        scale_bound: ``B`` of :class:`~fokker.flows.elementwise.Affine`.
        activation: MADE activation class.
    """

    def __init__(self, features: int, hidden: Sequence[int] = (64, 64), context_dim: int = 0,
                 rank: Tensor | None = None, scale_bound: float = 7.0,
                 activation: type[nn.Module] = nn.ReLU) -> None:
        super().__init__(Affine(scale_bound), features, hidden, context_dim, rank, "inverse", activation)


class IAF(MaskedAutoregressive):
    """Inverse autoregressive flow layer (Kingma et al. 2016, sec. 4), affine.

    Sampling direction (noise ``x`` -> data ``y``) ``y_i = (x_i - t_i) exp(-s_i)`` with
    ``(t_i, s_i) = MADE(x_{<i}, c)`` in one network pass (as is ``sample_and_log_prob``);
    the density direction is sequential.  ``log|det dy/dx| = -sum_i s_i`` (exact).

    Args: as :class:`MAF`.
    """

    def __init__(self, features: int, hidden: Sequence[int] = (64, 64), context_dim: int = 0,
                 rank: Tensor | None = None, scale_bound: float = 7.0,
                 activation: type[nn.Module] = nn.ReLU) -> None:
        super().__init__(Affine(scale_bound), features, hidden, context_dim, rank, "forward", activation)


class SplineAutoregressive(MaskedAutoregressive):
    """Autoregressive rational-quadratic spline layer (Durkan et al. 2019, NSF, sec. 3.1-3.2).

    ``y_i = h(x_i; theta(v_{<i}, c))`` with ``h`` a monotone rational-quadratic spline on
    ``[-bound, bound]`` and identity tails; exact log-det.

    Args:
        features, hidden, context_dim, rank, activation: as :class:`MAF`.
        bins, bound: see :class:`~fokker.flows.elementwise.RationalQuadratic`.
        one_pass: ``"inverse"`` (density in one pass, default) or ``"forward"``.
    """

    def __init__(self, features: int, hidden: Sequence[int] = (64, 64), context_dim: int = 0,
                 rank: Tensor | None = None, bins: int = 8, bound: float = 5.0,
                 one_pass: str = "inverse", activation: type[nn.Module] = nn.ReLU) -> None:
        super().__init__(RationalQuadratic(bins, bound), features, hidden, context_dim, rank, one_pass, activation)


class NeuralAutoregressive(MaskedAutoregressive):
    """Neural autoregressive flow layer (Huang et al. 2018, sec. 3.1, deep sigmoidal flow).

    Density direction (data ``y`` -> noise ``x``) ``x_i = g(y_i; theta(y_{<i}, c))`` with ``g``
    the monotone :class:`~fokker.flows.monotone.DeepSigmoid` map, ``theta`` from a MADE: training
    is one network pass; the log-det is exact.  Sampling is sequential (``d`` MADE passes), each
    inverting ``g`` by safeguarded Newton in an exact bracket (zuko's NAF bisects on ``[-10, 10]``;
    here any finite input inverts).

    Args:
        features, hidden, context_dim, rank, activation: as :class:`MAF`.
        num_units: sigmoid units ``K`` of the map.
    """

    def __init__(self, features: int, hidden: Sequence[int] = (64, 64), context_dim: int = 0,
                 rank: Tensor | None = None, num_units: int = 8,
                 activation: type[nn.Module] = nn.ReLU) -> None:
        super().__init__(DeepSigmoid(num_units), features, hidden, context_dim, rank, "inverse", activation)


class UnconstrainedNeuralAutoregressive(MaskedAutoregressive):
    """Unconstrained neural autoregressive flow layer (Wehenkel & Louppe 2019, sec. 3, UMNN-MAF).

    Density direction ``x_i = beta_i + int_0^{y_i} f(t; h_i) dt`` with ``(h_i, beta_i)`` from a MADE
    of ``y_{<i}`` (and the context) and one positive integrand network ``f`` shared by the
    coordinates (:class:`~fokker.flows.monotone.UnconstrainedMonotone`): the integral is a
    Gauss-Legendre quadrature, the log-det ``sum_i log f(y_i; h_i)`` is exact for the integral.
    Sampling is sequential, each coordinate inverted by safeguarded Newton.

    Args:
        features, hidden, context_dim, rank, activation: as :class:`MAF` (``hidden`` is the MADE's).
        signal: embedding size per coordinate.
        integrand_hidden: hidden sizes of the integrand network.
        num_nodes: quadrature nodes.
        bound: the map is linear outside ``[-bound, bound]``.
    """

    def __init__(self, features: int, hidden: Sequence[int] = (64, 64), context_dim: int = 0,
                 rank: Tensor | None = None, signal: int = 16, integrand_hidden: Sequence[int] = (64, 64),
                 num_nodes: int = 32, bound: float = 10.0, activation: type[nn.Module] = nn.ReLU) -> None:
        transform = UnconstrainedMonotone(signal, integrand_hidden, num_nodes, bound)
        super().__init__(transform, features, hidden, context_dim, rank, "inverse", activation)


class SumOfSquaresAutoregressive(MaskedAutoregressive):
    """Sum-of-squares polynomial flow layer (Jaini et al. 2019, sec. 3, SOS flow).

    Density direction ``x_i = g(y_i; theta(y_{<i}, c))`` with ``g`` the integral of a sum of squared
    polynomials (:class:`~fokker.flows.monotone.SumOfSquares`, closed form, exact log-det);
    sampling is sequential with a safeguarded-Newton inverse.

    Args:
        features, hidden, context_dim, rank, activation: as :class:`MAF`.
        degree, num_polynomials, bound, slope: see :class:`~fokker.flows.monotone.SumOfSquares`.
    """

    def __init__(self, features: int, hidden: Sequence[int] = (64, 64), context_dim: int = 0,
                 rank: Tensor | None = None, degree: int = 4, num_polynomials: int = 3, bound: float = 10.0,
                 slope: float = 1e-3, activation: type[nn.Module] = nn.ReLU) -> None:
        transform = SumOfSquares(degree, num_polynomials, bound, slope)
        super().__init__(transform, features, hidden, context_dim, rank, "inverse", activation)
