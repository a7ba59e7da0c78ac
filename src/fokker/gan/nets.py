"""Multilayer generators and discriminators for vector and small image data.

* :class:`Generator` -- an MLP ``z -> x`` reshaped to the data's event shape (Goodfellow et al. 2014).
* :class:`Discriminator` -- an MLP ``x -> d(x)`` (a logit or a critic value) with LeakyReLU(0.2)
  (Radford et al. 2016); ``spectral_norm=True`` makes every linear map a
  :class:`fokker.nets.SpectralNormLinear` with ``||W||_2 = 1`` (Miyato et al. 2018), so the
  network is 1-Lipschitz.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from .._args import check_int
from ..nets import MLP, SpectralNormLinear, as_event_shape, check_hidden

__all__ = ["Generator", "Discriminator"]


class Generator(nn.Module):
    """MLP generator ``G: R^latent_dim -> event_shape`` (Goodfellow et al. 2014, sec. 3).

    Args:
        latent_dim: size of ``z``; event_shape: shape of one sample; hidden: widths;
        activation: activation class (default ``nn.ReLU``).
    """

    def __init__(self, latent_dim: int, event_shape: int | Sequence[int], hidden: Sequence[int] = (128, 128),
                 activation: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        self.latent_dim = check_int(latent_dim, "latent_dim")
        self.event_shape = as_event_shape(event_shape)
        self.net = MLP(latent_dim, math.prod(self.event_shape), check_hidden(hidden), activation)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).reshape(*z.shape[:-1], *self.event_shape)


class _LeakyReLU(nn.LeakyReLU):
    def __init__(self) -> None:
        super().__init__(0.2)


class Discriminator(nn.Module):
    """MLP discriminator ``x -> d(x)``, shape ``(*batch, *event_shape) -> (*batch,)``.

    LeakyReLU(0.2) activations as in DCGAN (Radford, Metz & Chintala 2016); with
    ``spectral_norm=True`` each linear map is spectrally normalised to norm 1 (Miyato, Kataoka,
    Koyama & Yoshida 2018, eq. 8), a 1-Lipschitz network (LeakyReLU is 1-Lipschitz).

    Args:
        event_shape: shape of one sample; hidden: widths; spectral_norm: normalise the weights;
        num_power_iterations: power-iteration steps per weight update (spectral norm only).
    """

    def __init__(self, event_shape: int | Sequence[int], hidden: Sequence[int] = (128, 128),
                 spectral_norm: bool = False, num_power_iterations: int = 1) -> None:
        super().__init__()
        self.event_shape = as_event_shape(event_shape)
        sizes = [math.prod(self.event_shape), *check_hidden(hidden, allow_empty=False), 1]
        if spectral_norm:
            layers: list[nn.Module] = []
            for a, b in zip(sizes[:-1], sizes[1:]):
                layers += [SpectralNormLinear(a, b, 1.0, num_power_iterations, mode="exact"), _LeakyReLU()]
            self.net = nn.Sequential(*layers[:-1])
        else:
            self.net = MLP(sizes[0], 1, sizes[1:-1], _LeakyReLU)
        self.spectral_norm = bool(spectral_norm)

    def forward(self, x: Tensor) -> Tensor:
        k = len(self.event_shape)
        return self.net(x.reshape(*x.shape[: x.dim() - k], -1)).squeeze(-1)
