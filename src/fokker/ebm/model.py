"""The :class:`EBM` model object: an energy composed with a training objective and a sampler.

``EBM(energy, objective)`` is what ``fokker.train.fit`` trains (it has
``loss(batch)``) and what users sample from (``sample`` / ``mcmc`` run many
chains of a :mod:`fokker.mcmc` kernel in parallel).  ``log_prob`` is the unnormalized ``-E(x)``; with an NCE
objective ``normalized_log_prob`` subtracts the learned ``log Z``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .._args import check_int, check_last_dim, check_tensor
from ..errors import ParameterError, ShapeError
from ..targets.base import Target
from .contrastive import contrastive_divergence, persistent_contrastive_divergence
from .energy import EnergyModel
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
    """An energy-based model ``p(x) ∝ exp(-E(x))`` with a training objective and an MCMC sampler.

    LeCun, Chopra, Hadsell, Ranzato & Huang (2006), "A tutorial on energy-based learning";
    seed 002 eq. 18.  The objectives are score matching (Hyvarinen 2005), its sliced
    (Song et al. 2019) and denoising (Vincent 2011) forms, contrastive divergence (Hinton
    2002), persistent CD (Tieleman 2008) and NCE (Gutmann & Hyvarinen 2010).

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
            raise ShapeError(f"batch must have shape (n, {self.dim}); got {tuple(batch.shape)}")
        return self.objective(self.energy_model, batch)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.loss(batch)

    # ------------------------------------------------------------ sampling
    def mcmc(
        self,
        num_chains: int = 64,
        num_samples: int = 1000,
        warmup: int = 1000,
        kernel: Any = None,
        init: torch.Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        progress: bool | None = None,
    ) -> Any:
        """Run :func:`fokker.mcmc.sample` on the energy (default kernel :class:`fokker.mcmc.MALA`).

        Returns the :class:`fokker.mcmc.MCMCResult` (draws ``(chains, draws, dim)``,
        acceptance, adapted step size, ESS / R-hat diagnostics).  Randomness from
        ``generator`` (or a generator seeded with ``seed``; the global RNG when neither).
        """
        from .. import mcmc

        kernel = mcmc.MALA() if kernel is None else kernel
        return mcmc.sample(
            self.energy_model, kernel, num_chains, num_samples, warmup,
            generator=generator, seed=seed, init=init, progress=progress,
        )

    @torch.no_grad()
    def sample(
        self,
        sample_shape: torch.Size | tuple[int, ...] | int = (),
        num_steps: int = 500,
        kernel: Any = None,
        init: torch.Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        progress: bool | None = None,
    ) -> torch.Tensor:
        """Approximate samples ``(*sample_shape, dim)``: one independent MCMC chain per sample.

        Each chain runs ``num_steps`` warm-up transitions of ``kernel`` (default
        :class:`fokker.mcmc.MALA`, step size adapted by dual averaging, diagonal
        metric by Stan's windows) and returns the state after one more transition.  MCMC samples:
        exact only asymptotically; check mixing (:meth:`mcmc` gives diagnostics)
        for multimodal energies.

        Args:
            sample_shape: batch shape of the output.
            num_steps: adaptive warm-up transitions per chain (``>= 1``).
            kernel: a ``fokker.mcmc`` kernel.
            init: starting points ``(*sample_shape, dim)``; default the
                ``fokker.mcmc`` initializer (uniform on ``(-2, 2)^dim``).
            generator: the ``torch.Generator`` of every draw (``seed``: one seeded with it).
            progress: tqdm bar (``None``: on a terminal only).
        """
        check_int(num_steps, "num_steps", minimum=1)
        shape = torch.Size((sample_shape,) if isinstance(sample_shape, int) else sample_shape)
        n = shape.numel()
        if n == 0:
            raise ParameterError(f"sample_shape must hold at least one sample; got {tuple(shape)}")
        if init is not None:
            check_tensor(init, "init")
            if init.shape != (*shape, self.dim):
                raise ShapeError(f"init must have shape {(*shape, self.dim)}; got {tuple(init.shape)}")
            init = init.reshape(n, self.dim)
        res = self.mcmc(num_chains=n, num_samples=1, warmup=num_steps, kernel=kernel, init=init,
                        generator=generator, seed=seed, progress=progress)
        return res.samples[:, -1].reshape(*shape, self.dim)


__all__ = ["EBM", "make_objective"]
