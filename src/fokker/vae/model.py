"""The variational autoencoder: encoder and decoder as ``torch.distributions``, prior, bounds, Pyro.

``VAE(encoder, decoder, prior)``: ``encoder(x)`` returns ``q(z | x)`` and ``decoder(z)`` returns
``p(x | z)`` (any ``nn.Module`` s returning ``torch.distributions.Distribution`` s; the ready-made
ones are in :mod:`fokker.vae.conditionals`); the prior is a standard normal, any distribution, or a
fokker :class:`~fokker.flows.Flow` (a flow prior).  Training objectives (``objective=``):

* ``"elbo"`` -- the reparameterised ELBO (Kingma & Welling 2014, eq. 10), with the KL term in
  closed form where ``torch.distributions.kl_divergence`` knows it (their eq. 10 / appendix B),
  else its Monte-Carlo estimate;
* ``"iwae"`` -- the importance-weighted bound with ``num_particles`` particles (Burda et al. 2016,
  eq. 8), reparameterised gradient (their eq. 14);
* ``"dreg"`` -- the same bound with the doubly reparameterised gradient of Tucker, Lawson, Gu &
  Maddison (2019, eq. 5): the encoder's gradient is
  ``sum_k w~_k^2 d log w_k / d z_k dz_k/dphi`` with ``log q`` evaluated at stopped encoder
  parameters (the score term, whose variance grows with ``K``, is gone); the decoder's is the
  usual ``sum_k w~_k grad log w_k``.  Its value is the IWAE bound.

The same model is a Pyro model/guide pair (:meth:`VAE.model`, :meth:`VAE.guide`) for
``pyro.infer.SVI`` with ``Trace_ELBO`` (= ``objective="elbo"`` with a Monte-Carlo KL),
``TraceMeanField_ELBO`` (the closed-form KL) or ``RenyiELBO(alpha=0)`` (= the IWAE bound).
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as pdist
import torch
from torch import Tensor, nn
from pyro.distributions.torch_distribution import TorchDistributionMixin
from torch.distributions import Distribution, kl_divergence

from .. import _random
from .._args import argument_checks_enabled, check_int, reference_tensor
from ..errors import DomainError, ParameterError, ShapeError
from ..flows import Flow
from ..importance import log_mean_exp
from .bounds import LatentVariableModel
from ..nets import as_event_shape

__all__ = ["VAE", "OBJECTIVES", "check_distribution"]

#: training objectives of :class:`VAE` (``objective=``)
OBJECTIVES = ("elbo", "iwae", "dreg")


def check_distribution(value: object, what: str, event_shape: tuple[int, ...], batch_shape: tuple[int, ...]) -> Distribution:
    """Require a ``torch.distributions.Distribution`` with the given event and batch shapes."""
    if not isinstance(value, Distribution):
        raise ParameterError(f"{what} must return a torch.distributions.Distribution; got {type(value).__name__}")
    if tuple(value.event_shape) != event_shape:
        raise ShapeError(f"{what} returned a distribution with event_shape {tuple(value.event_shape)}; expected {event_shape}")
    if tuple(value.batch_shape) != batch_shape:
        raise ShapeError(f"{what} returned a distribution with batch_shape {tuple(value.batch_shape)}; expected {batch_shape}")
    return value


def _pyro(d: Distribution, what: str) -> Distribution:
    if not isinstance(d, TorchDistributionMixin):
        raise ParameterError(f"{what} returned a plain torch {type(d).__name__}; pyro.sample needs a pyro.distributions "
                             "object (the fokker.vae conditionals return them; wrap yours in pyro.distributions)")
    return d


class _StoppedLogQ(nn.Module):
    """``log q(z | x)`` as a module, for evaluation at detached encoder parameters (DReG)."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        return self.encoder(x).log_prob(z)


