"""``fokker.mcmc.sample``: run many chains with Stan-style warm-up and return draws + diagnostics.

Warm-up (``warmup`` iterations, draws discarded), for Metropolis kernels:

1. an initial step size by the doubling/halving heuristic (Hoffman & Gelman
   2014, Algorithm 4, on the mean acceptance over chains);
2. dual averaging of the shared step size toward ``kernel.target_accept``
   at every warm-up iteration (:class:`~fokker.mcmc.adaptation.DualAveraging`);
3. Stan's windowed metric adaptation (:func:`~fokker.mcmc.adaptation.stan_windows`):
   at the end of each slow window the inverse mass matrix becomes the shrunk
   (co)variance of that window's draws pooled over all chains, then the step
   size heuristic and dual averaging restart.

Then ``num_samples`` draws per chain with the final (averaged) step size.
The loop keeps every quantity on the device; the host synchronises once per
warm-up iteration (the HMC trajectory length needs ``eps`` on the host) and
never during sampling with a fixed number of steps.
"""

from __future__ import annotations

import copy
import math
import random
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from .._args import check_int
from ..errors import NonFiniteError, ParameterError, ShapeError
from ..targets.base import Target, as_target
from . import diagnostics as diag
from .adaptation import DualAveraging, stan_windows
from .kernels import HMC, Kernel, State
from .metric import Metric, regularized_covariance

__all__ = ["MCMCResult", "sample", "find_reasonable_step_size"]

#: Leapfrog steps per HMC iteration before the first metric estimate (see ``_run``).
WARMUP_STEP_CAP = 32
#: A chain whose mean acceptance probability over a warm-up window is below this is "stuck".
STUCK_ACCEPT = 0.01


@dataclass
class MCMCResult:
    """Draws and diagnostics of :func:`sample`.

    Attributes:
        samples: ``(chains, draws, dim)`` unconstrained draws (NaN chains included, see ``nan_chains``).
        log_prob: ``(chains, draws)`` log density at the draws.
        accept_rate: ``(chains,)`` mean acceptance probability over the draws.
        step_size: final step size (scalar or ``(chains,)`` tensor).
        inv_mass: final inverse mass matrix (``(dim,)`` or ``(dim, dim)``).
        divergences: ``(chains,)`` number of divergent transitions while sampling.
        nan_chains: indices of chains whose state became non-finite (excluded from diagnostics).
        constrained: for ``from_pyro`` targets, named constrained draws ``(chains, draws, *shape)``.
        num_steps: leapfrog steps per draw (HMC; 1 otherwise), summed over the draws.
        time_s: wall time of warm-up and sampling.
        kernel: the adapted kernel (a copy; reuse it with ``warmup=0`` to draw more).
        warmup_resets: chains restarted during warm-up because they accepted nothing for a whole window.
    """

    samples: torch.Tensor
    log_prob: torch.Tensor
    accept_rate: torch.Tensor
    step_size: Any
    inv_mass: torch.Tensor | None
    divergences: torch.Tensor
    nan_chains: list[int]
    constrained: dict[str, torch.Tensor] | None = None
    num_steps: int = 0
    time_s: dict[str, float] = field(default_factory=dict)
    param_names: list[str] | None = None
    kernel: Kernel | None = None
    warmup_resets: int = 0

    # -------------------------------------------------------------- diagnostics
    @property
    def good_chains(self) -> torch.Tensor:
        keep = [c for c in range(self.samples.shape[0]) if c not in set(self.nan_chains)]
        return torch.tensor(keep, dtype=torch.long, device=self.samples.device)

    def _draws(self, draws: torch.Tensor | None) -> torch.Tensor:
        x = self.samples if draws is None else draws
        return x.index_select(0, self.good_chains)

    def ess_bulk(self, draws: torch.Tensor | None = None) -> torch.Tensor:
        """Bulk ESS per coordinate (finite chains only)."""
        return diag.ess_bulk(self._draws(draws))

    def ess_tail(self, draws: torch.Tensor | None = None) -> torch.Tensor:
        """Tail ESS per coordinate (finite chains only)."""
        return diag.ess_tail(self._draws(draws))

    def rhat(self, draws: torch.Tensor | None = None) -> torch.Tensor:
        """Rank-normalized split R-hat per coordinate (finite chains only)."""
        return diag.rhat(self._draws(draws))

    def named_draws(self) -> dict[str, torch.Tensor]:
        """``{name: (chains, draws)}`` per scalar parameter (constrained names for Pyro targets)."""
        out: dict[str, torch.Tensor] = {}
        if self.constrained is not None:
            c, n = self.samples.shape[:2]
            for name, v in self.constrained.items():
                flat = v.reshape(c, n, -1)
                shape = v.shape[2:]
                if len(shape) == 0:
                    out[name] = flat[..., 0]
                else:
                    for k in range(flat.shape[-1]):
                        idx = ",".join(str(int(i)) for i in torch.unravel_index(torch.tensor(k), shape))
                        out[f"{name}[{idx}]"] = flat[..., k]
            return out
        names = self.param_names or [f"x[{i}]" for i in range(self.samples.shape[-1])]
        return {nm: self.samples[..., i] for i, nm in enumerate(names)}

    def summary_table(self) -> list[dict[str, float | str]]:
        """Rows ``{name, mean, sd, mcse_mean, q5, q50, q95, ess_bulk, ess_tail, r_hat}``."""
        named = self.named_draws()
        names = list(named)
        x = self._draws(torch.stack([named[k] for k in names], -1)).double()
        flat = x.reshape(-1, x.shape[-1])
        q = torch.quantile(flat, torch.tensor([0.05, 0.5, 0.95], dtype=flat.dtype, device=flat.device), dim=0)
        stats = {
            "mean": flat.mean(0),
            "sd": flat.std(0),
            "mcse_mean": diag.mcse_mean(x),
            "q5": q[0],
            "q50": q[1],
            "q95": q[2],
            "ess_bulk": diag.ess_bulk(x),
            "ess_tail": diag.ess_tail(x),
            "r_hat": diag.rhat(x),
        }
        return [{"name": nm, **{k: float(v[i]) for k, v in stats.items()}} for i, nm in enumerate(names)]

    def summary(self, print_table: bool = True) -> str:
        """A table per parameter (mean, sd, MCSE, quantiles, bulk/tail ESS, R-hat); printed and returned."""
        rows = self.summary_table()
        cols = ["mean", "sd", "mcse_mean", "q5", "q50", "q95", "ess_bulk", "ess_tail", "r_hat"]
        w = max(8, *(len(r["name"]) for r in rows))  # type: ignore[arg-type]
        lines = [f"{'':<{w}} " + " ".join(f"{c:>10}" for c in cols)]
        for r in rows:
            cells = []
            for c in cols:
                v = float(r[c])
                cells.append(f"{v:>10.0f}" if c.startswith("ess") and math.isfinite(v) else f"{v:>10.4g}")
            lines.append(f"{r['name']:<{w}} " + " ".join(cells))
        acc = self.accept_rate.mean().item()
        lines.append(
            f"chains={self.samples.shape[0]} draws={self.samples.shape[1]} accept={acc:.3f} "
            f"divergences={int(self.divergences.sum())} nan_chains={self.nan_chains} warmup_resets={self.warmup_resets}"
        )
        text = "\n".join(lines)
        if print_table:
            print(text)
        return text


