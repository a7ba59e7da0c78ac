"""Noise-contrastive estimation with a learned ``log Z`` (seed 002 eqs. 37-39; Gutmann & Hyvarinen 2010, 2012).

The model's normalized log density is ``log p_theta(x) = -E(x) - c`` with a
free parameter ``c`` (the ``log Z`` estimate).  Data points (label ``b = 1``)
and ``nu`` times as many noise points ``y ~ p_n`` (label ``b = 0``) are
classified with the Bayes posterior of eq. 38,

.. math::  p_\\theta(b=1 \\mid x) = \\frac{p_\\theta(x)}{p_\\theta(x) + \\nu p_n(x)}
           = \\sigma\\big(G(x) - \\log\\nu\\big), \\qquad G = \\log p_\\theta - \\log p_n,

and the loss is the logistic cross-entropy (the conditional ML of eq. 39)

.. math::  L = \\mathbb{E}_{p}\\,\\mathrm{softplus}(\\log\\nu - G(x))
             + \\nu\\, \\mathbb{E}_{p_n}\\,\\mathrm{softplus}(G(y) - \\log\\nu).

(The seed writes the prior ratio the other way, ``v = p(b=1)/p(b=0) = 1/nu``,
and states eq. 39 with the KL arguments swapped; minimizing the expected
cross-entropy is what NCE does and is equivalent to
``E_{p_mix} KL[p_mix(b|x) || p_mix,theta(b|x)]``.)  If the model family
contains the data density, the minimizer has ``p_theta = p`` and hence
``c = log Z`` of the fitted energy: NCE estimates the normalizer.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn.functional import softplus

from .._args import check_positive
from ..errors import DeviceDtypeError, ParameterError
from .objective import Objective, log_prob_fn


class NCE(Objective):
    """NCE objective with noise ``p_n`` and ``ratio`` = noise samples per data sample (``nu``).

    Gutmann & Hyvarinen (2010), "Noise-contrastive estimation: a new estimation principle for
    unnormalized statistical models", AISTATS, eqs. (2)-(5) with the normalizer as a parameter
    (Sec. 2.2); the ``nu`` noise ratio of Gutmann & Hyvarinen (2012), JMLR 13, eq. (8).

    Args:
        noise: a normalized density with samples: a ``torch.distributions.Distribution``
            with event shape ``(d,)``, or a fokker ``Target`` with exact samples and known ``log_Z``.
            It is not a submodule: its parameters are not trained and ``.to()`` does not move it.
        ratio: ``nu > 0``; each batch of ``n`` data points uses ``max(1, round(nu n))`` noise points.
        log_Z_init: initial value of the learned ``log Z`` parameter ``c``.

    Attributes:
        log_Z: the learned ``c`` (0-d ``nn.Parameter``); an estimate of ``log Z`` of the energy.
    """

    def __init__(self, noise: Any, ratio: float = 1.0, log_Z_init: float = 0.0) -> None:
        super().__init__()
        check_positive(ratio, "ratio")
        if isinstance(noise, torch.distributions.Distribution):
            if len(noise.event_shape) != 1:
                raise ParameterError(f"noise must have event shape (d,); got {tuple(noise.event_shape)}")
            self._noise_log_prob = noise.log_prob
            self._noise_sample = noise.sample
        elif hasattr(noise, "sample") and hasattr(noise, "log_prob") and hasattr(noise, "log_Z"):
            if not getattr(noise, "has_exact_samples", False) or noise.log_Z is None:
                raise ParameterError("a Target used as NCE noise needs exact samples and a known log_Z")
            lz = float(noise.log_Z)
            self._noise_log_prob = lambda x: noise.log_prob_unchecked(x) - lz
            self._noise_sample = noise.sample
        else:
            raise TypeError(
                f"noise must be a torch Distribution or a fokker Target with exact samples; got {type(noise).__name__}"
            )
        # the noise is held by reference only: it is neither trained nor moved by .to()
        self.ratio = float(ratio)
        self.log_Z = nn.Parameter(torch.tensor(float(log_Z_init)))

    def setup(self, model: nn.Module) -> None:
        ref = next(iter(model.parameters()), None) if isinstance(model, nn.Module) else None
        if ref is not None:
            self.log_Z.data = self.log_Z.data.to(ref.device, ref.dtype)
        dim = getattr(model, "dim", None)
        probe = self._noise_sample((1,))
        if dim is not None and probe.shape[-1] != dim:
            raise ParameterError(f"noise samples have dimension {probe.shape[-1]} but the model has dim {dim}")
        if ref is not None and (probe.dtype != ref.dtype or probe.device != ref.device):
            raise DeviceDtypeError(
                f"noise samples are {probe.dtype} on {probe.device} but the model is {ref.dtype} on {ref.device}"
            )

    def normalized_log_prob(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """``-E(x) - c``: the model's log density with the learned normalizer."""
        return log_prob_fn(model)(x) - self.log_Z

    def forward(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        m = max(1, round(self.ratio * n))
        y = self._noise_sample((m,)).to(x.dtype)
        log_nu = math.log(m / n)
        g_x = self.normalized_log_prob(model, x) - self._noise_log_prob(x)
        g_y = self.normalized_log_prob(model, y) - self._noise_log_prob(y)
        return softplus(log_nu - g_x).mean() + (m / n) * softplus(g_y - log_nu).mean()


def nce(noise: Any, ratio: float = 1.0, log_Z_init: float = 0.0) -> NCE:
    """NCE objective with a learned ``log Z`` (see :class:`NCE`)."""
    return NCE(noise, ratio, log_Z_init)


__all__ = ["NCE", "nce"]
