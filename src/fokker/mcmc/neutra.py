"""NeuTra: MCMC in the latent space of a flow fitted to the target.

Hoffman, Sountsov, Dillon, Langmore, Tran & Vasudevan (2019), *NeuTra-lizing bad geometry in
Hamiltonian Monte Carlo using neural transport*, sec. 3: with a bijection ``x = T(z)`` (a flow
fitted to ``pi``, e.g. by :func:`fokker.flows.fit_to_target`), run the kernel on the pull-back

.. math:: \\log\\tilde\\gamma(z) = \\log\\gamma(T(z)) + \\log|\\det \\partial T / \\partial z|,

whose normalizer is the same ``Z`` (change of variables, exact for any bijection).  If ``T``
pushes ``N(0, I)`` close to ``pi``, the pull-back is close to ``N(0, I)`` and HMC with a unit
metric mixes well even where ``pi`` itself has bad geometry (Neal's funnel).  The draws
``T(z)`` are exact ``pi``-draws asymptotically whatever the flow's quality; only the mixing
depends on it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch

from .. import _random
from ..errors import ShapeError
from ..flows import Flow
from ..targets.base import Target, as_target
from .kernels import Kernel
from .sample import MCMCResult, sample

__all__ = ["NeuTraTarget", "neutra"]


class NeuTraTarget(Target):
    """The pull-back ``log gamma(T(z)) + log|det dT/dz|`` of a target through a flow (Hoffman et al. 2019, sec. 3).

    Args:
        target: ``gamma`` on ``R^dim`` (a Target or a log-prob callable with ``dim``).
        flow: an unconditional :class:`~fokker.flows.Flow` with event shape ``(dim,)``; its
            forward map ``T`` (base -> data) is the transport (fixed: nothing here trains it).

    ``log_Z`` is the target's (the pull-back has the same normalizer).  ``push_forward(z)`` maps
    latent draws ``(..., dim)`` to the target space.
    """

    def __init__(self, target: Target | Callable, flow: Flow, dim: int | None = None) -> None:
        target = as_target(target, dim)
        if not isinstance(flow, Flow):
            raise TypeError(f"flow must be a fokker.flows.Flow; got {type(flow).__name__}")
        if flow.event_shape != (target.dim,) or tuple(flow.base_event_shape) != (target.dim,):
            raise ShapeError(
                f"the flow must map R^{target.dim} to R^{target.dim} (the target {target.name!r}); "
                f"got base {tuple(flow.base_event_shape)} -> event {flow.event_shape}"
            )
        if flow.context_dim:
            raise ShapeError("NeuTra needs an unconditional flow (context_dim=0)")
        super().__init__(target.dim, target.log_Z, f"neutra:{target.name}")
        self.target = target
        self.flow = flow

    def reference_tensor(self) -> torch.Tensor | None:
        return self.target.reference_tensor()

    def _log_prob(self, z: torch.Tensor) -> torch.Tensor:
        x, ladj = self.flow.forward_and_ladj(z)
        return self.target.log_prob_unchecked(x) + ladj

    def push_forward(self, z: torch.Tensor) -> torch.Tensor:
        """``T(z)``: latent draws ``(..., dim)`` -> target space ``(..., dim)``."""
        with torch.no_grad():
            return self.flow.forward_and_ladj(z)[0]


def neutra(
    target: Target | Callable,
    flow: Flow,
    kernel: Kernel | None = None,
    num_chains: int = 4,
    num_samples: int = 1000,
    warmup: int = 1000,
    *,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    progress: bool | None = None,
    **sample_kwargs: Any,
) -> MCMCResult:
    """NeuTra-HMC (Hoffman et al. 2019): :func:`fokker.mcmc.sample` on :class:`NeuTraTarget` ``(target, flow)``.

    The chains start at draws of the flow's base (``init`` defaults to ``N(0, I)`` in latent
    space unless ``init`` is given); ``generator`` / ``seed`` drive the initial draws and the kernel,
    ``progress`` the bar, and every other keyword goes to :func:`~fokker.mcmc.sample`.

    Returns the :class:`~fokker.mcmc.MCMCResult` with ``samples`` mapped to the target space
    ``(chains, draws, dim)`` and ``log_prob`` the target's ``log gamma`` there (so ``summary()``,
    ``ess_bulk()`` and ``rhat()`` describe the target's coordinates); the latent chains are in
    ``kernel_diagnostics["latent_samples"]``.  For Pyro targets (``from_pyro``) ``constrained`` holds
    the named constrained draws.
    """
    pulled = NeuTraTarget(target, flow)
    ref = next(iter(flow.buffers()), None)
    if ref is None:
        ref = next(iter(flow.parameters()))
    gen = _random.make_generator(generator, seed, ref.device)
    if "init" not in sample_kwargs:
        with _random.rng_scope(gen, [ref.device]):
            sample_kwargs["init"] = flow.base().sample((num_chains,)).to(dtype=ref.dtype)
    res = sample(pulled, kernel, num_chains=num_chains, num_samples=num_samples, warmup=warmup, generator=gen,
                 progress=progress, **sample_kwargs)
    z = res.samples
    finite = torch.isfinite(z).all(-1, keepdim=True)
    x = pulled.push_forward(torch.where(finite, z, torch.zeros_like(z)))
    x = torch.where(finite, x, torch.full_like(x, float("nan")))
    inner = pulled.target
    with torch.no_grad():
        log_gamma = inner.log_prob_unchecked(x)
    constrained = inner.constrain(torch.nan_to_num(x)) if hasattr(inner, "constrain") else None
    diagnostics = dict(res.kernel_diagnostics or {})
    diagnostics["latent_samples"] = z
    return dataclasses.replace(
        res, samples=x, log_prob=log_gamma, constrained=constrained, kernel_diagnostics=diagnostics,
        param_names=getattr(inner, "param_names", None) if constrained is None else None,
    )