def find_reasonable_step_size(kernel: Kernel, state: State, eps0: torch.Tensor, max_iter: int = 60) -> torch.Tensor:
    """Doubling/halving heuristic (Hoffman & Gelman 2014, Alg. 4) on the mean acceptance over chains.

    Returns the largest tried ``eps`` whose mean acceptance probability exceeds 1/2
    (one host sync per trial proposal; the chains do not move).
    """

    def accept(eps: torch.Tensor) -> float:
        kernel._step_size, kernel._eps_host = eps, None  # unchecked: eps > 0 by construction
        _, info = kernel.step(state)
        return float(torch.nan_to_num(info.accept_prob, nan=0.0).mean())

    eps = eps0
    direction = 1 if accept(eps) > 0.5 else -1
    for _ in range(max_iter):
        new = eps * (2.0 if direction == 1 else 0.5)
        a = accept(new)
        if direction == 1 and a <= 0.5:
            return eps
        if direction == -1 and a > 0.5:
            return new
        eps = new
    return eps


def _initial_points(target: Target, num_chains: int, init: torch.Tensor | str | None, dtype, device) -> torch.Tensor:
    if init is None or isinstance(init, str):
        if hasattr(target, "init"):
            return target.init(num_chains) if init is None else target.init(num_chains, init)  # type: ignore[attr-defined]
        if init not in (None, "uniform"):
            raise ParameterError(f"init strategy {init!r} needs a target with an init() method (from_pyro); use 'uniform' or a tensor")
        return (torch.rand(num_chains, target.dim, dtype=dtype, device=device) * 4 - 2)
    if not isinstance(init, torch.Tensor):
        raise TypeError(f"init must be a torch.Tensor of shape ({num_chains}, {target.dim}); got {type(init).__name__}")
    if init.shape == (target.dim,):
        init = init.expand(num_chains, target.dim)
    if tuple(init.shape) != (num_chains, target.dim):
        raise ShapeError(f"init must have shape ({num_chains}, {target.dim}) or ({target.dim},); got {tuple(init.shape)}")
    return init.clone()


