"""Control networks for diffusion samplers.

:class:`PISGradNet` is the "PIS-grad" architecture of Zhang & Chen (2022, Path
Integral Sampler, sec. 4) in the variant used by DDS (Vargas et al. 2023):

.. math:: f_\\theta(x, t) = NN_1(x, \\phi(t)) + NN_2(\\phi(t)) \\odot \\mathrm{clip}(F(x))

* ``phi(t) = [sin(c t + p), cos(c t + p)]`` with frequencies ``c = linspace(0.1, 100, width)``
  and a learned phase ``p`` (zero at init); ``t`` is the *normalized* time ``t / T``
  in ``[0, 1]``.
* ``NN_1`` takes ``x`` concatenated with a learned time code, ``num_layers`` hidden
  GELU layers of ``width``, last layer zero-initialized (so the control is 0 at init).
* ``NN_2`` is a time-only MLP whose last layer is zero weights with a constant bias
  ``feature_bias_init`` (0 for DDS/PIS: start at the reference process; 1 for DIS:
  start from the interpolated score).
* ``F(x)`` is a *feature* supplied by the sampler (the target score for DDS/PIS, the
  interpolated score for DIS), clipped to ``[-feature_clip, feature_clip]`` and used
  without gradient (DDS "stop_grad").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._args import check_int, check_positive

__all__ = ["PISGradNet"]


class PISGradNet(nn.Module):
    """``f(x, t, feature) -> (..., dim)``: the "PIS-grad" control network of Zhang & Chen (2022,
    *Path integral sampler*, sec. 4) as used by Vargas, Grathwohl & Doucet (2023); see the module
    docstring for the formula."""

    def __init__(
        self,
        dim: int,
        width: int = 64,
        num_layers: int = 2,
        feature_clip: float = 100.0,
        output_clip: float = 1e4,
        feature_bias_init: float = 0.0,
    ) -> None:
        super().__init__()
        check_int(dim, "dim")
        check_int(width, "width")
        check_int(num_layers, "num_layers")
        check_positive(feature_clip, "feature_clip")
        check_positive(output_clip, "output_clip")
        self.dim, self.width = dim, width
        self.feature_clip, self.output_clip = float(feature_clip), float(output_clip)
        self.register_buffer("freq", torch.linspace(0.1, 100.0, width))
        self.phase = nn.Parameter(torch.zeros(width))
        act = nn.GELU
        self.time_code = nn.Sequential(nn.Linear(2 * width, width), act(), nn.Linear(width, width))
        grad_layers: list[nn.Module] = [nn.Linear(2 * width, width)]
        for _ in range(num_layers):
            grad_layers += [act(), nn.Linear(width, width)]
        last_g = nn.Linear(width, dim)
        nn.init.zeros_(last_g.weight)
        nn.init.constant_(last_g.bias, float(feature_bias_init))
        self.time_gain = nn.Sequential(*grad_layers, act(), last_g)
        state_layers: list[nn.Module] = []
        d_in = dim + width
        for _ in range(num_layers):
            state_layers += [nn.Linear(d_in, width), act()]
            d_in = width
        last_s = nn.Linear(d_in, dim)
        nn.init.zeros_(last_s.weight)
        nn.init.zeros_(last_s.bias)
        self.state_net = nn.Sequential(*state_layers, last_s)

    def embed(self, t: torch.Tensor) -> torch.Tensor:
        """Fourier time features ``(..., 2 width)`` of the normalized time ``t`` ``(...)``."""
        arg = t[..., None] * self.freq + self.phase
        return torch.cat([torch.sin(arg), torch.cos(arg)], dim=-1)

    def time_terms(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The parts of the network that do not depend on ``x``, for a grid of times at once.

        ``t``: normalized times ``(T,)``.  Returns ``(code_bias (T, width), gain (T, dim),
        weight_x (width, dim))``: the time code's contribution to the first layer of ``NN_1``
        (with its bias), the gain ``NN_2(phi(t))`` and the first layer's weight on ``x``.  A
        sampler evaluates them once per rollout for all its steps (one batched pass and one
        backward node instead of ``K``) and calls :meth:`forward_with_time_terms` at every step;
        the result equals :meth:`forward`.
        """
        emb = self.embed(t)
        first = self.state_net[0]
        code_bias = F.linear(self.time_code(emb), first.weight[:, self.dim :], first.bias)
        return code_bias, self.time_gain(emb), first.weight[:, : self.dim]

    def forward_with_time_terms(
        self, x: torch.Tensor, code_bias: torch.Tensor, gain: torch.Tensor, weight_x: torch.Tensor, feature: torch.Tensor
    ) -> torch.Tensor:
        """``f(x, t, feature)`` from the :meth:`time_terms` of ``t`` (rows ``(width,)`` and ``(dim,)``
        of one time, or batched like ``x``): ``x`` ``(n, dim)``, ``feature`` ``(n, dim)``."""
        h = self.state_net[1:](F.linear(x, weight_x) + code_bias)
        feat = feature.detach().clamp(-self.feature_clip, self.feature_clip)
        return (h + gain * feat).clamp(-self.output_clip, self.output_clip)

    def forward(self, x: torch.Tensor, t: torch.Tensor, feature: torch.Tensor) -> torch.Tensor:
        """``x``: ``(n, dim)``; ``t``: 0-d or ``(n,)`` normalized time; ``feature``: ``(n, dim)``.

        For a 0-d ``t`` (all samples at one time, as in the samplers) the time-only
        networks run once on a single row and broadcast, so only ``NN_1`` costs ``O(n)``.
        """
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        code_bias, gain, weight_x = self.time_terms(t.reshape(-1) if t.dim() == 0 else t)
        return self.forward_with_time_terms(x, code_bias, gain, weight_x, feature)
