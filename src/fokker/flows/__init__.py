"""Normalizing flows: bijective layers (noise -> data) and ``Flow`` distributions.

Every layer is a :class:`pyro.distributions.torch_transform.TransformModule` with an
exact inverse and log-det (see :mod:`fokker.flows.base`); a :class:`Flow` is a base
distribution plus layers with ``log_prob``, ``sample``, ``rsample``,
``sample_and_log_prob``, ``loss`` and ``distribution()`` (a Pyro
``TransformedDistribution``); ``save`` / ``load`` store builder-made flows as plain data.
See ``docs/flows.md`` and ``docs/flows_more.md``.
"""

from __future__ import annotations

from .autoregressive import (
    IAF,
    MADE,
    MAF,
    MaskedAutoregressive,
    MaskedLinear,
    NeuralAutoregressive,
    SplineAutoregressive,
    SumOfSquaresAutoregressive,
    UnconstrainedNeuralAutoregressive,
)
from .base import Bijection, ConditionedBijection
from .batchnorm import BatchNormFlow
from .block import BlockAutoregressive
from .builders import bnaf, ffjord, glow, iaf, maf, naf, nice, nsf, planar_flow, realnvp, residual_flow, sospf, unaf
from .continuous import ContinuousFlow, TimeMLP
from .coupling import (
    AdditiveCoupling,
    AffineCoupling,
    ConvNet,
    Coupling,
    SplineCoupling,
    alternating_mask,
    channel_mask,
    checkerboard_mask,
    half_mask,
)
from .elementwise import Additive, Affine, ElementwiseMap, RationalQuadratic, soft_clamp
from .emerging import EmergingConv
from .fit import fit_to_target
from .flow import Flow, FlowDistribution
from .glow import Multiscale, Squeeze, squeeze, unsqueeze
from .matrix import Householder, MatrixExponential, Orthogonal
from .monotone import DeepSigmoid, MonotoneMap, SumOfSquares, UnconstrainedMonotone, solve_monotone
from .linear import ActNorm, InvertibleConv1x1, InvertibleLinear
from .permute import Permute, Reverse
from .pointwise import Elementwise, ElementwiseSpline, LeakyReLU, SoftClip, Softplus, Tanh
from .planar import Planar, solve_tanh_equation
from .radial import Radial
from .residual import LipSwish, ResidualFlow, SpectralNormLinear
from .saving import load, save
from .surjections import (
    Abs,
    Augment,
    ConditionalGaussian,
    Max,
    Slice,
    Sort,
    Surjection,
    SurjectiveFlow,
    UniformDequantization,
    VariationalDequantization,
)
from .sylvester import Sylvester
from ..nets import MLP

__all__ = [
    # base
    "Bijection",
    "ConditionedBijection",
    "Flow",
    "FlowDistribution",
    "MLP",
    "save",
    "fit_to_target",
    "load",
    # elementwise maps
    "ElementwiseMap",
    "Additive",
    "Affine",
    "RationalQuadratic",
    "soft_clamp",
    # monotone maps with a root-finding inverse
    "MonotoneMap",
    "DeepSigmoid",
    "UnconstrainedMonotone",
    "SumOfSquares",
    "solve_monotone",
    # elementwise layers, learned and fixed
    "Elementwise",
    "ElementwiseSpline",
    "LeakyReLU",
    "Softplus",
    "Tanh",
    "SoftClip",
    # coupling
    "Coupling",
    "AdditiveCoupling",
    "AffineCoupling",
    "SplineCoupling",
    "ConvNet",
    "half_mask",
    "alternating_mask",
    "checkerboard_mask",
    "channel_mask",
    # autoregressive
    "MaskedLinear",
    "MADE",
    "MaskedAutoregressive",
    "MAF",
    "IAF",
    "SplineAutoregressive",
    "NeuralAutoregressive",
    "UnconstrainedNeuralAutoregressive",
    "SumOfSquaresAutoregressive",
    "BlockAutoregressive",
    # linear, permutations, multiscale
    "ActNorm",
    "InvertibleLinear",
    "InvertibleConv1x1",
    "EmergingConv",
    "Householder",
    "MatrixExponential",
    "Orthogonal",
    "Permute",
    "Reverse",
    "Squeeze",
    "Multiscale",
    "squeeze",
    "unsqueeze",
    # planar family, batch norm, residual, continuous
    "Planar",
    "Radial",
    "Sylvester",
    "solve_tanh_equation",
    "BatchNormFlow",
    "ResidualFlow",
    "SpectralNormLinear",
    "LipSwish",
    "ContinuousFlow",
    "TimeMLP",
    # surjections (SurVAE)
    "Surjection",
    "Slice",
    "Augment",
    "Abs",
    "Sort",
    "Max",
    "UniformDequantization",
    "VariationalDequantization",
    "ConditionalGaussian",
    "SurjectiveFlow",
    # builders
    "nice",
    "realnvp",
    "maf",
    "iaf",
    "nsf",
    "naf",
    "unaf",
    "sospf",
    "bnaf",
    "glow",
    "planar_flow",
    "residual_flow",
    "ffjord",
]
