"""Checkpoints of :func:`fokker.train.fit`: atomic writes and the file format.

Writes go to a temporary file in the same folder, then ``os.replace``: a crash or a
diverging run can never leave a half-written or non-finite checkpoint behind; the file on
disk is always the last good state.

A checkpoint written by ``fit`` is a ``torch.save``-d dict (read it with :func:`load`):

========================  ==============================================================
``"format"``              ``1``
``"step"``                optimizer steps done
``"model"``               ``model.state_dict()``
``"optimizer"``           ``optimizer.state_dict()``
``"scheduler"``, ``"ema"``  their ``state_dict()`` or ``None``
``"data"``                state of the batch order (generator state, permutation, position)
``"rng"``                 the run's RNG state (``{}`` when it used the caller's global RNG)
``"losses"``              loss per step so far (NaN for skipped steps)
``"bad_steps"``           steps skipped by the NaN guard so far
``"val_losses"``          ``[(step, validation loss), ...]``
``"early_stopping"``      best validation loss, its step and weights, evaluations since
========================  ==============================================================
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..errors import ParameterError

FORMAT = 1


def save_atomic(obj: dict[str, Any], path: str | os.PathLike) -> None:
    """``torch.save(obj, path)`` atomically (same-directory temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_atomic` (e.g. by ``fit``; format in the module docstring)."""
    return torch.load(Path(path), map_location=map_location, weights_only=False)


class Checkpointer:
    """When and where ``fit`` writes checkpoints: every ``every`` steps and at the end, on rank 0 only.

    With ``path=None`` nothing is written, but :meth:`due` still marks the steps at which
    the NaN guard refreshes its last good state.
    """

    def __init__(self, path: str | os.PathLike | None, every: int, rank: int = 0) -> None:
        self.path = Path(path) if path is not None else None
        self.every = every
        self.rank = rank
        self.saved_step: int | None = None

    def due(self, step: int, last: int) -> bool:
        """Whether step ``step`` of a run of ``last`` steps is a checkpoint step."""
        return step % self.every == 0 or step == last

    def load(self, map_location: Any) -> dict[str, Any] | None:
        """The checkpoint on disk, or ``None`` when there is none."""
        if self.path is None or not self.path.is_file():
            return None
        state = load(self.path, map_location=map_location)
        if state.get("format") != FORMAT:
            raise ParameterError(
                f"checkpoint {self.path} is not a checkpoint of this version of fokker.train.fit "
                f"(format {state.get('format')!r}, expected {FORMAT}); pass resume=False to start over"
            )
        self.saved_step = int(state["step"])
        return state

    def save(self, step: int, state: dict[str, Any]) -> None:
        """Write ``state`` (taken at ``step``) atomically."""
        if self.path is not None and self.rank == 0:
            save_atomic({"format": FORMAT, "step": step, **state}, self.path)
        self.saved_step = step
