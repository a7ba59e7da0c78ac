"""Fixed permutations of the coordinates: volume preserving, ``log|det J| = 0`` (exact)."""

from __future__ import annotations

import torch
from torch import Tensor

from .._args import check_int
from ..errors import ParameterError
from .base import Bijection

__all__ = ["Permute", "Reverse"]


class Permute(Bijection):
    """``y = x[..., perm]`` for a fixed permutation ``perm`` of ``0..d-1`` (vectors).

    The fixed permutations between coupling layers of Dinh et al. (2015, NICE, sec. 3.2) and
    Kingma & Dhariwal (2018, Glow, sec. 3.2, "reverse" and "shuffle").  Volume preserving:
    ``log|det J| = 0`` (exact).  Shapes ``(..., d)``.

    Args:
        perm: the permutation (a sequence or long tensor of length ``d``).
    """

    def __init__(self, perm: Tensor | list[int]) -> None:
        super().__init__(event_dim=1)
        perm = torch.as_tensor(perm, dtype=torch.long)
        d = perm.numel()
        if perm.dim() != 1 or sorted(perm.tolist()) != list(range(d)):
            raise ParameterError(f"perm must be a permutation of 0..{d - 1}; got {perm.tolist()}")
        self.features = d
        self.register_buffer("perm", perm)
        self.register_buffer("perm_inv", torch.argsort(perm))

    @classmethod
    def random(cls, features: int, generator: torch.Generator | None = None) -> "Permute":
        """A uniformly random permutation (pass a seeded ``generator`` for reproducibility)."""
        return cls(torch.randperm(check_int(features, "features"), generator=generator))

    def _zeros(self, v: Tensor) -> Tensor:
        return v.new_zeros(v.shape[:-1])

    def call_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self._check_input(x, "x", self.features)
        self._check_context(context)
        return x[..., self.perm], self._zeros(x)

    def inverse_and_ladj(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self._check_input(y, "y", self.features)
        self._check_context(context)
        return y[..., self.perm_inv], self._zeros(y)

    def extra_repr(self) -> str:
        return f"features={self.features}"


class Reverse(Permute):
    """``y = x[..., ::-1]``: the order reversal between coupling / autoregressive layers
    (Kingma & Dhariwal 2018, Glow, sec. 3.2); ``log|det J| = 0``."""

    def __init__(self, features: int) -> None:
        super().__init__(torch.arange(check_int(features, "features") - 1, -1, -1))
