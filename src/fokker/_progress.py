"""The progress bar every long-running fokker call shows (tqdm), with one default.

``progress=None`` (the default everywhere) shows a bar when standard error is a
terminal and stays silent in logs, notebooks run as scripts and CI; ``True``
forces it on and ``False`` off.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm

__all__ = ["progress_bar"]


def progress_bar(
    iterable: Iterable[Any] | None = None,
    *,
    total: int | None = None,
    progress: bool | None = None,
    desc: str | None = None,
    initial: int = 0,
) -> tqdm:
    """A tqdm bar that is on when ``progress`` is True, off when False, and on a terminal only when None."""
    if progress is not None and not isinstance(progress, bool):
        raise TypeError(f"progress must be True, False or None; got {progress!r}")
    disable = None if progress is None else not progress
    return tqdm(iterable, total=total, desc=desc, initial=initial, disable=disable, leave=False)
