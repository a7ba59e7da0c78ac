"""Annealing: annealed Langevin dynamics, annealed importance sampling and SMC samplers.

* :func:`annealed_langevin` (Song & Ermon 2019, "Generative modeling by estimating
  gradients of the data distribution", Algorithm 1; seed 002 eq. 25): for noise levels
  ``l_1, ..., l_L`` run ``M`` Langevin steps at each level,
  ``x <- x + eps_i s(x, l_i) + sqrt(2 eps_i) z``, optionally after rescaling ``x`` by
  ``r_i``.  NCSN's rule ``eps_i = eps sigma_i^2 / sigma_L^2`` is :func:`ncsn_step_sizes`
  (the paper writes the update as ``x + alpha_i/2 s + sqrt(alpha_i) z``, i.e.
  ``alpha_i = 2 eps_i``); the diffusion sampler
  :func:`fokker.diffusion.samplers.annealed_langevin` is this function with SDE times as
  levels, ``eps_i = ratio * sigma(t_i)^2`` and ``r_i = alpha(t_i) / alpha(t_{i-1})``.
* :class:`AIS` (Neal 2001, "Annealed importance sampling", Statistics and Computing 11,
  eqs. (3)-(5); seed 001 eq. 71): geometric path
  ``pi_k(x) ∝ pi_0(x)^{1-beta_k} gamma(x)^{beta_k}``, ``0 = beta_0 < ... < beta_K = 1``.
  Particles ``x_0 ~ pi_0``; at step ``k`` the log-weight gains
  ``(beta_k - beta_{k-1}) (log gamma(x) - log pi_0(x))`` and ``x`` moves by an MCMC
  kernel leaving ``pi_k`` invariant.  ``Z_hat = mean_i w_i`` is unbiased for ``Z``.
* :class:`SMC` (Del Moral, Doucet & Jasra 2006, "Sequential Monte Carlo samplers",
  JRSS B 68, Sec. 3.3.2 and eq. (31)): the same path, with the particles resampled
  (systematic) whenever the ESS of the normalized weights falls below
  ``resample_threshold * N``.  ``log Z_hat`` accumulates ``log sum_i W_i exp(Delta_i)``.
  To get an honest standard error the particles form ``num_groups`` independent SMC
  systems (resampled within their group); ``Z_hat`` is the mean of the group estimates
  (still unbiased) and its standard error the delta-method error across groups.

Both return a :class:`fokker.importance.LogZEstimate` (``log_Z``, ``stderr``, ``ess`` as
a fraction in ``(0, 1]``; ``details`` holds the per-temperature ``acceptance`` and
``num_resampling``).  The MCMC moves use any :class:`~fokker.mcmc.kernels.Kernel`
(default one HMC step with 5 leapfrog steps).  With ``adapt_step_size=True`` the step
size follows the mean acceptance after every temperature (Robbins-Monro on ``log eps``,
restarting from the kernel's step size at every run); the tuning uses past particles
only, but it couples the particles, so keep it off when exact unbiasedness matters.
"""

from __future__ import annotations

import copy
import math
from typing import Callable

import torch

from .. import _random
from .._args import check_int
from .._progress import progress_bar
from ..errors import NonFiniteError, ParameterError, ShapeError
from ..importance import LogZEstimate, log_mean_exp, log_mean_exp_stderr
from ..targets.base import Target, as_target
from .kernels import HMC, Kernel, langevin_move
from .metric import Metric, regularized_covariance

__all__ = [
    "annealed_langevin", "ncsn_step_sizes", "AnnealedTarget", "AIS", "SMC", "AdaptiveSMC", "geometric_betas",
    "systematic_resampling",
]


def ncsn_step_sizes(sigmas: torch.Tensor, step_size: float = 2e-5) -> torch.Tensor:
    """NCSN's per-level Langevin steps ``eps_i = eps sigma_i^2 / sigma_L^2`` (Song & Ermon 2019, Algorithm 1).

    ``sigmas`` are the positive, non-increasing noise levels ``(L,)``; returns ``(L,)`` in their dtype.
    """
    if not isinstance(sigmas, torch.Tensor) or sigmas.dim() != 1 or sigmas.numel() < 1:
        raise ShapeError(f"sigmas must be a 1-D tensor of noise levels; got {sigmas!r}")
    if not bool((sigmas > 0).all()) or not bool((sigmas[:-1] >= sigmas[1:]).all()):
        raise ParameterError("sigmas must be positive and non-increasing (sigma_1 > ... > sigma_L)")
    if isinstance(step_size, bool) or not (isinstance(step_size, (int, float)) and math.isfinite(step_size) and step_size > 0):
        raise ParameterError(f"step_size must be > 0; got {step_size!r}")
    return step_size * (sigmas / sigmas[-1]) ** 2


