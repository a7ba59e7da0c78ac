"""Plain neural networks shared by the packages: the one multilayer perceptron of fokker.

:class:`MLP` is a stack ``Linear -> activation -> ... -> Linear``; flows use it as the
conditioner of coupling layers (:mod:`fokker.flows.coupling`), as the time-conditioned
vector field of continuous flows and as the network of the SurVAE Gaussian
conditionals.  :func:`check_hidden` validates a tuple of hidden sizes the same way
for every builder and layer that takes one.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ._args import check_int
from .errors import ParameterError

__all__ = ["MLP", "check_hidden", "make_activation"]


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
