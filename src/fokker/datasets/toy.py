"""2-D toy data sets of the flow / diffusion literature (FFJORD, Grathwohl et al. 2019; NSF; score SDE demos).

Every sampler is ``fn(n, seed=0, dtype=None, device=None) -> Tensor (n, 2)``; it draws from a
private ``torch.Generator`` seeded with ``seed`` (on CPU, then moved), so results are
reproducible and the global RNG is untouched.  Definitions (``U`` uniform, ``N`` normal):

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

import torch

from .._args import check_int
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


def _gen(seed: int) -> torch.Generator:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ParameterError(f"seed must be an integer; got {seed!r}")
    return torch.Generator(device="cpu").manual_seed(seed)


def _out(x: torch.Tensor, dtype: torch.dtype | None, device: _Device) -> torch.Tensor:
    return x.to(device=device, dtype=dtype or torch.get_default_dtype())


def two_moons(n: int, seed: int = 0, dtype: torch.dtype | None = None, device: _Device = None) -> torch.Tensor:
    """Two interleaving half circles (noise sd 0.1), centred and scaled by 2; ``(n, 2)``."""
    check_int(n, "n")
    g = _gen(seed)
    t = math.pi * torch.rand(n, generator=g, dtype=torch.float64)
    upper = torch.arange(n) < (n + 1) // 2
    x = torch.where(upper, torch.cos(t), 1 - torch.cos(t))
    y = torch.where(upper, torch.sin(t), 0.5 - torch.sin(t))
    p = torch.stack([x, y], -1) + 0.1 * torch.randn(n, 2, generator=g, dtype=torch.float64)
    p = 2 * (p - torch.tensor([0.5, 0.25], dtype=torch.float64))
    return _out(p[torch.randperm(n, generator=g)], dtype, device)


def eight_gaussians(n: int, seed: int = 0, dtype: torch.dtype | None = None, device: _Device = None) -> torch.Tensor:
    """Mixture of 8 Gaussians (sd ``0.5/sqrt 2``) on a circle of radius ``4/sqrt 2``; ``(n, 2)``."""
    check_int(n, "n")
    g = _gen(seed)
    k = torch.randint(0, 8, (n,), generator=g)
    ang = k.double() * math.pi / 4
    centres = 4 * torch.stack([torch.cos(ang), torch.sin(ang)], -1)
    p = (centres + 0.5 * torch.randn(n, 2, generator=g, dtype=torch.float64)) / math.sqrt(2)
    return _out(p, dtype, device)


def checkerboard(n: int, seed: int = 0, dtype: torch.dtype | None = None, device: _Device = None) -> torch.Tensor:
    """Uniform on the squares of side 2 in ``[-4, 4]^2`` with ``floor(x/2) + floor(y/2)`` even; ``(n, 2)``."""
    check_int(n, "n")
    g = _gen(seed)
    x1 = 4 * torch.rand(n, generator=g, dtype=torch.float64) - 2
    x2_ = torch.rand(n, generator=g, dtype=torch.float64) - 2 * torch.randint(0, 2, (n,), generator=g).double()
    x2 = x2_ + torch.remainder(torch.floor(x1), 2)
    return _out(2 * torch.stack([x1, x2], -1), dtype, device)


def rings(n: int, seed: int = 0, dtype: torch.dtype | None = None, device: _Device = None) -> torch.Tensor:
    """Four noisy concentric circles of radii 3, 2.25, 1.5, 0.75 (noise sd 0.08); ``(n, 2)``."""
    check_int(n, "n")
    g = _gen(seed)
    radii = 3 * torch.tensor([1.0, 0.75, 0.5, 0.25], dtype=torch.float64)
    r = radii[torch.arange(n) % 4]
    t = 2 * math.pi * torch.rand(n, generator=g, dtype=torch.float64)
    p = r[:, None] * torch.stack([torch.cos(t), torch.sin(t)], -1) + 0.08 * torch.randn(n, 2, generator=g, dtype=torch.float64)
    return _out(p[torch.randperm(n, generator=g)], dtype, device)


def pinwheel(n: int, seed: int = 0, dtype: torch.dtype | None = None, device: _Device = None) -> torch.Tensor:
    """Five spiralling arms (radial sd 0.3, tangential sd 0.1, rate 0.25), scaled by 2; ``(n, 2)``."""
    check_int(n, "n")
    g = _gen(seed)
    k = torch.randint(0, 5, (n,), generator=g)
    f = torch.randn(n, 2, generator=g, dtype=torch.float64) * torch.tensor([0.3, 0.1], dtype=torch.float64)
    f = f + torch.tensor([1.0, 0.0], dtype=torch.float64)
    ang = 2 * math.pi * k.double() / 5 + 0.25 * torch.exp(f[:, 0])
    c, s = torch.cos(ang), torch.sin(ang)
    p = torch.stack([c * f[:, 0] - s * f[:, 1], s * f[:, 0] + c * f[:, 1]], -1)
    return _out(2 * p, dtype, device)


def swiss_roll(n: int, seed: int = 0, dtype: torch.dtype | None = None, device: _Device = None) -> torch.Tensor:
    """2-D swiss roll ``(t cos t, t sin t) + N(0, I)`` with ``t ~ U(1.5 pi, 4.5 pi)``, over 5; ``(n, 2)``."""
    check_int(n, "n")
    g = _gen(seed)
    t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=g, dtype=torch.float64))
    p = torch.stack([t * torch.cos(t), t * torch.sin(t)], -1) + torch.randn(n, 2, generator=g, dtype=torch.float64)
    return _out(p / 5, dtype, device)


TOY_DATASETS: dict[str, Callable[..., torch.Tensor]] = {
    "two_moons": two_moons,
    "eight_gaussians": eight_gaussians,
    "checkerboard": checkerboard,
    "rings": rings,
    "pinwheel": pinwheel,
    "swiss_roll": swiss_roll,
}


def sample(name: str, n: int, seed: int = 0, dtype: torch.dtype | None = None, device: _Device = None) -> torch.Tensor:
    """``TOY_DATASETS[name](n, seed)`` with a clear error for an unknown name."""
    if name not in TOY_DATASETS:
        raise ParameterError(f"name must be one of {sorted(TOY_DATASETS)}; got {name!r}")
    return TOY_DATASETS[name](n, seed=seed, dtype=dtype, device=device)


@dataclass(frozen=True)
class ToyDataset:
    """A fixed train / test split of one toy data set (``train (n_train, 2)``, ``test (n_test, 2)``)."""

    name: str
    train: torch.Tensor
    test: torch.Tensor
    seed: int

    def sampler(self, generator: torch.Generator | None = None) -> Callable[[int], torch.Tensor]:
        """``fn(batch_size)`` drawing training minibatches with replacement (for ``fokker.train.fit``)."""

        def draw(batch_size: int) -> torch.Tensor:
            idx = torch.randint(0, self.train.shape[0], (batch_size,), generator=generator)
            return self.train[idx.to(self.train.device)]

        return draw


def load(
    name: str,
    n_train: int = 10_000,
    n_test: int = 2_000,
    seed: int = 0,
    dtype: torch.dtype | None = None,
    device: _Device = None,
) -> ToyDataset:
    """Draw ``n_train + n_test`` points with ``seed``; the first ``n_train`` are the training set.

    Train and test are i.i.d. draws of the same distribution; the split is a pure function of
    ``(name, n_train, n_test, seed)``.
    """
    check_int(n_train, "n_train")
    check_int(n_test, "n_test")
    x = sample(name, n_train + n_test, seed=seed, dtype=dtype, device=device)
    return ToyDataset(name, x[:n_train], x[n_train:], seed)
