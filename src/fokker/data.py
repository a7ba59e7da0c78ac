"""Locating the external reference data in ``shared/validation``.

The data files are never copied into this repository.  They are found, in
order, at

1. the directory named by the environment variable ``FOKKER_DATA``
   (the ``validation`` folder itself: it holds ``targets/`` and ``posteriordb/``);
2. ``shared/validation`` in the current directory or any of its parents
   (the project's checkout sits beside ``shared/``);
3. the same search starting from this file's location.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import DataNotFoundError

ENV_VAR = "FOKKER_DATA"


def _candidates() -> list[Path]:
    out: list[Path] = []
    env = os.environ.get(ENV_VAR)
    if env:
        out.append(Path(env).expanduser())
    for start in (Path.cwd(), Path(__file__).resolve().parent):
        for parent in (start, *start.parents):
            out.append(parent / "shared" / "validation")
            out.append(parent.parent / "shared" / "validation")
    return out


def data_dir(required: bool = True) -> Path | None:
    """Return the ``shared/validation`` folder, or raise :class:`DataNotFoundError`."""
    for c in _candidates():
        if c.is_dir():
            return c
    if required:
        raise DataNotFoundError(
            f"reference data folder not found; set {ENV_VAR} to the shared/validation directory"
        )
    return None


def data_file(*parts: str, path: str | os.PathLike | None = None) -> Path:
    """Resolve a data file: an explicit ``path`` wins, else ``data_dir()/parts``.

    Raises :class:`DataNotFoundError` naming the file when it does not exist.
    """
    if path is not None:
        p = Path(path).expanduser()
    else:
        p = data_dir() / Path(*parts)  # type: ignore[operator]
    if not p.is_file():
        raise DataNotFoundError(f"data file not found: {p} (set {ENV_VAR} or pass path=)")
    return p
