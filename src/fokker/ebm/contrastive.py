"""Maximum likelihood with MCMC negatives: contrastive divergence and persistent CD.

The log-likelihood gradient of an EBM (Hinton 2002, eq. 5; LeCun et al. 2006, Sec. 2;
seed 002 eq. 20) is

.. math::  \\nabla_\\theta \\log p_\\theta(x)
           = -\\nabla_\\theta E_\\theta(x) + \\mathbb{E}_{x^- \\sim p_\\theta}[\\nabla_\\theta E_\\theta(x^-)] .

The surrogate loss ``mean E(x+) - mean E(x-)`` with the negatives ``x-``
detached has exactly minus this gradient when ``x- ~ p_theta``; the negatives
come from a short Langevin (or MALA) chain:

With the exact noise the chain is :class:`fokker.mcmc.ULA` or
:class:`fokker.mcmc.MALA` at a fixed step size (see :func:`~fokker.ebm.langevin_chain`).

* **CD-k** (Hinton 2002): the chain starts at the data batch and runs ``k``
  steps, a biased but low-variance estimate.
* **persistent CD with a replay buffer** (Tieleman 2008; Du & Mordatch 2019):
  chains start from a buffer of past negatives, a fraction ``reinit_prob``
  (5 %) restarting from the noise initializer; after ``k`` steps the
  negatives are written back.  Du & Mordatch also add the energy
  regularizer ``alpha (E(x+)^2 + E(x-)^2)`` (``energy_reg``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .. import _random
from .._args import check_int, check_positive
from ..errors import DeviceDtypeError, ParameterError
from ..targets.base import Target
from .langevin import langevin_chain
from .objective import Objective, log_prob_fn

_SAMPLERS = ("langevin", "mala")


class ContrastiveDivergence(Objective):
    """CD-k with Langevin (``sampler="langevin"``) or MALA (``"mala"``) negatives started at the data.

    Hinton (2002), "Training products of experts by minimizing contrastive divergence",
    Neural Computation 14, eq. (5) (there with Gibbs negatives); seed 002 eq. 20.

    Args:
        k: Langevin steps per update.
        step_size: Langevin step ``epsilon`` (noise ``sqrt(2 epsilon)`` unless ``noise_scale``).
        sampler: ``"langevin"`` (unadjusted) or ``"mala"`` (Metropolis-adjusted).
        noise_scale: decoupled noise std (Du & Mordatch); only with ``"langevin"``.
        grad_clip: clamp on each coordinate of ``grad E`` inside the chain.
        energy_reg: weight ``alpha`` of ``alpha * mean(E(x+)^2 + E(x-)^2)``.

    After each call ``last_accept_rate`` holds the chain's mean acceptance (a tensor).
    """

    def __init__(
        self,
        k: int = 10,
        step_size: float = 1e-2,
        sampler: str = "langevin",
        noise_scale: float | None = None,
        grad_clip: float | None = None,
        energy_reg: float = 0.0,
    ) -> None:
        super().__init__()
        self.k = check_int(k, "k", minimum=1)
        check_positive(step_size, "step_size")
        if sampler not in _SAMPLERS:
            raise ParameterError(f"sampler must be one of {_SAMPLERS}; got {sampler!r}")
        if noise_scale is not None:
            check_positive(noise_scale, "noise_scale")
            if sampler == "mala":
                raise ParameterError("noise_scale must be None with sampler='mala' (MALA needs the exact noise)")
        if grad_clip is not None:
            check_positive(grad_clip, "grad_clip")
            if sampler == "mala":
                raise ParameterError("grad_clip must be None with sampler='mala' (MALA needs the exact proposal)")
        if energy_reg < 0:
            raise ParameterError(f"energy_reg must be >= 0; got {energy_reg!r}")
        self.step_size = float(step_size)
        self.sampler = sampler
        self.noise_scale = noise_scale
        self.grad_clip = grad_clip
        self.energy_reg = float(energy_reg)
        self.last_accept_rate: torch.Tensor | None = None

    def negatives(self, model: nn.Module, x0: torch.Tensor) -> torch.Tensor:
        """Run the chain from ``x0`` and return detached negatives."""
        x, acc = langevin_chain(
            model if isinstance(model, Target) else log_prob_fn(model),
            x0,
            self.k,
            self.step_size,
            noise_scale=self.noise_scale,
            metropolis=self.sampler == "mala",
            grad_clip=self.grad_clip,
        )
        self.last_accept_rate = acc
        return x

    def _initial(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        x_neg = self.negatives(model, self._initial(model, x))
        lp = log_prob_fn(model)
        e_pos = -lp(x)
        e_neg = -lp(x_neg)
        loss = e_pos.mean() - e_neg.mean()
        if self.energy_reg > 0:
            loss = loss + self.energy_reg * (e_pos.pow(2).mean() + e_neg.pow(2).mean())
        return loss


InitFn = Callable[[int, int, torch.dtype, torch.device, "torch.Generator | None"], torch.Tensor]


def _make_init(init: Any) -> InitFn:
    """Normalize ``init`` (None, a Distribution, or ``f(n) -> (n, d)``) to ``f(n, d, dtype, device, generator)``.

    Draws that take no generator (a Distribution, a user callable) run under
    :func:`fokker._random.rng_scope`, seeded from the generator.
    """
    if init is None:
        return lambda n, d, dtype, device, gen: _random.randn((n, d), generator=gen, dtype=dtype, device=device)
    if isinstance(init, torch.distributions.Distribution):

        def from_distribution(n, d, dtype, device, gen):  # noqa: ANN001, ANN202
            with _random.rng_scope(gen, [device]):
                return init.sample((n,)).to(device, dtype)

        return from_distribution
    if callable(init):

        def from_callable(n, d, dtype, device, gen):  # noqa: ANN001, ANN202
            with _random.rng_scope(gen, [device]):
                return init(n)

        return from_callable
    raise TypeError(f"init must be None, a torch Distribution or a callable n -> (n, d); got {type(init).__name__}")


class ReplayBuffer(nn.Module):
    """A fixed-size store of past negatives ``(size, d)`` with random restarts (Du & Mordatch 2019, Sec. 3.1).

    :meth:`draw` picks ``num_samples`` random slots and replaces each by a fresh
    initializer draw with probability ``reinit_prob``; :meth:`update` writes
    the evolved points back into the same slots.  The store is a registered
    buffer (saved in checkpoints).
    """

    def __init__(self, size: int, reinit_prob: float = 0.05, init: Any = None) -> None:
        super().__init__()
        self.size = check_int(size, "buffer_size")
        if not 0.0 <= reinit_prob <= 1.0:
            raise ParameterError(f"reinit_prob must lie in [0, 1]; got {reinit_prob!r}")
        self.reinit_prob = float(reinit_prob)
        self._init = _make_init(init)
        self.register_buffer("data", torch.empty(0))

    @property
    def initialized(self) -> bool:
        return self.data.numel() > 0

    def fill(self, dim: int, dtype: torch.dtype, device: torch.device, *, generator: torch.Generator | None = None) -> None:
        """(Re)fill every slot from the initializer."""
        self.data = self._init(self.size, dim, dtype, device, generator).detach().clone()
        if self.data.shape != (self.size, dim):
            raise ParameterError(f"init must return shape ({self.size}, {dim}); got {tuple(self.data.shape)}")

    def draw(self, num_samples: int, *, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x0, idx)``: ``num_samples`` starting points and their slots, drawn from ``generator``."""
        d = self.data
        idx = _random.randint(self.size, (num_samples,), generator=generator, device=d.device)
        fresh = self._init(num_samples, d.shape[-1], d.dtype, d.device, generator)
        restart = _random.rand((num_samples,), generator=generator, device=d.device) < self.reinit_prob
        return torch.where(restart.unsqueeze(-1), fresh, d[idx]), idx

    def update(self, idx: torch.Tensor, x: torch.Tensor) -> None:
        self.data[idx] = x.detach()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001
        key = prefix + "data"
        if key in state_dict and state_dict[key].shape != self.data.shape:
            self.data = torch.empty_like(state_dict[key], device=self.data.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class PersistentContrastiveDivergence(ContrastiveDivergence):
    """Persistent CD (Tieleman 2008, "Training restricted Boltzmann machines using approximations to the
    likelihood gradient", ICML, Sec. 3) with a replay buffer (Du & Mordatch 2019, Sec. 3.1).

    Args:
        buffer_size: number of stored negatives.
        reinit_prob: probability that a chain restarts from ``init`` (5 %).
        init: initializer of fresh chains: ``None`` (standard normal), a
            ``torch.distributions.Distribution`` with event shape ``(d,)``, or a
            callable ``n -> (n, d)``.
        k, step_size, sampler, noise_scale, grad_clip, energy_reg: as in
            :class:`ContrastiveDivergence`; Du & Mordatch use ``noise_scale``
            smaller than ``sqrt(2 step_size)`` and ``energy_reg = 1``.
    """

    def __init__(
        self,
        buffer_size: int = 10_000,
        reinit_prob: float = 0.05,
        init: Any = None,
        k: int = 20,
        step_size: float = 1e-2,
        sampler: str = "langevin",
        noise_scale: float | None = None,
        grad_clip: float | None = None,
        energy_reg: float = 0.0,
    ) -> None:
        super().__init__(k, step_size, sampler, noise_scale, grad_clip, energy_reg)
        self.buffer = ReplayBuffer(buffer_size, reinit_prob, init)

    def setup(self, model: nn.Module) -> None:
        ref = next(iter(model.parameters()), None) if isinstance(model, nn.Module) else None
        dim = getattr(model, "dim", None)
        if dim is None:
            raise ParameterError("persistent CD needs a model with a .dim attribute (an EnergyModel / Target)")
        dtype = ref.dtype if ref is not None else torch.get_default_dtype()
        device = ref.device if ref is not None else torch.device("cpu")
        self.buffer.fill(dim, dtype, device)

    def _initial(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if not self.buffer.initialized:
            self.buffer.fill(x.shape[-1], x.dtype, x.device)
        if self.buffer.data.dtype != x.dtype or self.buffer.data.device != x.device:
            raise DeviceDtypeError(
                f"x has dtype {x.dtype} on {x.device} but the replay buffer holds "
                f"{self.buffer.data.dtype} on {self.buffer.data.device}; move the model with .to()"
            )
        x0, self._idx = self.buffer.draw(x.shape[0])
        return x0

    def negatives(self, model: nn.Module, x0: torch.Tensor) -> torch.Tensor:
        x = super().negatives(model, x0)
        self.buffer.update(self._idx, x)
        return x


#: CD-k objective with Langevin or MALA negatives: an alias of :class:`ContrastiveDivergence`
contrastive_divergence = ContrastiveDivergence
#: persistent CD with a replay buffer: an alias of :class:`PersistentContrastiveDivergence`
persistent_contrastive_divergence = PersistentContrastiveDivergence


__all__ = [
    "ContrastiveDivergence",
    "PersistentContrastiveDivergence",
    "ReplayBuffer",
    "contrastive_divergence",
    "persistent_contrastive_divergence",
]
