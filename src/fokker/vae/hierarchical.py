"""Hierarchical VAEs with top-down inference, and the DDPM as one of them.

Generative model ``p(z_L) prod_{l<L} p(z_l | z_{l+1}) p(x | z_1)``; inference top-down, in the same
order (Sønderby, Raiko, Maaløe, Sønderby & Winther 2016, ladder VAE, sec. 2.2; Vahdat & Kautz
2020, NVAE, sec. 3): ``q(z_L | x) prod_{l<L} q(z_l | z_{l+1}, x)``, where ``x`` enters through
bottom-up features ``h_1, ..., h_L``.  The ELBO splits into one KL per layer,

.. math::  \\mathrm{ELBO} = E_q[\\log p(x | z_1)] - KL(q(z_L|x) \\| p(z_L))
           - \\sum_{l<L} E_q\\big[KL(q(z_l | z_{l+1}, x) \\| p(z_l | z_{l+1}))\\big],

each KL in closed form given the sampled layer above.

**DDPM as a hierarchical VAE** (Ho, Jain & Abbeel 2020, sec. 2 and eq. 5; seed 001 eqs. 9-13):
with latents ``z_l = x_l``, ``l = 1..N``, and the *fixed* encoder ``q(x_{1:N} | x_0) =
prod_k q(x_k | x_{k-1})``, whose top-down factorisation is ``q(x_N | x_0) prod_{k>=2}
q(x_{k-1} | x_k, x_0)`` (the Gaussian posteriors of Ho et al. eq. 7), the layer KLs are exactly the
DDPM terms ``L_N``, ``L_{k-1}`` and the reconstruction is ``-L_0``.
:func:`ddpm_as_hierarchical_vae` builds that model from a :class:`fokker.sde.DDPM`; its
:meth:`HierarchicalVAE.elbo_terms` at the DDPM's latents equal :meth:`fokker.sde.DDPM.elbo_terms`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn
import pyro.distributions as pdist
from torch.distributions import Distribution, kl_divergence

from .. import _random
from .._args import check_int, reference_tensor
from ..errors import ParameterError, ShapeError
from ..nets import MLP, as_event_shape, check_hidden
from ..sde import DDPM
from .bounds import LatentVariableModel
from .conditionals import GaussianDecoder, GaussianEncoder

__all__ = [
    "HierarchicalVAE",
    "HierarchicalELBOTerms",
    "PrecisionWeightedPosterior",
    "ladder_vae",
    "ddpm_as_hierarchical_vae",
]


class HierarchicalELBOTerms(NamedTuple):
    """The ELBO of a :class:`HierarchicalVAE` term by term, per data point."""

    reconstruction: Tensor  #: ``log p(x | z_1)`` at the sampled ``z_1``, shape ``batch``
    kl: Tensor  #: ``(*batch, L)``: ``KL(q(z_L|x) || p(z_L))``, then layer ``L-1`` down to 1 (top-down)

    def total(self) -> Tensor:
        """The ELBO ``reconstruction - sum of the KLs`` (an unbiased estimate of the bound)."""
        return self.reconstruction - self.kl.sum(-1)


def _gaussian(loc: Tensor, scale: Tensor) -> Distribution:
    return pdist.Independent(pdist.Normal(loc, scale, validate_args=False), 1, validate_args=False)


class HierarchicalVAE(LatentVariableModel):
    """Top-down hierarchical VAE with ``L`` latent layers (the module docstring's model).

    Sønderby et al. (2016), "Ladder variational autoencoders", NeurIPS, sec. 2.2; Vahdat & Kautz
    (2020), "NVAE", NeurIPS, sec. 3 (top-down inference sharing the generative path).

    Args:
        top_posterior: ``h_L -> q(z_L | x)``.
        priors: ``L - 1`` modules, top-down: ``priors[i](z_above) -> p(z_l | z_{l+1})`` for
            ``l = L-1, ..., 1``.
        posteriors: ``L - 1`` modules, top-down: ``posteriors[i](z_above, h_l, prior) -> q(z_l | z_{l+1}, x)``
            (``prior`` is the distribution ``priors[i]`` just returned, for precision weighting).
        decoder: ``z_1 -> p(x | z_1)``.
        event_shape: the data's event shape.
        top_prior: ``p(z_L)``; default a standard normal on ``top_posterior``'s latent size.
        bottom_up: ``x -> [h_1, ..., h_L]`` (bottom to top); default ``h_l = x`` for every layer.

    Every module returns a ``torch.distributions.Distribution`` (reparameterisable posteriors);
    latents may carry leading particle dimensions, which the modules must broadcast against the
    features' batch shape.
    """

    def __init__(
        self,
        top_posterior: nn.Module,
        priors: Sequence[nn.Module],
        posteriors: Sequence[nn.Module],
        decoder: nn.Module,
        event_shape: int | Sequence[int],
        top_prior: Distribution | None = None,
        bottom_up: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if len(priors) != len(posteriors):
            raise ParameterError(f"priors and posteriors must have one module per layer below the top; "
                                 f"got {len(priors)} and {len(posteriors)}")
        self.top_posterior = top_posterior
        self.priors = nn.ModuleList(priors)
        self.posteriors = nn.ModuleList(posteriors)
        self.decoder = decoder
        self.bottom_up = bottom_up
        self.event_shape = as_event_shape(event_shape)
        self._top_prior = top_prior
        if top_prior is None:
            size = getattr(top_posterior, "latent_dim", None)
            if size is None:
                raise ParameterError("pass top_prior= (the top posterior has no latent_dim attribute)")
            ref = reference_tensor(self)
            kw = {} if ref is None else {"dtype": ref.dtype, "device": ref.device}
            self.register_buffer("top_loc", torch.zeros(size, **kw))
            self.register_buffer("top_scale", torch.ones(size, **kw))

    @property
    def num_layers(self) -> int:
        """``L``, the number of latent layers."""
        return len(self.priors) + 1

    def top_prior(self) -> Distribution:
        """``p(z_L)``."""
        return self._top_prior if self._top_prior is not None else _gaussian(self.top_loc, self.top_scale)

    def _features(self, x: Tensor) -> list[Tensor]:
        if self.bottom_up is None:
            return [x] * self.num_layers
        feats = list(self.bottom_up(x))
        if len(feats) != self.num_layers:
            raise ShapeError(f"bottom_up must return {self.num_layers} feature tensors (one per layer); got {len(feats)}")
        return feats

    def _path(
        self, x: Tensor, num_particles: int | None, latents: Sequence[Tensor] | None
    ) -> tuple[list[tuple[Distribution, Distribution, Tensor]], Distribution]:
        """Top-down pass: ``[(q_l, p_l, z_l)]`` from the top layer down, and ``p(x | z_1)``."""
        if latents is not None and len(latents) != self.num_layers:
            raise ShapeError(f"latents must hold {self.num_layers} tensors (top-down); got {len(latents)}")
        feats = self._features(x)
        q = _check(self.top_posterior(feats[-1]), "top_posterior")
        z = latents[0] if latents is not None else q.rsample(() if num_particles is None else (num_particles,))
        layers = [(q, self.top_prior(), z)]
        for i, (prior, posterior) in enumerate(zip(self.priors, self.posteriors)):
            p = _check(prior(z), f"priors[{i}]")
            q = _check(posterior(z, feats[-2 - i], p), f"posteriors[{i}]")
            z = latents[i + 1] if latents is not None else q.rsample()
            layers.append((q, p, z))
        return layers, _check(self.decoder(z), "decoder")

    def elbo_terms(
        self, x: Tensor, latents: Sequence[Tensor] | None = None, *, generator: torch.Generator | None = None
    ) -> HierarchicalELBOTerms:
        """The ELBO's terms per data point, one ancestral draw of ``q`` (or at the given ``latents``).

        Each KL is in closed form given the layer above where torch has a formula, else the
        one-draw estimate ``log q(z_l) - log p(z_l)``.  ``latents``: ``[z_L, ..., z_1]`` (top-down)
        to evaluate the terms along a given path instead of sampling.
        """
        self._check_x(x)
        with _random.rng_scope(generator, [x.device]):
            layers, p_x = self._path(x, None, latents)
        kls = []
        for q, p, z in layers:
            try:
                kls.append(kl_divergence(q, p))
            except NotImplementedError:
                kls.append(q.log_prob(z) - p.log_prob(z))
        kl = torch.stack(torch.broadcast_tensors(*kls), -1)
        return HierarchicalELBOTerms(p_x.log_prob(x), kl)

    def elbo(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """The ELBO per data point (one ancestral draw, closed-form layer KLs)."""
        return self.elbo_terms(x, generator=generator).total()

    def log_weights(self, x: Tensor, num_particles: int = 1, *, generator: torch.Generator | None = None) -> Tensor:
        """``log p(x, z_{1:L}) - log q(z_{1:L} | x)`` for ``num_particles`` ancestral draws: ``(K, *batch)``."""
        check_int(num_particles, "num_particles")
        self._check_x(x)
        with _random.rng_scope(generator, [x.device]):
            layers, p_x = self._path(x, num_particles, None)
        log_w = p_x.log_prob(x)
        for q, p, z in layers:
            log_w = log_w + p.log_prob(z) - q.log_prob(z)
        return log_w

    def loss(self, batch: Tensor) -> Tensor:
        """Minus the mean ELBO of ``batch``."""
        return -self.elbo(batch).mean()

    @torch.no_grad()
    def sample(self, sample_shape: int | Sequence[int] = (), *, mean: bool = False,
               generator: torch.Generator | None = None) -> Tensor:
        """Ancestral samples ``z_L -> ... -> z_1 -> x``: ``(*sample_shape, *event_shape)`` (``mean``: ``E[x | z_1]``)."""
        shape = torch.Size((sample_shape,) if isinstance(sample_shape, int) else tuple(sample_shape))
        ref = reference_tensor(self)
        with _random.rng_scope(generator, [] if ref is None else [ref.device]):
            z = self.top_prior().sample(shape)
            for prior in self.priors:
                z = prior(z).sample()
            p_x = self.decoder(z)
            return p_x.mean if mean else p_x.sample()

    def extra_repr(self) -> str:
        return f"event_shape={self.event_shape}, num_layers={self.num_layers}"


def _check(d: object, what: str) -> Distribution:
    if not isinstance(d, Distribution):
        raise ParameterError(f"{what} must return a torch.distributions.Distribution; got {type(d).__name__}")
    return d


class PrecisionWeightedPosterior(nn.Module):
    """The ladder VAE posterior: the prior's Gaussian and a bottom-up Gaussian combined by precision.

    Sønderby et al. (2016), eqs. (17)-(19): with ``(mu_p, sigma_p)`` from ``p(z_l | z_{l+1})`` and
    ``(mu_h, sigma_h)`` from the bottom-up features ``h_l``,
    ``sigma_q^{-2} = sigma_h^{-2} + sigma_p^{-2}``, ``mu_q = (mu_h sigma_h^{-2} + mu_p sigma_p^{-2}) sigma_q^2``.

    Args:
        feature_dim: size of ``h_l``; latent_dim: size of ``z_l``; hidden: widths of the head on ``h_l``.
    """

    def __init__(self, feature_dim: int, latent_dim: int, hidden: Sequence[int] = ()) -> None:
        super().__init__()
        self.latent_dim = check_int(latent_dim, "latent_dim")
        self.head = GaussianEncoder(feature_dim, latent_dim, hidden)

    def forward(self, z_above: Tensor, h: Tensor, prior: Distribution) -> Distribution:
        up = self.head(h).base_dist
        down = prior.base_dist
        prec_h, prec_p = up.scale.pow(-2), down.scale.pow(-2)
        var = 1.0 / (prec_h + prec_p)
        return _gaussian((up.loc * prec_h + down.loc * prec_p) * var, var.sqrt())


class _BottomUp(nn.Module):
    """``x -> [h_1, ..., h_L]``: a stack of MLPs on the flattened data."""

    def __init__(self, event_shape: tuple[int, ...], widths: Sequence[int], hidden: Sequence[int]) -> None:
        super().__init__()
        sizes = [int(torch.Size(event_shape).numel()), *widths]
        self.nets = nn.ModuleList(MLP(a, b, hidden, nn.SiLU) for a, b in zip(sizes[:-1], sizes[1:]))
        self.event_dims = len(event_shape)

    def forward(self, x: Tensor) -> list[Tensor]:
        h = x.reshape(*x.shape[: x.dim() - self.event_dims], -1)
        out = []
        for net in self.nets:
            h = torch.nn.functional.silu(net(h))
            out.append(h)
        return out


def ladder_vae(
    event_shape: int | Sequence[int],
    latent_dims: Sequence[int] = (16, 8),
    hidden: Sequence[int] = (128,),
    feature_dim: int = 64,
    decoder: nn.Module | None = None,
) -> HierarchicalVAE:
    """A ladder VAE (Sønderby et al. 2016) on vector or image data.

    Bottom-up MLPs give features ``h_1..h_L`` (width ``feature_dim``); the top posterior is a
    Gaussian head on ``h_L``; each lower layer has a Gaussian prior MLP ``z_{l+1} -> z_l`` and a
    :class:`PrecisionWeightedPosterior`; the decoder defaults to a :class:`GaussianDecoder` on
    ``z_1`` (pass e.g. a :class:`DiscretizedLogisticDecoder` for images).

    Args:
        event_shape: the data's event shape.
        latent_dims: latent sizes bottom to top, ``(d_1, ..., d_L)``.
        hidden: hidden widths of every MLP.
        feature_dim: width of the bottom-up features.
        decoder: ``z_1 -> p(x | z_1)``.
    """
    shape = as_event_shape(event_shape)
    dims = tuple(check_int(d, "latent_dims") for d in latent_dims)
    if not dims:
        raise ParameterError("latent_dims must hold at least one latent size")
    hidden = check_hidden(hidden)
    check_int(feature_dim, "feature_dim")
    L = len(dims)
    bottom_up = _BottomUp(shape, [feature_dim] * L, hidden)
    top = GaussianEncoder(feature_dim, dims[-1], hidden)
    priors = [GaussianEncoder(dims[l + 1], dims[l], hidden) for l in reversed(range(L - 1))]
    posteriors = [PrecisionWeightedPosterior(feature_dim, dims[l], hidden) for l in reversed(range(L - 1))]
    if decoder is None:
        decoder = GaussianDecoder(dims[0], shape, hidden, scale="per_dim")
    if getattr(decoder, "latent_dim", dims[0]) != dims[0]:
        raise ShapeError(f"the decoder takes latents of size {decoder.latent_dim}; the bottom layer has {dims[0]}")
    return HierarchicalVAE(top, priors, posteriors, decoder, shape, bottom_up=bottom_up)


# -- the DDPM as a hierarchical VAE with a fixed encoder ------------------------------------------

EpsModel = Callable[[Tensor, Tensor], Tensor]


class _DDPMTopPosterior(nn.Module):
    """``q(x_N | x_0) = N(sqrt(abar_N) x_0, (1 - abar_N) I)``."""

    def __init__(self, ddpm: DDPM) -> None:
        super().__init__()
        self.ddpm = ddpm

    def forward(self, x0: Tensor) -> Distribution:
        ab = self.ddpm.alphas_bar[-1].to(x0)
        return _gaussian(ab.sqrt() * x0, (1 - ab).sqrt().expand_as(x0))


class _DDPMStep(nn.Module):
    """Reverse step ``p(x_{k-1} | x_k) = N(mu(x_k, k), sigma_k^2 I)`` with the eps-parameterised mean."""

    def __init__(self, ddpm: DDPM, eps_model: EpsModel, k: int, variance: str) -> None:
        super().__init__()
        self.ddpm, self.k, self.variance = ddpm, k, variance
        self.eps_model = eps_model  # registered as a submodule when it is one

    def forward(self, x_k: Tensor) -> Distribution:
        kk = torch.full(x_k.shape[:-1], self.k, dtype=torch.long, device=x_k.device)
        mean = self.ddpm.p_mean(x_k, kk, self.eps_model(x_k, kk))
        var = self.ddpm.p_variance(self.k, "beta" if self.k == 1 else self.variance).to(x_k)
        return _gaussian(mean, var.sqrt().expand_as(mean))


class _DDPMPosterior(nn.Module):
    """``q(x_{k-1} | x_k, x_0)`` of Ho et al. (2020), eq. 7 (no parameters)."""

    def __init__(self, ddpm: DDPM, k: int) -> None:
        super().__init__()
        self.ddpm, self.k = ddpm, k

    def forward(self, x_k: Tensor, x0: Tensor, prior: Distribution) -> Distribution:
        x0 = x0.expand_as(x_k)
        mean, var = self.ddpm.q_posterior(x_k, x0, self.k)
        return _gaussian(mean, var.sqrt().expand_as(mean))


def ddpm_as_hierarchical_vae(ddpm: DDPM, eps_model: EpsModel, features: int, variance: str = "beta") -> HierarchicalVAE:
    """The DDPM chain as a :class:`HierarchicalVAE` whose encoder is the fixed forward process.

    Latents ``z_l = x_l`` (top ``x_N``), top posterior ``q(x_N | x_0)``, posteriors
    ``q(x_{k-1} | x_k, x_0)`` (no parameters), priors ``p(x_{k-1} | x_k) = N(mu_eps(x_k, k),
    sigma_k^2 I)`` with ``sigma_k^2 = beta_k`` (``variance="beta"``) or ``tilde beta_k``
    (``"beta_tilde"``), decoder ``p(x_0 | x_1) = N(mu_eps(x_1, 1), beta_1 I)``; the terms of its
    ELBO are those of :meth:`fokker.sde.DDPM.elbo_terms` (Ho et al. 2020, eq. 5; module docstring).

    Args:
        ddpm: the chain.
        eps_model: ``eps_model(x_k, k) -> eps`` with ``k`` a LongTensor of ``x_k``'s batch shape.
        features: the data dimension ``d`` (data ``(batch, d)``, float64 like the chain's buffers).
        variance: the reverse variance, ``"beta"`` or ``"beta_tilde"``.
    """
    if not isinstance(ddpm, DDPM):
        raise ParameterError(f"ddpm must be a fokker.sde.DDPM; got {type(ddpm).__name__}")
    if variance not in ("beta", "beta_tilde"):
        raise ParameterError(f"variance must be 'beta' or 'beta_tilde'; got {variance!r}")
    check_int(features, "features")
    N = ddpm.N
    if N < 1:
        raise ParameterError("the DDPM needs at least one step")
    priors = [_DDPMStep(ddpm, eps_model, k, variance) for k in range(N, 1, -1)]  # p(x_{k-1} | x_k), k = N..2
    posteriors = [_DDPMPosterior(ddpm, k) for k in range(N, 1, -1)]
    top_prior = _gaussian(torch.zeros(features, dtype=ddpm.betas.dtype, device=ddpm.betas.device),
                          torch.ones(features, dtype=ddpm.betas.dtype, device=ddpm.betas.device))
    return HierarchicalVAE(_DDPMTopPosterior(ddpm), priors, posteriors, _DDPMStep(ddpm, eps_model, 1, variance),
                           features, top_prior=top_prior)
