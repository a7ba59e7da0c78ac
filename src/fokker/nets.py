"""Plain neural networks shared by the packages: the one multilayer perceptron of fokker.

:class:`MLP` is a stack ``Linear -> activation -> ... -> Linear``; flows use it as the
conditioner of coupling layers (:mod:`fokker.flows.coupling`), as the time-conditioned
vector field of continuous flows and as the network of the SurVAE Gaussian
conditionals.  :func:`check_hidden` validates a tuple of hidden sizes the same way
for every builder and layer that takes one (:func:`as_event_shape` likewise for the shape of
one sample).  :class:`SpectralNormLinear` is the one
spectrally normalised linear map (power iteration of Miyato et al. 2018), shared by the
invertible residual blocks of :mod:`fokker.flows.residual` (a bound ``||W|| <= c < 1``) and the
Lipschitz discriminators of :mod:`fokker.gan` (``||W|| = 1``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import _random
from ._args import check_int, check_positive
from .errors import ParameterError

__all__ = ["MLP", "SpectralNormLinear", "as_event_shape", "check_hidden", "make_activation"]


def check_hidden(hidden: object, name: str = "hidden", allow_empty: bool = True) -> tuple[int, ...]:
    """Require a sequence of positive integer layer sizes; returns it as a tuple.

    Raises :class:`~fokker.errors.ParameterError` naming ``name`` for anything else
    (an int instead of a sequence, zero or negative sizes, floats, bools).
    """
    if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence):
        raise ParameterError(f"{name} must be a sequence of positive integers, e.g. (64, 64); got {hidden!r}")
    sizes = tuple(hidden)
    if not sizes and not allow_empty:
        raise ParameterError(f"{name} must hold at least one layer size; got {hidden!r}")
    for h in sizes:
        if isinstance(h, bool) or not isinstance(h, int) or h < 1:
            raise ParameterError(f"{name} must be a sequence of positive integers, e.g. (64, 64); got {hidden!r}")
    return sizes


def as_event_shape(shape: int | Sequence[int], name: str = "event_shape") -> tuple[int, ...]:
    """``shape`` as a tuple of positive ints (an int ``d`` means ``(d,)``)."""
    dims = (shape,) if isinstance(shape, int) and not isinstance(shape, bool) else shape
    try:
        out = tuple(dims)  # type: ignore[arg-type]
    except TypeError:
        out = ()
    if not out or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in out):
        raise ParameterError(f"{name} must be a positive integer or a tuple of them; got {shape!r}")
    return out


def make_activation(activation: type[nn.Module]) -> nn.Module:
    """Instantiate an activation; ReLU in place (safe after a linear layer, saves a pass)."""
    if not (isinstance(activation, type) and issubclass(activation, nn.Module)):
        raise ParameterError(f"activation must be an nn.Module class such as nn.ReLU; got {activation!r}")
    return nn.ReLU(inplace=True) if activation is nn.ReLU else activation()


class MLP(nn.Sequential):
    """Multilayer perceptron ``in_features -> hidden[0] -> ... -> hidden[-1] -> out_features``
    (Rumelhart, Hinton & Williams 1986).

    ``h_0 = x``, ``h_k = a(W_k h_{k-1} + b_k)`` for each hidden size, output
    ``W_out h_K + b_out`` (no activation on the output).  Shapes ``(..., in_features) ->
    (..., out_features)``.  Default initialisation is torch's ``nn.Linear`` one;
    ``zero_output=True`` zeroes the last layer so the network starts at the constant 0.

    Args:
        in_features, out_features: input and output sizes (positive integers).
        hidden: hidden layer sizes (a sequence of positive integers; empty = affine map).
        activation: activation module class (default ``nn.ReLU``; ``nn.Softplus`` gives a
            smooth network with second derivatives, as continuous flows need).
        zero_output: initialise the last layer at zero.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: Sequence[int] = (64, 64),
        activation: type[nn.Module] = nn.ReLU,
        zero_output: bool = False,
    ) -> None:
        check_int(in_features, "in_features")
        check_int(out_features, "out_features")
        sizes = [in_features, *check_hidden(hidden)]
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), make_activation(activation)]
        last = nn.Linear(sizes[-1], out_features)
        if zero_output:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        layers.append(last)
        super().__init__(*layers)
        self.in_features, self.out_features = in_features, out_features


_SPECTRAL_MODES = ("bound", "exact")


