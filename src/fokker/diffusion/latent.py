r"""Latent diffusion: a :class:`DiffusionModel` run on ``z = E(x)`` with a fixed decoder ``D``.

Rombach, Blattmann, Lorenz, Esser & Ommer (2022), *High-resolution image synthesis with latent
diffusion models* (LDM; the latent objective eq. 2; seed 001 eqs. 66-67): :math:`z_0 = \mathcal E(x)`, the forward SDE and
the score model live in latent space, samples are :math:`x = \mathcal D(\tilde z)`.  The encoder and
decoder are frozen (LDM's stable two-stage recipe): ``loss`` encodes without gradients.

When the encoder is a bijection that knows its log-Jacobian (a torch ``Transform`` such as a
``fokker`` flow's transform, with ``log_abs_det_jacobian(x, z)``), ``log_prob`` is exact by the
change of variables :math:`\log p(x) = \log p_Z(\mathcal E(x)) + \log|\det \partial\mathcal E/\partial x|`;
for a plain autoencoder only ``loss`` and ``sample`` are defined.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..errors import ParameterError
from .model import DiffusionModel

__all__ = ["LatentDiffusion"]


class LatentDiffusion(nn.Module):
    """Wrap ``model`` (acting on latents) with a frozen ``encoder``/``decoder`` pair: latent diffusion
    (Rombach et al. 2022, eq. 2; see the module docstring).

    Args:
        model: a :class:`DiffusionModel` whose event shape is the latent shape.
        encoder: ``x -> z`` (module, callable or torch ``Transform``).
        decoder: ``z -> x`` (default: ``encoder.inv`` when the encoder is a ``Transform``).
    """

    def __init__(
        self,
        model: DiffusionModel,
        encoder: Callable[[torch.Tensor], torch.Tensor],
        decoder: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.encoder = encoder
        if decoder is None:
            inv = getattr(encoder, "inv", None)
            if inv is None:
                raise ParameterError("decoder is required unless the encoder is an invertible Transform (has .inv)")
            decoder = inv
        self.decoder = decoder
        for m in (encoder, decoder):
            if isinstance(m, nn.Module):
                m.requires_grad_(False)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def loss(self, batch: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """DSM loss of the latent model on ``E(x)`` (labels passed through)."""
        if isinstance(batch, (tuple, list)):
            return self.model.loss((self.encode(batch[0]), batch[1]))
        return self.model.loss(self.encode(batch))

    @torch.no_grad()
    def sample(self, sample_shape: tuple[int, ...] | int = (1,), **options: object) -> torch.Tensor:
        """``D(z)`` for latents ``z`` from ``model.sample(sample_shape, **options)``."""
        z = self.model.sample(sample_shape, **options)  # type: ignore[arg-type]
        if isinstance(z, tuple):
            z = z[0]
        lead = z.shape[: z.dim() - len(self.model.event_shape)]  # type: ignore[arg-type]
        x = self.decode(z.reshape(-1, *self.model.event_shape))  # type: ignore[misc]
        return x.reshape(*lead, *x.shape[1:])

    def log_prob(self, x: torch.Tensor, **options: object) -> torch.Tensor:
        """Exact ``log p(x)`` for a bijective encoder with ``log_abs_det_jacobian`` (see module doc)."""
        ladj = getattr(self.encoder, "log_abs_det_jacobian", None)
        if ladj is None:
            raise ParameterError("log_prob needs a bijective encoder with log_abs_det_jacobian(x, z)")
        z = self.encoder(x)
        lj = ladj(x, z)
        if lj.dim() > 1:
            lj = lj.reshape(lj.shape[0], -1).sum(-1)
        return self.model.log_prob(z.detach(), **options) + lj  # type: ignore[arg-type]
