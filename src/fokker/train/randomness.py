"""Where the random numbers of one :func:`fokker.train.fit` run come from.

* Neither ``generator`` nor ``seed``: the global torch RNG is used as it is (fit seeds
  nothing); the batch order is drawn from it once, at the start.
* ``generator`` (or ``seed``, which builds one): the batch order gets its own generator
  seeded from it, and the whole run -- model losses that draw noise with the global RNG
  (``torch.randn`` inside ``loss``) included -- runs inside
  :func:`fokker._random.rng_scope`, i.e. on a forked global RNG seeded from it.  The run is
  reproducible, the caller's global RNG state is left exactly as it was, and the forked
  state is checkpointed, so a resumed run draws the same numbers as an uninterrupted one.

Under data parallelism all ranks share one batch order (rank 0's) and each rank's losses
draw from its own stream.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from .._random import make_generator, rng_scope, spawn_seed
from .distributed import broadcast_int


class RunRandomness:
    """The generator behind one run: batch-order seed, the RNG scope, and its checkpointable state."""

    def __init__(
        self,
        generator: torch.Generator | None,
        seed: int | None,
        device: torch.device,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        gen = make_generator(generator, seed)
        self.scoped = gen is not None
        batch_seed = spawn_seed(gen)
        self.batch_seed = broadcast_int(batch_seed) if world > 1 else batch_seed
        if gen is not None and world > 1:
            # one noise stream per rank: identical streams would repeat the same draws on every rank
            gen = torch.Generator().manual_seed(spawn_seed(gen) + rank)
        self.generator = gen
        self.cuda_device = device if device.type == "cuda" else None

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """The block the run executes in (a forked, seeded global RNG when scoped)."""
        with rng_scope(self.generator, [self.cuda_device] if self.cuda_device is not None else []):
            yield

    def state_dict(self) -> dict[str, Any]:
        """The scoped global RNG state (empty when the run uses the caller's global RNG)."""
        if not self.scoped:
            return {}
        state: dict[str, Any] = {"cpu": torch.get_rng_state()}
        if self.cuda_device is not None:
            state["cuda"] = torch.cuda.get_rng_state(self.cuda_device)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the scoped RNG state; a run on the caller's global RNG leaves it alone."""
        if not self.scoped or "cpu" not in state:
            return
        torch.set_rng_state(state["cpu"])
        if self.cuda_device is not None and state.get("cuda") is not None:
            torch.cuda.set_rng_state(state["cuda"], self.cuda_device)
