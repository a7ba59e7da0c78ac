"""Densities to sample from: the :class:`Target` protocol and benchmark targets."""

from __future__ import annotations

from collections.abc import Callable

from .base import CallableTarget, Target, as_target

__all__ = ["Target", "CallableTarget", "as_target", "catalogue"]


def catalogue() -> dict[str, Callable[[], Target]]:
    """Named factories of the benchmark targets (used by ``fokker targets``)."""
    return {}
