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
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .._args import check_finite, check_last_dim, check_like, check_tensor
from ..errors import NoExactSamplesError

_Size = torch.Size | tuple[int, ...] | list[int]


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
            raise ValueError(f"dim must be a positive integer; got {dim!r}")
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

    def _sample(self, sample_shape: torch.Size) -> torch.Tensor:
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
        for b in self.buffers():
            if b.is_floating_point():
                return b
        for p in self.parameters():
            if p.is_floating_point():
                return p
        return None

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

    def sample(self, sample_shape: _Size = ()) -> torch.Tensor:
        """Exact samples of shape ``(*sample_shape, dim)`` (raises if none exist)."""
        return self._sample(torch.Size(sample_shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # nn.Module protocol
        return self.log_prob(x)

    def extra_repr(self) -> str:
        lz = "unknown" if self.log_Z is None else f"{self.log_Z:.6g}"
        return f"dim={self.dim}, log_Z={lz}"


class CallableTarget(Target):
    """Wrap a plain ``log_prob`` callable ``(..., dim) -> (...)`` as a :class:`Target`."""

    def __init__(self, log_prob_fn, dim: int, log_Z: float | None = None, name: str = "callable") -> None:
        super().__init__(dim, log_Z, name)
        if not callable(log_prob_fn):
            raise TypeError(f"log_prob_fn must be callable; got {type(log_prob_fn).__name__}")
        self._fn = log_prob_fn

    def _log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return self._fn(x)


def as_target(obj, dim: int | None = None) -> Target:
    """Return ``obj`` if it is a :class:`Target`, else wrap a callable (``dim`` required)."""
    if isinstance(obj, Target):
        return obj
    if callable(obj):
        if dim is None:
            raise ValueError("dim is required to wrap a plain log_prob callable as a Target")
        return CallableTarget(obj, dim)
    raise TypeError(f"expected a fokker Target or a log_prob callable; got {type(obj).__name__}")


LOG_2PI = math.log(2 * math.pi)
