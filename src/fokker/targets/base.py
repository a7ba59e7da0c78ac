"""The :class:`Target` protocol: an (unnormalized) density to sample from.

A target is an ``nn.Module`` so that ``target.to(device, dtype)`` moves its
parameters (buffers) exactly like any torch module.  Subclasses implement the
private hooks ``_log_prob`` (and optionally ``_score`` and ``_sample``); the
public methods add input checks:

* shape: ``x`` must be ``(..., dim)`` (always checked, free);
* dtype/device: ``x`` must match the target's buffers, if it has any (free);
* values: ``x`` must be finite (only while ``fokker.argument_checks_enabled()``; it syncs).

Inner loops of samplers call :meth:`Target.log_prob_unchecked` /
:meth:`Target.score_unchecked`, which skip every check.

Exact samplers implement ``_sample(sample_shape, generator)`` and draw every random number
from ``generator`` (``fokker._random``; the global RNG when ``None``).  A hook written as
``_sample(sample_shape)`` that draws from the global RNG still works: :meth:`Target.sample`
runs it under :func:`fokker._random.rng_scope`, so it is reproducible from ``generator``
too and leaves the caller's global RNG alone.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable

import torch
from torch import nn

from .._args import reference_tensor as _reference_tensor, argument_checks_enabled, check_finite, check_last_dim, check_like, check_tensor
from .._random import rng_scope
from ..errors import DeviceDtypeError, NoExactSamplesError, NonFiniteError, ParameterError, ShapeError

_Size = torch.Size | tuple[int, ...] | list[int] | int


def as_size(sample_shape: _Size) -> torch.Size:
    """``sample_shape`` (an int or a sequence of non-negative ints) as a ``torch.Size``."""
    if isinstance(sample_shape, bool):
        raise ParameterError(f"sample_shape must be an int or a tuple of ints; got {sample_shape!r}")
    if isinstance(sample_shape, int):
        sample_shape = (sample_shape,)
    try:
        size = torch.Size(sample_shape)
    except TypeError:
        raise ParameterError(f"sample_shape must be an int or a tuple of ints; got {sample_shape!r}") from None
    if any(s < 0 for s in size):
        raise ParameterError(f"sample_shape must hold non-negative sizes; got {tuple(size)}")
    return size


def categorical(weights: torch.Tensor, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``num_samples`` indices drawn with replacement with probabilities ``weights`` ``(K,)``, from ``generator``.

    Drawn where the generator lives (a CPU generator for CUDA weights works) and returned on
    the device of ``weights``.
    """
    if num_samples == 0:
        return torch.zeros(0, dtype=torch.long, device=weights.device)
    w = weights if generator is None else weights.to(generator.device)
    return torch.multinomial(w, num_samples, replacement=True, generator=generator).to(weights.device)


@functools.cache
def _hook_takes_generator(cls: type) -> bool:
    return "generator" in inspect.signature(cls._sample).parameters


