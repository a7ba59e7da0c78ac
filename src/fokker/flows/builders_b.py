"""Builders for the planar-family, residual and continuous flows (returning a :class:`Flow`).

* :func:`planar_flow` — ``transforms`` planar (Rezende & Mohamed 2015), radial, or
  Sylvester (van den Berg et al. 2018) layers on a standard normal base;
* :func:`residual_flow` — i-ResNet / Residual Flow blocks (Behrmann et al. 2019;
  Chen et al. 2019), each followed by an ActNorm (as in Chen et al.);
* :func:`ffjord` — one (or more) continuous normalizing flow layers (Grathwohl et al. 2019).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from .._args import check_int
from ..errors import ParameterError
from .base import Bijection
from .continuous import ContinuousFlow
from .flow import Flow
from .linear import ActNorm
from .planar import Planar
from .radial import Radial
from .residual import ResidualFlow
from .sylvester import Sylvester

__all__ = ["planar_flow", "residual_flow", "ffjord"]

_KINDS = ("planar", "radial", "sylvester")


def planar_flow(dim: int, transforms: int = 8, kind: str = "planar", m: int | None = None) -> Flow:
    """``transforms`` layers of one kind (``"planar"``, ``"radial"`` or ``"sylvester"``, ``m`` hidden units).

    Example:
        >>> flow = planar_flow(2, 4)
        >>> flow.log_prob(flow.sample((3,))).shape
        torch.Size([3])
    """
    check_int(dim, "dim")
    check_int(transforms, "transforms")
    if kind not in _KINDS:
        raise ParameterError(f"kind must be one of {_KINDS}; got {kind!r}")
    layers: list[Bijection] = []
    for _ in range(transforms):
        if kind == "planar":
            layers.append(Planar(dim))
        elif kind == "radial":
            layers.append(Radial(dim))
        else:
            layers.append(Sylvester(dim, m))
    return Flow(layers, dim)


def residual_flow(
    dim: int,
    transforms: int = 4,
    hidden: Sequence[int] = (64, 64),
    coeff: float = 0.9,
    log_det: str = "roulette",
    actnorm: bool = True,
    **block_kwargs: object,
) -> Flow:
    """Residual flow: ``transforms`` x (:class:`ResidualFlow` block [+ :class:`ActNorm`]).

    ``log_prob`` is exact with ``log_det="exact"`` and an unbiased (``"roulette"``) or
    truncated (``"series"``) estimate otherwise; extra keyword arguments go to
    :class:`ResidualFlow` (``n_exact_terms``, ``geom_p``, ``n_terms``, ``atol``, ...).
    """
    check_int(dim, "dim")
    check_int(transforms, "transforms")
    layers: list[Bijection] = []
    for _ in range(transforms):
        layers.append(ResidualFlow(dim, hidden=hidden, coeff=coeff, log_det=log_det, **block_kwargs))  # type: ignore[arg-type]
        if actnorm:
            layers.append(ActNorm(dim))
    return Flow(layers, dim)


def ffjord(
    dim: int,
    transforms: int = 1,
    hidden: Sequence[int] = (64, 64),
    T: float = 1.0,
    trace: str = "auto",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    method: str = "dopri5",
    adjoint: bool = False,
    vector_field: nn.Module | None = None,
) -> Flow:
    """FFJORD: ``transforms`` :class:`ContinuousFlow` layers on a standard normal base.

    ``vector_field`` (only with ``transforms=1``) replaces the default time-conditioned MLP.
    """
    check_int(dim, "dim")
    check_int(transforms, "transforms")
    if vector_field is not None and transforms != 1:
        raise ParameterError(f"vector_field can only be given with transforms=1; got transforms={transforms}")
    layers: list[Bijection] = [
        ContinuousFlow(
            dim, vector_field=vector_field, hidden=hidden, T=T, trace=trace, rtol=rtol, atol=atol,
            method=method, adjoint=adjoint,
        )
        for _ in range(transforms)
    ]
    return Flow(layers, dim)
