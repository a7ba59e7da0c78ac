"""Saving and loading flows as plain data (loadable with ``torch.load(path, weights_only=True)``).

``save(flow, path)`` writes ``{"format", "builder", "kwargs", "dtype", "state_dict"}``: the
name of the builder that made the flow, its arguments (numbers, strings, tuples; an
activation class is stored by its ``torch.nn`` name) and the tensors of the state dict.
``load(path)`` calls the builder again and loads the state dict, so the restored flow has
the same samples (same ``generator``) and the same ``log_prob``.  No pickled code is
involved, which is why ``weights_only=True`` (torch's safe default) can read the file.

A hand-built :class:`~fokker.flows.flow.Flow` (or a builder given a custom module, e.g.
``ffjord(vector_field=...)``) has no such recipe: save ``flow.state_dict()`` with
``torch.save`` and rebuild the flow with the same code before ``flow.load_state_dict(torch.load(path))``.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from ..errors import ParameterError
from .builders import BUILDERS
from .flow import Flow

__all__ = ["save", "load"]

FORMAT = "fokker.flows/1"


def _plain(kwargs: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in kwargs.items():
        if isinstance(value, type) and issubclass(value, nn.Module):
            if getattr(nn, value.__name__, None) is not value:
                raise ParameterError(
                    f"cannot save {key}={value.__name__}: only torch.nn activation classes are stored by name; "
                    "save flow.state_dict() and rebuild the flow yourself"
                )
            value = {"torch.nn": value.__name__}
        elif isinstance(value, nn.Module):
            raise ParameterError(
                f"cannot save {key}={type(value).__name__}: a module passed to the builder is code, not data; "
                "save flow.state_dict() and rebuild the flow yourself"
            )
        out[key] = value
    return out


def _restore(kwargs: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in kwargs.items():
        if isinstance(value, dict) and set(value) == {"torch.nn"}:
            cls = getattr(nn, value["torch.nn"], None)
            if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
                raise ParameterError(f"saved {key} names no torch.nn module: {value['torch.nn']!r}")
            value = cls
        out[key] = value
    return out


def save(flow: Flow, path: str | os.PathLike | Any) -> None:
    """Write ``flow`` to ``path`` (a path or a binary file object) as plain data.

    Raises :class:`~fokker.errors.ParameterError` for a flow that no builder made (save its
    ``state_dict`` instead; see the module docstring).
    """
    if not isinstance(flow, Flow):
        raise TypeError(f"flow must be a fokker.flows.Flow; got {type(flow).__name__}")
    config = flow.config
    if not config or config.get("builder") not in BUILDERS:
        raise ParameterError(
            "this Flow was not made by a fokker builder, so there is no recipe to rebuild it: "
            "torch.save(flow.state_dict(), path), rebuild the flow with the same code and call "
            "flow.load_state_dict(torch.load(path, weights_only=True))"
        )
    ref = flow._reference()
    dtype = str(ref.dtype).removeprefix("torch.") if ref is not None else "float32"
    data = {
        "format": FORMAT,
        "builder": config["builder"],
        "kwargs": _plain(config["kwargs"]),
        "dtype": dtype,
        "state_dict": flow.state_dict(),
    }
    torch.save(data, path)


def load(path: str | os.PathLike | Any, map_location: str | torch.device | None = None) -> Flow:
    """Rebuild a flow written by :func:`save` (reads with ``torch.load(..., weights_only=True)``)."""
    data = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ParameterError(f"{path!r} is not a flow written by fokker.flows.save (format {FORMAT!r})")
    builder = BUILDERS.get(data["builder"])
    if builder is None:
        raise ParameterError(f"unknown builder {data['builder']!r} in {path!r}; known: {sorted(BUILDERS)}")
    dtype = getattr(torch, data["dtype"], None)
    if not isinstance(dtype, torch.dtype):
        raise ParameterError(f"unknown dtype {data['dtype']!r} in {path!r}")
    flow = builder(**_restore(data["kwargs"])).to(dtype)
    state = data["state_dict"]
    device = next(iter(state.values())).device if state else None
    if device is not None:
        flow = flow.to(device)
    flow.load_state_dict(state)
    return flow
