"""The :class:`EBM` model object: an energy composed with a training objective and a sampler.

``EBM(energy, objective)`` is what ``fokker.train.fit`` trains (it has
``loss(batch)``) and what users sample from (``sample`` runs many MCMC chains
in parallel).  ``log_prob`` is the unnormalized ``-E(x)``; with an NCE
objective ``normalized_log_prob`` subtracts the learned ``log Z``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .._validation import check_int, check_last_dim, check_positive, check_tensor
from ..errors import ParameterError
from ..targets.base import Target
from .contrastive import contrastive_divergence, persistent_contrastive_divergence
from .energy import EnergyModel
from .langevin import langevin_chain
from .nce import NCE
from .objective import Objective, denoising, exact, sliced

_NAMED = {
    "exact": exact,
    "sliced": sliced,
    "denoising": denoising,
    "cd": contrastive_divergence,
    "contrastive_divergence": contrastive_divergence,
    "pcd": persistent_contrastive_divergence,
    "persistent_contrastive_divergence": persistent_contrastive_divergence,
}


def make_objective(objective: str | Objective) -> Objective:
    """An :class:`Objective` from itself or a name (``exact``, ``sliced``, ``denoising``, ``cd``, ``pcd``).

    NCE needs a noise distribution: pass ``fokker.ebm.nce(noise, ratio)``.
    """
    if isinstance(objective, Objective):
        return objective
    if isinstance(objective, str) and objective in _NAMED:
        return _NAMED[objective]()
    raise ParameterError(
        f"objective must be an Objective or one of {sorted(_NAMED)}; got {objective!r} "
        "(NCE needs noise: objective=fokker.ebm.nce(noise, ratio))"
    )


class EBM(nn.Module):
    """An energy-based model ``p(x) ∝ exp(-E(x))`` with a training objective.

    Args:
        energy: an :class:`EnergyModel` (or any :class:`~fokker.targets.Target`), or a
            plain network ``(..., dim) -> (...)`` (then ``dim`` is required).
        objective: an :class:`Objective` or its name (default ``"exact"`` score matching).
        dim: event dimension when ``energy`` is a plain network.

    Example::

        >>> from fokker.ebm import EBM, GaussianEnergy
        >>> ebm = EBM(GaussianEnergy(2), objective="sliced")
        >>> ebm.loss(torch.randn(64, 2)).shape
        torch.Size([])
    """

    def __init__(self, energy: nn.Module, objective: str | Objective = "exact", dim: int | None = None) -> None:
        super().__init__()
        if not isinstance(energy, Target):
            if dim is None:
                raise ParameterError("dim is required when energy is a plain network (not an EnergyModel)")
            energy = EnergyModel(energy, dim)
        self.energy_model = energy
        self.objective = make_objective(objective)
        self.objective.setup(energy)

    @property
    def dim(self) -> int:
        return self.energy_model.dim

    # ------------------------------------------------------------- density
    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """``E(x) = -log_prob(x)``: ``(..., dim) -> (...)``."""
        return -self.energy_model.log_prob(x)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Unnormalized ``-E(x)`` (exactly normalized only if the energy's ``log_Z`` is 0)."""
        return self.energy_model.log_prob(x)

    @property
    def log_Z(self) -> float | None:
        """The energy's exact ``log Z`` if known, else the NCE estimate, else ``None``."""
        lz = self.energy_model.log_Z
        if lz is None and isinstance(self.objective, NCE):
            return float(self.objective.log_Z.detach())
        return lz

    def normalized_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``-E(x) - log Z`` with the exact or NCE-estimated ``log Z`` (raises if neither exists)."""
        lz = self.energy_model.log_Z
        if lz is not None:
            return self.log_prob(x) - lz
        if isinstance(self.objective, NCE):
            return self.log_prob(x) - self.objective.log_Z
        raise ParameterError("log Z is unknown: train with the NCE objective or estimate it with AIS")

    # ------------------------------------------------------------ training
    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        """The objective's scalar loss on a data batch ``(n, dim)``."""
        check_tensor(batch, "batch")
        check_last_dim(batch, self.dim, "batch")
        if batch.dim() != 2:
            raise ParameterError(f"batch must have shape (n, {self.dim}); got {tuple(batch.shape)}")
        return self.objective(self.energy_model, batch)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.loss(batch)

    # ------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample(
        self,
        sample_shape: torch.Size | tuple[int, ...] = (),
        steps: int = 500,
        step_size: float = 1e-2,
        init: torch.Tensor | None = None,
        metropolis: bool = True,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Approximate samples ``(*sample_shape, dim)`` by many parallel MALA (or ULA) chains.

        One chain per requested sample, ``steps`` steps from ``init`` (default:
        standard normal).  These are MCMC samples (asymptotically exact with
        MALA; biased by ``O(step_size)`` without ``metropolis``): check mixing
        for multimodal energies.
        """
        check_int(steps, "steps", minimum=0)
        check_positive(step_size, "step_size")
        shape = torch.Size(sample_shape)
        ref = self.energy_model._reference_tensor()
        dtype = ref.dtype if ref is not None else torch.get_default_dtype()
        device = ref.device if ref is not None else torch.device("cpu")
        n = shape.numel()
        if init is None:
            x0 = torch.randn(n, self.dim, dtype=dtype, device=device)
        else:
            check_tensor(init, "init")
            if init.shape != (*shape, self.dim):
                raise ParameterError(f"init must have shape {(*shape, self.dim)}; got {tuple(init.shape)}")
            x0 = init.reshape(n, self.dim)
        x, _ = langevin_chain(
            self.energy_model.log_prob_unchecked, x0, steps, step_size, metropolis=metropolis, **kwargs
        )
        return x.reshape(*shape, self.dim)


__all__ = ["EBM", "make_objective"]