def _per_level(value: torch.Tensor | float, num_levels: int, name: str, x: torch.Tensor, positive: bool) -> torch.Tensor:
    """``value`` as an ``(L,)`` tensor of ``x``'s dtype/device (a number is the same for every level)."""
    if isinstance(value, torch.Tensor):
        if value.shape != (num_levels,):
            raise ShapeError(f"{name} must have shape ({num_levels},) (one per level); got {tuple(value.shape)}")
        v = value.to(dtype=x.dtype, device=x.device)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        v = torch.full((num_levels,), float(value), dtype=x.dtype, device=x.device)
    else:
        raise TypeError(f"{name} must be a number or a ({num_levels},) tensor; got {type(value).__name__}")
    bad = ~torch.isfinite(v) | ((v <= 0) if positive else torch.zeros_like(v, dtype=torch.bool))
    if bool(bad.any()):
        raise ParameterError(f"{name} must be finite{' and > 0' if positive else ''}; got {value!r}")
    return v


def annealed_langevin(
    score_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    levels: torch.Tensor,
    x: torch.Tensor,
    step_sizes: torch.Tensor | float,
    num_steps: int = 100,
    *,
    rescale: torch.Tensor | None = None,
    denoise: bool = False,
    generator: torch.Generator | None = None,
    progress: bool | None = None,
) -> torch.Tensor:
    r"""Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1; seed 002 eq. 25).

    For each level ``i = 1..L``: ``x <- r_i x`` (when ``rescale`` is given), then ``num_steps``
    unadjusted Langevin steps (:func:`~fokker.mcmc.langevin_move`)

    .. math:: x \leftarrow x + \epsilon_i\, s(x, l_i) + \sqrt{2 \epsilon_i}\, z, \qquad z \sim N(0, I).

    Args:
        score_fn: ``score_fn(x, level) -> (batch, *event)``, the score of the level's
            density; ``level`` is passed as a ``(batch,)`` tensor.
        levels: ``(L,)`` what the score is conditioned on, in the order visited (NCSN: the
            noise sigmas ``sigma_1 > ... > sigma_L``; a diffusion model: the times ``t_i``).
        x: initial points ``(batch, *event)`` (NCSN: uniform or ``N(0, sigma_1^2)``).
        step_sizes: ``(L,)`` per-level ``eps_i > 0`` (or one number for all);
            :func:`ncsn_step_sizes` gives NCSN's ``eps sigma_i^2 / sigma_L^2``.
        num_steps: Langevin steps ``M >= 1`` per level.
        rescale: optional ``(L,)`` factors ``r_i`` applied before each level's steps.
        denoise: finish with the Tweedie step ``x + l_L^2 s(x, l_L)`` (NCSN, where the
            levels are noise standard deviations).
        generator: the ``torch.Generator`` of the Langevin noise.
        progress: tqdm bar over the levels (``None``: on a terminal only).

    Returns the final ``x`` (same shape).  Approximate: ULA at each level, a bias of order
    ``eps_i`` per level.  ``L * num_steps`` (+1 with ``denoise``) calls of ``score_fn``.
    """
    if not isinstance(x, torch.Tensor) or x.dim() < 1:
        raise ShapeError(f"x must be a tensor of shape (batch, *event); got {x!r}")
    if not isinstance(levels, torch.Tensor) or levels.dim() != 1 or levels.numel() < 1:
        raise ShapeError(f"levels must be a 1-D tensor (L,) of noise levels or times; got {levels!r}")
    check_int(num_steps, "num_steps", 1)
    num_levels = levels.numel()
    eps = _per_level(step_sizes, num_levels, "step_sizes", x, positive=True)
    scale = None if rescale is None else _per_level(rescale, num_levels, "rescale", x, positive=False)
    lv = levels.to(dtype=x.dtype, device=x.device)
    batch = x.shape[:1]
    for i in progress_bar(range(num_levels), progress=progress, desc="annealed Langevin"):
        if scale is not None:
            x = scale[i] * x
        level = lv[i].expand(batch)
        for _ in range(num_steps):
            x = langevin_move(x, score_fn(x, level), eps[i], _random.randn_like(x, generator))
    if denoise:
        last = lv[-1]
        x = x + last**2 * score_fn(x, last.expand(batch))
    return x


def geometric_betas(num_steps: int, power: float = 4.0) -> torch.Tensor:
    """``beta_k = (k/K)^power``, ``k = 0..K`` (float64): dense near 0 where the path changes fastest."""
    check_int(num_steps, "num_steps", 1)
    return torch.linspace(0, 1, num_steps + 1, dtype=torch.float64) ** power


