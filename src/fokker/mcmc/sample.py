"""``fokker.mcmc.sample``: run many chains of a kernel, warm-up included, and return draws + diagnostics.

The driver is a sequence of named steps and touches only the kernel's public
protocol (:mod:`fokker.mcmc.kernels`):

1. **initial points** ``(num_chains, dim)``: ``init``, the target's own ``init`` (Pyro
   models) or uniform on ``(-2, 2)^dim``;
2. **set-up**: ``kernel.setup(target, x0, warmup, generator)``;
3. **warm-up**: ``warmup`` calls of ``kernel.warmup_step`` (draws discarded), then
   ``kernel.end_warmup()``; for the Metropolis kernels this is Stan's adaptation
   (:class:`~fokker.mcmc.adaptation.WindowedAdaptation`: step-size search, dual
   averaging, windowed metric, stuck-chain restarts);
4. **sampling**: ``num_samples * thin`` calls of ``kernel.step``, keeping every
   ``thin``-th state and the per-chain statistics of its transition;
5. **result**: :class:`MCMCResult` with ``kernel.diagnostics()``.

The loops keep every quantity on the device; the host synchronises once per
warm-up iteration (the HMC trajectory length needs ``eps`` on the host) and
never during sampling with a fixed number of steps.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from .. import _random
from .._args import check_int
from .._progress import progress_bar
from ..errors import ConvergenceWarning, DeviceDtypeError, NonFiniteError, ParameterError, ShapeError
from ..targets.base import Target, as_target
from . import diagnostics as diag
from .kernels import HMC, Kernel, State, StepInfo

__all__ = ["MCMCResult", "sample", "initial_points"]

#: R-hat above which :func:`sample` warns (Vehtari et al. 2021)
MAX_RHAT = 1.01
#: fraction of divergent sampling transitions above which :func:`sample` warns
MAX_DIVERGENT = 0.01

#: fokker's per-draw statistic names -> ArviZ's (``InferenceData.sample_stats`` conventions)
_ARVIZ_STATS = {
    "divergent": "diverging",
    "num_steps": "n_steps",
    "accept_prob": "acceptance_rate",
}


@dataclass
class MCMCResult:
    """Draws and diagnostics of :func:`sample`.

    The diagnostics are those of Vehtari, Gelman, Simpson, Carpenter & Buerkner (2021),
    "Rank-normalization, folding, and localization", Bayesian Analysis 16(2): bulk / tail ESS
    and rank-normalized split R-hat (:mod:`fokker.mcmc.diagnostics`).

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
        sample_stats: ``{name: (chains, draws)}`` per-chain statistics of the transition that
            produced each draw (``accept_prob``, ``accepted``, ``energy_error``, ``divergent``,
            ``num_steps``, ``step_size`` and any kernel-specific ones, see
            :class:`~fokker.mcmc.StepInfo`).
        kernel_diagnostics: ``kernel.diagnostics()`` after sampling (step size, inverse
            mass, warm-up schedule and counts).
        target: the target that was sampled (for :meth:`to_arviz`'s observed data and
            pointwise log-likelihood of ``from_pyro`` targets).
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
    sample_stats: dict[str, torch.Tensor] = field(default_factory=dict)
    kernel_diagnostics: dict[str, Any] = field(default_factory=dict)
    target: Target | None = field(default=None, repr=False)

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

    def summary(self) -> str:
        """A table per parameter (mean, sd, MCSE, quantiles, bulk/tail ESS, R-hat) and a line of totals.

        Returns the text; nothing is printed (see :meth:`print_summary`).
        """
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
        return "\n".join(lines)

    def print_summary(self) -> None:
        """Print :meth:`summary`."""
        print(self.summary())

    def convergence_problems(self, max_rhat: float = MAX_RHAT, max_divergent_fraction: float = MAX_DIVERGENT) -> list[str]:
        """What is wrong with these draws, in words (an empty list when nothing is detected).

        * draws at ``|z| > 0.9 log(float max)`` in unconstrained space (``exp`` overflows there):
          chains that ran off to infinity, the mark of an improper posterior;
        * a rank-normalized split R-hat above ``max_rhat`` (Vehtari et al. 2021 recommend 1.01);
        * more than ``max_divergent_fraction`` of the sampling transitions divergent;
        * chains whose state became non-finite.

        :func:`sample` issues a :class:`~fokker.errors.ConvergenceWarning` with these messages.
        """
        out = []
        if self.nan_chains:
            out.append(
                f"chain(s) {self.nan_chains[:10]} produced non-finite values; they are reported in "
                "result.nan_chains and left out of the diagnostics"
            )
        good = self.good_chains
        if good.numel() == 0:
            return out
        x = self.samples.index_select(0, good)
        edge = 0.9 * math.log(torch.finfo(x.dtype).max)
        far = float(x.abs().max())
        if far > edge:
            out.append(
                f"draws reach |z| = {far:.3g} in unconstrained space, where exp overflows: the chains ran off to "
                "infinity; is the posterior proper? (a flat prior with a likelihood that does not pin the parameter "
                "down is not)"
            )
        if x.shape[1] >= 4:
            rh = torch.nan_to_num(diag.rhat(x), nan=math.inf)
            worst = int(rh.argmax())
            if not float(rh[worst]) <= max_rhat:
                names = getattr(self.target, "unconstrained_names", None) or self.param_names
                names = names or [f"x[{i}]" for i in range(x.shape[-1])]
                out.append(
                    f"max R-hat {float(rh[worst]):.4f} > {max_rhat} (at {names[worst]}): the chains have not converged; "
                    "run longer, reparameterize (from_pyro(..., reparam='noncentered')) or check the model"
                )
        div = self.sample_stats.get("divergent")
        if div is not None and div.numel():
            frac = float(div.index_select(0, good).float().mean())
            if frac > max_divergent_fraction:
                out.append(
                    f"{int(div.index_select(0, good).sum())} divergent transitions ({frac:.1%}): the step size is too "
                    "large for part of the posterior (a funnel?); raise target_accept or reparameterize"
                )
        return out

    # ------------------------------------------------------------------- ArviZ
    def to_arviz(self, log_likelihood: bool = True, chunk_size: int = 4096) -> Any:
        """The draws as an ArviZ ``InferenceData`` (Kumar, Carroll, Hartikainen & Martin 2019, JOSS 4(33)).

        Groups (chains whose state became non-finite, ``nan_chains``, are left out, as from the
        diagnostics):

        * ``posterior``: for ``from_pyro`` targets every latent and deterministic site under its
          name with its constrained shape ``(chain, draw, *shape)``; for targets with
          ``param_names`` one variable per name; otherwise ``x`` ``(chain, draw, dim)``;
        * ``sample_stats``: ArviZ's names for the per-draw statistics: ``diverging``,
          ``step_size``, ``n_steps``, ``acceptance_rate``, ``energy``, ``tree_depth``,
          ``energy_error``, ``lp`` (the log density), plus any other kernel statistic;
        * ``observed_data`` and, with ``log_likelihood=True``, ``log_likelihood`` (the
          pointwise ``log p(y_i | theta)`` of every observed site at every draw, evaluated in
          batches of ``chunk_size`` draws) for ``from_pyro`` targets, so ``az.loo`` / ``az.waic``
          work.

        Requires ``arviz`` (``pip install fokker[plot]``).
        """
        import numpy as np

        try:
            import arviz as az
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("MCMCResult.to_arviz needs arviz: pip install 'fokker[plot]'") from e
        keep = self.good_chains
        np_ = lambda t: t.index_select(0, keep).detach().cpu().numpy()  # noqa: E731
        if self.constrained is not None:
            posterior = {k: np_(v) for k, v in self.constrained.items()}
        elif self.param_names is not None:
            posterior = {k: np_(self.samples[..., i]) for i, k in enumerate(self.param_names)}
        else:
            posterior = {"x": np_(self.samples)}
        stats = {_ARVIZ_STATS.get(k, k): np_(v) for k, v in self.sample_stats.items()}
        stats["lp"] = np_(self.log_prob)
        if "step_size" not in stats:
            eps = torch.as_tensor(self.step_size, dtype=self.samples.dtype, device=self.samples.device)
            stats["step_size"] = np_(eps.expand(self.samples.shape[:2]) if eps.dim() == 0 else eps[:, None].expand(self.samples.shape[:2]))
        groups: dict[str, Any] = {"posterior": posterior, "sample_stats": stats}
        observed = getattr(self.target, "observed", None)
        if observed:
            groups["observed_data"] = {k: v.detach().cpu().numpy() for k, v in observed.items()}
            if log_likelihood and hasattr(self.target, "log_likelihood"):
                z = self.samples.index_select(0, keep)
                flat = z.reshape(-1, z.shape[-1])
                parts = [self.target.log_likelihood(flat[i : i + chunk_size]) for i in range(0, flat.shape[0], chunk_size)]
                groups["log_likelihood"] = {
                    k: torch.cat([p[k] for p in parts]).reshape(*z.shape[:2], *parts[0][k].shape[1:]).cpu().numpy()
                    for k in parts[0]
                }
        dims = {k: [f"{k}_dim_{i}" for i in range(v.ndim)] for k, v in groups.get("observed_data", {}).items()}
        return az.from_dict(**groups, dims=dims or None)

    def plot(self, kind: str = "trace", var_names: list[str] | None = None, path: str | None = None, **kwargs: Any) -> Any:
        """A diagnostic plot made by ArviZ; returns the matplotlib ``Figure`` (saved to ``path`` if given).

        ``kind``: ``"trace"`` (``az.plot_trace``: densities and traces per chain), ``"rank"``
        (``az.plot_rank``: rank histograms, flat when the chains mix), ``"pair"``, ``"energy"``
        (marginal energy vs energy transition, for E-BFMI) or ``"forest"``.  ``var_names`` selects
        variables; other keyword arguments go to the ArviZ function.  No matplotlib import is
        needed on the caller's side.
        """
        import arviz as az
        import numpy as np

        funcs = {"trace": az.plot_trace, "rank": az.plot_rank, "pair": az.plot_pair, "energy": az.plot_energy,
                 "forest": az.plot_forest}
        if kind not in funcs:
            raise ParameterError(f"kind must be one of {sorted(funcs)}; got {kind!r}")
        idata = self.to_arviz(log_likelihood=False)
        args = {} if kind == "energy" else {"var_names": var_names}
        axes = funcs[kind](idata, **args, **kwargs)
        fig = np.asarray(axes).flat[0].get_figure()
        if path is not None:
            fig.savefig(path, bbox_inches="tight")
        return fig


