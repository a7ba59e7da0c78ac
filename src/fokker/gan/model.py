"""``GAN``: generator + discriminator, trained by :func:`fokker.train.fit` as alternating one-player steps.

**How ``fit`` takes a two-player game.**  ``fit`` makes one optimizer step per call of
``model.loss(batch)``.  :meth:`GAN.loss` cycles through ``critic_steps`` discriminator steps and
one generator step (Goodfellow et al. 2014, algorithm 1; WGAN's ``n_critic``, Arjovsky et al.
2017, algorithm 1): on a discriminator step it returns the discriminator's loss with the
generated samples detached; on a generator step, the generator's loss with the discriminator's
parameters frozen.  Each step's gradient therefore reaches one player only, and the optimizer
(:meth:`GAN.optimizer`, Adam with one learning rate per player, or any optimizer: torch's skip
parameters whose gradient is ``None``) updates that player.  Everything else of ``fit`` applies
unchanged: the NaN guard, checkpoints and resume (the phase counter is a buffer of the model),
EMA, the progress bar, data parallelism.  ``steps=`` counts the updates of both players, so
``fit(gan, data, steps=(critic_steps + 1) * n)`` makes ``n`` generator updates; ``result.losses``
alternates between the players (split it with :meth:`GAN.split_losses`).  In eval mode (``fit``'s
``val_data``) ``loss`` is the discriminator's loss without penalty, a held-out estimate of the
divergence the critic measures.

**The discriminator as an energy** (Che, Zhang, Sohl-Dickstein, Larochelle, Paull, Cao & Bengio
2020, "Your GAN is secretly an energy-based model", eqs. 5-9; seed 000 "GANs as energy-based
models"): the optimal logit is ``d*(x) = log p_data(x) / p_g(x)``, so ``p_data(x) ∝ p_g(x) e^{d(x)}``;
pulled back to the latent space this is the energy ``E(z) = -log p_0(z) - d(G(z))``.
:meth:`GAN.ddls` samples it with a :mod:`fokker.mcmc` kernel (Langevin by default) and returns
``G(z)``: discriminator-driven latent sampling.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

from .. import _random
from .._args import check_finite, check_int, check_like, check_positive, check_tensor, reference_tensor
from ..errors import ParameterError, ShapeError
from ..nets import SpectralNormLinear, as_event_shape
from .losses import LOSSES, clip_weights, discriminator_loss, generator_loss, gradient_penalty

__all__ = ["GAN", "AlternatingAdam"]


@contextlib.contextmanager
def _frozen(module: nn.Module) -> Iterator[None]:
    """Build graphs without ``module``'s parameters as leaves (their ``requires_grad`` restored after)."""
    params = list(module.parameters())
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)


def _has_spectral_norm(module: nn.Module) -> bool:
    parametrized = torch.nn.utils.parametrize.is_parametrized
    return any(isinstance(m, SpectralNormLinear) or parametrized(m) for m in module.modules())