class AnnealedTarget(Target):
    """``log pi_beta(x) = (1 - beta) log pi_0(x) + beta log gamma(x)``: Neal (2001) eq. (4), seed 001 eq. 71.

    ``beta`` is a plain attribute so one kernel can follow the whole path: a number, or a
    ``(N,)`` tensor with one temperature per point of an ``(N, dim)`` batch (particle systems
    that anneal at their own pace, :class:`AdaptiveSMC`).  ``base`` needs ``log_prob``; a
    :class:`~fokker.targets.Target` or a torch distribution with event shape ``(dim,)``.
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
        beta = self.beta.unsqueeze(-1) if isinstance(self.beta, torch.Tensor) else self.beta
        return (1 - beta) * g_0 + beta * g_t


def _reference_device(target: Target) -> torch.device:
    ref = target.reference_tensor()
    return ref.device if ref is not None else torch.device("cpu")


class _Annealer:
    """The parts AIS and SMC share: the path, the schedule, the base draw and the MCMC move."""

    def __init__(
        self,
        target: Target | Callable,
        base,
        betas: torch.Tensor | int | None,
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
        shape = tuple(getattr(base, "event_shape", (self.target.dim,)))
        if isinstance(base, Target) and base.dim != self.target.dim or not isinstance(base, Target) and shape != (self.target.dim,):
            got = base.dim if isinstance(base, Target) else shape
            raise ShapeError(
                f"base must be a distribution over R^{self.target.dim} (the space of target {self.target.name!r}); "
                f"got {'dim' if isinstance(base, Target) else 'event_shape'} {got}"
            )
        if betas is not None:  # None: the schedule is chosen on the fly (AdaptiveSMC)
            betas = geometric_betas(betas) if isinstance(betas, int) else torch.as_tensor(betas, dtype=torch.float64)
            if betas.dim() != 1 or betas.numel() < 2:
                raise ShapeError(f"betas must be a 1-D tensor with at least 2 entries; got shape {tuple(betas.shape)}")
            if float(betas[0]) != 0.0 or float(betas[-1]) != 1.0 or not bool((betas[1:] > betas[:-1]).all()):
                raise ParameterError("betas must increase strictly from 0 to 1")
        self.betas = betas
        self.kernel = kernel if kernel is not None else HMC(step_size=0.1, num_steps=5, adapt_step_size=False, adapt_metric=False)
        if not isinstance(self.kernel, Kernel):
            raise TypeError(f"kernel must be a fokker.mcmc Kernel; got {type(self.kernel).__name__}")
        if self.kernel.step_size is None:
            raise ParameterError("the kernel needs a step_size for annealing (e.g. HMC(step_size=0.1, num_steps=5))")
        self.num_mcmc_steps = check_int(num_mcmc_steps, "num_mcmc_steps", 0)
        self.adapt = adapt_step_size
        if not (isinstance(step_size_spread, (int, float)) and step_size_spread >= 0):
            raise ParameterError(f"step_size_spread must be a number >= 0; got {step_size_spread!r}")
        self.step_size_spread = float(step_size_spread)
        self.path = AnnealedTarget(self.target, base)

    def _start(self, num_particles: int, generator: torch.Generator | None, seed: int | None):
        """``(x_0 ~ pi_0, generator, kernel)`` of one run: the kernel is a copy bound to the path."""
        check_int(num_particles, "num_particles", 1)
        device = _reference_device(self.target)
        gen = _random.make_generator(generator, seed, device)
        with _random.rng_scope(gen, [device]):
            x = self.base.sample((num_particles,))
        if x.dim() != 2 or x.shape[-1] != self.target.dim:
            raise ShapeError(f"base samples must have shape (N, {self.target.dim}); got {tuple(x.shape)}")
        kernel = copy.copy(self.kernel).bind(self.path)
        kernel.generator = gen
        return x, gen, kernel

    def _move(
        self, kernel: Kernel, x: torch.Tensor, beta: float, eps: torch.Tensor, evals: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``num_mcmc_steps`` transitions leaving ``pi_beta`` invariant: ``(x, acceptance, next eps, evals)``."""
        self.path.beta = beta
        if self.num_mcmc_steps == 0:
            return x, torch.ones(x.shape[0], dtype=x.dtype, device=x.device), eps, evals
        state = kernel.init(x)
        evals = evals + 1
        acc = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for _ in range(self.num_mcmc_steps):
            if self.step_size_spread > 0:
                # per-particle step sizes drawn independently of the state: a mixture of
                # pi_k-invariant kernels, so still pi_k-invariant; small steps reach narrow regions
                u = _random.rand((x.shape[0],), generator=kernel.generator, dtype=x.dtype, device=x.device)
                kernel.set_step_size(eps * torch.exp(-self.step_size_spread * u), check=False)
            else:
                kernel.set_step_size(eps, check=False)
            state, info = kernel.step(state)
            acc = acc + info.accept_prob.nan_to_num(0.0)
            evals = evals + info.num_steps
        acc = acc / self.num_mcmc_steps
        if self.adapt and kernel.metropolis:
            eps = eps * torch.exp(acc.mean() - kernel.target_accept)
        return state.x, acc, eps, evals

    def _log_ratio(self, x: torch.Tensor) -> torch.Tensor:
        return self.target.log_prob_unchecked(x) - self.path.base_log_prob(x)

    @staticmethod
    def _first_nan(first: torch.Tensor, inc: torch.Tensor, k: int) -> torch.Tensor:
        """Per particle, the first temperature step ``k`` whose log-ratio was NaN (0: none yet); no sync."""
        return torch.where((first == 0) & torch.isnan(inc), torch.full_like(first, k), first)

    def _raise_on_nan(self, first: torch.Tensor) -> None:
        """A NaN ``log gamma`` on the path is an error, not a zero weight (``-inf`` is a zero weight)."""
        hit = first > 0
        if bool(hit.any()):
            k = int(first[hit].min())
            raise NonFiniteError(
                f"target {self.target.name!r}: log_prob is NaN at {int(hit.sum())} of {first.numel()} particles on the "
                f"annealing path (first at temperature step {k}, beta = {float(self.betas[k]):.4g}); a NaN is not a "
                f"zero weight: return -inf outside the support, or check the target's parameters"
            )


