"""Randomness by ``generator=``: the one convention of every stochastic fokker call.

Every public function or method that draws random numbers takes ``generator=``
(a ``torch.Generator``); some also take ``seed=`` as a convenience that builds
one (:func:`make_generator`).  With neither, the global torch RNG is used, as
torch itself does.  Library code never reseeds the global RNG: where a draw
happens inside code that takes no generator (a torch ``Distribution.sample``, a
Pyro model), :func:`rng_scope` runs it on a forked global state seeded *from*
the generator, so the result is reproducible and the caller's global state is
left exactly as it was.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch

from .errors import ParameterError

__all__ = ["make_generator", "randn", "randn_like", "rand", "rand_like", "randint", "rng_scope", "spawn_seed"]


def make_generator(
    generator: torch.Generator | None = None,
    seed: int | None = None,
    device: torch.device | str | None = None,
) -> torch.Generator | None:
    """The generator to use: ``generator``, else a new one seeded with ``seed``, else ``None`` (global RNG).

    Raises :class:`~fokker.errors.ParameterError` when both are given (they would disagree).
    """
    if generator is not None and seed is not None:
        raise ParameterError("pass either generator= or seed=, not both")
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator; got {type(generator).__name__}")
        return generator
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ParameterError(f"seed must be an integer; got {seed!r}")
    g = torch.Generator(device=torch.device(device) if device is not None else "cpu")
    g.manual_seed(seed)
    return g


def _draw(
    fn_name: str,
    shape: Sequence[int],
    generator: torch.Generator | None,
    dtype: torch.dtype | None,
    device: torch.device | str | None,
) -> torch.Tensor:
    fn = getattr(torch, fn_name)
    device = torch.device(device) if device is not None else torch.device("cpu")
    if generator is None:
        return fn(tuple(shape), dtype=dtype, device=device)
    if generator.device.type != device.type:
        # a CPU generator driving CUDA tensors (or the reverse): draw where the generator lives
        return fn(tuple(shape), generator=generator, dtype=dtype, device=generator.device).to(device)
    return fn(tuple(shape), generator=generator, dtype=dtype, device=device)


def randn(
    shape: Sequence[int],
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Standard normals of ``shape`` from ``generator`` (global RNG when ``None``)."""
    return _draw("randn", shape, generator, dtype, device)


def rand(
    shape: Sequence[int],
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Uniforms on ``[0, 1)`` of ``shape`` from ``generator``."""
    return _draw("rand", shape, generator, dtype, device)


def randn_like(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard normals with the shape, dtype and device of ``x``."""
    return randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)


def rand_like(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniforms on ``[0, 1)`` with the shape, dtype and device of ``x``."""
    return rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)


def randint(
    high: int,
    shape: Sequence[int],
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Integers uniform on ``{0, ..., high - 1}`` of ``shape``."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    if generator is not None and generator.device.type != device.type:
        return torch.randint(high, tuple(shape), generator=generator, device=generator.device).to(device)
    return torch.randint(high, tuple(shape), generator=generator, device=device)


def spawn_seed(generator: torch.Generator | None) -> int:
    """A 62-bit integer drawn from ``generator`` (from the global RNG when ``None``)."""
    return int(randint(2**62, (1,), generator=generator))


@contextlib.contextmanager
def rng_scope(
    generator: torch.Generator | None = None, devices: Sequence[torch.device] = (), *, seed: int | None = None
) -> Iterator[None]:
    """Run a block whose randomness comes from code that takes no generator.

    With neither ``generator`` nor ``seed`` the block uses the global RNG as usual.  Otherwise
    the global CPU (and the given CUDA devices') RNG state is forked, seeded from ``generator``
    (or with ``seed`` itself), and restored on exit: the draws are reproducible and the
    caller's global RNG state is untouched.
    """
    if generator is None and seed is None:
        yield
        return
    if generator is not None and seed is not None:
        raise ParameterError("pass either generator= or seed=, not both")
    value = spawn_seed(generator) if seed is None else int(seed)
    cuda = [d for d in (torch.device(d) for d in devices) if d.type == "cuda"]
    with torch.random.fork_rng(devices=cuda):
        torch.random.default_generator.manual_seed(value)
        for d in cuda:
            torch.cuda.default_generators[d.index if d.index is not None else torch.cuda.current_device()].manual_seed(value)
        yield