# ------------------------------------------------------------------ the driver
def _resolve_dtype_device(
    target: Target, init: object, dtype: torch.dtype | None, device: torch.device | str | None
) -> tuple[torch.dtype, torch.device]:
    """The chains' dtype and device: given, else the target's, else a tensor ``init``'s, else the defaults."""
    ref = target.reference_tensor()
    given = init if isinstance(init, torch.Tensor) and init.is_floating_point() else None
    if dtype is None:
        dtype = ref.dtype if ref is not None else (given.dtype if given is not None else torch.get_default_dtype())
    elif not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise DeviceDtypeError(f"dtype must be a floating torch.dtype; got {dtype!r}")
    if device is None:
        device = ref.device if ref is not None else (given.device if given is not None else torch.device("cpu"))
    return dtype, torch.device(device)


def initial_points(
    target: Target,
    num_chains: int,
    init: torch.Tensor | str | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Starting points ``(num_chains, dim)`` of :func:`sample`.

    ``init`` is a ``(num_chains, dim)`` or ``(dim,)`` tensor of the chains' dtype and device
    (a ``(dim,)`` point starts every chain there), a strategy name (``"uniform"``,
    ``"median"``, ``"feasible"``) for targets with an ``init`` method (``from_pyro``), or
    ``None``: the target's own ``init`` (Pyro's ``init_to_uniform``) else uniform on
    ``(-2, 2)^dim``, drawn from ``generator``.

    Raises :class:`~fokker.errors.DeviceDtypeError` for a tensor of another dtype (an
    integer tensor included) or device, :class:`~fokker.errors.ShapeError` for a wrong
    shape and :class:`~fokker.errors.NonFiniteError` naming the chains whose point is not finite.
    """
    dtype, device = _resolve_dtype_device(target, init, dtype, device)
    if init is None or isinstance(init, str):
        if hasattr(target, "init"):
            with _random.rng_scope(generator, [device]):
                x = target.init(num_chains) if init is None else target.init(num_chains, init)  # type: ignore[attr-defined]
            return x.to(dtype=dtype, device=device)
        if init not in (None, "uniform"):
            raise ParameterError(f"init strategy {init!r} needs a target with an init() method (from_pyro); use 'uniform' or a tensor")
        return _random.rand((num_chains, target.dim), generator=generator, dtype=dtype, device=device) * 4 - 2
    if not isinstance(init, torch.Tensor):
        raise TypeError(f"init must be a torch.Tensor of shape ({num_chains}, {target.dim}); got {type(init).__name__}")
    if init.dtype != dtype or init.device != device:
        raise DeviceDtypeError(
            f"init has dtype {init.dtype} on {init.device}; expected the floating dtype {dtype} on {device} "
            "(the target's, or the dtype/device arguments): convert it with init.to(...)"
        )
    if init.shape == (target.dim,):
        init = init.expand(num_chains, target.dim)
    if tuple(init.shape) != (num_chains, target.dim):
        raise ShapeError(f"init must have shape ({num_chains}, {target.dim}) or ({target.dim},); got {tuple(init.shape)}")
    bad = ~torch.isfinite(init).all(-1)
    if bool(bad.any()):
        idx = torch.nonzero(bad).flatten().tolist()
        raise NonFiniteError(f"init contains NaN or inf in chain(s) {idx[:10]}{'...' if len(idx) > 10 else ''}")
    return init.clone()


class _Draws:
    """The sampling phase's record: kept states, per-draw statistics and running totals over all transitions."""

    def __init__(self, num_chains: int, num_samples: int, dim: int, dtype: torch.dtype, device: torch.device) -> None:
        self.samples = torch.empty(num_chains, num_samples, dim, dtype=dtype, device=device)
        self.log_prob = torch.empty(num_chains, num_samples, dtype=dtype, device=device)
        self.accept = torch.zeros(num_chains, dtype=dtype, device=device)
        self.divergences = torch.zeros(num_chains, dtype=torch.long, device=device)
        self.num_steps = torch.zeros(num_chains, dtype=torch.long, device=device)
        self.transitions = 0
        self.stats: dict[str, torch.Tensor] = {}

    def add_transition(self, info: StepInfo) -> None:
        self.accept = self.accept + info.accept_prob.nan_to_num(0.0)
        self.divergences = self.divergences + info.divergent.long()
        self.num_steps = self.num_steps + info.num_steps
        self.transitions += 1

    def add_draw(self, i: int, state: State, info: StepInfo) -> None:
        self.samples[:, i] = state.x
        self.log_prob[:, i] = state.log_prob
        for name, value in info.stats().items():
            if name not in self.stats:
                self.stats[name] = torch.empty(*self.log_prob.shape, dtype=value.dtype, device=value.device)
            self.stats[name][:, i] = value


def _warm_up(kernel: Kernel, state: State, warmup: int, bar: Any) -> State:
    for _ in range(warmup):
        state, _ = kernel.warmup_step(state)
        bar.update(1)
    kernel.end_warmup()
    return state


def _draw(kernel: Kernel, state: State, draws: _Draws, num_samples: int, thin: int, bar: Any) -> State:
    for i in range(num_samples):
        for _ in range(thin):
            state, info = kernel.step(state)
            draws.add_transition(info)
            bar.update(1)
        draws.add_draw(i, state, info)
    return state


def _warn_if_not_converged(result: MCMCResult) -> MCMCResult:
    problems = result.convergence_problems()
    if problems:
        warnings.warn("fokker.mcmc.sample: " + "; ".join(problems), ConvergenceWarning, stacklevel=3)
    return result


def _result(target: Target, kernel: Kernel, draws: _Draws, time_s: dict[str, float]) -> MCMCResult:
    samples, log_probs = draws.samples, draws.log_prob
    nonfinite = ~torch.isfinite(samples).all(-1).all(-1) | ~torch.isfinite(log_probs).all(-1)
    nan_chains = torch.nonzero(nonfinite).flatten().tolist()
    constrained = None
    if hasattr(target, "constrain"):
        finite_x = torch.where(torch.isfinite(samples), samples, torch.zeros_like(samples))
        constrained = target.constrain(finite_x)  # type: ignore[attr-defined]
    info = kernel.diagnostics()
    return MCMCResult(
        samples=samples,
        log_prob=log_probs,
        accept_rate=draws.accept / draws.transitions,
        step_size=info["step_size"],
        inv_mass=info["inv_mass"],
        divergences=draws.divergences,
        nan_chains=nan_chains,
        constrained=constrained,
        num_steps=int(draws.num_steps.max()),
        warmup_resets=int(info.get("warmup_resets", 0)),
        time_s=time_s,
        param_names=getattr(target, "param_names", None) if constrained is None else None,
        kernel=kernel,
        sample_stats=draws.stats,
        kernel_diagnostics=info,
        target=target,
    )


def sample(
    target: Target | Callable,
    kernel: Kernel | None = None,
    num_chains: int = 4,
    num_samples: int = 1000,
    warmup: int = 1000,
    *,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    init: torch.Tensor | str | None = None,
    thin: int = 1,
    progress: bool | None = None,
    dim: int | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> MCMCResult:
    """Run ``num_chains`` chains of ``kernel`` on ``target``; see the module docstring for the steps.

    Args:
        target: a :class:`~fokker.targets.Target` (incl. ``from_pyro``) or a
            ``log_prob`` callable ``(chains, dim) -> (chains,)`` (then ``dim``).
        kernel: a :class:`~fokker.mcmc.kernels.Kernel` (default :class:`HMC`); a copy
            is set up and adapted (the caller's kernel is not changed) and returned in the result.
        num_chains, num_samples, warmup: chains, kept draws per chain, warm-up iterations.
        generator: the ``torch.Generator`` of every random number (initial points, kernel,
            adaptation); ``None`` uses the global RNG.
        seed: shorthand for ``generator=torch.Generator(device).manual_seed(seed)``.
        init: see :func:`initial_points`.
        thin: keep every ``thin``-th state.
        progress: tqdm bar (``None``: on a terminal only).
        dtype, device: of the chains (default: the target's, else a tensor ``init``'s).

    Returns:
        :class:`MCMCResult`.  The same ``seed`` (or an equally seeded generator) gives the
        same draws, and the global RNG state is left untouched.  Raises
        :class:`~fokker.errors.NonFiniteError` if the log density or its gradient is not
        finite at the initial points; chains whose state becomes non-finite are listed
        in ``nan_chains`` (a :class:`~fokker.errors.ConvergenceWarning`, a ``RuntimeWarning``, is issued, as for
        R-hat above 1.01, divergences above 1% and chains that ran off to infinity: see
        :meth:`MCMCResult.convergence_problems`) and left out of the diagnostics.
    """
    check_int(num_chains, "num_chains", 1)
    check_int(num_samples, "num_samples", 1)
    check_int(warmup, "warmup", 0)
    check_int(thin, "thin", 1)
    target = as_target(target, dim)
    kernel = HMC() if kernel is None else kernel
    if not isinstance(kernel, Kernel):
        raise TypeError(f"kernel must be a fokker.mcmc Kernel (HMC(), MALA(), ULA(...)); got {type(kernel).__name__}")
    kernel = copy.copy(kernel)  # the caller's kernel keeps its settings; the adapted copy is returned
    dtype, dev = _resolve_dtype_device(target, init, dtype, device)
    generator = _random.make_generator(generator, seed, dev)

    t_start = time.perf_counter()
    x0 = initial_points(target, num_chains, init, dtype, dev, generator=generator)
    state = kernel.setup(target, x0, warmup, generator)
    with progress_bar(total=warmup + num_samples * thin, progress=progress, desc="warmup") as bar:
        state = _warm_up(kernel, state, warmup, bar)
        t_warm = time.perf_counter()
        bar.set_description("sample")
        draws = _Draws(num_chains, num_samples, target.dim, dtype, dev)
        _draw(kernel, state, draws, num_samples, thin, bar)
    t_end = time.perf_counter()
    times = {"warmup": t_warm - t_start, "sampling": t_end - t_warm, "total": t_end - t_start}
    return _warn_if_not_converged(_result(target, kernel, draws, times))