class SpectralNormLinear(nn.Module):
    """Linear map with a spectrally normalised weight, ``sigma_hat(W)`` by power iteration.

    Miyato, Kataoka, Koyama & Yoshida (2018), "Spectral normalization for generative adversarial
    networks", ICLR, algorithm 1 (seed 002 eqs. 20-22):

    .. math::  v \\leftarrow W^\\top u / \\|W^\\top u\\|, \\quad u \\leftarrow W v / \\|W v\\|, \\quad
               \\hat\\sigma(W) = u^\\top W v \\le \\|W\\|_2,

    ``u, v`` treated as constants in the gradient (as in the paper).  Two ways to use the estimate:

    * ``mode="exact"`` (Miyato et al.): weight ``c W / sigma_hat``, spectral norm ``c`` once the
      iteration has converged (a discriminator with ``c = 1`` is 1-Lipschitz per layer);
    * ``mode="bound"`` (Behrmann et al. 2019, i-ResNet, sec. 3): weight ``W / max(1, sigma_hat / c)``,
      rescaled only when its norm exceeds ``c`` (invertible residual blocks need ``c < 1``).

    ``sigma_hat`` is a lower bound of ``||W||_2`` that tightens with every iteration (exact at
    convergence: the top singular vectors).  Shapes ``(..., in_features) -> (..., out_features)``.

    Args:
        in_features, out_features: sizes.
        coeff: the target spectral norm ``c > 0``.
        num_power_iterations: power-iteration steps each time the weight has changed (an
            optimizer step or an in-place edit), in training mode.  The vectors ``u, v`` are
            buffers, warm-started from the previous estimate; between weight changes and in
            eval mode they are frozen, so the layer is one fixed function until its weight
            moves.  The construction runs 50 steps.
        mode: ``"exact"`` or ``"bound"`` (above).
        generator: the ``torch.Generator`` of the initial ``u, v`` (the weight takes torch's
            default ``nn.Linear`` initialisation from the global RNG).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        coeff: float = 1.0,
        num_power_iterations: int = 1,
        mode: str = "exact",
        *,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        check_int(in_features, "in_features")
        check_int(out_features, "out_features")
        check_positive(coeff, "coeff")
        if mode not in _SPECTRAL_MODES:
            raise ParameterError(f"mode must be one of {_SPECTRAL_MODES}; got {mode!r}")
        self.coeff = float(coeff)
        self.mode = mode
        self.num_power_iterations = check_int(num_power_iterations, "num_power_iterations")
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.register_buffer("u", F.normalize(_random.randn((out_features,), generator=generator), dim=0))
        self.register_buffer("v", F.normalize(_random.randn((in_features,), generator=generator), dim=0))
        self.power_iteration(50)

    def _weight_key(self) -> tuple[int, int]:
        return (self.weight._version, self.weight.data_ptr())

    @torch.no_grad()
    def power_iteration(self, num_iterations: int = 1) -> None:
        """Run ``num_iterations`` power-iteration steps on the current weight (updates ``u``, ``v``)."""
        check_int(num_iterations, "num_iterations", minimum=0)
        w = self.weight.detach()
        u, v = self.u, self.v
        for _ in range(num_iterations):
            v = F.normalize(w.T @ u, dim=0)
            u = F.normalize(w @ v, dim=0)
        self.u.copy_(u)
        self.v.copy_(v)
        self._seen = self._weight_key()

    def _apply(self, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        current = self._weight_key() == self._seen
        out = super()._apply(fn, *args, **kwargs)
        if current:  # moving or casting the weight is not a change of it
            self._seen = self._weight_key()
        return out

    def _load_from_state_dict(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super()._load_from_state_dict(*args, **kwargs)
        self._seen = self._weight_key()  # u, v were loaded with the weight: they match it

    def spectral_norm(self) -> Tensor:
        """The estimate ``sigma_hat = u^T W v`` of ``||W||_2`` (0-d, differentiable in ``W``; no iteration)."""
        # clones: the buffers are updated in place by later calls, the graph must keep these values
        return self.u.clone() @ self.weight @ self.v.clone()

    def normalized_weight(self) -> Tensor:
        """``c W / sigma_hat`` or ``W / max(1, sigma_hat / c)`` (in training mode, first the power iteration if ``W`` changed)."""
        if self.training and self._weight_key() != self._seen:
            self.power_iteration(self.num_power_iterations)
        ratio = self.spectral_norm() / self.coeff
        return self.weight / (ratio if self.mode == "exact" else torch.clamp(ratio, min=1.0))

    def forward(self, x: Tensor, weight: Tensor | None = None) -> Tensor:
        return F.linear(x, self.normalized_weight() if weight is None else weight, self.bias)

    def extra_repr(self) -> str:
        out_f, in_f = self.weight.shape
        return f"in_features={in_f}, out_features={out_f}, coeff={self.coeff}, mode={self.mode!r}"
