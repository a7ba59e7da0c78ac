"""Minibatch sources for :func:`fokker.train.fit`, and the up-front checks of the data.

``fit`` accepts a tensor, a tuple of tensors (e.g. ``(x, context)``), a
``torch.utils.data.Dataset``, a callable ``data(n) -> batch`` or ``None``.
All of them are turned into a :class:`BatchSource` whose ``next()`` returns the
batch of this rank and whose state (its own generator) is checkpointed, so a
resumed run sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import Dataset, default_collate

from .._args import check_finite, check_int
from ..errors import DeviceDtypeError, ParameterError, ShapeError

DataLike = torch.Tensor | tuple | Dataset | Callable[[int], Any] | None


def data_kind(data: Any, name: str = "data") -> str:
    """``"none"``, ``"tensor"``, ``"tuple"`` (of tensors sharing their first dimension), ``"dataset"`` or ``"callable"``."""
    if data is None:
        return "none"
    if isinstance(data, torch.Tensor):
        return "tensor"
    if isinstance(data, (tuple, list)) and data and all(isinstance(d, torch.Tensor) for d in data):
        return "tuple"
    if isinstance(data, Dataset) or (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
        return "dataset"
    if callable(data):
        return "callable"
    raise TypeError(
        f"{name} must be a tensor, a tuple of tensors, a Dataset, a callable {name}(n) -> batch, or None; "
        f"got {type(data).__name__}"
    )


def check_data(data: Any, name: str, dtype: torch.dtype | None) -> str:
    """Reject data ``fit`` cannot train on, before the first step; returns :func:`data_kind`.

    Tensors (and each tensor of a tuple, named ``name[i]``) need a leading sample dimension of
    length >= 1 shared across the tuple; floating ones need the model's parameter ``dtype``
    (no silent cast) and finite values (a host sync, so only while argument checks are on).
    Devices may differ: every batch is moved to the model's device.
    """
    kind = data_kind(data, name)
    if kind == "dataset" and len(data) == 0:
        raise ParameterError(f"{name} is an empty Dataset; fit needs at least one sample")
    if kind not in ("tensor", "tuple"):
        return kind
    named = [(name, data)] if kind == "tensor" else [(f"{name}[{i}]", d) for i, d in enumerate(data)]
    for label, d in named:
        if d.dim() == 0:
            raise ShapeError(f"{label} must have a leading sample dimension (N, ...); got a 0-d tensor")
        if len(d) == 0:
            raise ShapeError(f"{label} is empty (shape {tuple(d.shape)}); fit needs at least one sample")
    lengths = {len(d) for _, d in named}
    if len(lengths) != 1:
        raise ShapeError(f"tensors in {name} must share their first dimension; got lengths {sorted(lengths)}")
    for label, d in named:
        if not d.is_floating_point():
            continue
        if dtype is not None and d.dtype != dtype:
            raise DeviceDtypeError(
                f"{label} has dtype {d.dtype} but the model's parameters have dtype {dtype}; "
                f"convert the data with {label}.to({dtype}) or the model with model.to({d.dtype})"
            )
        check_finite(d, label)
    return kind


def _length(data: Any, kind: str) -> int | None:
    if kind in ("tensor", "dataset"):
        return len(data)
    if kind == "tuple":
        return len(data[0])
    return None


class BatchSource:
    """Shuffled minibatches without replacement within an epoch, in an order drawn from ``seed``.

    Under data parallelism every rank draws the same global batch of indices and keeps
    ``idx[rank::world]``.
    """

    def __init__(self, data: Any, batch_size: int, seed: int, rank: int = 0, world: int = 1) -> None:
        check_int(batch_size, "batch_size")
        if batch_size % world:
            raise ParameterError(f"batch_size ({batch_size}) must be divisible by the world size ({world})")
        self.data, self.batch_size, self.rank, self.world = data, batch_size, rank, world
        self.gen = torch.Generator().manual_seed(seed)
        self.kind = data_kind(data)
        self.n = _length(data, self.kind)
        if self.n is not None and self.n < 1:
            raise ParameterError("data is empty; fit needs at least one sample")
        self._perm: torch.Tensor | None = None
        self._pos = 0

    def _indices(self) -> torch.Tensor:
        """The next global batch of indices (same on every rank), reshuffling at epoch ends."""
        assert self.n is not None
        out = []
        need = self.batch_size
        while need > 0:
            if self._perm is None or self._pos >= self.n:
                self._perm = torch.randperm(self.n, generator=self.gen)
                self._pos = 0
            take = self._perm[self._pos : self._pos + need]
            self._pos += len(take)
            need -= len(take)
            out.append(take)
        idx = torch.cat(out)
        return idx[self.rank :: self.world]

    def next(self) -> Any:
        local = self.batch_size // self.world
        if self.kind == "none":
            return local
        if self.kind == "callable":
            return self.data(local)
        return take(self.data, self.kind, self._indices())

    def state_dict(self) -> dict[str, Any]:
        return {"gen": self.gen.get_state(), "perm": self._perm, "pos": self._pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.gen.set_state(state["gen"])
        self._perm, self._pos = state["perm"], state["pos"]


def take(data: Any, kind: str, idx: torch.Tensor) -> Any:
    """The rows ``idx`` of tensor / tuple / Dataset data, as a batch."""
    if kind == "tensor":
        return data[idx.to(data.device)]
    if kind == "tuple":
        return tuple(d[idx.to(d.device)] for d in data)
    return default_collate([data[int(i)] for i in idx])


def chunks(data: Any, kind: str, size: int) -> Iterator[tuple[Any, int]]:
    """All of tensor / tuple / Dataset ``data`` in order, as ``(batch, rows)`` chunks of ``size`` rows."""
    n = _length(data, kind)
    assert n is not None
    for start in range(0, n, size):
        idx = torch.arange(start, min(start + size, n))
        yield take(data, kind, idx), len(idx)


def to_device(batch: Any, device: torch.device) -> Any:
    """Move a batch (tensor, tuple/list/dict of tensors, or an int) to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch
