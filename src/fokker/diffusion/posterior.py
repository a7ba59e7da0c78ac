r"""Posterior sampling for inverse problems ``y = A(x) + n``, ``n ~ N(0, sigma_y^2 I)``.

Bayes' rule on the noisy marginals (Song et al. 2021, eq. 14; seed 004, "Conditional sampling"):
:math:`\nabla\log p_t(x_t|y) = \nabla\log p_t(x_t) + \nabla\log p_t(y|x_t)`; the second
term is intractable and is approximated through the denoiser :math:`\hat x_0(x_t, t)`.

* :func:`dps` — Diffusion Posterior Sampling (Chung, Kim, Mccann, Klasky & Ye 2023, *Diffusion
  posterior sampling for general noisy inverse problems*, Algorithm 1; seed 004 Algorithm 1):
  an ancestral DDPM step followed by the gradient step
  :math:`x_{i+1} \leftarrow x_{i+1}' - \zeta_i \nabla_{x_i}\|y - A(\hat x_0(x_i, t_i))\|^2`
  with :math:`\zeta_i = \zeta / \|y - A(\hat x_0)\|` (the authors' step rule).
  A heuristic: it does not sample the exact posterior even for Gaussian data.
* :func:`posterior_score` with ``method="dps"`` — the same approximation written as a score
  (Chung et al. 2023, Theorem 1 and sec. 3.2; seed 004):
  :math:`\nabla\log p_t(y|x_t) \approx \nabla_{x_t}\log N(y; A(\hat x_0), \sigma_y^2 I)`,
  usable with every sampler;
* :func:`posterior_score` with ``method="pigdm"`` — the Gaussian approximation
  :math:`p(y|x_t) \approx N(y;\, A(\hat x_0),\, (\sigma_y^2 + r_t^2) I)` with
  :math:`r_t^2 = v\sigma_t^2/(\alpha_t^2 v + \sigma_t^2)` (Song, Vahdat, Mardani & Kautz 2023,
  *Pseudoinverse-guided diffusion models for inverse problems*, "ΠGDM", sec. 3, for data
  of per-coordinate variance ``v``).  For Gaussian data :math:`N(m, vI)` and a linear ``A`` with
  orthonormal rows it is *exact*, so any sampler then targets the exact posterior.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .._args import check_positive
from .._random import randn_like
from ..errors import ParameterError
from .parameterization import expand_like
from .samplers import _setup, _tvec

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Operator = Callable[[torch.Tensor], torch.Tensor]

__all__ = ["dps", "posterior_score"]


def posterior_score(
    score_fn: ScoreFn,
    sde: object,
    y: torch.Tensor,
    operator: Operator,
    sigma_y: float,
    method: str = "pigdm",
    data_var: float = 1.0,
) -> ScoreFn:
    r"""Posterior score :math:`s(x,t) + \nabla_x \log N(y; A(\hat x_0(x,t)), (\sigma_y^2 + r_t^2) I)`.

    ``method="dps"``: :math:`r_t = 0`, the DPS approximation (Chung et al. 2023, sec. 3.2; seed 004)
    :math:`\nabla\log p_t(y|x_t) \approx -\frac{1}{2\sigma_y^2}\nabla_{x_t}\|y - A\hat x_0(x_t, t)\|^2`;
    ``method="pigdm"``: :math:`r_t^2 = v\sigma_t^2/(\alpha_t^2 v + \sigma_t^2)` (ΠGDM, Song et al. 2023, sec. 3;
    exact for Gaussian data
    of variance ``data_var`` and ``A`` with orthonormal rows).  Usable with every sampler;
    ``score_fn`` must be differentiable in ``x`` (gradients flow through the denoiser).
    """

    check_positive(sigma_y, "sigma_y")
    check_positive(data_var, "data_var")
    if method not in ("dps", "pigdm"):
        raise ParameterError(f"method must be 'dps' or 'pigdm'; got {method!r}")

    def score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        c = sde.coefficients(t).to(x.dtype, x.device)
        a, s = expand_like(c.alpha, x), expand_like(c.sigma, x)
        r2 = data_var * c.sigma**2 / (c.alpha**2 * data_var + c.sigma**2)
        var = sigma_y**2 + (r2 if method == "pigdm" else 0.0 * r2)  # (batch,)
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            sc = score_fn(xg, t)
            x0 = (xg + s**2 * sc) / a
            res = (y - operator(x0)).reshape(x.shape[0], -1)
            ll = -0.5 * (res**2).sum(-1) / var
            (g,) = torch.autograd.grad(ll.sum(), xg)
        return sc.detach() + g

    return score


def dps(
    score_fn: ScoreFn,
    sde: object,
    x: torch.Tensor,
    grid: torch.Tensor,
    y: torch.Tensor,
    operator: Operator,
    *,
    zeta: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, int]:
    r"""DPS (Chung et al. 2023, Alg. 1) on the grid; returns ``(samples, nfe)`` (NFE = N).

    Each step: :math:`\hat x_0` by Tweedie with gradients, the ancestral DDPM step
    (DDIM with :math:`\eta = 1`) to :math:`x'_{i+1}`, then
    :math:`x_{i+1} = x'_{i+1} - \frac{\zeta}{\|y - A(\hat x_0)\|}\nabla_{x_i}\|y - A(\hat x_0)\|^2`
    (norms per sample).  ``operator`` is any differentiable ``A``; ``score_fn`` must be
    differentiable in ``x``.
    """
    if not zeta > 0:
        raise ParameterError(f"zeta must be positive; got {zeta!r}")
    c = _setup(sde, x, grid)
    a, s = c.alpha, c.sigma
    var_post = (s[1:] ** 2 / s[:-1] ** 2) * (s[:-1] ** 2 - (a[:-1] / a[1:]) ** 2 * s[1:] ** 2)
    cn = torch.sqrt(var_post.clamp_min(0.0))
    keep = torch.sqrt((s[1:] ** 2 - var_post).clamp_min(0.0))
    b = x.shape[0]
    for i in range(len(cn)):
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            sc = score_fn(xg, _tvec(c, i, xg))
            x0 = (xg + s[i] ** 2 * sc) / a[i]
            res2 = ((y - operator(x0)) ** 2).reshape(b, -1).sum(-1)
            (g,) = torch.autograd.grad(res2.sum(), xg)
        eps = -s[i] * sc.detach()
        x_next = a[i + 1] * x0.detach() + keep[i] * eps + cn[i] * randn_like(x, generator)
        step = zeta / res2.detach().sqrt().clamp_min(torch.finfo(x.dtype).tiny)
        x = x_next - expand_like(step, x) * g
    return x, len(cn)