class AIS(_Annealer):
    """Annealed importance sampling (Neal 2001, eqs. (3)-(5)) on the geometric path; see the module docstring.

    Args:
        target: unnormalized target ``gamma`` (a Target or a log-prob callable with ``dim``).
        base: normalized ``pi_0`` with ``sample`` and ``log_prob`` (a Target with exact
            samples or a torch distribution over ``(dim,)``).
        betas: increasing ``(K+1,)`` schedule from 0 to 1, or ``K`` for :func:`geometric_betas`.
        kernel: MCMC kernel with a fixed step size (default ``HMC(step_size=0.1, num_steps=5)``);
            each run works on a copy.
        num_mcmc_steps: kernel transitions per temperature.
        adapt_step_size: adapt the kernel's step size along the path (off by default).
        step_size_spread: ``s >= 0``; each particle and move draws its own step size
            ``eps * exp(-s U)``, ``U ~ U(0, 1)``, independently of the state (a mixture of
            invariant kernels, so exactness is kept); helps targets with narrow regions
            (the funnel's neck).

    Example::

        >>> import math, torch, fokker
        >>> from torch.distributions import MultivariateNormal
        >>> target = fokker.targets.CallableTarget(lambda x: -0.5 * (x ** 2).sum(-1), dim=2)
        >>> base = MultivariateNormal(torch.zeros(2), 4 * torch.eye(2))
        >>> est = AIS(target, base, 20).run(1000, seed=0, progress=False)
        >>> abs(est.log_Z - math.log(2 * math.pi)) < 5 * est.stderr + 0.05
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

    def run(
        self,
        num_particles: int,
        *,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        progress: bool | None = None,
    ) -> LogZEstimate:
        """Run ``num_particles`` independent AIS chains.

        Returns a :class:`~fokker.importance.LogZEstimate` from the final log weights
        (``samples`` the final particles; ``details``: ``acceptance`` per temperature ``(K,)``,
        ``num_resampling = 0``).  ``seed`` is shorthand for a generator seeded with it.
        """
        x, gen, kernel = self._start(num_particles, generator, seed)
        lw = torch.zeros(num_particles, dtype=x.dtype, device=x.device)
        evals = torch.zeros(num_particles, dtype=torch.long, device=x.device)
        eps = torch.as_tensor(self.kernel.step_size, dtype=x.dtype, device=x.device)
        accs = []
        first_nan = torch.zeros(num_particles, dtype=torch.long, device=x.device)
        b = self.betas.tolist()
        for k in progress_bar(range(1, len(b)), progress=progress, desc="AIS"):
            inc = (b[k] - b[k - 1]) * self._log_ratio(x)
            first_nan = self._first_nan(first_nan, inc, k)
            lw = lw + inc
            evals = evals + 1
            x, acc, eps, evals = self._move(kernel, x, b[k], eps, evals)
            accs.append(acc.mean())
        self._raise_on_nan(first_nan)
        return LogZEstimate.from_log_weights(
            lw, samples=x, num_target_evals=int(evals.sum()),
            details={"acceptance": torch.stack(accs), "num_resampling": 0},
        )


class SMC(_Annealer):
    """Sequential Monte Carlo sampler (Del Moral, Doucet & Jasra 2006) on the geometric path with ESS-triggered resampling.

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

    def run(
        self,
        num_particles: int,
        *,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        progress: bool | None = None,
    ) -> LogZEstimate:
        """Run ``num_particles`` particles split into ``num_groups`` independent groups.

        Returns a :class:`~fokker.importance.LogZEstimate`: ``log_Z`` the log of the mean of
        the groups' unbiased ``Z`` estimates, ``stderr`` the delta-method error across groups
        (NaN with one group), ``ess`` the normalized ESS (a fraction) of the final particle
        weights ``log W_i + log Z_g + log n`` (``log_weights``, whose log-mean-exp is
        ``log_Z``), ``elbo = None``.  ``details``: ``acceptance`` per temperature,
        ``num_resampling`` (resampling events over all groups), ``group_log_Z`` ``(num_groups,)``.
        """
        g = self.num_groups
        check_int(num_particles, "num_particles", 1)
        if num_particles % g != 0:
            raise ParameterError(f"num_particles ({num_particles}) must be a multiple of num_groups ({g})")
        n = num_particles // g
        x, gen, kernel = self._start(num_particles, generator, seed)
        d = x.shape[-1]
        logW = torch.full((g, n), -math.log(n), dtype=x.dtype, device=x.device)  # normalized per group
        log_z = torch.zeros(g, dtype=x.dtype, device=x.device)
        n_res = torch.zeros((), dtype=torch.long, device=x.device)
        evals = torch.zeros(num_particles, dtype=torch.long, device=x.device)
        eps = torch.as_tensor(self.kernel.step_size, dtype=x.dtype, device=x.device)
        accs = []
        first_nan = torch.zeros(num_particles, dtype=torch.long, device=x.device)
        b = self.betas.tolist()
        for k in progress_bar(range(1, len(b)), progress=progress, desc="SMC"):
            inc = (b[k] - b[k - 1]) * self._log_ratio(x)
            first_nan = self._first_nan(first_nan, inc, k)
            inc = inc.reshape(g, n)
            evals = evals + 1
            inc = torch.where(torch.isnan(inc), torch.full_like(inc, -math.inf), inc)  # reported after the loop
            lw = logW + inc
            step = torch.logsumexp(lw, -1)  # log sum_i W_i exp(inc_i)
            log_z = log_z + step
            logW = lw - step.unsqueeze(-1)
            ess = 1.0 / torch.exp(torch.logsumexp(2 * logW, -1))  # (g,)
            need = ess < self.resample_threshold * n
            idx = _systematic(logW, gen)  # (g, n)
            keep = torch.arange(n, device=x.device).expand(g, n)
            idx = torch.where(need.unsqueeze(-1), idx, keep)
            xg = x.reshape(g, n, d)
            x = torch.gather(xg, 1, idx.unsqueeze(-1).expand(g, n, d)).reshape(g * n, d)
            logW = torch.where(need.unsqueeze(-1), torch.full_like(logW, -math.log(n)), logW)
            n_res = n_res + need.sum()
            x, acc, eps, evals = self._move(kernel, x, b[k], eps, evals)
            accs.append(acc.mean())
        self._raise_on_nan(first_nan)
        # each group's Z_hat_g = exp(log_z_g) is unbiased; combine by their mean
        log_Z = float(log_mean_exp(log_z.double()))
        if not math.isfinite(log_Z):
            raise NonFiniteError("the SMC log_Z estimate is not finite (all weights are zero or NaN); check the base and schedule")
        lw_final = (logW + log_z.unsqueeze(-1) + math.log(n)).reshape(-1)
        lw64 = lw_final.double()
        ess_fraction = float(torch.exp(2 * torch.logsumexp(lw64, 0) - torch.logsumexp(2 * lw64, 0)) / num_particles)
        return LogZEstimate(
            log_Z=log_Z,
            stderr=log_mean_exp_stderr(log_z) if g > 1 else math.nan,
            ess=ess_fraction,
            elbo=None,
            num_samples=num_particles,
            num_target_evals=int(evals.sum()),
            log_weights=lw_final.detach(),
            samples=x.detach(),
            details={"acceptance": torch.stack(accs), "num_resampling": int(n_res), "group_log_Z": log_z.detach()},
        )