class VAE(LatentVariableModel):
    """Variational autoencoder ``p(x, z) = p(z) p(x | z)`` with amortised posterior ``q(z | x)``.

    Kingma & Welling (2014), "Auto-encoding variational Bayes", ICLR (seed 001 eq. 3; seed 002
    sec. 2): the ELBO ``E_q[log p(x|z)] - KL(q(z|x) || p(z)) <= log p(x)``; IWAE bound and its DReG
    gradient of Burda et al. (2016) and Tucker et al. (2019) (module docstring).

    Args:
        encoder: ``x (*batch, *event_shape) -> q(z | x)``, a reparameterisable distribution with
            batch shape ``batch`` and event shape ``(latent_dim,)``.
        decoder: ``z (*batch, latent_dim) -> p(x | z)`` with event shape ``event_shape``.
        prior: ``None`` (standard normal), a distribution with event shape ``(latent_dim,)``, or
            an unconditional :class:`fokker.flows.Flow` on ``latent_dim`` (a learned flow prior).
        event_shape: the data's event shape; default the decoder's (or encoder's) ``event_shape``
            attribute.
        objective: ``"elbo"``, ``"iwae"`` or ``"dreg"`` (what :meth:`loss` minimises).
        num_particles: particles ``K`` of the training objective (``K >= 1``).
        analytic_kl: for ``"elbo"``: ``None`` uses the closed-form KL where torch has one,
            ``True`` requires it, ``False`` always uses the Monte-Carlo estimate.

    The encoder and decoder are probed once at construction (on zeros, in eval mode, without
    gradient): a module that does not return a distribution, or shapes that do not fit together
    (the encoder's latent size is not the decoder's input, the decoder's event shape is not the
    data's), raise :class:`~fokker.errors.ParameterError` / :class:`~fokker.errors.ShapeError`.

    Example:
        >>> from fokker import vae
        >>> model = vae.VAE(vae.GaussianEncoder(4, 2, hidden=(16,)), vae.GaussianDecoder(2, 4, hidden=(16,)))
        >>> model.elbo(torch.zeros(3, 4)).shape
        torch.Size([3])
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        prior: Distribution | Flow | None = None,
        *,
        event_shape: int | Sequence[int] | None = None,
        objective: str = "elbo",
        num_particles: int = 1,
        analytic_kl: bool | None = None,
    ) -> None:
        super().__init__()
        for name, mod in (("encoder", encoder), ("decoder", decoder)):
            if not isinstance(mod, nn.Module):
                raise ParameterError(f"{name} must be an nn.Module returning a torch distribution; got {type(mod).__name__}")
        self.encoder, self.decoder = encoder, decoder
        if objective not in OBJECTIVES:
            raise ParameterError(f"objective must be one of {OBJECTIVES}; got {objective!r}")
        self.objective = objective
        self.num_particles = check_int(num_particles, "num_particles")
        if analytic_kl not in (None, True, False):
            raise ParameterError(f"analytic_kl must be None, True or False; got {analytic_kl!r}")
        self.analytic_kl = analytic_kl
        if event_shape is None:
            event_shape = getattr(decoder, "event_shape", None) or getattr(encoder, "event_shape", None)
            if event_shape is None:
                raise ParameterError("pass event_shape= (the decoder and encoder have no event_shape attribute)")
        self.event_shape = as_event_shape(event_shape)
        self.latent_dim = self._probe()
        self._set_prior(prior)

    # -- construction -------------------------------------------------------------------------
    def _probe(self) -> int:
        """Run encoder and decoder once on zeros; returns the latent size (module docstring)."""
        ref = reference_tensor(self.encoder)
        ref = reference_tensor(self.decoder) if ref is None else ref
        kw = {} if ref is None else {"dtype": ref.dtype, "device": ref.device}
        modes = [m.training for m in (self.encoder, self.decoder)]
        self.encoder.eval(), self.decoder.eval()
        try:
            with torch.no_grad():
                x0 = torch.zeros((1, *self.event_shape), **kw)
                try:
                    q = self.encoder(x0)
                except (RuntimeError, ShapeError) as e:
                    raise ShapeError(f"the encoder cannot take data of event shape {self.event_shape}: {e}") from e
                if not isinstance(q, Distribution):
                    raise ParameterError(f"the encoder must return a torch.distributions.Distribution; got {type(q).__name__}")
                if len(q.event_shape) != 1 or tuple(q.batch_shape) != (1,):
                    raise ShapeError(
                        "the encoder must return a distribution over latent vectors (event shape (latent_dim,)) with the "
                        f"batch shape of its input; got batch {tuple(q.batch_shape)}, event {tuple(q.event_shape)}"
                    )
                if not q.has_rsample:
                    raise ParameterError(f"the encoder's distribution ({type(q).__name__}) must be reparameterisable (has_rsample)")
                latent_dim = int(q.event_shape[0])
                z0 = torch.zeros((1, latent_dim), **kw)
                try:
                    p = self.decoder(z0)
                except (RuntimeError, ShapeError) as e:
                    raise ShapeError(
                        f"the decoder cannot take the encoder's latents of size {latent_dim} (encoder and decoder do not "
                        f"fit together): {e}"
                    ) from e
                check_distribution(p, "the decoder", self.event_shape, (1,))
        finally:
            for m, mode in zip((self.encoder, self.decoder), modes):
                m.train(mode)
        return latent_dim

    def _set_prior(self, prior: Distribution | Flow | None) -> None:
        self.prior_flow: Flow | None = None
        self._prior: Distribution | None = None
        if prior is None:
            ref = reference_tensor(self.encoder)
            kw = {} if ref is None else {"dtype": ref.dtype, "device": ref.device}
            self.register_buffer("prior_loc", torch.zeros(self.latent_dim, **kw))
            self.register_buffer("prior_scale", torch.ones(self.latent_dim, **kw))
        elif isinstance(prior, Flow):
            if prior.event_shape != (self.latent_dim,) or prior.context_dim:
                raise ShapeError(f"a flow prior must be unconditional on ({self.latent_dim},); got event_shape "
                                 f"{prior.event_shape}, context_dim {prior.context_dim}")
            self.prior_flow = prior
        elif isinstance(prior, Distribution):
            if tuple(prior.event_shape) != (self.latent_dim,) or tuple(prior.batch_shape) != ():
                raise ShapeError(f"prior must have event_shape ({self.latent_dim},) and batch_shape (); got "
                                 f"{tuple(prior.event_shape)}, {tuple(prior.batch_shape)}")
            self._prior = prior
        else:
            raise ParameterError(f"prior must be None, a torch Distribution or a fokker Flow; got {type(prior).__name__}")

    # -- the distributions ----------------------------------------------------------------------
    def prior(self) -> Distribution:
        """``p(z)`` as a distribution (a Pyro ``TransformedDistribution`` for a flow prior)."""
        if self.prior_flow is not None:
            return self.prior_flow.distribution()
        if self._prior is not None:
            return self._prior
        return pdist.Independent(pdist.Normal(self.prior_loc, self.prior_scale, validate_args=False), 1, validate_args=False)

    def prior_log_prob(self, z: Tensor) -> Tensor:
        """``log p(z)``: ``(..., latent_dim) -> (...)``."""
        if self.prior_flow is not None:
            return self.prior_flow.log_prob(z)
        return self.prior().log_prob(z)

    def encode(self, x: Tensor) -> Distribution:
        """``q(z | x)`` (batch shape of ``x``, event shape ``(latent_dim,)``)."""
        return self.encoder(self._check_x(x))

    def decode(self, z: Tensor) -> Distribution:
        """``p(x | z)`` (batch shape of ``z`` without its last dimension, event shape ``event_shape``)."""
        if not isinstance(z, Tensor) or z.dim() == 0 or z.shape[-1] != self.latent_dim:
            raise ShapeError(f"z must have shape (..., {self.latent_dim}); got {getattr(z, 'shape', z)!r}")
        return self.decoder(z)

    def _decoder_log_prob(self, z: Tensor, x: Tensor) -> Tensor:
        p = self.decoder(z)
        if argument_checks_enabled() and not bool(p.support.check(x).all()):
            raise DomainError(f"x lies outside the support of the decoder's distribution ({p.support}); "
                              "e.g. a Bernoulli decoder needs binary data")
        return p.log_prob(x)

    # -- bounds ---------------------------------------------------------------------------------
    def log_weights(self, x: Tensor, num_particles: int = 1, *, generator: torch.Generator | None = None) -> Tensor:
        """``log p(x|z_k) + log p(z_k) - log q(z_k|x)``, ``z_k ~ q(z|x)`` reparameterised: ``(K, *batch)``."""
        check_int(num_particles, "num_particles")
        q = self.encode(x)
        with _random.rng_scope(generator, [x.device]):
            z = q.rsample((num_particles,))
        return self._decoder_log_prob(z, x) + self.prior_log_prob(z) - q.log_prob(z)

    def elbo(
        self, x: Tensor, num_particles: int = 1, *, analytic_kl: bool | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """The ELBO per data point, ``E_q[log p(x|z)] - KL(q || p)``, with ``num_particles`` draws.

        ``analytic_kl``: ``None`` (default: this model's setting) uses the closed-form KL where it
        exists, ``True`` requires it, ``False`` estimates ``E_q[log p(z) - log q(z|x)]`` with the same
        draws.  Reparameterised and differentiable; an unbiased estimate of the bound.
        """
        check_int(num_particles, "num_particles")
        analytic = self.analytic_kl if analytic_kl is None else analytic_kl
        q = self.encode(x)
        kl = None
        if analytic is not False:
            try:
                kl = kl_divergence(q, self.prior())
            except NotImplementedError:
                if analytic:
                    raise ParameterError(
                        f"no closed-form KL between {type(q).__name__} and {type(self.prior()).__name__}; "
                        "use analytic_kl=False"
                    ) from None
        with _random.rng_scope(generator, [x.device]):
            z = q.rsample((num_particles,))
        rec = self._decoder_log_prob(z, x)
        if kl is not None:
            return rec.mean(0) - kl
        return (rec + self.prior_log_prob(z) - q.log_prob(z)).mean(0)

    def _dreg_bound(self, x: Tensor, num_particles: int) -> Tensor:
        """IWAE bound whose gradient is the DReG estimator (value: the bound; module docstring)."""
        q = self.encode(x)
        z = q.rsample((num_particles,))
        stopped = {f"encoder.{n}": p.detach() for n, p in self.encoder.named_parameters()}
        log_q = torch.func.functional_call(_StoppedLogQ(self.encoder), stopped, (x, z))
        log_w = self._decoder_log_prob(z, x) + self.prior_log_prob(z) - log_q
        w = torch.softmax(log_w.detach(), 0)
        if z.requires_grad:  # the path gradient reaches the encoder with weight w~_k^2 instead of w~_k
            z.register_hook(lambda g: g * w.unsqueeze(-1))
        surrogate = (w * log_w).sum(0)
        return log_mean_exp(log_w.detach(), 0) + surrogate - surrogate.detach()

    def loss(self, batch: Tensor) -> Tensor:
        """Minus the mean training bound of ``batch`` (``objective``, ``num_particles``)."""
        if self.objective == "elbo":
            return -self.elbo(batch, self.num_particles).mean()
        if self.objective == "iwae":
            return -self.iwae_bound(batch, self.num_particles).mean()
        return -self._dreg_bound(self._check_x(batch, "batch"), self.num_particles).mean()

    def forward(self, x: Tensor) -> Tensor:
        """Same as :meth:`elbo` with one particle."""
        return self.elbo(x)

    # -- generation -----------------------------------------------------------------------------
    def sample_latent(self, sample_shape: int | Sequence[int] = (), *, generator: torch.Generator | None = None) -> Tensor:
        """``z ~ p(z)``: ``(*sample_shape, latent_dim)``."""
        shape = torch.Size((sample_shape,) if isinstance(sample_shape, int) else tuple(sample_shape))
        if self.prior_flow is not None:
            return self.prior_flow.sample(shape, generator=generator)
        ref = reference_tensor(self)
        with torch.no_grad(), _random.rng_scope(generator, [] if ref is None else [ref.device]):
            return self.prior().sample(shape)

    @torch.no_grad()
    def sample(self, sample_shape: int | Sequence[int] = (), *, mean: bool = False,
               generator: torch.Generator | None = None) -> Tensor:
        """``x ~ p(x | z)``, ``z ~ p(z)``: ``(*sample_shape, *event_shape)``; ``mean=True`` returns ``E[x | z]``."""
        z = self.sample_latent(sample_shape, generator=generator)
        p = self.decoder(z)
        if mean:
            return p.mean
        with _random.rng_scope(generator, [z.device]):
            return p.sample()

    @torch.no_grad()
    def reconstruct(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """``E[x' | z]`` with ``z ~ q(z | x)`` (one draw per data point): shape of ``x``."""
        q = self.encode(x)
        with _random.rng_scope(generator, [x.device]):
            z = q.sample()
        return self.decoder(z).mean

    # -- Pyro -----------------------------------------------------------------------------------
    def model(self, x: Tensor) -> None:
        """Pyro model ``z ~ p(z)``, ``x ~ p(x | z)`` for ``x`` of shape ``(batch, *event_shape)`` (plate ``"data"``)."""
        self._check_x(x)
        if x.dim() != len(self.event_shape) + 1:
            raise ShapeError(f"the Pyro model takes x of shape (batch, {self.event_shape}); got {tuple(x.shape)}")
        pyro.module("vae", self)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", _pyro(self.prior(), "the prior"))
            pyro.sample("x", _pyro(self.decoder(z), "the decoder"), obs=x)

    def guide(self, x: Tensor) -> None:
        """Pyro guide ``z ~ q(z | x)`` matching :meth:`model` (the same plate and site)."""
        pyro.module("vae", self)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", _pyro(self.encode(x), "the encoder"))

    def extra_repr(self) -> str:
        return (f"event_shape={self.event_shape}, latent_dim={self.latent_dim}, objective={self.objective!r}, "
                f"num_particles={self.num_particles}")
