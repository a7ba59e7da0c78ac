"""SurVAE surjections and dequantization (Nielsen et al. 2020; seed 002, eq. (46), tables 6-7).

SurVAE flows compose bijections, surjections and stochastic maps; each layer adds a
*likelihood contribution* ``V(x, z)`` and a looseness ``E(x, z)`` (Nielsen et al. 2020, sec. 3; seed 002, eq. (46)):

.. math::

    \\log p(x) = \\log p(z) + \\mathcal{V}(x, z) + \\mathcal{E}(x, z), \\qquad z \\sim q(z \\mid x).

The :class:`Surjection` protocol
--------------------------------
A surjection is an ``nn.Module`` with

* ``forward(x, generator=None) -> (z, v)``: the **density direction** (data ``x`` -> latent ``z``), the
  direction of SurVAE's own code, with ``v`` the likelihood contribution ``V(x, z)`` of
  shape ``x.shape[:-1]``;
* ``inverse(z, generator=None) -> x``: the **sampling direction** (latent -> data),
  stochastic for inference surjections (``generator`` drives the draws);
* ``stochastic_forward``: ``False`` for *inference* surjections (table 7: the forward
  is deterministic, ``E = 0``, ``v`` is the exact log-likelihood contribution);
  ``True`` for *generative* surjections (table 6: the forward draws ``z ~ q(z|x)``,
  ``v = log p(x|z) - log q(z|x)``, a one-sample ELBO term: ``E_q[v] <= log p(x) - log p(z)``).

Note the direction: unlike bijections (``TransformModule``, noise -> data), a
surjection's ``forward`` goes data -> latent.  In a flow's list of layers (noise ->
data order, as in :class:`SurjectiveFlow`) a surjection is applied with ``inverse``
when sampling and with ``forward`` when evaluating ``log_prob``.

Layers (table 7 unless stated):

* :class:`Slice` ``z = x_{1:k}``, ``v = log p(x_{k+1:D} | z)`` (decoder distribution);
* :class:`Augment` (table 6, generative slicing) ``z = (x, e)``, ``e ~ q(e | x)``,
  ``v = -log q(e | x)`` (a one-sample ELBO term; ``inverse`` drops ``e``);
* :class:`Abs` ``z = |x|``, ``v = log p(s | z)``, ``s = sign x`` (Bernoulli per coordinate;
  ``1/2`` by default, exact for densities symmetric under coordinate sign flips);
* :class:`Sort` ``z = sort x``, ``v = log p(I | z) = -log D!`` (uniform permutation, exact for
  exchangeable densities);
* :class:`Max` ``z = max x``, ``v = log p(k | z) + log p(x_{-k} | z, k)`` with ``k = argmax``
  uniform and ``x_j = z - e_j``, ``e_j ~ Exponential(rate)``;
* :class:`UniformDequantization` (table 6, rounding) ``z = x + u``, ``u ~ U[0,1)^D``, ``v = 0``;
* :class:`VariationalDequantization` (Ho et al. 2019, Flow++) ``z = x + u``,
  ``u ~ q(u | x)``, ``v = -log q(u | x)``; ``inverse(z) = floor(z)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal, SigmoidTransform, TransformedDistribution, Transform

from .. import _random
from .._args import check_int, check_last_dim, check_tensor
from ..errors import ParameterError
from ..nets import MLP, check_hidden
from .base import Bijection
from .flow import as_sample_shape

__all__ = [
    "Surjection",
    "Slice",
    "Augment",
    "Abs",
    "Sort",
    "Max",
    "UniformDequantization",
    "VariationalDequantization",
    "ConditionalGaussian",
    "SurjectiveFlow",
]


class Surjection(nn.Module):
    """Base class / protocol of surjective layers (Nielsen et al. 2020, SurVAE flows, sec. 3).

    Subclasses implement ``forward(x, generator=None) -> (z, v)`` (data -> latent,
    likelihood contribution ``v`` of shape ``x.shape[:-1]``) and ``inverse(z, generator=None)
    -> x`` (latent -> data); ``generator`` drives whatever they draw.
    """

    #: ``True`` when ``forward`` samples (``v`` is a one-sample ELBO term, a bound in expectation).
    stochastic_forward: bool = False

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:  # pragma: no cover
        raise NotImplementedError

    def inverse(self, z: Tensor, generator: torch.Generator | None = None) -> Tensor:  # pragma: no cover
        raise NotImplementedError


def _draw(dist: Distribution, generator: torch.Generator | None, reparam: bool, device: torch.device) -> Tensor:
    """One draw from a torch distribution (which takes no generator) reproducibly from ``generator``."""
    with _random.rng_scope(generator, [device]):
        return dist.rsample() if reparam else dist.sample()


class ConditionalGaussian(nn.Module):
    """``p(y | c) = N(y; mu(c), diag exp(2 s(c)))`` with an MLP ``c -> (mu, s)``; ``N(0, I)`` at initialisation.

    The conditional Gaussian decoders / encoders of SurVAE flows (Nielsen et al. 2020, sec. 4,
    slicing and augmentation).  Shapes ``(..., in_features) -> Distribution`` with event
    shape ``(out_features,)``.

    Args:
        in_features: size of the conditioning vector ``c``.
        out_features: size of ``y``.
        hidden: hidden widths (Softplus activations; the output layer starts at zero).
    """

    def __init__(self, in_features: int, out_features: int, hidden: Sequence[int] = (64,)) -> None:
        super().__init__()
        self.net = MLP(in_features, 2 * out_features, check_hidden(hidden), activation=nn.Softplus, zero_output=True)

    def forward(self, c: Tensor) -> Distribution:
        mu, s = self.net(c).chunk(2, dim=-1)
        return Independent(Normal(mu, torch.exp(s.clamp(-15.0, 15.0))), 1)


class Slice(Surjection):
    """Inference slicing (Nielsen et al. 2020, sec. 4): ``z = x[..., :keep]``, ``v = log p(x[..., keep:] | z)``.

    The likelihood contribution is exact.

    Args:
        features: size ``D`` of ``x``.
        keep: number ``k`` of coordinates kept, ``1 <= k < D``.
        decoder: callable ``z -> Distribution`` over the ``D - k`` dropped coordinates
            (event dim 1); default :class:`ConditionalGaussian`.
    """

    def __init__(self, features: int, keep: int, decoder: Callable[[Tensor], Distribution] | None = None) -> None:
        super().__init__()
        self.features = check_int(features, "features", minimum=2)
        self.keep = check_int(keep, "keep")
        if keep >= features:
            raise ParameterError(f"keep must be an integer < features={features}; got {keep}")
        self.decoder = decoder if decoder is not None else ConditionalGaussian(keep, features - keep)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        check_tensor(x, "x")
        check_last_dim(x, self.features, "x")
        z, rest = x[..., : self.keep], x[..., self.keep :]
        return z, self.decoder(z).log_prob(rest)

    def inverse(self, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        check_tensor(z, "z")
        check_last_dim(z, self.keep, "z")
        return torch.cat([z, _draw(self.decoder(z), generator, False, z.device)], dim=-1)


class Augment(Surjection):
    """Generative slicing / augmentation (Nielsen et al. 2020, sec. 4; Huang et al. 2020):
    ``z = (x, e)``, ``e ~ q(e | x)``, ``v = -log q(e | x)``.

    ``E_q[log p(z) + v] <= log p(x)`` with equality iff ``q(e|x)`` is the base's conditional
    ``p(e | x)``.  ``inverse(z) = z[..., :features]`` (the generative direction drops ``e``).

    Args:
        features: size ``D`` of ``x``.
        extra: number of augmented coordinates ``E``.
        encoder: callable ``x -> Distribution`` over ``e`` (event dim 1, with ``rsample``);
            default :class:`ConditionalGaussian`.
    """

    stochastic_forward = True

    def __init__(self, features: int, extra: int, encoder: Callable[[Tensor], Distribution] | None = None) -> None:
        super().__init__()
        self.features = check_int(features, "features")
        self.extra = check_int(extra, "extra")
        self.encoder = encoder if encoder is not None else ConditionalGaussian(features, extra)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        check_tensor(x, "x")
        check_last_dim(x, self.features, "x")
        q = self.encoder(x)
        e = _draw(q, generator, True, x.device)
        return torch.cat([x, e], dim=-1), -q.log_prob(e)

    def inverse(self, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        check_tensor(z, "z")
        check_last_dim(z, self.features + self.extra, "z")
        return z[..., : self.features]


class Abs(Surjection):
    """Inference absolute value (Nielsen et al. 2020, sec. 4): ``z = |x|``,
    ``v = sum_i log Bern(s_i; sigmoid(logit_i(z)))``, ``s = sign x``.

    Args:
        features: size ``D`` of ``x``.
        logits: optional callable ``z -> logits (..., D)`` of ``p(s_i = +1 | z)``; default
            ``p = 1/2`` (``v = -D log 2``), exact for densities symmetric under sign flips.

    ``x = 0`` gets ``s = +1`` (a null set).  The base distribution must live on ``z >= 0``.
    """

    def __init__(self, features: int, logits: Callable[[Tensor], Tensor] | None = None) -> None:
        super().__init__()
        self.features = check_int(features, "features")
        self.logits = logits

    def _logits(self, z: Tensor) -> Tensor:
        return torch.zeros_like(z) if self.logits is None else self.logits(z)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        check_tensor(x, "x")
        check_last_dim(x, self.features, "x")
        z = x.abs()
        positive = x >= 0
        logit = self._logits(z)
        # log sigmoid(l) if s = +1, log sigmoid(-l) otherwise
        v = F.logsigmoid(torch.where(positive, logit, -logit)).sum(-1)
        return z, v

    def inverse(self, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        check_tensor(z, "z")
        check_last_dim(z, self.features, "z")
        p = torch.sigmoid(self._logits(z))
        s = torch.where(_random.rand_like(z, generator) < p, 1.0, -1.0).to(z.dtype)
        return s * z


class Sort(Surjection):
    """Inference sort (Nielsen et al. 2020, sec. 4): ``z = sort(x)`` (ascending),
    ``v = log p(I | z) = -log D!`` (uniform permutation).

    Exact for exchangeable densities.  ``inverse`` applies a uniformly random permutation.

    Args:
        features: size ``D`` of ``x``.
    """

    def __init__(self, features: int) -> None:
        super().__init__()
        self.features = check_int(features, "features")

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        check_tensor(x, "x")
        check_last_dim(x, self.features, "x")
        z = torch.sort(x, dim=-1).values
        return z, torch.full(x.shape[:-1], -math.lgamma(self.features + 1), dtype=x.dtype, device=x.device)

    def inverse(self, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        check_tensor(z, "z")
        check_last_dim(z, self.features, "z")
        perm = torch.argsort(_random.rand_like(z, generator), dim=-1)
        return torch.gather(z, -1, perm)


class Max(Surjection):
    """Inference max (Nielsen et al. 2020, sec. 4): ``z = max x`` (shape ``(..., 1)``),
    ``k = argmax x`` uniform, ``x_j = z - e_j`` with ``e_j ~ Exponential(rate)`` for ``j != k``.

    .. math::

        v = -\\log D + \\sum_{j \\ne k} (\\log \\lambda - \\lambda (z - x_j))

    Args:
        features: size ``D`` of ``x`` (``D >= 2``).
        rate: initial rate ``lambda > 0`` (learned, ``softplus``-parameterised).
    """

    def __init__(self, features: int, rate: float = 1.0) -> None:
        super().__init__()
        self.features = check_int(features, "features", minimum=2)
        if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not rate > 0 or not math.isfinite(rate):
            raise ParameterError(f"rate must be a positive finite number; got {rate!r}")
        self.rate_raw = nn.Parameter(torch.tensor(math.log(math.expm1(rate))))

    @property
    def rate(self) -> Tensor:
        return F.softplus(self.rate_raw)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        check_tensor(x, "x")
        check_last_dim(x, self.features, "x")
        z, _ = x.max(dim=-1, keepdim=True)
        lam = self.rate.to(x.dtype)
        gaps = z - x  # zero at the argmax, which contributes log(lam) - 0 and is removed below
        v = (torch.log(lam) - lam * gaps).sum(-1) - torch.log(lam) - math.log(self.features)
        return z, v

    def inverse(self, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        check_tensor(z, "z")
        check_last_dim(z, 1, "z")
        shape = (*z.shape[:-1], self.features)
        lam = self.rate.to(z.dtype)
        u = _random.rand(shape, generator=generator, dtype=z.dtype, device=z.device)
        e = -torch.log1p(-u) / lam  # Exponential(lam) by inversion
        k = _random.randint(self.features, z.shape[:-1] + (1,), generator=generator, device=z.device)
        e = e.scatter(-1, k, 0.0)
        return z - e


class UniformDequantization(Surjection):
    """Generative rounding with uniform noise (Nielsen et al. 2020, sec. 4; Theis et al. 2016):
    ``z = x + u``, ``u ~ U[0,1)^D``, ``v = 0``.

    ``inverse(z) = floor(z)``.  ``E_u[log p(x + u)] <= log P(x)`` with
    ``P(x) = int_{[0,1)^D} p(x + u) du`` (Jensen).

    Args:
        event_dim: number of trailing event dims of ``x`` (``v`` has shape ``x.shape[:-event_dim]``).
    """

    stochastic_forward = True

    def __init__(self, event_dim: int = 1) -> None:
        super().__init__()
        self.event_dim = check_int(event_dim, "event_dim")

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        check_tensor(x, "x")
        z = x + _random.rand_like(x, generator)
        return z, torch.zeros(x.shape[: x.dim() - self.event_dim], dtype=x.dtype, device=x.device)

    def inverse(self, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return torch.floor(z)


class _LogitNormalPosterior(nn.Module):
    """``q(u | x)``: ``u = sigmoid(mu(x) + sigma(x) eps)`` on ``(0, 1)^D``."""

    def __init__(self, features: int, hidden: Sequence[int]) -> None:
        super().__init__()
        self.gauss = ConditionalGaussian(features, features, hidden)

    def forward(self, x: Tensor) -> Distribution:
        g = self.gauss(x).base_dist
        return Independent(TransformedDistribution(g, [SigmoidTransform()]), 1)


class VariationalDequantization(Surjection):
    """Variational dequantization (Ho et al. 2019, Flow++, sec. 3.1): ``z = x + u``,
    ``u ~ q(u | x)``, ``v = -log q(u | x)``.

    Args:
        features: size ``D`` of ``x``.
        posterior: callable ``x -> Distribution`` over ``u in [0, 1)^D`` (event dim 1, with
            ``rsample``); default a logit-normal whose mean and scale come from an MLP.
        hidden: hidden widths of the default posterior.

    ``E_q[log p(x + u) - log q(u | x)] <= log P(x)``, with equality iff ``q(u|x) = p(x+u)/P(x)``.
    """

    stochastic_forward = True

    def __init__(
        self, features: int, posterior: Callable[[Tensor], Distribution] | None = None, hidden: Sequence[int] = (64,)
    ) -> None:
        super().__init__()
        self.features = check_int(features, "features")
        self.posterior = posterior if posterior is not None else _LogitNormalPosterior(features, hidden)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        check_tensor(x, "x")
        check_last_dim(x, self.features, "x")
        q = self.posterior(x)
        u = _draw(q, generator, True, x.device)
        return x + u, -q.log_prob(u)

    def inverse(self, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return torch.floor(z)


class SurjectiveFlow(nn.Module):
    """A base distribution pushed through bijections and surjections (noise -> data order).

    SurVAE flows (Nielsen et al. 2020, sec. 3): ``log p(x) = log p(z) + sum_l V_l``.

    Args:
        base: distribution of the innermost latent (anything with ``log_prob`` and
            ``sample``: a ``torch.distributions.Distribution``, a fokker ``Flow``, ...).
            An ``nn.Module`` base is registered as a submodule.
        layers: torch ``Transform``s (bijections, noise -> data) and :class:`Surjection`s.

    ``log_prob(x)`` walks the layers from data to noise, adding ``-log|det|`` of each
    bijection and ``v`` of each surjection.  It is exact when no layer has
    ``stochastic_forward`` (see :attr:`exact`); otherwise it is a one-sample ELBO whose
    expectation lower-bounds ``log p(x)``.  ``loss(batch) = -log_prob(batch).mean()``.
    """

    def __init__(self, base: Any, layers: Sequence[Transform | Surjection]) -> None:
        super().__init__()
        for i, layer in enumerate(layers):
            if not isinstance(layer, (Transform, Surjection)):
                raise TypeError(f"layers[{i}] must be a torch Transform or a Surjection; got {type(layer).__name__}")
        self.base = base
        self.layers = list(layers)
        self._modules_list = nn.ModuleList(m for m in layers if isinstance(m, nn.Module))

    @property
    def exact(self) -> bool:
        """Whether ``log_prob`` is the exact log-density (no stochastic-forward layer)."""
        return not any(isinstance(m, Surjection) and m.stochastic_forward for m in self.layers)

    def log_prob(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``log p(x)`` (exact or a one-sample ELBO, see :attr:`exact`); shape ``x.shape[:-1]``."""
        total: Tensor | int = 0
        for layer in reversed(self.layers):
            if isinstance(layer, Surjection):
                x, v = layer(x, generator=generator)
            elif isinstance(layer, Bijection):
                x, v = layer.inverse_and_ladj(x)
            else:
                z = layer.inv(x)
                v = -layer.log_abs_det_jacobian(z, x)
                if v.dim() == x.dim():  # elementwise transform: sum the event dim
                    v = v.sum(-1)
                x = z
            total = total + v
        return self.base.log_prob(x) + total

    def sample(
        self, sample_shape: torch.Size | Sequence[int] | int = torch.Size(), generator: torch.Generator | None = None
    ) -> Tensor:
        """Draw ``x`` (no gradient)."""
        with torch.no_grad():
            return self.rsample(sample_shape, generator=generator)

    def rsample(
        self, sample_shape: torch.Size | Sequence[int] | int = torch.Size(), generator: torch.Generator | None = None
    ) -> Tensor:
        """Draw ``x``, differentiable through the bijections where the base supports ``rsample``."""
        base, shape = self.base, torch.Size(as_sample_shape(sample_shape))
        if hasattr(base, "sample_and_log_prob") and hasattr(base, "rsample"):  # a fokker Flow
            z = base.rsample(shape, generator=generator)
        else:
            reparam = hasattr(base, "rsample") and getattr(base, "has_rsample", True)
            with _random.rng_scope(generator):
                z = base.rsample(shape) if reparam else base.sample(shape)
        for layer in self.layers:
            z = layer.inverse(z, generator=generator) if isinstance(layer, Surjection) else layer(z)
        return z

    def loss(self, batch: Tensor) -> Tensor:
        """Negative mean log-likelihood (or negative ELBO) of a batch."""
        return -self.log_prob(batch).mean()
