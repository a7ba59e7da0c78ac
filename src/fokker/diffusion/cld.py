r"""Critically-damped Langevin diffusion models end to end (Dockhorn, Vahdat & Kreis 2022, *Score-based generative
modeling with critically-damped Langevin diffusion*; seed 002 eq. 34).

The state is phase space :math:`z = (x, v)`, stored as ``cat([x, v], -1)`` of shape ``(batch, 2d)``; the forward
SDE is :class:`fokker.sde.CriticallyDampedLangevin`,
:math:`dz = A z\, dt + G\, dW` with :math:`A = \beta[[0, M^{-1}], [-1, -\Gamma M^{-1}]]`,
:math:`G G^\top = \mathrm{diag}(0, 2\Gamma\beta)`, started at :math:`v_0 \sim N(0, \gamma M I)`.  Noise enters the
velocity only, so only the velocity score :math:`\nabla_v \log p_t(z)` is needed (their sec. 3.2):

* **Hybrid score matching** (their eq. 9, "HSM"): with :math:`z_t = \mu_t(x_0) + L_t \varepsilon` (per-pair
  Cholesky factor :math:`L_t = [[\ell_{xx}, 0], [\ell_{vx}, \ell_{vv}]]` of the covariance given :math:`x_0`,
  :math:`v_0` integrated out), :math:`\nabla_v \log p(z_t | x_0) = -\varepsilon_v / \ell_{vv}(t)`; the network
  predicts :math:`\varepsilon_v` and is trained by :math:`E\|\hat\varepsilon_v(z_t, t) - \varepsilon_v\|^2`
  (their :math:`\lambda(t) = \ell_{vv}^2` weighting), so :math:`s^v_\theta = -\hat\varepsilon_v/\ell_{vv}`.
* **Reverse SDE** :math:`d\bar z = [-A\bar z + (0, 2\Gamma\beta s^v)]\,d\tau + G\,d\bar W` and **PF-ODE**
  :math:`dz/dt = A z - (0, \Gamma\beta s^v)` (their eqs. 5-6).
* **SSCS**, the symmetric splitting CLD sampler (their sec. 3.3, Alg. 1): the reverse SDE splits into the linear
  part :math:`d\bar z = A'\bar z\,d\tau + G\,d\bar W`, :math:`A' = \beta[[0, -M^{-1}], [1, -\Gamma M^{-1}]]`
  (solved exactly: :math:`A' = P A P`, :math:`P = \mathrm{diag}(-1, 1)`, so its transition is the forward one's
  conjugated by :math:`P`) and the score part :math:`dv = 2\Gamma\beta(s^v + v/M)\,d\tau`; each step is half a
  linear step, one Euler step of the score part at the midpoint time, half a linear step.
* **Likelihood**: the PF-ODE gives :math:`\log p(x, v_0)`; with :math:`v_0 \sim q = N(0, \gamma M I)`,
  :math:`\log p(x) \ge E_q[\log p(x, v_0) - \log q(v_0)]` (their appendix on likelihoods); ``log_prob`` returns
  the one-draw estimate :math:`\log p(x, v_0) - \log q(v_0)` (unbiased for that bound).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from .._gaussian import isotropic_normal_log_prob
from .._random import randn, randn_like
from ..errors import ParameterError, ShapeError
from ..sde import CriticallyDampedLangevin, time_grid
from .likelihood import LikelihoodResult, cnf_log_prob

if TYPE_CHECKING:  # pragma: no cover
    from .model import DiffusionModel

__all__ = ["CLDFamily", "CLD_SAMPLERS", "DEFAULT_CLD_SPACING", "sscs", "cld_euler_maruyama"]

VScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _vv_factor(sde: CriticallyDampedLangevin, t: torch.Tensor) -> torch.Tensor:
    """:math:`\\ell_{vv}(t)` of the per-pair Cholesky factor of the covariance of ``z_t`` given ``x0`` (float64)."""
    return _vv_from_cov(*sde.cov(t.detach().to(torch.float64)))


def _vv_from_cov(sxx: torch.Tensor, sxv: torch.Tensor, svv: torch.Tensor) -> torch.Tensor:
    """:math:`\\ell_{vv}` from the per-pair covariance entries."""
    l11 = sxx.clamp_min(0).sqrt()
    l21 = torch.where(l11 > 0, sxv / torch.where(l11 > 0, l11, 1.0), 0.0)
    return (svv - l21 * l21).clamp_min(0).sqrt()


def _split(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    d = z.shape[-1] // 2
    return z[..., :d], z[..., d:]


def _check_state(z: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    if z.dim() != 2 or z.shape[-1] % 2:
        raise ShapeError(f"z must have shape (batch, 2d) = cat([x, v], -1); got {tuple(z.shape)}")
    grid = torch.as_tensor(grid, dtype=torch.float64).cpu()
    if grid.dim() != 1 or grid.numel() < 2 or not bool((grid[1:] < grid[:-1]).all()):
        raise ParameterError("grid must be a strictly decreasing 1-D tensor of at least 2 times")
    return grid


def sscs(
    v_score_fn: VScoreFn,
    sde: CriticallyDampedLangevin,
    z: torch.Tensor,
    grid: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, int]:
    r"""Symmetric splitting CLD sampler (Dockhorn et al. 2022, sec. 3.3 and Alg. 1) on a decreasing grid.

    Step ``h = t_i - t_{i+1}``: the exact linear flow :math:`A'` for ``h/2`` (Gaussian transition
    :math:`P e^{A h/2} P z + P L_Q \xi`, with the forward CLD's :math:`e^{At}` and noise covariance :math:`Q(t)`),
    then :math:`v \leftarrow v + 2\Gamma\beta h\,(s^v(z, t_i - h/2) + v/M)`, then the linear flow for ``h/2``
    again.  ``v_score_fn(z, t)``: the velocity score ``(batch, d)`` with ``t`` ``(batch,)``.  NFE = N.
    """
    grid = _check_state(z, grid)
    h = grid[:-1] - grid[1:]
    p11, p12, p21, p22 = (c.to(z) for c in sde.mean_coefs(0.5 * h))
    q11, q12, q22 = sde.cov(0.5 * h, v0_random=False)
    l11 = q11.clamp_min(0).sqrt()
    l21 = torch.where(l11 > 0, -q12 / torch.where(l11 > 0, l11, 1.0), 0.0)  # P Q P has off-diagonal -q12
    l22 = (q22 - l21 * l21).clamp_min(0).sqrt()
    l11, l21, l22 = l11.to(z), l21.to(z), l22.to(z)
    t_mid = (grid[:-1] - 0.5 * h).to(z)
    gain = (2.0 * sde.Gamma * sde.beta * h).to(z)
    inv_m = 1.0 / sde.M

    def linear(z: torch.Tensor, i: int) -> torch.Tensor:
        x, v = _split(z)
        ex, ev = randn_like(x, generator), randn_like(v, generator)
        return torch.cat([p11[i] * x - p12[i] * v + l11[i] * ex,
                          -p21[i] * x + p22[i] * v + l21[i] * ex + l22[i] * ev], -1)

    for i in range(len(h)):
        z = linear(z, i)
        x, v = _split(z)
        s = v_score_fn(z, t_mid[i].expand(z.shape[0]))
        z = linear(torch.cat([x, v + gain[i] * (s + inv_m * v)], -1), i)
    return z, len(h)


def cld_euler_maruyama(
    v_score_fn: VScoreFn,
    sde: CriticallyDampedLangevin,
    z: torch.Tensor,
    grid: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, int]:
    r"""Euler–Maruyama on the CLD reverse SDE :math:`d\bar z = [-A\bar z + (0, 2\Gamma\beta s^v)]d\tau + G d\bar W`
    (Dockhorn et al. 2022, eq. 5).  NFE = N."""
    grid = _check_state(z, grid)
    h = (grid[:-1] - grid[1:]).to(z)
    t = grid.to(z)
    b, M, G = sde.beta, sde.M, sde.Gamma
    for i in range(len(h)):
        x, v = _split(z)
        s = v_score_fn(z, t[i].expand(z.shape[0]))
        noise = torch.sqrt(2.0 * G * b * h[i]) * randn_like(v, generator)
        x_new = x - h[i] * (b / M) * v
        v_new = v + h[i] * (b * x + (b * G / M) * v + 2.0 * G * b * s) + noise
        z = torch.cat([x_new, v_new], -1)
    return z, len(h)


#: the default time grid of the CLD samplers, chosen with the exact score of the eight-Gaussians mixture
#: (fraction of samples below the data's 5%-density level, exact samples 0.05): SSCS at 10 / 20 steps
#: 0.064 / 0.044 on the quadratic grid against 0.227 / 0.059 on the uniform one, Euler–Maruyama 0.252 /
#: 0.116 against 0.708 / 0.367; equal within noise from 50 steps on
DEFAULT_CLD_SPACING = "quadratic"

#: samplers of CLD models by name (``DiffusionModel.sample(sampler=...)``)
CLD_SAMPLERS: dict[str, Callable[..., tuple[torch.Tensor, int]]] = {
    "sscs": sscs,
    "euler_maruyama": cld_euler_maruyama,
}


class CLDFamily:
    """What a :class:`~fokker.diffusion.DiffusionModel` does with a :class:`fokker.sde.CriticallyDampedLangevin`
    (Dockhorn, Vahdat & Kreis 2022, eqs. 5-9 and Alg. 1):
    HSM training of the velocity noise, SSCS / Euler–Maruyama sampling from the equilibrium
    :math:`N(0, I) \\times N(0, M I)`, the PF-ODE likelihood bound (see the module docstring).

    The network maps the state ``z`` ``(batch, 2d)`` and ``t`` ``(batch,)`` to :math:`\\hat\\varepsilon_v`,
    ``(batch, d)``, or to ``(batch, 2d)`` of which the last ``d`` entries are read (e.g.
    ``ResidualTimeMLP(2 * d)``).  The data event is ``(d,)``.
    """

    phase_space = True
    default_sampler = "sscs"

    def __init__(self, sde: CriticallyDampedLangevin) -> None:
        self.sde = sde

    def time_domain(self) -> tuple[float, float]:
        """``[t_min + 1e-3 (T - t_min), T]``: near ``t = 0`` the position has no noise to learn from."""
        lo, T = self.sde.t_min, self.sde.T
        return lo + 1e-3 * (T - lo), T

    def data_shape(self, state_shape: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if state_shape is None:
            return None
        if len(state_shape) != 1 or state_shape[0] % 2:
            raise ShapeError(f"a CLD state has event shape (2d,); got {state_shape}")
        return (state_shape[0] // 2,)

    # ------------------------------------------------------------------ the network
    def eps_v(self, model: "DiffusionModel", z: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """The network's velocity-noise prediction ``(batch, d)`` at ``(z, t)``."""
        d = z.shape[-1] // 2
        out = model.net_output(z, t, y)
        if out.shape == z.shape:
            out = out[..., d:]
        if out.shape != (z.shape[0], d):
            raise ShapeError(f"a CLD net maps z {tuple(z.shape)} to eps_v ({z.shape[0]}, {d}) or to z's shape; "
                             f"got {tuple(out.shape)}")
        if model.parameterization == "mixed":
            out = out + self.gaussian_eps_v(z, t, model.sigma_data)
        return out

    def gaussian_eps_v(self, z: torch.Tensor, t: torch.Tensor, sigma_data: float) -> torch.Tensor:
        r"""Exact :math:`E[\varepsilon_v \mid z_t]` when the data are :math:`N(0, \sigma_d^2 I)`, ``(batch, d)``.

        The mixed score of Dockhorn et al. (2022, sec. 3.2, after Vahdat et al. 2021's LSGM): the network
        learns only the residual to this Gaussian part.  Per coordinate pair :math:`z_t \sim N(0, \tilde\Sigma_t)`,
        :math:`\tilde\Sigma_t = \Sigma_t + \sigma_d^2 p p^\top` (:math:`\Sigma_t` the covariance given :math:`x_0`,
        :math:`p = (p_{11}, p_{21})` the first column of :math:`e^{At}`), so
        :math:`E[\varepsilon_v \mid z] = -\ell_{vv} s_v = \ell_{vv} (\tilde\Sigma_t^{-1} z)_v
        = \ell_{vv} (\tilde\Sigma_{xx} v - \tilde\Sigma_{xv} x) / \det\tilde\Sigma_t`.
        """
        t64 = t.detach().to(torch.float64)
        sxx, sxv, svv = self.sde.cov(t64)
        p11, _, p21, _ = self.sde.mean_coefs(t64)
        s2 = float(sigma_data) ** 2
        axx, axv, avv = sxx + s2 * p11 * p11, sxv + s2 * p11 * p21, svv + s2 * p21 * p21
        scale = _vv_from_cov(sxx, sxv, svv) / (axx * avv - axv * axv)
        x, v = _split(z)
        return (scale * axx).to(z)[:, None] * v - (scale * axv).to(z)[:, None] * x

    def v_score(self, model: "DiffusionModel", z: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        r""":math:`s^v_\theta = -\hat\varepsilon_v / \ell_{vv}(t)`, ``(batch, d)``."""
        return -self.eps_v(model, z, t, y) / _vv_factor(self.sde, t).to(z)[:, None]

    # ------------------------------------------------------------------ training
    def loss(self, model: "DiffusionModel", x0: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """HSM: mean of :math:`\\|\\hat\\varepsilon_v(z_t, t) - \\varepsilon_v\\|^2` over the batch and event."""
        d = x0.shape[-1]
        t = model.sample_t(x0.shape[0], x0.device, x0.dtype)
        eps = randn((x0.shape[0], 2 * d), dtype=x0.dtype, device=x0.device)
        z, _ = self.sde.sample_marginal(x0, t, noise=eps)
        return ((self.eps_v(model, z, t, y) - eps[:, d:]) ** 2).mean()

    # ------------------------------------------------------------------ sampling
    def prior_sample(self, num_samples: int, d: int, generator: torch.Generator | None, dtype: torch.dtype,
                     device: torch.device) -> torch.Tensor:
        z = randn((num_samples, 2 * d), generator=generator, dtype=dtype, device=device)
        scale = torch.cat([torch.ones(d, dtype=dtype, device=device), torch.full((d,), math.sqrt(self.sde.M),
                                                                                  dtype=dtype, device=device)])
        return z * scale

    def generate(
        self, model: "DiffusionModel", num_samples: int, sampler: str, num_steps: int, *, spacing: str | None,
        y: torch.Tensor | None, score_fn: Callable | None, denoise: bool, final_step: str | None,
        generator: torch.Generator | None, dtype: torch.dtype, device: torch.device, on_call: Callable[[], object],
        **options: object,
    ) -> tuple[torch.Tensor, int]:
        """Positions ``(num_samples, d)`` of the reverse process at ``t_min`` (``denoise`` and ``final_step`` have
        no CLD meaning)."""
        if sampler not in CLD_SAMPLERS:
            raise ParameterError(f"a CLD model samples with one of {tuple(CLD_SAMPLERS)}; got {sampler!r}")
        grid = time_grid(num_steps, model.T, model.t_min, spacing or DEFAULT_CLD_SPACING)
        z = self.prior_sample(num_samples, model.event_shape[0], generator, dtype, device)
        inner = score_fn if score_fn is not None else (lambda z, t: self.v_score(model, z, t, y))

        def score(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            on_call()
            return inner(z, t)

        z, nfe = CLD_SAMPLERS[sampler](score, self.sde, z, grid, generator=generator, **options)
        return _split(z)[0], nfe

    # ------------------------------------------------------------------ likelihood
    def velocity(self, model: "DiffusionModel", y: torch.Tensor | None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        b, M, G = self.sde.beta, self.sde.M, self.sde.Gamma

        def velocity(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            x, v = _split(z)
            s = self.v_score(model, z, t, y)
            return torch.cat([(b / M) * v, -b * x - (b * G / M) * v - G * b * s], -1)

        return velocity

    def log_prob_result(
        self, model: "DiffusionModel", x: torch.Tensor, y: torch.Tensor | None, t0: float,
        prior_log_prob: Callable[[torch.Tensor], torch.Tensor] | None, *, generator: torch.Generator | None = None,
        **solver: object,
    ) -> LikelihoodResult:
        """One-draw estimate of the bound :math:`E_q[\\log p(x, v_0) - \\log q(v_0)] \\le \\log p(x)`."""
        scale = math.sqrt(self.sde.gamma * self.sde.M)
        v0 = randn_like(x, generator) * scale
        z = torch.cat([x, v0], -1)
        prior = prior_log_prob or (lambda zz: self.sde.prior((zz.shape[-1],), dtype=zz.dtype, device=zz.device).log_prob(zz))
        res = cnf_log_prob(self.velocity(model, y), z, t0, model.T, prior, generator=generator, **solver)  # type: ignore[arg-type]
        log_q = isotropic_normal_log_prob(v0, None, scale, 1)
        return res._replace(log_prob=res.log_prob - log_q)