def sample(
    target: Target | Callable,
    kernel: Kernel | None = None,
    num_chains: int = 4,
    num_samples: int = 1000,
    warmup: int = 1000,
    *,
    seed: int = 0,
    init: torch.Tensor | str | None = None,
    thin: int = 1,
    progress: bool = True,
    dim: int | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> MCMCResult:
    """Run ``num_chains`` chains of ``kernel`` on ``target``; see the module docstring for warm-up.

    Args:
        target: a :class:`~fokker.targets.Target` (incl. ``from_pyro``) or a
            ``log_prob`` callable ``(chains, dim) -> (chains,)`` (then ``dim``).
        kernel: a :class:`~fokker.mcmc.kernels.Kernel` (default :class:`HMC`); it is bound to ``target``.
        init: ``(num_chains, dim)`` or ``(dim,)`` starting points, or a strategy name
            (``"uniform"``, ``"median"``, ``"feasible"``) for targets with an ``init``
            method (``from_pyro``); default: the target's own ``init`` (Pyro's
            ``init_to_uniform``) else uniform on ``(-2, 2)^dim``.
        seed: seeds torch's RNG inside a forked RNG state (the global state is untouched).

    Returns:
        :class:`MCMCResult`.  Raises :class:`~fokker.errors.NonFiniteError` if
        the log density or its gradient is not finite at the initial points.
        Chains whose state becomes non-finite are listed in ``nan_chains`` (a
        ``RuntimeWarning`` is issued) and left out of the diagnostics.
    """
    import time

    check_int(num_chains, "num_chains", 1)
    check_int(num_samples, "num_samples", 1)
    check_int(warmup, "warmup", 0)
    check_int(thin, "thin", 1)
    target = as_target(target, dim)
    kernel = HMC() if kernel is None else kernel
    if not isinstance(kernel, Kernel):
        raise TypeError(f"kernel must be a fokker.mcmc Kernel (HMC(), MALA(), ULA(...)); got {type(kernel).__name__}")
    # work on a copy: the caller's kernel keeps its settings; the adapted one is returned in the result
    kernel = copy.copy(kernel)
    if kernel.adapt_metric:
        kernel.metric = None
    if isinstance(kernel, HMC):
        kernel._rng = random.Random(seed)
    kernel.bind(target)
    ref = target.reference_tensor()
    dtype = dtype or (ref.dtype if ref is not None else (init.dtype if isinstance(init, torch.Tensor) else torch.get_default_dtype()))
    device = torch.device(device) if device is not None else (ref.device if ref is not None else (init.device if isinstance(init, torch.Tensor) else torch.device("cpu")))
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return _run(target, kernel, num_chains, num_samples, warmup, init, thin, progress, dtype, device, time.perf_counter)


def _run(target, kernel, num_chains, num_samples, warmup, init, thin, progress, dtype, device, clock) -> MCMCResult:
    t_start = clock()
    x0 = _initial_points(target, num_chains, init, dtype, device).to(dtype=dtype, device=device)
    state = kernel.init(x0)
    bad = ~(torch.isfinite(state.log_prob) & torch.isfinite(state.grad).all(-1))
    if bool(bad.any()):
        idx = torch.nonzero(bad).flatten().tolist()
        raise NonFiniteError(
            f"log_prob or its gradient is not finite at the initial point of chain(s) {idx[:10]}"
            f"{'...' if len(idx) > 10 else ''}; pass a different init"
        )

    # ---------------------------------------------------------------- warm-up
    windows = stan_windows(warmup) if kernel.adapt_metric else []
    win_end = {end for _, end in windows}
    win_start = {start for start, _ in windows}
    in_window = [any(s <= it < e for s, e in windows) for it in range(warmup)]
    kernel._metric_for(state.x)
    da = None
    if kernel.adapt_step_size and warmup > 0:
        eps0 = torch.as_tensor(kernel.step_size if kernel.step_size is not None else 0.5, dtype=dtype, device=device)
        eps = find_reasonable_step_size(kernel, state, eps0)
        da = DualAveraging(eps, kernel.target_accept)
        kernel._step_size, kernel._eps_host = eps, None
    elif kernel.step_size is None:
        raise ParameterError("step_size is None and adaptation is off (warmup=0 or adapt_step_size=False); give a step size")
    buf: list[torch.Tensor] = []
    # Until the first metric update the trajectory length is measured in the target's raw units,
    # where ``trajectory_length / eps`` can be huge for a badly scaled target: cap the steps.
    capped = isinstance(kernel, HMC) and bool(windows)
    if capped:
        kernel._step_cap = WARMUP_STEP_CAP
    bar = tqdm(total=warmup + num_samples * thin, desc="warmup", disable=not progress, leave=False)
    win_acc = torch.zeros(num_chains, dtype=dtype, device=device)
    resets = 0
    for it in range(warmup):
        if it in win_start:
            buf = []
            win_acc = torch.zeros_like(win_acc)
        state, info = kernel.step(state)
        win_acc = win_acc + info.accept_prob.nan_to_num(0.0)
        if da is not None:
            kernel._step_size, kernel._eps_host = da.update(info.accept_prob.mean()), None
        if in_window[it]:
            buf.append(state.x)
        if (it + 1) in win_end:
            draws = torch.stack(buf, 0)  # (window, chains, dim): within-chain (co)variance
            draws = draws.nan_to_num(0.0, posinf=0.0, neginf=0.0)
            # Chains that accepted (almost) nothing in the whole window are stuck where the shared
            # step size is far too large (e.g. started in a region of high curvature).  During
            # warm-up only, restart them from the current states of randomly chosen moving chains
            # and keep them out of the metric estimate.  (One host sync per window.)
            stuck = (win_acc / len(buf)) < STUCK_ACCEPT
            n_stuck = int(stuck.sum())
            if kernel.metropolis and 0 < n_stuck < num_chains:
                good = torch.nonzero(~stuck).flatten()
                donor = good[torch.randint(len(good), (num_chains,), device=device)]
                src = torch.where(stuck, donor, torch.arange(num_chains, device=device))
                state = State(state.x[src], state.log_prob[src], state.grad[src])
                draws = draws[:, good]
                resets += n_stuck
            kernel.metric = Metric(regularized_covariance(draws, kernel.dense))
            buf = []
            if capped:
                kernel._step_cap = None
            if da is not None:
                eps = find_reasonable_step_size(kernel, state, kernel._step_size)
                da.reset(eps)
                kernel._step_size, kernel._eps_host = eps, None
        bar.update(1)
    if da is not None:
        kernel._step_size, kernel._eps_host = da.final_step_size, None
    t_warm = clock()

    # --------------------------------------------------------------- sampling
    bar.set_description("sample")
    d = target.dim
    samples = torch.empty(num_chains, num_samples, d, dtype=dtype, device=device)
    log_probs = torch.empty(num_chains, num_samples, dtype=dtype, device=device)
    acc = torch.zeros(num_chains, dtype=dtype, device=device)
    div = torch.zeros(num_chains, dtype=torch.long, device=device)
    total_steps = 0
    for i in range(num_samples):
        for _ in range(thin):
            state, info = kernel.step(state)
            acc = acc + info.accept_prob.nan_to_num(0.0)
            div = div + info.divergent.long()
            total_steps += info.num_steps
            bar.update(1)
        samples[:, i] = state.x
        log_probs[:, i] = state.log_prob
    bar.close()
    t_end = clock()

    nonfinite = ~torch.isfinite(samples).all(-1).all(-1) | ~torch.isfinite(log_probs).all(-1)
    nan_chains = torch.nonzero(nonfinite).flatten().tolist()
    if nan_chains:
        warnings.warn(
            f"fokker.mcmc.sample: chain(s) {nan_chains} produced non-finite values; they are reported in "
            "result.nan_chains and left out of the diagnostics",
            RuntimeWarning,
            stacklevel=3,
        )
    constrained = None
    if hasattr(target, "constrain"):
        finite_x = torch.where(torch.isfinite(samples), samples, torch.zeros_like(samples))
        constrained = target.constrain(finite_x)  # type: ignore[attr-defined]
    return MCMCResult(
        samples=samples,
        log_prob=log_probs,
        accept_rate=acc / (num_samples * thin),
        step_size=kernel.step_size,
        inv_mass=kernel.metric.inv_mass if kernel.metric is not None else None,
        divergences=div,
        nan_chains=nan_chains,
        constrained=constrained,
        num_steps=total_steps,
        warmup_resets=resets,
        time_s={"warmup": t_warm - t_start, "sampling": t_end - t_warm, "total": t_end - t_start},
        param_names=getattr(target, "param_names", None) if constrained is None else None,
        kernel=kernel,
    )
