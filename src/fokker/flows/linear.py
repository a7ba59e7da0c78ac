"""Linear bijections: ActNorm, LU-parameterized invertible linear map and 1x1 convolution.

Kingma & Dhariwal (2018), Glow, sec. 3.1-3.2 and table 1; seed 000's table of layers.

* :class:`ActNorm`: ``y = x * exp(s) + b`` per feature (per channel for images),
  ``log|det J| = sum(s)`` (times ``H W`` for images).  Data-dependent init at most once:
  when the layer's very first use is a **density-direction** call (``inverse``, data ->
  noise) in training mode, that batch sets ``b = mean(y)`` and ``s = log std(y)``, so it
  comes out with zero mean and unit variance per feature (see :class:`ActNorm`).
* :class:`InvertibleLinear`: ``y = W x`` with ``W = P L (U + diag(sign * exp(log_s)))``
  (``P`` a fixed permutation, ``L`` unit lower triangular, ``U`` strictly upper):
  ``log|det W| = sum(log_s)`` exactly, inverse by two triangular solves.
* :class:`InvertibleConv1x1`: the same ``W`` mixing the channels of every pixel of a
  ``(C, H, W)`` image, ``log|det| = H W sum(log_s)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .._args import check_int, check_positive
from ..errors import ParameterError, ShapeError
from ..nets import MLP, check_hidden
from .base import Bijection

__all__ = ["ActNorm", "InvertibleLinear", "InvertibleConv1x1"]


def _check_event_dim(event_dim: int) -> int:
    if event_dim not in (1, 3):
        raise ParameterError(f"event_dim must be 1 (vectors) or 3 (images); got {event_dim}")
    return event_dim


class ActNorm(Bijection):
    """Activation normalization (Kingma & Dhariwal 2018, Glow, sec. 3.1 and table 1).

    ``y = x * exp(s) + b`` per feature (vectors ``(..., d)``) or per channel (images
    ``(..., C, H, W)``); ``log|det dy/dx| = sum(s)`` (times ``H W`` for images), exact.

    Data-dependent initialisation happens **at most once**, and only when the very first
    use of the layer is a density-direction call (``inverse_and_ladj``, data -> noise) in
    training mode: that batch sets ``b = mean(y)``, ``s = log(std(y) + eps)`` so it comes
    out with zero mean and unit variance per feature.  Any earlier forward (sampling)
    call, an evaluation-mode call, a change of the parameters (an optimizer step or an
    in-place edit), or ``load_state_dict`` marks the layer initialised instead, so a flow
    trained by reverse KL (forward calls only) keeps its parameters.  The flag is the
    ``initialized`` buffer (saved in the state dict); :meth:`initialize` runs the
    initialisation explicitly.

    Args:
        features: number of features (vectors) or channels (images).
        event_dim: 1 for ``(..., d)`` vectors, 3 for ``(..., C, H, W)`` images.
        eps: added to the standard deviation at initialization.
    """

    def __init__(self, features: int, event_dim: int = 1, eps: float = 1e-6) -> None:
        super().__init__(event_dim=_check_event_dim(event_dim))
        self.features = check_int(features, "features")
        check_positive(eps, "eps")
        shape = (features,) if event_dim == 1 else (features, 1, 1)
        self.loc = nn.Parameter(torch.zeros(shape))
        self.log_scale = nn.Parameter(torch.zeros(shape))
        self.register_buffer("initialized", torch.tensor(False))
        self._initialized = False  # host mirror of the buffer: no sync in the hot path
        self._fresh_versions = self._versions()
        self.eps = float(eps)

    def _versions(self) -> tuple[int, int]:
        return (self.loc._version, self.log_scale._version)

    def _untouched(self) -> bool:
        """Parameters still at construction: same version counters and still the identity."""
        if self._versions() != self._fresh_versions:
            return False
        with torch.no_grad():
            return not bool(self.loc.any() or self.log_scale.any())

    def _mark_initialized(self) -> None:
        if not self._initialized:
            with torch.no_grad():
                self.initialized.fill_(True)
            self._initialized = True

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> "ActNorm":
        fresh = not self._initialized and self._versions() == self._fresh_versions
        out = super()._apply(fn, *args, **kwargs)
        if fresh:  # .to(dtype / device) is not a change of the parameters
            self._fresh_versions = self._versions()
        return out

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._initialized = False
        self._mark_initialized()

    def _event_shape(self, v: Tensor, name: str) -> tuple[int, ...]:
        if self._event_dim == 1:
            self._check_input(v, name, self.features)
            return (self.features,)
        if v.dim() < 3 or v.shape[-3] != self.features:
            raise ShapeError(f"{name} must have shape (..., {self.features}, H, W); got shape {tuple(v.shape)}")
        return tuple(v.shape[-3:])

    def _factor(self, v: Tensor) -> int:
        return 1 if self._event_dim == 1 else v.shape[-1] * v.shape[-2]

    @torch.no_grad()
    def initialize(self, y: Tensor) -> None:
        """Set ``loc``, ``log_scale`` so that the inverse of ``y`` has zero mean, unit variance.

        Needs at least two samples of every feature; marks the layer initialised.
        """
        c = self.features
        flat = y.reshape(-1, c) if self._event_dim == 1 else y.movedim(-3, -1).reshape(-1, c)
        if flat.shape[0] >= 2:
            mean = flat.mean(0)
            std = flat.std(0, unbiased=False) + self.eps
            self.loc.copy_(mean.reshape(self.loc.shape))
            self.log_scale.copy_(torch.log(std).reshape(self.log_scale.shape))
        self._mark_initialized()
        self._fresh_versions = (-1, -1)

    def call_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self._event_shape(x, "x")
        self._check_context(context)
        self._mark_initialized()
        y = x * torch.exp(self.log_scale) + self.loc
        ladj = (self.log_scale.sum() * self._factor(x)).expand(x.shape[: x.dim() - self._event_dim])
        return y, ladj

    def inverse_and_ladj(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self._event_shape(y, "y")
        self._check_context(context)
        if not self._initialized:
            if self.training and self._untouched():
                self.initialize(y)
            else:
                self._mark_initialized()
        x = (y - self.loc) * torch.exp(-self.log_scale)
        ladj = (-self.log_scale.sum() * self._factor(y)).expand(y.shape[: y.dim() - self._event_dim])
        return x, ladj

    def extra_repr(self) -> str:
        return f"features={self.features}, event_dim={self._event_dim}"


class InvertibleLinear(Bijection):
    """LU-parameterized invertible linear map ``y = W x``, ``W = P L (U + diag(s))``
    (Kingma & Dhariwal 2018, Glow, sec. 3.2, "LU decomposition").

    Initialized at a random rotation.  ``log|det W| = sum log|s|`` (exact).

    Conditional (vectors, ``context_dim > 0``): the free entries of ``L``, ``U`` and ``log|s|``
    are shifted by ``MLP(c)`` (one ``d x d`` output: strictly lower, strictly upper, diagonal;
    last layer zero at construction), so ``W(c) = P L(c) U(c)`` per context, with the same exact
    log-det and triangular-solve inverse (the conditional linear layers of Winkler et al. 2019).

    Args:
        features: ``d`` (vectors) or the number of channels ``C`` (``event_dim=3``).
        event_dim: 1 for vectors, 3 for images (acts on the channel dim of every pixel).
        context_dim: context size (vectors only; 0: unconditional).
        hidden, activation: the context network.
    """

    def __init__(self, features: int, event_dim: int = 1, context_dim: int = 0,
                 hidden: Sequence[int] = (64, 64), activation: type[nn.Module] = nn.ReLU) -> None:
        hidden = check_hidden(hidden)
        super().__init__(event_dim=_check_event_dim(event_dim), context_dim=context_dim)
        if context_dim and event_dim != 1:
            raise ParameterError("context_dim > 0 is supported for vectors (event_dim=1) only")
        d = self.features = check_int(features, "features")
        q = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64))[0]
        P, L, U = torch.linalg.lu(q)
        s = torch.diagonal(U)
        self.register_buffer("perm", P.to(torch.get_default_dtype()))
        self.register_buffer("diag_sign", torch.sign(s).to(torch.get_default_dtype()))
        self.register_buffer("lower_mask", torch.tril(torch.ones(d, d), -1))
        self.lower = nn.Parameter(L.to(torch.get_default_dtype()))
        self.upper = nn.Parameter(torch.triu(U, 1).to(torch.get_default_dtype()))
        self.log_s = nn.Parameter(torch.log(torch.abs(s)).to(torch.get_default_dtype()))
        if context_dim:
            self.net = MLP(context_dim, d * d, hidden, activation, zero_output=True)

    def _free(self, context: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """``lower``, ``upper`` (full ``d x d``, masked later) and ``log_s``, shifted by the context network."""
        if not self.context_dim:
            return self.lower, self.upper, self.log_s
        assert context is not None
        delta = self.net(context).unflatten(-1, (self.features, self.features))
        return self.lower + delta, self.upper + delta, self.log_s + torch.diagonal(delta, dim1=-2, dim2=-1)

    def _factors(self, context: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        lower, upper, log_s = self._free(context)
        eye = torch.eye(self.features, dtype=self.lower.dtype, device=self.lower.device)
        L = lower * self.lower_mask + eye
        U = upper * self.lower_mask.T + torch.diag_embed(self.diag_sign * torch.exp(log_s))
        return L, U, log_s

    def weight(self, context: Tensor | None = None) -> Tensor:
        """The matrix ``W = P L U`` (``(*cbatch, d, d)`` for a conditional layer)."""
        self._check_context(context)
        L, U, _ = self._factors(context)
        return self.perm @ L @ U

    def inverse_weight(self, context: Tensor | None = None) -> Tensor:
        """``W^{-1} = U^{-1} L^{-1} P^T`` by two triangular solves."""
        self._check_context(context)
        L, U, _ = self._factors(context)
        return self._solve(L, U)

    def _solve(self, L: Tensor, U: Tensor) -> Tensor:
        z = torch.linalg.solve_triangular(L, self.perm.T.expand_as(L), upper=False, unitriangular=True)
        return torch.linalg.solve_triangular(U, z, upper=True)

    def _mix(self, W: Tensor, v: Tensor) -> Tensor:
        if self._event_dim == 1:
            return (W @ v[..., None])[..., 0] if W.dim() > 2 else v @ W.T
        return torch.einsum("ij,...jhw->...ihw", W, v)

    def _check(self, v: Tensor, name: str, context: Tensor | None) -> None:
        self._check_context(context)
        if self._event_dim == 1:
            self._check_input(v, name, self.features)
        elif v.dim() < 3 or v.shape[-3] != self.features:
            raise ShapeError(f"{name} must have shape (..., {self.features}, H, W); got shape {tuple(v.shape)}")

    def _ladj(self, v: Tensor, log_s: Tensor) -> Tensor:
        factor = 1 if self._event_dim == 1 else v.shape[-1] * v.shape[-2]
        batch = torch.broadcast_shapes(v.shape[: v.dim() - self._event_dim], log_s.shape[:-1])
        return (log_s.sum(-1) * factor).expand(batch)

    def call_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self._check(x, "x", context)
        L, U, log_s = self._factors(context)
        return self._mix(self.perm @ L @ U, x), self._ladj(x, log_s)

    def inverse_and_ladj(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self._check(y, "y", context)
        L, U, log_s = self._factors(context)
        return self._mix(self._solve(L, U), y), -self._ladj(y, log_s)

    def extra_repr(self) -> str:
        return f"features={self.features}, event_dim={self._event_dim}, context_dim={self.context_dim}"


class InvertibleConv1x1(InvertibleLinear):
    """Invertible 1x1 convolution on ``(..., C, H, W)`` (Kingma & Dhariwal 2018, Glow, sec. 3.2):
    the LU-parameterized ``W`` mixes the channels of every pixel, ``log|det| = H W sum(log_s)``."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, event_dim=3)
