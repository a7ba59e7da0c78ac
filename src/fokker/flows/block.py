"""Block neural autoregressive flow (BNAF; De Cao, Aziz & Titov 2019), with an inverse.

One network is the whole autoregressive bijection (no conditioner / transformer split).  In the
density direction (data ``y`` -> noise ``x``), every layer is ``h -> W h + b`` with ``W``
block lower triangular: ``d x d`` blocks, block ``(i, j)`` zero for ``j > i``, free for
``j < i`` and **positive** for ``j = i`` (``exp`` of a free matrix), each row weight-normalised
(De Cao et al., eqs. 8-9); hidden layers apply ``tanh``.  Output ``i`` then depends on ``y_{<=i}``
only and increases with ``y_i``, so the Jacobian is lower triangular with a positive diagonal,
computed exactly through the layers in log space as the product of the diagonal blocks (eq. 10)::

    log J_i^{(k+1)} = logsumexp_a (log W^{(k)}_{ii}[:, a] + log J_i^{(k)}[a])  (+ log tanh'(h_i) on hidden layers)

A positive skip ``x = NN(y) + c * y`` (``c = exp(B tanh(raw / B))`` per coordinate, the role of
the gated residual of Pyro's ``BlockAutoregressive``) makes each coordinate map a bijection of
the real line: the last layer combines values of ``tanh`` in ``[-1, 1]``, so
``|NN_i(y) - b_i| <= R_i = sum_j |W_ij|`` and the root of ``x_i = NN_i + c_i y_i`` lies in
``[(x_i - b_i - R_i) / c_i, (x_i - b_i + R_i) / c_i]``.  Pyro's layer has no inverse; here the
sampling direction solves the coordinates in order by safeguarded Newton in that bracket
(:func:`~fokker.flows.monotone.solve_monotone`), then ``d`` Newton steps on all coordinates with
autograd on re-attach exact first derivatives (the iteration matrix is nilpotent of index ``d``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._args import check_int
from ..errors import ParameterError
from ..nets import check_hidden
from .base import Bijection, broadcast_context
from .elementwise import soft_clamp
from .monotone import solve_monotone

__all__ = ["BlockAutoregressive"]


class _BlockLinear(nn.Module):
    """Weight-normalised block lower-triangular linear map ``(..., d a) -> (..., d b)``."""

    def __init__(self, features: int, block_in: int, block_out: int, norm: float = 1.0) -> None:
        super().__init__()
        d, a, b = features, block_in, block_out
        self.d, self.a, self.b = d, a, b
        row = torch.arange(d * b) // b
        col = torch.arange(d * a) // a
        self.register_buffer("diag", row[:, None] == col[None, :], persistent=False)
        self.register_buffer("lower", row[:, None] > col[None, :], persistent=False)
        bound = 1 / math.sqrt(d * a)
        v = torch.empty(d * b, d * a).uniform_(-bound, bound)
        self.weight = nn.Parameter(v)
        self.bias = nn.Parameter(torch.empty(d * b).uniform_(-bound, bound))
        # row norms uniform in (0, norm) (De Cao et al.'s code): units of one block get different slopes
        self.log_norm = nn.Parameter(torch.log(torch.rand(d * b).clamp_min(1e-3) * norm))

    def _masked(self) -> tuple[Tensor, Tensor]:
        """The masked weight (positive diagonal blocks) and the log of its row norms."""
        w = torch.where(self.diag, torch.exp(self.weight), torch.where(self.lower, self.weight, 0.0))
        return w, 0.5 * torch.log((w * w).sum(-1))

    def effective(self) -> tuple[Tensor, Tensor]:
        """The weight ``W`` (rows of norm ``exp(log_norm)``) and the log of its diagonal blocks ``(d, b, a)``."""
        w, log_row = self._masked()
        scale = self.log_norm - log_row
        W = w * torch.exp(scale)[:, None]
        log_diag = (self.weight + scale[:, None])[self.diag].reshape(self.d, self.b, self.a)
        return W, log_diag

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """``W h + b`` and the log of the diagonal blocks."""
        W, log_diag = self.effective()
        return F.linear(h, W, self.bias), log_diag


class BlockAutoregressive(Bijection):
    """Block neural autoregressive flow layer (De Cao, Aziz & Titov 2019, sec. 3), density direction a network.

    ``x = NN(y) + c * y`` (data ``y`` -> noise ``x``) with ``NN`` a block-masked tanh network of
    ``hidden[k] * d`` units per hidden layer (see the module docstring); ``log|det dx/dy| =
    sum_i log(dNN_i/dy_i + c_i)`` exact, in one network pass.  The sampling direction (noise ->
    data) inverts coordinate by coordinate by safeguarded Newton (sequential, ``d`` solves).

    Conditional (``context_dim > 0``): the context shifts the first layer's pre-activations by a
    linear map of ``c`` (the triangular structure and the positive diagonal do not change).

    Args:
        features: ``d``; inputs ``(..., d)``.
        hidden: hidden units **per feature** of each hidden layer (at least one layer).
        context_dim: context size (0: unconditional).
        scale_bound: ``B`` of the skip scale ``c`` (``c`` in ``[e^-B, e^B]``).
    """

    #: cap on the safeguarded-Newton iterations per coordinate of the inverse
    max_iterations: int = 100

    def __init__(self, features: int, hidden: Sequence[int] = (16, 16), context_dim: int = 0,
                 scale_bound: float = 7.0) -> None:
        hidden = check_hidden(hidden, allow_empty=False)
        super().__init__(event_dim=1, context_dim=context_dim)
        d = self.features = check_int(features, "features")
        self.hidden = hidden
        if not scale_bound > 0:
            raise ParameterError(f"scale_bound must be positive; got {scale_bound!r}")
        self.scale_bound = float(scale_bound)
        sizes = [1, *hidden, 1]
        # hidden rows of norm 1 (pre-activations of the size of the tanh-bounded inputs); output rows of
        # norm 0.1, so the layer starts near the skip x = y
        last = len(sizes) - 2
        self.layers = nn.ModuleList(
            _BlockLinear(d, a, b, 0.1 if k == last else 1.0) for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))
        )
        self.log_skip = nn.Parameter(torch.zeros(d))
        if context_dim:
            self.context_net = nn.Linear(context_dim, d * hidden[0])

    def _network(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        """``x = NN(y) + c y`` and ``log dx_i/dy_i``."""
        d = self.features
        h, log_j = y, y.new_zeros(*y.shape, 1)
        if self.context_dim:
            assert context is not None
            context = broadcast_context(context, y.shape[:-1])
            h = h.expand(*context.shape[:-1], d)
            log_j = log_j.expand(*context.shape[:-1], d, 1)
        last = len(self.layers) - 1
        for k, layer in enumerate(self.layers):
            pre, log_w = layer(h)
            if k == 0 and self.context_dim:
                pre = pre + self.context_net(context)
            log_j = torch.logsumexp(log_w + log_j[..., None, :], -1)  # (..., d, b)
            if k < last:
                h = torch.tanh(pre)
                # log tanh'(u) = 2 (log 2 - u - softplus(-2u))
                log_j = log_j + (2 * (math.log(2) - pre - F.softplus(-2 * pre))).unflatten(-1, (d, -1))
        log_c = soft_clamp(self.log_skip, self.scale_bound)
        x = pre + torch.exp(log_c) * y
        log_dx = torch.logaddexp(log_j[..., 0], log_c)
        return x, log_dx

    def inverse_and_ladj(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``x = NN(y) + c y`` and ``log|det dx/dy|`` (one network pass, exact)."""
        self._check_input(y, "y", self.features)
        self._check_context(context)
        x, log_dx = self._network(y, context)
        return x, log_dx.sum(-1)

    def _solve(self, x: Tensor, context: Tensor | None) -> Tensor:
        """``y`` with ``NN(y) + c y = x``, coordinates in order; no autograd graph."""
        with torch.no_grad():
            xd = x.detach()
            if self.context_dim:
                assert context is not None
                xd = xd.expand(*broadcast_context(context, xd.shape[:-1]).shape[:-1], self.features)
            y = torch.zeros_like(xd)
            c = torch.exp(soft_clamp(self.log_skip, self.scale_bound))
            last = self.layers[-1]
            bias, radius = last.bias, last.effective()[0].abs().sum(-1)  # |NN_i - b_i| <= R_i
            for i in range(self.features):

                def fn(t: Tensor, i: int = i) -> tuple[Tensor, Tensor]:
                    v = torch.cat([y[..., :i], t[..., None], y[..., i + 1 :]], -1)
                    out, log_dx = self._network(v, context)
                    return out[..., i], torch.exp(log_dx[..., i])

                lo = (xd[..., i] - bias[i] - radius[i]) / c[i]
                hi = (xd[..., i] - bias[i] + radius[i]) / c[i]
                y[..., i] = solve_monotone(fn, xd[..., i], lo, hi, self.max_iterations)
        return y

    def call_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``y`` with ``x = NN(y) + c y`` (sequential safeguarded Newton) and ``log|det dy/dx|``."""
        self._check_input(x, "x", self.features)
        self._check_context(context)
        y = self._solve(x, context)
        for _ in range(max(self.features, 2)):  # d steps: exact first derivatives (nilpotent iteration)
            out, log_dx = self._network(y, context)
            y = y - (out - x) * torch.exp(-log_dx)
        return y, -self._network(y, context)[1].sum(-1)

    def extra_repr(self) -> str:
        return f"features={self.features}, hidden={self.hidden}, context_dim={self.context_dim}"
