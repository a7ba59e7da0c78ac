"""2-D toy data sets of the flow / diffusion literature (FFJORD, Grathwohl et al. 2019; NSF; score SDE demos).

Every sampler is ``fn(num_samples, *, generator=None, seed=None, dtype=None, device=None)
-> Tensor (num_samples, 2)``.  It draws in float64 from ``generator`` (or from a new one
seeded with ``seed``; the global RNG when neither is given), on the generator's device (CPU
by default), then casts and moves the result: with a CPU generator the numbers do not
depend on ``device``.  Definitions (``U`` uniform, ``N`` normal):

* ``two_moons``: ``t ~ U(0, pi)``; half the points on the upper moon ``(cos t, sin t)``, half
  on the lower ``(1 - cos t, 1/2 - sin t)``; add ``N(0, 0.1^2)`` noise; then centre and
  scale: ``2 * (p - (1/2, 1/4))``.
* ``eight_gaussians``: centres ``4 (cos(k pi/4), sin(k pi/4))``, ``k = 0..7`` chosen
  uniformly, plus ``N(0, 0.5^2 I)``, all divided by ``sqrt(2)`` (FFJORD's ``8gaussians``).
* ``checkerboard``: uniform on the 8 squares of side 2 in ``[-4, 4]^2`` where
  ``floor(x/2) + floor(y/2)`` is even (FFJORD's ``checkerboard``).
* ``rings``: four concentric circles of radii ``3 * (1, 3/4, 1/2, 1/4)`` (equal shares),
  uniform angle, plus ``N(0, 0.08^2 I)`` (FFJORD's ``rings`` with random angles).
* ``pinwheel``: 5 arms; ``f = (1, 0) + (0.3 e_1, 0.1 e_2)``, ``e ~ N(0, I)``, rotated by
  ``2 pi k / 5 + 0.25 exp(f_1)`` for a uniform arm ``k``, times 2 (FFJORD's ``pinwheel``).
* ``swiss_roll``: ``t = 1.5 pi (1 + 2u)``, ``p = (t cos t, t sin t) + N(0, I)``, divided by
  5 (scikit-learn's ``make_swiss_roll(noise=1)`` projected on its ``(x, z)`` plane, as FFJORD).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from .._args import check_int
from .._random import make_generator, rand, randint, randn
from ..errors import ParameterError

__all__ = [
    "two_moons",
    "eight_gaussians",
    "checkerboard",
    "rings",
    "pinwheel",
    "swiss_roll",
    "TOY_DATASETS",
    "ToyDataset",
    "load",
    "sample",
]

_Device = torch.device | str | None
_F64 = torch.float64


class _Draws:
    """float64 CPU draws from one generator (``None``: the global RNG)."""

    def __init__(self, generator: torch.Generator | None, seed: int | None) -> None:
        self.g = make_generator(generator, seed)

    def rand(self, *shape: int) -> torch.Tensor:
        return rand(shape, generator=self.g, dtype=_F64)

    def randn(self, *shape: int) -> torch.Tensor:
        return randn(shape, generator=self.g, dtype=_F64)

    def randint(self, high: int, size: int) -> torch.Tensor:
        return randint(high, (size,), generator=self.g)

    def randperm(self, size: int) -> torch.Tensor:
        where = self.g.device if self.g is not None else torch.device("cpu")
        return torch.randperm(size, generator=self.g, device=where).cpu()


class ToySampler(Protocol):
    """The signature every toy sampler shares."""

    def __call__(
        self,
        num_samples: int,
        *,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        dtype: torch.dtype | None = None,
        device: _Device = None,
    ) -> torch.Tensor: ...


def _toy(core: Callable[[int, _Draws], torch.Tensor]) -> ToySampler:
    """The public sampler around ``core(n, draws) -> float64 (n, 2)``: one signature for all of them.

    ``fn(num_samples, *, generator=None, seed=None, dtype=None, device=None)`` checks
    ``num_samples``, draws with :class:`_Draws` and casts / moves the result.
    """

    def sampler(
        num_samples: int,
        *,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        dtype: torch.dtype | None = None,
        device: _Device = None,
    ) -> torch.Tensor:
        n = check_int(num_samples, "num_samples")
        x = core(n, _Draws(generator, seed))
        return x.to(device=device, dtype=dtype or torch.get_default_dtype())

    sampler.__name__ = sampler.__qualname__ = core.__name__
    sampler.__doc__ = core.__doc__
    sampler.__module__ = core.__module__
    return sampler


@_toy
def two_moons(n: int, d: _Draws) -> torch.Tensor:
    """Two interleaving half circles (noise sd 0.1), centred and scaled by 2; ``(num_samples, 2)``."""
    t = math.pi * d.rand(n)
    upper = torch.arange(n) < (n + 1) // 2
    x = torch.where(upper, torch.cos(t), 1 - torch.cos(t))
    y = torch.where(upper, torch.sin(t), 0.5 - torch.sin(t))
    p = torch.stack([x, y], -1) + 0.1 * d.randn(n, 2)
    p = 2 * (p - torch.tensor([0.5, 0.25], dtype=_F64))
    return p[d.randperm(n)]


@_toy
def eight_gaussians(n: int, d: _Draws) -> torch.Tensor:
    """Mixture of 8 Gaussians (sd ``0.5/sqrt 2``) on a circle of radius ``4/sqrt 2``; ``(num_samples, 2)``."""
    k = d.randint(8, n)
    ang = k.double() * math.pi / 4
    centres = 4 * torch.stack([torch.cos(ang), torch.sin(ang)], -1)
    p = (centres + 0.5 * d.randn(n, 2)) / math.sqrt(2)
    return p


@_toy
def checkerboard(n: int, d: _Draws) -> torch.Tensor:
    """Uniform on the squares of side 2 in ``[-4, 4]^2`` with ``floor(x/2) + floor(y/2)`` even; ``(num_samples, 2)``."""
    x1 = 4 * d.rand(n) - 2
    x2_ = d.rand(n) - 2 * d.randint(2, n).double()
    x2 = x2_ + torch.remainder(torch.floor(x1), 2)
    return 2 * torch.stack([x1, x2], -1)


@_toy
def rings(n: int, d: _Draws) -> torch.Tensor:
    """Four noisy concentric circles of radii 3, 2.25, 1.5, 0.75 (noise sd 0.08); ``(num_samples, 2)``."""
    radii = 3 * torch.tensor([1.0, 0.75, 0.5, 0.25], dtype=_F64)
    r = radii[torch.arange(n) % 4]
    t = 2 * math.pi * d.rand(n)
    p = r[:, None] * torch.stack([torch.cos(t), torch.sin(t)], -1) + 0.08 * d.randn(n, 2)
    return p[d.randperm(n)]


@_toy
def pinwheel(n: int, d: _Draws) -> torch.Tensor:
    """Five spiralling arms (radial sd 0.3, tangential sd 0.1, rate 0.25), scaled by 2; ``(num_samples, 2)``."""
    k = d.randint(5, n)
    f = d.randn(n, 2) * torch.tensor([0.3, 0.1], dtype=_F64) + torch.tensor([1.0, 0.0], dtype=_F64)
    ang = 2 * math.pi * k.double() / 5 + 0.25 * torch.exp(f[:, 0])
    c, s = torch.cos(ang), torch.sin(ang)
    p = torch.stack([c * f[:, 0] - s * f[:, 1], s * f[:, 0] + c * f[:, 1]], -1)
    return 2 * p


@_toy
def swiss_roll(n: int, d: _Draws) -> torch.Tensor:
    """2-D swiss roll ``(t cos t, t sin t) + N(0, I)`` with ``t ~ U(1.5 pi, 4.5 pi)``, over 5; ``(num_samples, 2)``."""
    t = 1.5 * math.pi * (1 + 2 * d.rand(n))
    p = torch.stack([t * torch.cos(t), t * torch.sin(t)], -1) + d.randn(n, 2)
    return p / 5


TOY_DATASETS: dict[str, ToySampler] = {
    "two_moons": two_moons,
    "eight_gaussians": eight_gaussians,
    "checkerboard": checkerboard,
    "rings": rings,
    "pinwheel": pinwheel,
    "swiss_roll": swiss_roll,
}


def sample(
    name: str,
    num_samples: int,
    *,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    dtype: torch.dtype | None = None,
    device: _Device = None,
) -> torch.Tensor:
    """``TOY_DATASETS[name](num_samples, ...)`` with a clear error for an unknown name."""
    if name not in TOY_DATASETS:
        raise ParameterError(f"name must be one of {sorted(TOY_DATASETS)}; got {name!r}")
    return TOY_DATASETS[name](num_samples, generator=generator, seed=seed, dtype=dtype, device=device)


@dataclass(frozen=True)
class ToyDataset:
    """A fixed train / test split of one toy data set (``train (num_train, 2)``, ``test (num_test, 2)``).

    ``seed`` is the seed the points were drawn with (``None`` when they came from a
    generator or the global RNG).
    """

    name: str
    train: torch.Tensor
    test: torch.Tensor
    seed: int | None

    def sampler(self, *, generator: torch.Generator | None = None) -> Callable[[int], torch.Tensor]:
        """``fn(batch_size)`` drawing training minibatches with replacement from ``generator`` (for ``fokker.train.fit``)."""

        def draw(batch_size: int) -> torch.Tensor:
            idx = randint(self.train.shape[0], (batch_size,), generator=generator)
            return self.train[idx.to(self.train.device)]

        return draw


def load(
    name: str,
    num_train: int = 10_000,
    num_test: int = 2_000,
    *,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    dtype: torch.dtype | None = None,
    device: _Device = None,
) -> ToyDataset:
    """Draw ``num_train + num_test`` points; the first ``num_train`` are the training set.

    Train and test are i.i.d. draws of the same distribution; with ``seed`` the split is a
    pure function of ``(name, num_train, num_test, seed)``.
    """
    check_int(num_train, "num_train")
    check_int(num_test, "num_test")
    x = sample(name, num_train + num_test, generator=generator, seed=seed, dtype=dtype, device=device)
    return ToyDataset(name, x[:num_train], x[num_train:], seed)
