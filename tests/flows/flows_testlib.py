"""Shared helpers for the flow tests: layer factories and autograd oracles."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from fokker import flows

CTX = 3  # context size used by the conditional layers


@torch.no_grad()
def perturb(module: nn.Module, scale: float = 0.3, seed: int = 1) -> nn.Module:
    """Add seeded noise to every parameter so no layer sits at its (identity) init.

    ActNorm layers are marked initialized (their data-dependent init has its own test),
    so a later inverse call does not overwrite the perturbed parameters.
    """
    for m in module.modules():
        if isinstance(m, flows.ActNorm):
            m.initialized.fill_(True)
            m._initialized = True
    g = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype).to(p.device))
    return module


# name -> (factory(d) -> layer, needs_context)
VECTOR_LAYERS: dict[str, tuple[Callable[[int], flows.Bijection], bool]] = {
    "additive_coupling": (lambda d: flows.AdditiveCoupling(flows.half_mask(d), hidden=(16,)), False),
    "affine_coupling": (lambda d: flows.AffineCoupling(flows.alternating_mask(d), hidden=(16,)), False),
    "spline_coupling": (lambda d: flows.SplineCoupling(flows.half_mask(d, flip=True), hidden=(16,), bins=4, bound=2.0), False),
    "maf": (lambda d: flows.MAF(d, hidden=(16,)), False),
    "iaf": (lambda d: flows.IAF(d, hidden=(16,), rank=torch.arange(d, 0, -1)), False),
    "spline_ar": (lambda d: flows.SplineAutoregressive(d, hidden=(16,), bins=4, bound=2.0), False),
    "spline_iar": (lambda d: flows.SplineAutoregressive(d, hidden=(16,), bins=4, bound=2.0, one_pass="forward"), False),
    "actnorm": (lambda d: flows.ActNorm(d), False),
    "linear_lu": (lambda d: flows.InvertibleLinear(d), False),
    "permute": (lambda d: flows.Permute.random(d, torch.Generator().manual_seed(d)), False),
    "reverse": (lambda d: flows.Reverse(d), False),
    "cond_affine_coupling": (lambda d: flows.AffineCoupling(flows.half_mask(d), hidden=(16,), context_dim=CTX), True),
    "cond_spline_coupling": (lambda d: flows.SplineCoupling(flows.half_mask(d), hidden=(16,), context_dim=CTX, bins=4, bound=2.0), True),
    "cond_maf": (lambda d: flows.MAF(d, hidden=(16,), context_dim=CTX), True),
    "cond_spline_ar": (lambda d: flows.SplineAutoregressive(d, hidden=(16,), context_dim=CTX, bins=4, bound=2.0), True),
}

IMAGE_SHAPE = (2, 4, 4)

IMAGE_LAYERS: dict[str, Callable[[], flows.Bijection]] = {
    "coupling_checkerboard": lambda: flows.AffineCoupling(flows.checkerboard_mask(IMAGE_SHAPE), hidden=(8,)),
    "coupling_channel": lambda: flows.SplineCoupling(flows.channel_mask(IMAGE_SHAPE), hidden=(8,), bins=4, bound=2.0),
    "conv1x1": lambda: flows.InvertibleConv1x1(IMAGE_SHAPE[0]),
    "actnorm_image": lambda: flows.ActNorm(IMAGE_SHAPE[0], event_dim=3),
    "multiscale": lambda: flows.glow(IMAGE_SHAPE, levels=2, steps=1, hidden=8)._transforms[0],
}


def make_vector_layer(name: str, d: int, dtype: torch.dtype, device: torch.device) -> tuple[flows.Bijection, torch.Tensor | None]:
    factory, conditional = VECTOR_LAYERS[name]
    layer = perturb(factory(d)).to(device=device, dtype=dtype)
    ctx = torch.randn(CTX, dtype=dtype, device=device) if conditional else None
    return layer, ctx


def jacobian(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Dense Jacobian of ``f`` at one event ``x`` (flattened to a square matrix)."""
    J = torch.autograd.functional.jacobian(f, x)
    return J.reshape(x.numel(), x.numel())


def slogdet_autograd(layer: flows.Bijection, z: torch.Tensor) -> torch.Tensor:
    """``log|det dT/dz|`` of a vector layer at each row of ``z`` from the autograd Jacobian."""
    return torch.stack([torch.linalg.slogdet(jacobian(lambda v: layer.call_and_ladj(v)[0], zi))[1] for zi in z])