class AdaptiveSMC(_Annealer):
    """Adaptive-tempered SMC sampler, optionally waste-free, on the geometric path.

    Tempering (Jasra, Stephens, Doucet & Tsagaris 2011, *Inference for Lévy-driven stochastic
    volatility models via adaptive sequential Monte Carlo*, Scand. J. Stat. 38, sec. 3.2): from
    ``beta`` the next temperature ``beta' = beta + delta`` solves, by bisection,

    .. math:: \\mathrm{ESS}(\\delta) = \\frac{(\\sum_i w_i)^2}{n \\sum_i w_i^2} = \\rho, \\qquad
              w_i = \\exp\\{\\delta [\\log\\gamma(x_i) - \\log\\pi_0(x_i)]\\}

    (the conditional ESS of Zhou, Johansen & Aston 2016, eq. 3.16, which equals the ESS here since
    the particles are resampled at every temperature), or ``delta = 1 - beta`` when that keeps the
    ESS above ``rho``.  Then ``log Z_hat += log mean_i w_i``, the particles are resampled
    (systematic) and moved by MCMC kernels leaving ``pi_beta'`` invariant.

    Moves: ``num_mcmc_steps`` kernel transitions of every particle, or with ``waste_free=True``
    (Dau & Chopin 2022, *Waste-free sequential Monte Carlo*, JRSS B 84, Algorithm 2) only
    ``n / chain_length`` particles are resampled and each runs a chain of ``chain_length - 1``
    transitions whose every state is kept: ``n`` particles again, at the cost of
    ``n (chain_length - 1) / chain_length`` transitions per temperature.

    Kernel tuning from the current particles (the tuning uses past particles only; the estimator
    stays consistent, Buchholz, Chopin & Jacob 2021): with ``adapt_metric`` the kernel's diagonal
    inverse mass matrix is the particles' variance after resampling (pooled over the groups), and
    with ``adapt_step_size`` each group's step size follows its mean acceptance (Robbins-Monro on
    ``log eps`` towards the kernel's ``target_accept``).

    The particles form ``num_groups`` systems, each with its own temperature sequence, resampling
    and step size; ``log Z_hat`` is the log of the mean of the groups' ``Z`` estimates and its
    standard error the delta-method error across groups (as :class:`SMC`).  The groups are
    independent except through the pooled metric (with ``adapt_metric``); adaptive tempering
    itself makes each group's estimate consistent rather than exactly unbiased (Beskos, Jasra,
    Kantas & Thiery 2016), so the standard error describes the spread, not a bias.

    Args:
        target: unnormalized ``gamma`` (a Target or a log-prob callable with ``dim``).
        base: normalized ``pi_0`` over ``R^dim`` with ``sample`` and ``log_prob``.
        kernel: MCMC kernel with a step size (default ``HMC(step_size=0.5, num_steps=5)``, in
            the units of the adapted metric).
        target_ess: ``rho`` in ``(0, 1)``.
        num_mcmc_steps: transitions per particle and temperature (``waste_free=False``).
        waste_free, chain_length: Dau & Chopin's variant and its chain length ``P``
            (``num_particles / num_groups`` must be a multiple of ``P``).
        num_groups: independent particle systems for the standard error.
        max_num_steps: cap on the number of temperatures (the last step then jumps to 1,
            which keeps the estimate unbiased but noisier; ``details["capped"]`` says so).
        step_size_spread: ``s >= 0``: each particle and transition draws its step size
            ``eps exp(-s U)``, ``U ~ U(0, 1)``, independently of the state (as :class:`AIS`).
    """

    def __init__(
        self,
        target,
        base,
        kernel: Kernel | None = None,
        target_ess: float = 0.5,
        num_mcmc_steps: int = 2,
        waste_free: bool = False,
        chain_length: int = 8,
        num_groups: int = 8,
        adapt_step_size: bool = True,
        adapt_metric: bool = True,
        max_num_steps: int = 2000,
        step_size_spread: float = 0.0,
        dim: int | None = None,
    ) -> None:
        if kernel is None:
            kernel = HMC(step_size=0.5, num_steps=5, adapt_step_size=False, adapt_metric=False)
        super().__init__(target, base, None, kernel, num_mcmc_steps, adapt_step_size, dim, step_size_spread)
        if not (isinstance(target_ess, float) and 0.0 < target_ess < 1.0):
            raise ParameterError(f"target_ess must be a float in (0, 1); got {target_ess!r}")
        self.target_ess = target_ess
        self.waste_free = bool(waste_free)
        self.chain_length = check_int(chain_length, "chain_length", 2 if waste_free else 1)
        self.num_groups = check_int(num_groups, "num_groups", 1)
        self.adapt_metric = bool(adapt_metric)
        self.max_num_steps = check_int(max_num_steps, "max_num_steps", 1)

    def _next_delta(self, log_ratio: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        """Per group ``delta`` ``(g,)`` with ``ESS(delta) = rho`` (bisection, 50 halvings; no host sync)."""
        room = 1.0 - beta

        def ess(delta: torch.Tensor) -> torch.Tensor:
            lw = delta.unsqueeze(-1) * log_ratio
            return torch.exp(2 * torch.logsumexp(lw, -1) - torch.logsumexp(2 * lw, -1)) / log_ratio.shape[-1]

        lo, hi = torch.zeros_like(room), room
        for _ in range(50):
            mid = 0.5 * (lo + hi)
            ok = ess(mid) >= self.target_ess
            lo, hi = torch.where(ok, mid, lo), torch.where(ok, hi, mid)
        done = ess(room) >= self.target_ess
        # a positive step even when one particle dominates (lo = 0): the smallest representable move
        tiny = torch.minimum(room, torch.full_like(room, 1e-12))
        return torch.where(done, room, torch.maximum(lo, tiny))

    def _tune_metric(self, kernel: Kernel, x: torch.Tensor) -> None:
        if self.adapt_metric:
            kernel.metric = Metric(regularized_covariance(x, dense=False))

    def run(
        self,
        num_particles: int,
        *,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        progress: bool | None = None,
    ) -> LogZEstimate:
        """Run ``num_particles`` particles in ``num_groups`` groups until every group reaches ``beta = 1``.

        Returns a :class:`~fokker.importance.LogZEstimate`: ``log_Z`` (log of the mean of the group
        estimates), ``stderr`` (across groups; NaN with one group), ``ess`` (the mean over groups of the
        normalized ESS of the last reweighting), ``samples`` (the final particles, equally weighted within
        a group), ``log_weights`` (each particle's group ``log Z``: their log-mean-exp is ``log_Z``),
        ``elbo = None``.  ``details``: ``betas`` (per group, the temperatures chosen), ``num_steps`` per
        group, ``acceptance`` (mean per temperature), ``group_log_Z``, ``capped``.

        Raises :class:`~fokker.errors.NonFiniteError` when ``log gamma`` is NaN at some particle (naming
        the temperature), or when a group's weights all vanish.
        """
        g = self.num_groups
        check_int(num_particles, "num_particles", 1)
        if num_particles % g != 0:
            raise ParameterError(f"num_particles ({num_particles}) must be a multiple of num_groups ({g})")
        n = num_particles // g
        if self.waste_free and n % self.chain_length != 0:
            raise ParameterError(
                f"waste-free SMC needs the particles per group ({n}) to be a multiple of chain_length ({self.chain_length})"
            )
        x, gen, kernel = self._start(num_particles, generator, seed)
        d = x.shape[-1]
        dt, dev = x.dtype, x.device
        beta = torch.zeros(g, dtype=dt, device=dev)
        log_z = torch.zeros(g, dtype=dt, device=dev)
        eps = torch.full((g,), float(self.kernel.step_size), dtype=dt, device=dev)
        evals = torch.zeros((), dtype=torch.long, device=dev)
        history, accs, last_ess = [beta.clone()], [], torch.ones(g, dtype=dt, device=dev)
        capped = False
        bar = progress_bar(total=None, progress=progress, desc="adaptive SMC")
        num = 0
        while bool((beta < 1).any()):
            num += 1
            lr = self._log_ratio(x).reshape(g, n)
            evals = evals + num_particles
            if bool(torch.isnan(lr).any()):
                bad = torch.isnan(lr)
                raise NonFiniteError(
                    f"target {self.target.name!r}: log_prob is NaN at {int(bad.sum())} of {num_particles} particles at "
                    f"temperature step {num} (beta up to {float(beta.max()):.4g}); e.g. x = {x.reshape(g, n, d)[bad][0].tolist()}"
                )
            if num >= self.max_num_steps:
                delta, capped = 1.0 - beta, True
            else:
                delta = self._next_delta(lr, beta)
            lw = delta.unsqueeze(-1) * lr
            lse = torch.logsumexp(lw, -1)
            if not bool(torch.isfinite(lse).all()):
                raise NonFiniteError(f"all particle weights of a group vanished at temperature step {num}; check the base covers the target")
            log_z = log_z + lse - math.log(n)
            last_ess = torch.exp(2 * lse - torch.logsumexp(2 * lw, -1)) / n
            beta = torch.where(delta >= 1.0 - beta, torch.ones_like(beta), beta + delta)
            history.append(beta.clone())
            x, acc, eps, evals = self._resample_move(kernel, x.reshape(g, n, d), lw, beta, eps, evals, gen)
            accs.append(acc)
            bar.update(1)
        bar.close()
        log_Z = float(log_mean_exp(log_z.double()))
        steps = torch.stack(history)  # (num + 1, g); a group that finished early repeats 1
        betas = [steps[: int((steps[:, j] < 1).sum()) + 1, j].cpu() for j in range(g)]
        return LogZEstimate(
            log_Z=log_Z,
            stderr=log_mean_exp_stderr(log_z) if g > 1 else math.nan,
            ess=float(last_ess.mean()),
            elbo=None,
            num_samples=num_particles,
            num_target_evals=int(evals),
            log_weights=log_z.repeat_interleave(n).detach(),
            samples=x.detach(),
            details={
                "betas": betas, "num_steps": [len(b) - 1 for b in betas], "acceptance": torch.stack(accs) if accs else None,
                "group_log_Z": log_z.detach(), "capped": capped, "num_resampling": num * g,
            },
        )

    def _resample_move(self, kernel, xg, lw, beta, eps, evals, gen):
        """Resample each group by ``lw`` and move by MCMC at the groups' temperatures ``beta``."""
        g, n, d = xg.shape
        m = n // self.chain_length if self.waste_free else n
        idx = systematic_resampling(lw, m, generator=gen)  # (g, m)
        seeds = torch.gather(xg, 1, idx.unsqueeze(-1).expand(g, m, d)).reshape(g * m, d)
        self._tune_metric(kernel, seeds)
        self.path.beta = beta.repeat_interleave(m)
        if self.num_mcmc_steps == 0 and not self.waste_free:
            return seeds, torch.ones((), dtype=xg.dtype, device=xg.device), eps, evals
        per_particle = eps.repeat_interleave(m)
        state = kernel.init(seeds)
        evals = evals + g * m
        num_transitions = self.chain_length - 1 if self.waste_free else self.num_mcmc_steps
        kept = [seeds]
        acc = torch.zeros(g * m, dtype=xg.dtype, device=xg.device)
        for _ in range(num_transitions):
            if self.step_size_spread > 0:
                u = _random.rand((g * m,), generator=gen, dtype=xg.dtype, device=xg.device)
                kernel.set_step_size(per_particle * torch.exp(-self.step_size_spread * u), check=False)
            else:
                kernel.set_step_size(per_particle, check=False)
            state, info = kernel.step(state)
            acc = acc + info.accept_prob.nan_to_num(0.0)
            evals = evals + info.num_steps.sum()
            if self.waste_free:
                kept.append(state.x)
        acc = acc / num_transitions
        if self.adapt and kernel.metropolis:
            eps = eps * torch.exp(acc.reshape(g, m).mean(-1) - kernel.target_accept)
        if self.waste_free:  # (P, g, m, d) -> (g, P m, d): every state of every chain is a particle
            x = torch.stack(kept).reshape(self.chain_length, g, m, d).transpose(0, 1).reshape(g * n, d)
        else:
            x = state.x
        return x, acc.mean(), eps, evals


def systematic_resampling(
    log_weights: torch.Tensor, num_samples: int | None = None, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Systematic resampling (Kitagawa 1996; Douc, Cappé & Moulines 2005): ``num_samples`` indices per row.

    ``log_weights``: ``(n,)`` or ``(groups, n)`` log weights (normalized or not; ``-inf`` is a zero
    weight).  One uniform ``U`` per row; index ``j`` is drawn where the cumulative normalized weight
    first exceeds ``(U + j) / num_samples``.  Each index ``i`` appears ``floor`` or ``ceil`` of
    ``num_samples W_i`` times (unbiased, lower variance than multinomial).  Returns ``(num_samples,)`` or
    ``(groups, num_samples)`` ``long`` indices (default ``num_samples = n``).
    """
    single = log_weights.dim() == 1
    lw = log_weights.unsqueeze(0) if single else log_weights
    if lw.dim() != 2 or lw.shape[-1] < 1:
        raise ShapeError(f"log_weights must have shape (n,) or (groups, n); got {tuple(log_weights.shape)}")
    g, n = lw.shape
    m = n if num_samples is None else check_int(num_samples, "num_samples")
    w = torch.exp(lw - lw.max(-1, keepdim=True).values)
    cdf = torch.cumsum(w, -1)
    cdf = cdf / cdf[:, -1:]
    u0 = _random.rand((g, 1), generator=generator, dtype=lw.dtype, device=lw.device)
    u = (u0 + torch.arange(m, dtype=lw.dtype, device=lw.device)) / m
    idx = torch.searchsorted(cdf, u).clamp(max=n - 1)
    return idx[0] if single else idx


def _systematic(logW: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Systematic resampling indices ``(g, n)`` from normalized log-weights ``(g, n)``."""
    return systematic_resampling(logW, generator=generator)
