"""Atomic checkpoints: write to a temporary file in the same folder, then ``os.replace``.

A crash or a diverging run can therefore never leave a half-written or
non-finite checkpoint behind: the file on disk is always the last good state.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch


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
    """Load a checkpoint written by :func:`save_atomic`."""
    return torch.load(Path(path), map_location=map_location, weights_only=False)
