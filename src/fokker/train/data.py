"""Minibatch sources for :func:`fokker.train.fit`.

``fit`` accepts a tensor, a tuple of tensors (e.g. ``(x, context)``), a
``torch.utils.data.Dataset``, a callable ``data(n) -> batch`` or ``None``.
All of them are turned into a :class:`BatchSource` whose ``next()`` returns the
batch of this rank and whose state (a seeded generator) is checkpointed, so a
resumed run sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import Dataset, default_collate

from .._args import check_int


class BatchSource:
    """Shuffled minibatches without replacement within an epoch, reproducible from ``seed``."""

    def __init__(self, data: Any, batch_size: int, seed: int, rank: int = 0, world: int = 1) -> None:
        check_int(batch_size, "batch_size")
        if batch_size % world:
            raise ValueError(f"batch_size ({batch_size}) must be divisible by the world size ({world})")
        self.data, self.batch_size, self.rank, self.world = data, batch_size, rank, world
        self.gen = torch.Generator().manual_seed(seed)
        self.kind = self._kind(data)
        self.n = self._length()
        if self.n is not None and self.n < 1:
            raise ValueError("data is empty")
        self._perm: torch.Tensor | None = None
        self._pos = 0

    @staticmethod
    def _kind(data: Any) -> str:
        if data is None:
            return "none"
        if isinstance(data, torch.Tensor):
            return "tensor"
        if isinstance(data, (tuple, list)) and data and all(isinstance(d, torch.Tensor) for d in data):
            n = {len(d) for d in data}
            if len(n) != 1:
                raise ValueError(f"tensors in data must share their first dimension; got lengths {sorted(n)}")
            return "tuple"
        if isinstance(data, Dataset) or (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
            return "dataset"
        if callable(data):
            return "callable"
        raise TypeError(
            "data must be a tensor, a tuple of tensors, a Dataset, a callable data(n) -> batch, or None; "
            f"got {type(data).__name__}"
        )

    def _length(self) -> int | None:
        if self.kind == "tensor":
            return len(self.data)
        if self.kind == "tuple":
            return len(self.data[0])
        if self.kind == "dataset":
            return len(self.data)
        return None

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
        idx = self._indices()
        if self.kind == "tensor":
            return self.data[idx.to(self.data.device)]
        if self.kind == "tuple":
            return tuple(d[idx.to(d.device)] for d in self.data)
        return default_collate([self.data[int(i)] for i in idx])

    def state_dict(self) -> dict[str, Any]:
        return {"gen": self.gen.get_state(), "perm": self._perm, "pos": self._pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.gen.set_state(state["gen"])
        self._perm, self._pos = state["perm"], state["pos"]


def to_device(batch: Any, device: torch.device) -> Any:
    """Move a batch (tensor, tuple/list/dict of tensors, or an int) to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


DataLike = torch.Tensor | tuple | Dataset | Callable[[int], Any] | None