class GAN(nn.Module):
    """Generative adversarial network ``x = G(z)``, ``z ~ N(0, I)``, with a discriminator ``d``.

    Goodfellow et al. (2014), "Generative adversarial nets", NeurIPS (minimax and non-saturating
    losses); Arjovsky, Chintala & Bottou (2017), "Wasserstein GAN", ICML (critic, weight clipping);
    Gulrajani et al. (2017), "Improved training of Wasserstein GANs", NeurIPS (gradient penalty);
    Miyato et al. (2018), spectral normalisation (pass a spectrally normalised discriminator, e.g.
    ``fokker.gan.Discriminator(..., spectral_norm=True)``); Che et al. (2020) for :meth:`ddls`.
    Seed 002 eqs. 40-44.  Training: module docstring.

    Args:
        generator: ``z (*batch, latent_dim) -> x (*batch, *event_shape)``.
        discriminator: ``x -> d(x)`` of shape ``(*batch,)`` (or ``(*batch, 1)``): a logit for the
            ``"minimax"`` / ``"non_saturating"`` losses, a critic value for ``"wasserstein"``.
        latent_dim: size of ``z``; default ``generator.latent_dim``.
        loss: ``"minimax"``, ``"non_saturating"`` (default) or ``"wasserstein"``.
        gradient_penalty: weight ``lambda`` of WGAN-GP's penalty (``None``: no penalty).
        clip: WGAN's weight-clipping bound ``c``: the discriminator's parameters are clamped to
            ``[-c, c]`` before every evaluation (``None``: no clipping).
        critic_steps: discriminator steps per generator step.

    A ``"wasserstein"`` critic needs a Lipschitz constraint (``gradient_penalty``, ``clip`` or a
    spectrally normalised discriminator); without one :class:`~fokker.errors.ParameterError` is
    raised.  The networks are probed once on zeros: a generator whose output does not have the
    data's event shape, or a discriminator that does not return one value per sample, raise
    :class:`~fokker.errors.ShapeError`.

    Example:
        >>> from fokker import gan
        >>> model = gan.GAN(gan.Generator(2, 2, hidden=(16,)), gan.Discriminator(2, hidden=(16,)))
        >>> model.sample((5,)).shape
        torch.Size([5, 2])
    """

    num_updates: Tensor

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        latent_dim: int | None = None,
        *,
        loss: str = "non_saturating",
        gradient_penalty: float | None = None,
        clip: float | None = None,
        critic_steps: int = 1,
        event_shape: int | Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        for name, mod in (("generator", generator), ("discriminator", discriminator)):
            if not isinstance(mod, nn.Module):
                raise ParameterError(f"{name} must be an nn.Module; got {type(mod).__name__}")
        self.generator, self.discriminator = generator, discriminator
        if loss not in LOSSES:
            raise ParameterError(f"loss must be one of {LOSSES}; got {loss!r}")
        self.loss_name = loss
        if gradient_penalty is not None:
            check_positive(gradient_penalty, "gradient_penalty")
        if clip is not None:
            check_positive(clip, "clip")
        self.penalty, self.clip = gradient_penalty, clip
        self.critic_steps = check_int(critic_steps, "critic_steps")
        if loss == "wasserstein" and gradient_penalty is None and clip is None and not _has_spectral_norm(discriminator):
            raise ParameterError(
                "a Wasserstein critic must be Lipschitz: pass gradient_penalty= (WGAN-GP), clip= (WGAN) or a spectrally "
                "normalised discriminator (fokker.gan.Discriminator(..., spectral_norm=True))"
            )
        latent_dim = getattr(generator, "latent_dim", None) if latent_dim is None else latent_dim
        if latent_dim is None:
            raise ParameterError("pass latent_dim= (the generator has no latent_dim attribute)")
        self.latent_dim = check_int(latent_dim, "latent_dim")
        if event_shape is None:
            event_shape = getattr(generator, "event_shape", None) or getattr(discriminator, "event_shape", None)
        self.event_shape = self._probe(None if event_shape is None else as_event_shape(event_shape))
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))
        self.last_player: str | None = None

    # -- construction ---------------------------------------------------------------------------
    def _probe(self, event_shape: tuple[int, ...] | None) -> tuple[int, ...]:
        """Run both networks once on zeros (eval mode, no gradient); returns the event shape."""
        ref = reference_tensor(self.generator)
        kw = {} if ref is None else {"dtype": ref.dtype, "device": ref.device}
        modes = [m.training for m in (self.generator, self.discriminator)]
        self.generator.eval(), self.discriminator.eval()
        try:
            with torch.no_grad():
                try:
                    x = self.generator(torch.zeros((1, self.latent_dim), **kw))
                except (RuntimeError, ShapeError) as e:
                    raise ShapeError(f"the generator cannot take latents of size {self.latent_dim}: {e}") from e
                if not isinstance(x, Tensor) or x.dim() < 2 or x.shape[0] != 1:
                    raise ShapeError(f"the generator must map (batch, {self.latent_dim}) to (batch, *event_shape); "
                                     f"got {getattr(x, 'shape', type(x).__name__)}")
                shape = tuple(x.shape[1:])
                if event_shape is not None and shape != event_shape:
                    raise ShapeError(f"the generator's samples have event shape {shape}; the data's is {event_shape}")
                try:
                    d = self.discriminator(x)
                except (RuntimeError, ShapeError) as e:
                    raise ShapeError(f"the discriminator cannot take the generator's samples of shape {shape}: {e}") from e
                if not isinstance(d, Tensor) or tuple(d.shape) not in ((1,), (1, 1)):
                    raise ShapeError("the discriminator must return one value per sample, shape (batch,) or (batch, 1); "
                                     f"got {getattr(d, 'shape', type(d).__name__)}")
        finally:
            for m, mode in zip((self.generator, self.discriminator), modes):
                m.train(mode)
        return shape

    def _check_x(self, x: Tensor, name: str = "x") -> Tensor:
        check_tensor(x, name)
        check_like(x, reference_tensor(self.generator), name, owner="the GAN")
        k = len(self.event_shape)
        if x.dim() != k + 1 or tuple(x.shape[1:]) != self.event_shape:
            raise ShapeError(f"{name} must have shape (batch, {', '.join(map(str, self.event_shape))}); "
                             f"got shape {tuple(x.shape)}")
        check_finite(x, name)
        return x

    # -- the two networks -------------------------------------------------------------------------
    def discriminate(self, x: Tensor) -> Tensor:
        """``d(x)``: the discriminator's logit (or critic value), shape ``(*batch,)``."""
        d = self.discriminator(x)
        return d.squeeze(-1) if d.dim() == x.dim() - len(self.event_shape) + 1 else d

    def _latent(self, shape: tuple[int, ...], generator: torch.Generator | None) -> Tensor:
        ref = reference_tensor(self.generator)
        kw = {} if ref is None else {"dtype": ref.dtype, "device": ref.device}
        return _random.randn((*shape, self.latent_dim), generator=generator, **kw)

    def rsample(self, sample_shape: int | Sequence[int] = (), *, generator: torch.Generator | None = None) -> Tensor:
        """``G(z)``, ``z ~ N(0, I)``, differentiable in the generator's parameters: ``(*sample_shape, *event_shape)``."""
        shape = (sample_shape,) if isinstance(sample_shape, int) else tuple(sample_shape)
        return self.generator(self._latent(shape, generator))

    @torch.no_grad()
    def sample(self, sample_shape: int | Sequence[int] = (), *, generator: torch.Generator | None = None) -> Tensor:
        """Samples ``G(z)`` without gradient: ``(*sample_shape, *event_shape)``."""
        return self.rsample(sample_shape, generator=generator)

    def constrain(self) -> None:
        """Apply weight clipping to the discriminator (when ``clip`` is set); called before every evaluation."""
        if self.clip is not None:
            clip_weights(self.discriminator, self.clip)

    # -- the losses -------------------------------------------------------------------------------
    def discriminator_loss(self, real: Tensor, *, penalty: bool = True) -> Tensor:
        """The discriminator's loss on ``real`` against as many generated samples (detached), plus the penalty."""
        self.constrain()
        with torch.no_grad():
            fake = self.rsample((real.shape[0],))
        d = self.discriminate(torch.cat([real, fake]))  # one pass over both halves
        loss = discriminator_loss(self.loss_name, d[: real.shape[0]], d[real.shape[0] :])
        if penalty and self.penalty is not None:
            loss = loss + gradient_penalty(self.discriminate, real, fake, self.penalty)
        return loss

    def generator_loss(self, num_samples: int) -> Tensor:
        """The generator's loss on ``num_samples`` generated samples, the discriminator's parameters frozen."""
        self.constrain()
        x = self.rsample((num_samples,))
        with _frozen(self.discriminator):
            return generator_loss(self.loss_name, self.discriminate(x))

    def next_player(self) -> str:
        """``"critic"`` or ``"generator"``: whose step the next training-mode :meth:`loss` is."""
        return "critic" if int(self.num_updates) % (self.critic_steps + 1) < self.critic_steps else "generator"

    def loss(self, batch: Tensor) -> Tensor:
        """One player's loss (training mode, gradients on; the players alternate, module docstring), or
        the discriminator's loss without penalty (eval mode or no gradient)."""
        real = self._check_x(batch, "batch")
        if not (self.training and torch.is_grad_enabled()):
            return self.discriminator_loss(real, penalty=False)
        player = self.next_player()
        self.num_updates += 1
        self.last_player = player
        return self.discriminator_loss(real) if player == "critic" else self.generator_loss(real.shape[0])

    def forward(self, batch: Tensor) -> Tensor:
        return self.loss(batch)

    def split_losses(self, losses: Sequence[float]) -> tuple[list[float], list[float]]:
        """``(discriminator losses, generator losses)`` of a ``fit`` run started from a fresh GAN."""
        cycle = self.critic_steps + 1
        critic = [v for i, v in enumerate(losses) if i % cycle < self.critic_steps]
        gen = [v for i, v in enumerate(losses) if i % cycle >= self.critic_steps]
        return critic, gen

    def optimizer(
        self, lr: float = 2e-4, betas: tuple[float, float] = (0.5, 0.999), critic_lr: float | None = None,
    ) -> "AlternatingAdam":
        """Adam with one parameter group per player that steps only the player of the last loss (pass to ``fit``)."""
        return AlternatingAdam(self, lr, betas, critic_lr)

    # -- the discriminator as an energy -----------------------------------------------------------
    def energy(self, x: Tensor) -> Tensor:
        """``E(x) = -d(x)``: the energy whose Boltzmann factor corrects ``p_g`` to ``p_data`` (Che et al. 2020)."""
        self.constrain()
        return -self.discriminate(x)

    def latent_log_prob(self, z: Tensor) -> Tensor:
        """Unnormalised ``log p_0(z) + d(G(z))``: the latent density whose push-forward is ``p_g e^d`` (Che et al. 2020, eq. 7)."""
        log_p0 = -0.5 * (z * z).sum(-1) - 0.5 * self.latent_dim * math.log(2 * math.pi)
        return log_p0 + self.discriminate(self.generator(z))

    def ddls(
        self,
        sample_shape: int | Sequence[int] = (),
        num_steps: int = 100,
        kernel: object | None = None,
        *,
        generator: torch.Generator | None = None,
        progress: bool | None = None,
    ) -> Tensor:
        """Discriminator-driven latent sampling (Che et al. 2020, algorithm 1): ``G(z_T)``, ``z`` by MCMC on ``E(z)``.

        Chains start at ``z ~ N(0, I)`` and take ``num_steps`` transitions of ``kernel`` (a
        :mod:`fokker.mcmc` kernel; default unadjusted Langevin with step size 0.01, their choice) on
        the latent density :meth:`latent_log_prob`; with an adaptive kernel (``MALA()``, ``HMC()``) the
        steps are its warm-up.  Returns ``(*sample_shape, *event_shape)``, no gradient.  An
        approximation of ``p_data`` that is exact when ``d`` is the optimal discriminator and the
        chains have mixed.
        """
        from .. import mcmc

        check_int(num_steps, "num_steps")
        shape = (sample_shape,) if isinstance(sample_shape, int) else tuple(sample_shape)
        num_chains = math.prod(shape)
        kernel = mcmc.ULA(step_size=0.01) if kernel is None else kernel
        self.constrain()
        z0 = self._latent((num_chains,), generator)
        with _frozen(self):
            res = mcmc.sample(self.latent_log_prob, kernel, num_chains=num_chains, num_samples=1, warmup=num_steps - 1,
                              init=z0, generator=generator, progress=progress, dim=self.latent_dim)
            with torch.no_grad():
                x = self.generator(res.samples[:, -1])
        return x.reshape(*shape, *self.event_shape)

    def extra_repr(self) -> str:
        return (f"latent_dim={self.latent_dim}, event_shape={self.event_shape}, loss={self.loss_name!r}, "
                f"gradient_penalty={self.penalty}, clip={self.clip}, critic_steps={self.critic_steps}")


class AlternatingAdam(torch.optim.Adam):
    """Adam (Kingma & Ba 2015) over both players of a :class:`GAN`, stepping only the player whose loss came last.

    Two parameter groups, ``"generator"`` (learning rate ``lr``) and ``"critic"`` (``critic_lr``,
    default ``lr``), with the betas of Radford et al. (2016) by default.  :meth:`step` hides the
    idle player's gradients, so its parameters and moment estimates stay as they are even where
    the gradients are zeros rather than ``None`` (data-parallel training fills them with zeros),
    as in the alternating updates of Goodfellow et al. (2014), algorithm 1.
    """

    def __init__(self, gan: GAN, lr: float = 2e-4, betas: tuple[float, float] = (0.5, 0.999),
                 critic_lr: float | None = None) -> None:
        check_positive(lr, "lr")
        if critic_lr is not None:
            check_positive(critic_lr, "critic_lr")
        groups = [
            {"params": [p for p in gan.generator.parameters() if p.requires_grad], "player": "generator", "lr": lr},
            {"params": [p for p in gan.discriminator.parameters() if p.requires_grad], "player": "critic",
             "lr": lr if critic_lr is None else critic_lr},
        ]
        super().__init__(groups, lr=lr, betas=betas)
        self.gan = gan

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[no-untyped-def, override]
        active = self.gan.last_player
        hidden = []
        for group in self.param_groups:
            if active is not None and group["player"] != active:
                for p in group["params"]:
                    hidden.append((p, p.grad))
                    p.grad = None
        try:
            return super().step(closure)
        finally:
            for p, g in hidden:
                p.grad = g
