"""One discrete-time machinery for DDS, PIS and DIS.

A sampler is a Gaussian Markov chain ``y_0 -> y_1 -> ... -> y_K`` (the
*generative* direction, noise to target) with learned kernels
``q_k(y_{k+1} | y_k) = N(m_k(y_k), s_k^2 I)``, and a *target path measure* ``P*``
whose last marginal is ``pi = gamma / Z``:

.. math:: P^*(y_{0:K}) = \\pi(y_K) \\prod_k B_k(y_k | y_{k+1}) \\quad\\text{(times an initial factor)}.

The importance weight of a generated path is the discrete Radon-Nikodym derivative

.. math:: \\log w = \\log \\frac{\\gamma(y_K) \\prod_k B_k(y_k|y_{k+1})}{p_0(y_0) \\prod_k q_k(y_{k+1}|y_k)}

so that ``E_Q[w] = Z`` exactly (for every discretization: the weights are those
of the discrete chain, not a time-continuous approximation).  Hence

* ``E_Q[log w] = log Z - KL(Q || P*) <= log Z`` (the ELBO of Vargas, Grathwohl & Doucet 2023,
  sec. 3, in discrete time; seed 001 eqs. 79-83); ``log mean w`` is a consistent estimate of
  ``log Z`` (IS);
* ``E_{P*}[log w] = log Z + KL(P* || Q) >= log Z`` (EUBO) when ``pi`` can be sampled.

Subclasses provide the initial law, the learned kernel mean/std, the target kernel
log-density and the terminal factor (see the hooks of :class:`DiffusionSampler`).
Losses (per sample, averaged over a batch of fresh paths):

* ``"kl"`` -- reverse KL ``E_Q[-log w]``, reparameterized through the whole
  discretization (gradient through the target's ``log_prob`` at ``y_K``);
* ``"lv"`` -- log-variance ``Var(log w)`` on *detached* paths (Richter & Berner
  2024; Nusken & Richter 2021): no gradient through the target and no backprop
  through the simulation.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from .._args import reference_tensor, check_int
from .._gaussian import isotropic_normal_log_prob
from .._progress import progress_bar
from .._random import randn_like, rng_scope
from ..errors import DeviceDtypeError, NoExactSamplesError, NonFiniteError, ParameterError
from ..importance import LogZEstimate
from ..targets.base import Target, as_target

__all__ = ["DiffusionSampler", "net_like_target", "controlled_gaussian_step"]

LOSSES = ("kl", "lv")

#: paths simulated at once by ``sample`` / ``log_Z`` / ``eubo_log_weights`` (memory bound)
DEFAULT_BATCH_SIZE = 4096


def net_like_target(net: nn.Module, target: Target) -> nn.Module:
    """``net`` moved to the dtype and device of ``target`` (a default network follows its target)."""
    ref = target.reference_tensor()
    return net if ref is None else net.to(dtype=ref.dtype, device=ref.device)


def _check_net_like_target(net: nn.Module, target: Target) -> None:
    if not isinstance(net, nn.Module):
        raise ParameterError(f"net must be a torch.nn.Module (the control network); got {type(net).__name__}")
    ref, own = target.reference_tensor(), reference_tensor(net)
    if ref is None or own is None:
        return
    if own.dtype != ref.dtype or own.device != ref.device:
        raise DeviceDtypeError(
            f"net has dtype {own.dtype} on {own.device} but target {target.name!r} has dtype {ref.dtype} on "
            f"{ref.device}; the sampler's states are the network's, so both must agree: pass "
            f"net.to({ref.dtype}) or move the target with target.to(...)"
        )


def controlled_gaussian_step(
    mean_ref: torch.Tensor, delta: torch.Tensor, std: torch.Tensor, noise: torch.Tensor, detach: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """``y' = mean_ref + delta + std * noise`` and ``log N(y'; mean_ref, std^2) - log N(y'; mean_ref + delta, std^2)``.

    The kernel of DDS and PIS: a reference Gaussian step shifted by the control ``delta``.  The
    log-density ratio is ``-|delta|^2 / (2 std^2) - delta . noise / std`` (the normalizers cancel).
    With ``detach`` the end point is cut from the graph and ``noise`` is recomputed from it as
    ``(y' - mean_ref - delta) / std``, so the ratio is differentiated at the fixed end point
    (log-variance loss) rather than along the reparameterized path.
    """
    y_next = mean_ref + delta + std * noise
    if detach:
        y_next = y_next.detach()
        noise = (y_next - mean_ref - delta) / std
    inc = -(delta * delta).sum(-1) / (2 * std * std) - (delta * noise).sum(-1) / std
    return y_next, inc


class DiffusionSampler(nn.Module):
    """Base class of the learned diffusion samplers :class:`~fokker.samplers.DDS`,
    :class:`~fokker.samplers.PIS` and :class:`~fokker.samplers.DIS` (see the module docstring).

    The discrete-time importance weight and its bounds follow Vargas, Grathwohl & Doucet
    (2023, *Denoising diffusion samplers*, sec. 3) and Berner, Richter & Ullrich (2024, *An
    optimal control perspective on diffusion-based generative modeling*, sec. 3); the
    log-variance loss is that of Richter & Berner (2024, *Improved sampling via learned
    diffusions*, sec. 3).  No equation of these papers is used beyond the Radon-Nikodym
    derivative written in the module docstring.

    Args:
        target: a :class:`fokker.targets.Target` (or a log-density callable, with ``dim``).
        times: float64 grid ``(K + 1,)`` from :func:`fokker.sde.time_grid`.
        net: control network ``net(x, t_normalized, feature) -> (num_samples, dim)``; it must
            have the dtype and device of the target (:class:`~fokker.errors.DeviceDtypeError`
            otherwise): the sampler's states are the network's.
        loss: ``"kl"`` or ``"lv"``.
    """

    def __init__(self, target: Target, times: torch.Tensor, net: nn.Module, loss: str = "kl") -> None:
        super().__init__()
        if loss not in LOSSES:
            raise ParameterError(f"loss must be one of {LOSSES}; got {loss!r}")
        target = as_target(target)
        _check_net_like_target(net, target)
        object.__setattr__(self, "target", target)  # not a submodule: never trained
        self.dim = self.target.dim
        self.net = net
        self.loss_type = loss
        self.times = times.to(torch.float64)
        self.num_steps = self.times.numel() - 1
        self.T = float(self.times[-1])
        self._tables: dict[tuple[torch.device, torch.dtype], dict[str, torch.Tensor]] = {}
        self._checked = False

    # ------------------------------------------------------------ device/dtype
    def _apply(self, fn: Any, recurse: bool = True) -> "DiffusionSampler":
        super()._apply(fn, recurse)
        self.target._apply(fn)
        return self

    def reference_tensor(self) -> torch.Tensor:
        """A tensor with the sampler's dtype and device: the network's (checked against the
        target's, which raises :class:`~fokker.errors.DeviceDtypeError` on a mismatch), else the target's."""
        _check_net_like_target(self.net, self.target)
        own = reference_tensor(self.net)
        if own is not None:
            return own
        ref = self.target.reference_tensor()
        return ref if ref is not None else torch.zeros((), dtype=torch.get_default_dtype())

    def coefficient_tables(self) -> dict[str, torch.Tensor]:
        """Float64 per-step coefficients (subclasses): each value shape ``(K,)`` or ``(K + 1,)``."""
        raise NotImplementedError

    def tables_like(self, like: torch.Tensor) -> dict[str, torch.Tensor]:
        """:meth:`coefficient_tables` cast to the dtype and device of ``like`` (cached per dtype/device):
        the ``tab`` argument of the kernel hooks."""
        key = (like.device, like.dtype)
        if key not in self._tables:
            self._tables[key] = {k: v.to(device=like.device, dtype=like.dtype) for k, v in self.coefficient_tables().items()}
        return self._tables[key]

    # ----------------------------------------------------------------- hooks
    def init_sample(
        self, num_samples: int, like: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``y_0`` ``(num_samples, dim)`` from the initial law."""
        raise NotImplementedError

    def init_log_weight(self, y0: torch.Tensor) -> torch.Tensor:
        """Initial factor of ``log w`` (e.g. ``-log p_0(y_0)``); ``(num_samples,)``."""
        raise NotImplementedError

    def model_kernel(self, k: int, y: torch.Tensor, tab: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean ``(num_samples, dim)`` and 0-d std of the learned kernel ``q_k(. | y_k)``."""
        raise NotImplementedError

    def target_kernel_log_prob(
        self, k: int, y: torch.Tensor, y_next: torch.Tensor, tab: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """Log-density of the target-side kernel for step ``k`` (``B_k`` or the reference kernel); ``(num_samples,)``."""
        raise NotImplementedError

    def target_kernel_sample(
        self, k: int, y_next: torch.Tensor, tab: dict[str, torch.Tensor], generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Sample ``y_k`` given ``y_{k+1}`` under the target path measure (for the EUBO)."""
        raise NotImplementedError

    def terminal_log_weight(self, yK: torch.Tensor, log_gamma: torch.Tensor) -> torch.Tensor:
        """Terminal factor of ``log w`` given ``log gamma(y_K)``; ``(num_samples,)``."""
        raise NotImplementedError

    def feature(self, k: int, y: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
        """Network input feature from the target score at ``y_k`` (default: the score itself)."""
        return score

    # ------------------------------------------------------------- machinery
    def _score(self, y: torch.Tensor) -> torch.Tensor:
        return self.target.score_unchecked(y.detach())

    def control(self, k: int, y: torch.Tensor) -> torch.Tensor:
        """Network output ``f_theta(y, t_k)`` at step ``k``; ``(num_samples, dim)``."""
        tab = self.tables_like(y)
        feat = self.feature(k, y, self._score(y))
        return self.net(y, tab["t_norm"][k], feat)

    def rollout_context(self, like: torch.Tensor) -> dict[str, Any]:
        """What one rollout computes once: the tables (``"tab"``, and every ``(K,)``/``(K + 1,)``
        table unbound into per-step 0-d tensors under its own name) and, for a network with
        ``time_terms`` (:class:`PISGradNet`), its time-only parts on the whole grid (``"time_terms"``)."""
        tab = self.tables_like(like)
        ctx: dict[str, Any] = {"tab": tab}
        for name, v in tab.items():
            ctx[name] = v.unbind(0) if v.dim() == 1 else v
        time_terms = getattr(self.net, "time_terms", None)
        if callable(time_terms):
            code_bias, gain, weight_x = time_terms(tab["t_norm"])
            ctx["time_terms"] = (code_bias.unbind(0), gain.unbind(0), weight_x)
        return ctx

    def control_in(self, k: int, y: torch.Tensor, ctx: dict[str, Any], score: torch.Tensor | None = None) -> torch.Tensor:
        """:meth:`control` inside a rollout: the network's time terms come from ``ctx`` (same value,
        one pass per rollout instead of one per step); ``score`` is the target score at ``y``
        when the caller has it already."""
        feat = self.feature(k, y, self._score(y) if score is None else score)
        terms = ctx.get("time_terms")
        if terms is None:
            return self.net(y, ctx["t_norm"][k], feat)
        return self.net.forward_with_time_terms(y, terms[0][k], terms[1][k], terms[2], feat)

    def evaluate(self, k: int, y: torch.Tensor, ctx: dict[str, Any]) -> Any:
        """What step ``k`` needs at the state ``y_k`` and what step ``k - 1`` may need at its end
        point (e.g. the control there); computed once per state.  Default: nothing."""
        return None

    def step(
        self, k: int, y: torch.Tensor, ev: Any, noise: torch.Tensor, ctx: dict[str, Any], detach: bool
    ) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """One step of the generative chain: ``(y_{k+1}, log-weight increment, evaluate(k + 1, y_{k+1}))``.

        ``ev`` is :meth:`evaluate` at ``y_k`` and ``noise`` a standard normal draw like ``y``.
        The increment is ``log B_k(y_k | y_{k+1}) - log q_k(y_{k+1} | y_k)``.  This default is
        written with the kernel hooks; samplers override it with a fused form of the same value.
        """
        tab = ctx["tab"]
        mean, std = self.model_kernel(k, y, tab)
        y_next = mean + std * noise
        if detach:
            y_next = y_next.detach()
        inc = self.target_kernel_log_prob(k, y, y_next, tab) - isotropic_normal_log_prob(y_next, mean, std)
        return y_next, inc, None

    def rollout(
        self,
        num_samples: int,
        *,
        detach: bool = False,
        return_path: bool = False,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Simulate ``num_samples`` generative paths; return ``(y_K, log w)`` of shapes
        ``(num_samples, dim)``, ``(num_samples,)``.

        ``detach=True`` stops gradients through the states (log-variance loss): only
        the learned kernel densities carry gradients then.  ``return_path=True`` also
        returns the whole path ``(K + 1, num_samples, dim)``.  No host synchronization
        happens inside the loop.
        """
        like = self.reference_tensor()
        ctx = self.rollout_context(like)
        y = self.init_sample(num_samples, like, generator)
        if detach:
            y = y.detach()
        path = [y] if return_path else None
        log_w = self.init_log_weight(y)
        ev = self.evaluate(0, y, ctx)
        for k in range(self.num_steps):
            y, inc, ev = self.step(k, y, ev, randn_like(y, generator), ctx, detach)
            log_w = log_w + inc
            if path is not None:
                path.append(y)
        log_w = log_w + self.terminal_log_weight(y, self.target.log_prob_unchecked(y))
        if path is not None:
            return y, log_w, torch.stack(path)
        return y, log_w

    def target_path_log_weights(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """``log w`` along paths of the target path measure started from exact samples ``x = y_K``."""
        tab = self.tables_like(x)
        y_next = x
        log_w = self.terminal_log_weight(x, self.target.log_prob_unchecked(x))
        for k in reversed(range(self.num_steps)):
            y = self.target_kernel_sample(k, y_next, tab, generator)
            mean, std = self.model_kernel(k, y, tab)
            log_w = log_w + self.target_kernel_log_prob(k, y, y_next, tab) - isotropic_normal_log_prob(y_next, mean, std)
            y_next = y
        return log_w + self.init_log_weight(y_next)

    # ---------------------------------------------------------------- losses
    def loss(self, batch: int | torch.Tensor) -> torch.Tensor:
        """Training loss on ``batch`` fresh paths (``fokker.train.fit`` passes the batch size).

        Draws from the global RNG (``fit`` controls it)."""
        num_samples = int(batch) if not isinstance(batch, torch.Tensor) or batch.dim() == 0 else batch.shape[0]
        if not self._checked:
            self.check_target()
        if self.loss_type == "kl":
            _, log_w = self.rollout(num_samples)
            return -log_w.mean()
        _, log_w = self.rollout(num_samples, detach=True)
        return log_w.var()

    def check_target(self, num_samples: int = 64, *, generator: torch.Generator | None = None) -> None:
        """Raise :class:`NonFiniteError` if ``log gamma`` or its score is NaN/inf where training starts.

        Evaluated at the initial states ``y_0`` (when not a point mass) and at the end points
        ``y_K`` of ``num_samples`` paths of the current (untrained) sampler.
        """
        check_int(num_samples, "num_samples")
        with torch.no_grad():
            like = self.reference_tensor()
            y0 = self.init_sample(num_samples, like, generator)
            points = [] if float(y0.abs().max()) == 0 else [("initial", y0)]
            _, _, path = self.rollout(num_samples, return_path=True, generator=generator)
            points.append(("terminal", path[-1]))
            for where, y in points:
                lp, sc = self.target.log_prob_and_score(y)
                for name, val in (("log_prob", lp), ("score", sc)):
                    bad = ~torch.isfinite(val.reshape(num_samples, -1)).all(-1)
                    if bad.any():
                        raise NonFiniteError(
                            f"target {self.target.name!r}: {name} is NaN/inf at {float(bad.float().mean()):.0%} of "
                            f"{num_samples} {where} samples of the untrained sampler (e.g. x = {y[bad][0].tolist()}); "
                            "check the target's support and parameters"
                        )
        self._checked = True

    def fit(
        self,
        steps: int = 2000,
        batch_size: int = 300,
        lr: float = 5e-3,
        grad_clip: float | None = 1.0,
        *,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        progress: bool | None = None,
        **kwargs: Any,
    ):
        """Train with :func:`fokker.train.fit` (data-free: ``loss(batch_size)``); returns its ``FitResult``.

        Defaults follow DDS / sde_sampler (Adam, lr ``5e-3``, batch 300, gradient-norm
        clip 1).  ``generator`` / ``seed`` / ``progress`` and the other keyword arguments
        (``checkpoint``, ``ema``, ``scheduler``, ...) go to ``fit``.
        """
        from ..train import fit as train_fit

        self.check_target()
        passed = {"generator": generator, "seed": seed, "progress": progress}
        kwargs.update({k: v for k, v in passed.items() if v is not None})
        return train_fit(self, None, steps=steps, batch_size=batch_size, lr=lr, grad_clip=grad_clip, **kwargs)

    # -------------------------------------------------------------- sampling
    def _chunks(self, num_samples: int, batch_size: int, progress: bool | None, desc: str) -> Iterable[int]:
        check_int(batch_size, "batch_size")
        sizes = [min(batch_size, num_samples - start) for start in range(0, num_samples, batch_size)]
        return progress_bar(sizes, progress=progress, desc=desc)

    @torch.no_grad()
    def sample(
        self,
        sample_shape: int | tuple[int, ...] | torch.Size = (),
        *,
        generator: torch.Generator | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        progress: bool | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples ``(*sample_shape, dim)`` and their log importance weights ``sample_shape``.

        The weights are unnormalized, ``E w = Z`` exactly for the discrete chain.  Paths are
        simulated ``batch_size`` at a time.  A weight of zero (``log w = -inf``, a point outside the
        target's support) is allowed; NaN or ``+inf`` weights raise
        :class:`~fokker.errors.NonFiniteError`, saying whether ``log gamma`` is NaN at the end points or
        the paths themselves became non-finite (the target's score NaN somewhere along the way).
        """
        shape = torch.Size((sample_shape,) if isinstance(sample_shape, int) else sample_shape)
        num_samples = shape.numel()
        check_int(num_samples, "the number of samples (sample_shape)")
        xs, lws = [], []
        for size in self._chunks(num_samples, batch_size, progress, f"{type(self).__name__}.sample"):
            x, lw = self.rollout(size, generator=generator)
            xs.append(x)
            lws.append(lw)
        x, lw = torch.cat(xs), torch.cat(lws)
        self._check_log_weights(x, lw)
        return x.reshape(*shape, self.dim), lw.reshape(shape)

    def _check_log_weights(self, x: torch.Tensor, lw: torch.Tensor) -> None:
        """NaN / +inf weights as a :class:`NonFiniteError` that says where they came from (one sync)."""
        bad = torch.isnan(lw) | (lw == float("inf"))
        if not bool(bad.any()):
            return
        n, k = lw.numel(), int(bad.sum())
        lost = ~torch.isfinite(x).all(-1)
        name = self.target.name
        if bool(lost[bad].any()):
            raise NonFiniteError(
                f"target {name!r}: {k} of {n} log weights are NaN/+inf because {int(lost.sum())} paths became "
                f"non-finite on the way: the target's log_prob or score is NaN/inf at intermediate states (on part of "
                f"the path between the reference and the target); check the target's support and parameters"
            )
        with torch.no_grad():
            lg = self.target.log_prob_unchecked(x[bad])
        where = torch.isnan(lg) | (lg == float("inf"))
        if bool(where.any()):
            example = x[bad][where][0].tolist()
            raise NonFiniteError(
                f"target {name!r}: log_prob is NaN/+inf at {int(where.sum())} of {n} samples (e.g. x = {example}), "
                f"so their importance weights are undefined; check the target's support and parameters"
            )
        raise NonFiniteError(
            f"{k} of {n} log weights of {type(self).__name__} on target {name!r} are NaN/+inf although the target is "
            f"finite at the end points: the sampler's network produced non-finite values"
        )

    @torch.no_grad()
    def eubo_log_weights(
        self,
        num_samples: int,
        *,
        generator: torch.Generator | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        progress: bool | None = None,
    ) -> torch.Tensor:
        """``log w`` ``(num_samples,)`` on paths of the target path measure (requires exact target samples)."""
        check_int(num_samples, "num_samples")
        if not self.target.has_exact_samples:
            raise NoExactSamplesError(f"target {self.target.name!r} has no exact sampler: the EUBO is undefined")
        like = self.reference_tensor()
        out = []
        for size in self._chunks(num_samples, batch_size, progress, f"{type(self).__name__}.eubo"):
            with rng_scope(generator, devices=(like.device,)):  # Target.sample takes no generator
                x = self.target.sample((size,)).to(like)
            out.append(self.target_path_log_weights(x, generator=generator))
        return torch.cat(out)

    def log_Z(
        self,
        num_samples: int = 2000,
        *,
        eubo: bool | None = None,
        generator: torch.Generator | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        progress: bool | None = None,
    ) -> LogZEstimate:
        """Importance-sampling estimate of ``log Z`` from ``num_samples`` paths, with its diagnostics.

        Returns a :class:`fokker.importance.LogZEstimate`: ``log_Z`` (``log mean w``), ``stderr``,
        ``ess`` (normalized, in ``(0, 1]``), ``elbo`` / ``elbo_stderr`` and, with ``eubo`` (default:
        when the target has exact samples), ``eubo`` from as many paths of the target path measure
        (its standard error in ``details["eubo_stderr"]``).  ``samples`` holds the ``(num_samples, dim)``
        generated points.  ``num_target_evals = num_samples (K + 1)``, twice with the EUBO.
        """
        x, lw = self.sample(num_samples, generator=generator, batch_size=batch_size, progress=progress)
        want_eubo = self.target.has_exact_samples if eubo is None else bool(eubo)
        eubo_w = None
        details: dict[str, Any] = {}
        if want_eubo:
            eubo_w = self.eubo_log_weights(num_samples, generator=generator, batch_size=batch_size, progress=progress)
            if num_samples > 1:
                details["eubo_stderr"] = float(eubo_w.double().std()) / num_samples**0.5
        evals = num_samples * (self.num_steps + 1) * (2 if want_eubo else 1)
        return LogZEstimate.from_log_weights(
            lw, samples=x, eubo_log_weights=eubo_w, num_target_evals=evals, details=details
        )

    def extra_repr(self) -> str:
        return f"target={self.target.name}, dim={self.dim}, num_steps={self.num_steps}, T={self.T:g}, loss={self.loss_type!r}"
