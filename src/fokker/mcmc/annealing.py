"""Annealing: NCSN annealed Langevin dynamics, annealed importance sampling and SMC samplers.

* :func:`annealed_langevin` (Song & Ermon 2019; seed 002 eq. 25): for noise
  levels ``sigma_1 > ... > sigma_L`` run ``M`` Langevin steps at each level,
  ``x <- x + eps_i s(x, sigma_i) + sqrt(2 eps_i) z`` with
  ``eps_i = eps * sigma_i^2 / sigma_L^2``.  (The NCSN paper writes the same
  update as ``x + alpha_i/2 s + sqrt(alpha_i) z``, i.e. ``alpha_i = 2 eps_i``.)
* :class:`AIS` (Neal 2001; seed 001 eq. 71): geometric path
  ``pi_k(x) ∝ pi_0(x)^{1-beta_k} gamma(x)^{beta_k}``, ``0 = beta_0 < ... < beta_K = 1``.
  Particles ``x_0 ~ pi_0``; at step ``k`` the log-weight gains
  ``(beta_k - beta_{k-1}) (log gamma(x) - log pi_0(x))`` and ``x`` moves by an MCMC
  kernel leaving ``pi_k`` invariant.  ``Z_hat = mean_i w_i`` is unbiased for
  ``Z``; ``log_Z = log Z_hat`` and its standard error is the delta-method
  ``sd(w) / (sqrt(N) mean(w))`` (an estimate; unreliable when the weights are
  heavy-tailed, check ``ess``).
* :class:`SMC` (Del Moral, Doucet & Jasra 2006): the same path, with the
  particles resampled (systematic) whenever the ESS of the normalized weights
  falls below ``resample_threshold * N``.  ``log_Z`` accumulates
  ``log sum_i W_i exp(Delta_i)``.  To get an honest standard error the
  particles form ``num_groups`` independent SMC systems (resampled within their
  group); ``Z_hat`` is the mean of the group estimates (still unbiased) and
  ``log_Z_se`` the delta-method error across groups.

The MCMC moves use any :class:`~fokker.mcmc.kernels.Kernel` (default one HMC
step with 5 leapfrog steps).  With ``adapt_step_size=True`` the step size
follows the mean acceptance after every temperature (Robbins-Monro on
``log eps``); the tuning uses past particles only, but it couples the
particles, so keep it off when exact unbiasedness matters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from tqdm.auto import tqdm

from .._args import check_int
from ..errors import NonFiniteError, ParameterError, ShapeError
from ..targets.base import Target, as_target
from .kernels import HMC, Kernel

__all__ = ["annealed_langevin", "AnnealedTarget", "AISResult", "AIS", "SMC", "geometric_betas"]


def annealed_langevin(
    score_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    sigmas: torch.Tensor,
    x: torch.Tensor,
    step_size: float = 2e-5,
    n_steps_each: int = 100,
    denoise: bool = False,
    progress: bool = False,
) -> torch.Tensor:
    """NCSN annealed Langevin dynamics (seed 002 eq. 25).

    Args:
        score_fn: ``score_fn(x, sigma) -> (..., dim)``, the score of the
            ``sigma``-perturbed density; ``sigma`` is passed as a ``(batch,)`` tensor.
        sigmas: decreasing noise levels ``(L,)``.
        x: initial points ``(batch, *event)`` (NCSN: uniform or ``N(0, sigma_1^2)``).
        step_size: ``eps``; level ``i`` uses ``eps_i = eps sigma_i^2 / sigma_L^2``.
        n_steps_each: Langevin steps ``M`` per level.
        denoise: finish with the Tweedie step ``x + sigma_L^2 s(x, sigma_L)``.

    Returns the final ``x`` (same shape).  Approximate: ULA at each level.
    """
    if not isinstance(sigmas, torch.Tensor) or sigmas.dim() != 1 or sigmas.numel() < 1:
        raise ShapeError(f"sigmas must be a 1-D tensor of noise levels; got {sigmas!r}")
    if not bool((sigmas > 0).all()) or not bool((sigmas[:-1] >= sigmas[1:]).all()):
        raise ParameterError("sigmas must be positive and non-increasing (sigma_1 > ... > sigma_L)")
    if not (isinstance(step_size, (int, float)) and step_size > 0):
        raise ParameterError(f"step_size must be > 0; got {step_size!r}")
    check_int(n_steps_each, "n_steps_each", 1)
    sig = sigmas.to(x)
    last = sig[-1]
    batch = x.shape[:1]
    for i in tqdm(range(sig.numel()), disable=not progress, leave=False):
        s_i = sig[i]
        eps = step_size * (s_i / last) ** 2
        sb = s_i.expand(batch)
        for _ in range(n_steps_each):
            x = x + eps * score_fn(x, sb) + (2 * eps).sqrt() * torch.randn_like(x)
    if denoise:
        x = x + last**2 * score_fn(x, last.expand(batch))
    return x


def geometric_betas(num_steps: int, power: float = 4.0) -> torch.Tensor:
    """``beta_k = (k/K)^power``, ``k = 0..K`` (float64): dense near 0 where the path changes fastest."""
    check_int(num_steps, "num_steps", 1)
    return torch.linspace(0, 1, num_steps + 1, dtype=torch.float64) ** power


class AnnealedTarget(Target):
    """``log pi_beta(x) = (1 - beta) log pi_0(x) + beta log gamma(x)`` (seed 001 eq. 71).

    ``beta`` is a plain attribute so one kernel can follow the whole path.
    ``base`` needs ``log_prob``; a :class:`~fokker.targets.Target` or a torch
    distribution with event shape ``(dim,)``.
    """

    def __init__(self, target: Target, base, beta: float = 0.0) -> None:
        super().__init__(target.dim, None, f"annealed:{target.name}")
        self.target = target
        self.base = base
        self.beta = beta

    def reference_tensor(self) -> torch.Tensor | None:
        return self.target.reference_tensor()

    def base_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.base, Target):
            return self.base.log_prob_unchecked(x)
        return self.base.log_prob(x)

    def _log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return (1 - self.beta) * self.base_log_prob(x) + self.beta * self.target.log_prob_unchecked(x)

    def _score(self, x: torch.Tensor) -> torch.Tensor:
        from .kernels import log_prob_and_grad

        _, g_t = log_prob_and_grad(self.target, x)
        if isinstance(self.base, Target):
            _, g_0 = log_prob_and_grad(self.base, x)
        else:
            with torch.enable_grad():
                xg = x.detach().requires_grad_(True)
                (g_0,) = torch.autograd.grad(self.base.log_prob(xg).sum(), xg)
        return (1 - self.beta) * g_0 + self.beta * g_t


@dataclass
class AISResult:
    """Output of :class:`AIS` / :class:`SMC`.

    Attributes:
        samples: ``(N, dim)`` final particles (weighted by ``log_weights``).
        log_weights: ``(N,)`` unnormalized final log-weights.
        log_Z: estimate of ``log Z`` (``log`` of an unbiased ``Z_hat``).
        log_Z_se: its standard error (delta method; see the module docstring).
        ess: effective sample size ``(sum w)^2 / sum w^2`` of the final weights.
        acceptance: mean acceptance of the MCMC moves, per temperature ``(K,)``.
        num_resampling: number of resampling events (SMC; 0 for AIS).
    """

    samples: torch.Tensor
    log_weights: torch.Tensor
    log_Z: float
    log_Z_se: float
    ess: float
    acceptance: torch.Tensor
    num_resampling: int = 0


def _log_mean_exp(lw: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return torch.logsumexp(lw, dim) - math.log(lw.shape[dim])


def _se_of_log_mean(lw: torch.Tensor) -> torch.Tensor:
    """Delta-method SE of ``log mean exp(lw)``: ``sd(w) / (sqrt(n) mean(w))``."""
    w = (lw - lw.max()).exp()
    n = lw.numel()
    return w.std() / (math.sqrt(n) * w.mean())


class _Annealer:
    def __init__(
        self,
        target: Target | Callable,
        base,
        betas: torch.Tensor | int,
        kernel: Kernel | None,
        num_mcmc_steps: int,
        adapt_step_size: bool,
        dim: int | None,
        step_size_spread: float = 0.0,
    ) -> None:
        self.target = as_target(target, dim)
        if not hasattr(base, "log_prob") or not hasattr(base, "sample"):
            raise TypeError("base must have log_prob and sample (a Target with exact samples or a torch distribution)")
        self.base = base
        betas = geometric_betas(betas) if isinstance(betas, int) else torch.as_tensor(betas, dtype=torch.float64)
        if betas.dim() != 1 or betas.numel() < 2:
            raise ShapeError(f"betas must be a 1-D tensor with at least 2 entries; got shape {tuple(betas.shape)}")
        if float(betas[0]) != 0.0 or float(betas[-1]) != 1.0 or not bool((betas[1:] > betas[:-1]).all()):
            raise ParameterError("betas must increase strictly from 0 to 1")
        self.betas = betas
        self.kernel = kernel if kernel is not None else HMC(step_size=0.1, num_steps=5, adapt_step_size=False, adapt_metric=False)
        if self.kernel.step_size is None:
            raise ParameterError("the kernel needs a step_size for annealing (e.g. HMC(step_size=0.1, num_steps=5))")
        self.num_mcmc_steps = check_int(num_mcmc_steps, "num_mcmc_steps", 0)
        self.adapt = adapt_step_size
        if not (isinstance(step_size_spread, (int, float)) and step_size_spread >= 0):
            raise ParameterError(f"step_size_spread must be a number >= 0; got {step_size_spread!r}")
        self.step_size_spread = float(step_size_spread)
        self._eps = self.kernel.step_size
        self.path = AnnealedTarget(self.target, base)

    def _draw_base(self, n: int) -> torch.Tensor:
        x = self.base.sample((n,))
        if x.shape[-1] != self.target.dim:
            raise ShapeError(f"base samples must have shape (N, {self.target.dim}); got {tuple(x.shape)}")
        return x

    def _move(self, x: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
        self.path.beta = beta
        k = self.kernel.bind(self.path)
        if self.num_mcmc_steps == 0:
            return x, torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
        state = k.init(x)
        acc = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        eps = torch.as_tensor(self._eps, dtype=x.dtype, device=x.device)
        for _ in range(self.num_mcmc_steps):
            if self.step_size_spread > 0:
                # per-particle step sizes drawn independently of the state: a mixture of
                # pi_k-invariant kernels, so still pi_k-invariant; small steps reach narrow regions
                u = torch.rand(x.shape[0], dtype=x.dtype, device=x.device)
                k._step_size = eps * torch.exp(-self.step_size_spread * u)
            else:
                k._step_size = eps
            k._eps_host = None
            state, info = k.step(state)
            acc = acc + info.accept_prob.nan_to_num(0.0)
        acc = acc / self.num_mcmc_steps
        if self.adapt and k.metropolis:
            self._eps = eps * torch.exp(acc.mean() - k.target_accept)
        return state.x, acc

    def _log_ratio(self, x: torch.Tensor) -> torch.Tensor:
        return self.target.log_prob_unchecked(x) - self.path.base_log_prob(x)


class AIS(_Annealer):
    """Annealed importance sampling on the geometric path (see the module docstring).

    Args:
        target: unnormalized target ``gamma`` (a Target or a log-prob callable with ``dim``).
        base: normalized ``pi_0`` with ``sample`` and ``log_prob`` (a Target with exact
            samples or a torch distribution over ``(dim,)``).
        betas: increasing ``(K+1,)`` schedule from 0 to 1, or ``K`` for :func:`geometric_betas`.
        kernel: MCMC kernel with a fixed step size (default ``HMC(step_size=0.1, num_steps=5)``).
        num_mcmc_steps: kernel transitions per temperature.
        adapt_step_size: adapt the kernel's step size along the path (off by default).
        step_size_spread: ``s >= 0``; each particle and move draws its own step size
            ``eps * exp(-s U)``, ``U ~ U(0, 1)``, independently of the state (a mixture of
            invariant kernels, so exactness is kept); helps targets with narrow regions
            (the funnel's neck).

    Example::

        >>> import torch, fokker
        >>> from torch.distributions import MultivariateNormal
        >>> target = fokker.targets.CallableTarget(lambda x: -0.5 * (x ** 2).sum(-1), dim=2)
        >>> base = MultivariateNormal(torch.zeros(2), 4 * torch.eye(2))
        >>> res = AIS(target, base, 20).run(1000, progress=False)
        >>> abs(res.log_Z - math.log(2 * math.pi)) < 5 * res.log_Z_se + 0.05
        True
    """

    def __init__(
        self,
        target,
        base,
        betas,
        kernel: Kernel | None = None,
        num_mcmc_steps: int = 1,
        adapt_step_size: bool = False,
        step_size_spread: float = 0.0,
        dim: int | None = None,
    ) -> None:
        super().__init__(target, base, betas, kernel, num_mcmc_steps, adapt_step_size, dim, step_size_spread)

    def run(self, num_particles: int, seed: int | None = None, progress: bool = True) -> AISResult:
        """Run ``num_particles`` independent AIS chains; see :class:`AISResult`."""
        check_int(num_particles, "num_particles", 1)
        gen_ctx = _seeded(seed, self.target)
        with gen_ctx:
            x = self._draw_base(num_particles)
            lw = torch.zeros(num_particles, dtype=x.dtype, device=x.device)
            accs = []
            b = self.betas.tolist()
            for k in tqdm(range(1, len(b)), disable=not progress, leave=False, desc="AIS"):
                lw = lw + (b[k] - b[k - 1]) * self._log_ratio(x)
                x, acc = self._move(x, b[k])
                accs.append(acc.mean())
        lw = torch.where(torch.isnan(lw), torch.full_like(lw, -math.inf), lw)
        return _result(x, lw, _log_mean_exp(lw), _se_of_log_mean(lw), torch.stack(accs), 0)


class SMC(_Annealer):
    """Sequential Monte Carlo sampler on the geometric path with ESS-triggered resampling.

    Same arguments as :class:`AIS` plus ``resample_threshold`` (resample a
    group when its ESS < threshold * group size) and ``num_groups``
    (independent particle systems used for the standard error of ``log_Z``).
    """

    def __init__(
        self,
        target,
        base,
        betas,
        kernel: Kernel | None = None,
        num_mcmc_steps: int = 1,
        resample_threshold: float = 0.5,
        num_groups: int = 8,
        adapt_step_size: bool = False,
        step_size_spread: float = 0.0,
        dim: int | None = None,
    ) -> None:
        super().__init__(target, base, betas, kernel, num_mcmc_steps, adapt_step_size, dim, step_size_spread)
        if not (0.0 <= resample_threshold <= 1.0):
            raise ParameterError(f"resample_threshold must lie in [0, 1]; got {resample_threshold!r}")
        self.resample_threshold = resample_threshold
        self.num_groups = check_int(num_groups, "num_groups", 1)

    def run(self, num_particles: int, seed: int | None = None, progress: bool = True) -> AISResult:
        """Run ``num_particles`` particles (split into ``num_groups`` groups); see :class:`AISResult`."""
        check_int(num_particles, "num_particles", 1)
        g = self.num_groups
        if num_particles % g != 0:
            raise ParameterError(f"num_particles ({num_particles}) must be a multiple of num_groups ({g})")
        n = num_particles // g
        with _seeded(seed, self.target):
            x = self._draw_base(num_particles)
            d = x.shape[-1]
            logW = torch.full((g, n), -math.log(n), dtype=x.dtype, device=x.device)  # normalized per group
            log_z = torch.zeros(g, dtype=x.dtype, device=x.device)
            n_res = torch.zeros((), dtype=torch.long, device=x.device)
            accs = []
            b = self.betas.tolist()
            for k in tqdm(range(1, len(b)), disable=not progress, leave=False, desc="SMC"):
                inc = ((b[k] - b[k - 1]) * self._log_ratio(x)).reshape(g, n)
                inc = torch.where(torch.isnan(inc), torch.full_like(inc, -math.inf), inc)
                lw = logW + inc
                step = torch.logsumexp(lw, -1)  # log sum_i W_i exp(inc_i)
                log_z = log_z + step
                logW = lw - step.unsqueeze(-1)
                ess = 1.0 / torch.exp(torch.logsumexp(2 * logW, -1))  # (g,)
                need = ess < self.resample_threshold * n
                idx = _systematic(logW)  # (g, n)
                keep = torch.arange(n, device=x.device).expand(g, n)
                idx = torch.where(need.unsqueeze(-1), idx, keep)
                xg = x.reshape(g, n, d)
                x = torch.gather(xg, 1, idx.unsqueeze(-1).expand(g, n, d)).reshape(g * n, d)
                logW = torch.where(need.unsqueeze(-1), torch.full_like(logW, -math.log(n)), logW)
                n_res = n_res + need.sum()
                x, acc = self._move(x, b[k])
                accs.append(acc.mean())
        # each group's Z_hat_g = exp(log_z_g) is unbiased; combine by their mean
        lz = _log_mean_exp(log_z)
        se = _se_of_log_mean(log_z) if g > 1 else torch.tensor(float("nan"))
        lw_final = (logW + log_z.unsqueeze(-1) - math.log(g)).reshape(-1)
        return _result(x, lw_final, lz, se, torch.stack(accs), int(n_res))


def _systematic(logW: torch.Tensor) -> torch.Tensor:
    """Systematic resampling indices ``(g, n)`` from normalized log-weights ``(g, n)``."""
    g, n = logW.shape
    cdf = torch.cumsum(logW.exp(), -1)
    cdf = cdf / cdf[:, -1:]
    u = (torch.rand(g, 1, dtype=logW.dtype, device=logW.device) + torch.arange(n, dtype=logW.dtype, device=logW.device)) / n
    return torch.searchsorted(cdf, u).clamp(max=n - 1)


def _result(x, lw, log_z, se, accs, n_res) -> AISResult:
    w = (lw - lw.max()).exp()
    ess = float(w.sum() ** 2 / (w * w).sum())
    lz = float(log_z)
    if not math.isfinite(lz):
        raise NonFiniteError("the log_Z estimate is not finite (all weights are zero or NaN); check the base and schedule")
    return AISResult(x, lw, lz, float(se), ess, accs, n_res)


class _seeded:
    """Fork torch's RNG and seed it (no-op when ``seed`` is None)."""

    def __init__(self, seed: int | None, target: Target) -> None:
        self.seed = seed
        ref = target.reference_tensor()
        self.devices = [ref.device] if ref is not None and ref.device.type == "cuda" else []
        self._ctx = None

    def __enter__(self):
        if self.seed is not None:
            self._ctx = torch.random.fork_rng(devices=self.devices)
            self._ctx.__enter__()
            torch.manual_seed(self.seed)
        return self

    def __exit__(self, *exc):
        if self._ctx is not None:
            return self._ctx.__exit__(*exc)
        return False