class Target(nn.Module):
    """An unnormalized density ``gamma(x)`` on ``R^dim`` with ``pi = gamma / Z``.

    Attributes:
        dim: event dimension ``d``.
        name: short human-readable name.
        log_Z: ``log Z = log int gamma(x) dx`` as a float, or ``None`` when unknown.
            For a normalized target ``log_Z == 0``.
    """

    name: str = "target"

    def __init__(self, dim: int, log_Z: float | None = None, name: str | None = None) -> None:
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ParameterError(f"dim must be a positive integer; got {dim!r}")
        self.dim = dim
        self._log_Z = log_Z
        if name is not None:
            self.name = name

    # ----------------------------------------------------------------- hooks
    def _log_prob(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _score(self, x: torch.Tensor) -> torch.Tensor:
        """Default score: autograd of ``_log_prob`` (keeps the graph for double backward)."""
        with torch.enable_grad():
            xg = x if x.requires_grad else x.detach().requires_grad_(True)
            lp = self._log_prob(xg)
            (g,) = torch.autograd.grad(lp.sum(), xg, create_graph=x.requires_grad)
        return g

    def _sample(self, sample_shape: torch.Size, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NoExactSamplesError(
            f"{type(self).__name__} has no exact sampler; use fokker.mcmc or fokker.samplers"
        )

    # ------------------------------------------------------------ properties
    @property
    def log_Z(self) -> float | None:
        return self._log_Z

    @property
    def has_exact_samples(self) -> bool:
        return type(self)._sample is not Target._sample

    @property
    def has_analytic_score(self) -> bool:
        """Whether the score is a closed form (``_score`` overridden) rather than one autograd pass."""
        return type(self)._score is not Target._score

    def reference_tensor(self) -> torch.Tensor | None:
        """A floating tensor the target holds (buffer or parameter), whose dtype and device its inputs
        must share; ``None`` for a target that holds no tensors (it then follows its input)."""
        return _reference_tensor(self)

    @property
    def dtype(self) -> torch.dtype:
        ref = self.reference_tensor()
        return ref.dtype if ref is not None else torch.get_default_dtype()

    @property
    def device(self) -> torch.device:
        ref = self.reference_tensor()
        return ref.device if ref is not None else torch.device("cpu")

    # ---------------------------------------------------------------- public
    def check_input(self, x: torch.Tensor, name: str = "x") -> torch.Tensor:
        """Validate ``x`` as a batch of points ``(..., dim)`` for this target."""
        check_tensor(x, name)
        check_last_dim(x, self.dim, name)
        check_like(x, self.reference_tensor(), name, owner=f"{type(self).__name__}")
        check_finite(x, name)
        return x

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log gamma(x)`` (unnormalized unless ``log_Z == 0``); ``(..., dim) -> (...)``."""
        return self._log_prob(self.check_input(x))

    def log_prob_unchecked(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`log_prob` without input checks (for inner sampling loops)."""
        return self._log_prob(x)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """``grad_x log gamma(x)``; ``(..., dim) -> (..., dim)``."""
        return self._score(self.check_input(x))

    def score_unchecked(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`score` without input checks (for inner sampling loops)."""
        return self._score(x)

    def log_prob_and_score(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log gamma(x), grad log gamma(x))``, unchecked and detached (no graph).

        One autograd pass, or the analytic ``_score`` when the subclass overrides it.
        """
        if self.has_analytic_score:
            with torch.no_grad():
                return self._log_prob(x), self._score(x)
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            lp = self._log_prob(xg)
            (g,) = torch.autograd.grad(lp.sum(), xg)
        return lp.detach(), g

    def sample(self, sample_shape: _Size = (), *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Exact samples of shape ``(*sample_shape, dim)`` in the target's dtype and device.

        Every random number comes from ``generator`` (the global RNG when ``None``).
        Raises :class:`~fokker.errors.NoExactSamplesError` for targets without an exact sampler.
        """
        size = as_size(sample_shape)
        if _hook_takes_generator(type(self)):
            return self._sample(size, generator)
        with rng_scope(generator, [self.device]):
            return self._sample(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # nn.Module protocol
        return self.log_prob(x)

    def extra_repr(self) -> str:
        lz = "unknown" if self.log_Z is None else f"{self.log_Z:.6g}"
        return f"dim={self.dim}, log_Z={lz}"


class CallableTarget(Target):
    """Wrap a plain ``log_prob`` callable ``(..., dim) -> (...)`` as a :class:`Target`.

    The callable holds no tensors the wrapper could see, so the target follows the dtype and
    device of its input.  Its output is checked on every call (free: shapes and dtypes only):
    a tensor of shape ``x.shape[:-1]`` in the dtype and on the device of ``x``, else
    :class:`~fokker.errors.ShapeError` / :class:`~fokker.errors.DeviceDtypeError` /
    ``TypeError`` naming what came back.  A NaN output (``-inf`` is fine: outside the
    support) raises :class:`~fokker.errors.NonFiniteError` from the checked :meth:`log_prob`
    while argument checks are on (a host sync), and passes through the unchecked methods.
    """

    def __init__(
        self, log_prob_fn: Callable[[torch.Tensor], torch.Tensor], dim: int, log_Z: float | None = None,
        name: str = "callable",
    ) -> None:
        super().__init__(dim, log_Z, name)
        if not callable(log_prob_fn):
            raise TypeError(f"log_prob_fn must be callable; got {type(log_prob_fn).__name__}")
        self._fn = log_prob_fn

    def _describe(self) -> str:
        return f"log_prob_fn {getattr(self._fn, '__name__', type(self._fn).__name__)!s}"

    def _log_prob(self, x: torch.Tensor) -> torch.Tensor:
        out = self._fn(x)
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"{self._describe()} must return a tensor of shape {tuple(x.shape[:-1])}; "
                            f"got {type(out).__name__}")
        if out.shape != x.shape[:-1]:
            raise ShapeError(
                f"{self._describe()} returned shape {tuple(out.shape)} for input of shape {tuple(x.shape)}; "
                f"expected x.shape[:-1] = {tuple(x.shape[:-1])} (one log density per point: reduce over the last dim)"
            )
        if not out.is_floating_point() or out.dtype != x.dtype or out.device != x.device:
            raise DeviceDtypeError(
                f"{self._describe()} returned dtype {out.dtype} on {out.device} for input of dtype {x.dtype} "
                f"on {x.device}; it must return the input's floating dtype and device"
            )
        return out

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        out = super().log_prob(x)
        if argument_checks_enabled() and bool(torch.isnan(out).any()):
            raise NonFiniteError(
                f"{self._describe()} returned NaN at {int(torch.isnan(out).sum())} of {out.numel()} point(s)"
            )
        return out


def as_target(obj, dim: int | None = None) -> Target:
    """Return ``obj`` if it is a :class:`Target`, else wrap a callable (``dim`` required)."""
    if isinstance(obj, Target):
        return obj
    if callable(obj):
        if dim is None:
            raise ParameterError("dim is required to wrap a plain log_prob callable as a Target")
        return CallableTarget(obj, dim)
    raise TypeError(f"expected a fokker Target or a log_prob callable; got {type(obj).__name__}")


LOG_2PI = math.log(2 * math.pi)
