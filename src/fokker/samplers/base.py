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

* ``E_Q[log w] = log Z - KL(Q || P*) <= log Z`` (ELBO, seed 001 eqs. 79-83 in
  discrete time); ``log mean w`` is a consistent estimate of ``log Z`` (IS);
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

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .._args import check_int
from ..errors import NoExactSamplesError, NonFiniteError, ParameterError
from ..targets.base import Target, as_target

__all__ = ["DiffusionSampler", "LogZResult", "gaussian_log_prob"]

LOSSES = ("kl", "lv")


def gaussian_log_prob(y: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``log N(y; mean, std^2 I)`` summed over the last dim; ``std`` scalar (0-d) tensor."""
    d = y.shape[-1]
    r = (y - mean) / std
    return -0.5 * (r * r).sum(-1) - d * torch.log(std) - 0.5 * d * math.log(2 * math.pi)


@dataclass
class LogZResult:
    """Estimates of ``log Z`` from ``n`` generated paths.

    Attributes:
        elbo: ``mean(log w)``, a lower bound on ``log Z`` in expectation.
        importance: ``log mean(w)`` (IS estimate; biased low for finite ``n`` by
            Jensen, consistent as ``n -> infinity``).
        ess: normalized effective sample size ``(sum w)^2 / (n sum w^2)`` in ``(0, 1]``.
        eubo: ``mean(log w)`` over paths of the target path measure (upper bound in
            expectation); ``None`` when the target has no exact sampler.
        elbo_se: Monte-Carlo standard error of ``elbo``.
        n: number of paths.
        num_target_evals: target ``log_prob``/``score`` evaluations spent on the estimate.
    """

    elbo: float
    importance: float
    ess: float
    eubo: float | None
    elbo_se: float
    n: int
    num_target_evals: int


def log_weight_stats(log_w: torch.Tensor) -> tuple[float, float, float, float]:
    """``(elbo, importance, ess, elbo_se)`` of a vector of log weights."""
    n = log_w.numel()
    lw = log_w.double()
    lse = torch.logsumexp(lw, 0)
    elbo = lw.mean()
    ess = torch.exp(2 * lse - torch.logsumexp(2 * lw, 0)) / n
    se = lw.std() / math.sqrt(n) if n > 1 else torch.tensor(float("nan"))
    return float(elbo), float(lse - math.log(n)), float(ess), float(se)


class DiffusionSampler(nn.Module):
    """Base class of the learned diffusion samplers (see the module docstring).

    Args:
        target: a :class:`fokker.targets.Target` (or a log-density callable, with ``dim``).
        times: float64 grid ``(K + 1,)`` from :mod:`fokker.samplers.grids`.
        net: control network ``net(x, t_normalized, feature) -> (n, dim)``.
        loss: ``"kl"`` or ``"lv"``.
    """

    def __init__(self, target: Target, times: torch.Tensor, net: nn.Module, loss: str = "kl") -> None:
        super().__init__()
        if loss not in LOSSES:
            raise ParameterError(f"loss must be one of {LOSSES}; got {loss!r}")
        object.__setattr__(self, "target", as_target(target))  # not a submodule: never trained
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

    def _param_like(self) -> torch.Tensor:
        """A tensor with the sampler's device and dtype (network parameters, buffers, else the target's)."""
        for p in self.net.parameters():
            return p
        for b in self.net.buffers():
            if b.is_floating_point():
                return b
        return torch.zeros((), dtype=self.target.dtype, device=self.target.device)

    def coefficient_tables(self) -> dict[str, torch.Tensor]:
        """Float64 per-step coefficients (subclasses): each value shape ``(K,)`` or ``(K + 1,)``."""
        raise NotImplementedError

    def _table(self, like: torch.Tensor) -> dict[str, torch.Tensor]:
        key = (like.device, like.dtype)
        if key not in self._tables:
            self._tables[key] = {k: v.to(device=like.device, dtype=like.dtype) for k, v in self.coefficient_tables().items()}
        return self._tables[key]

    # ----------------------------------------------------------------- hooks
    def init_sample(self, n: int, like: torch.Tensor) -> torch.Tensor:
        """``y_0`` ``(n, dim)`` from the initial law."""
        raise NotImplementedError

    def init_log_weight(self, y0: torch.Tensor) -> torch.Tensor:
        """Initial factor of ``log w`` (e.g. ``-log p_0(y_0)``); ``(n,)``."""
        raise NotImplementedError

    def model_kernel(self, k: int, y: torch.Tensor, tab: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean ``(n, dim)`` and 0-d std of the learned kernel ``q_k(. | y_k)``."""
        raise NotImplementedError

    def target_kernel_log_prob(
        self, k: int, y: torch.Tensor, y_next: torch.Tensor, tab: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """Log-density of the target-side kernel for step ``k`` (``B_k`` or the reference kernel); ``(n,)``."""
        raise NotImplementedError

    def target_kernel_sample(self, k: int, y_next: torch.Tensor, tab: dict[str, torch.Tensor]) -> torch.Tensor:
        """Sample ``y_k`` given ``y_{k+1}`` under the target path measure (for the EUBO)."""
        raise NotImplementedError

    def terminal_log_weight(self, yK: torch.Tensor, log_gamma: torch.Tensor) -> torch.Tensor:
        """Terminal factor of ``log w`` given ``log gamma(y_K)``; ``(n,)``."""
        raise NotImplementedError

    def feature(self, k: int, y: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
        """Network input feature from the target score at ``y_k`` (default: the score itself)."""
        return score

    # ------------------------------------------------------------- machinery
    def _score(self, y: torch.Tensor) -> torch.Tensor:
        return self.target.score_unchecked(y.detach())

    def control(self, k: int, y: torch.Tensor) -> torch.Tensor:
        """Network output ``f_theta(y, t_k)`` at step ``k``; ``(n, dim)``."""
        tab = self._table(y)
        feat = self.feature(k, y, self._score(y))
        return self.net(y, tab["t_norm"][k], feat)

    def rollout(
        self, n: int, detach: bool = False, return_path: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Simulate ``n`` generative paths; return ``(y_K, log w)`` of shapes ``(n, dim)``, ``(n,)``.

        ``detach=True`` stops gradients through the states (log-variance loss): only
        the learned kernel densities carry gradients then.  ``return_path=True`` also
        returns the whole path ``(K + 1, n, dim)``.
        """
        like = self._param_like()
        tab = self._table(like)
        y = self.init_sample(n, like)
        path = [y] if return_path else None
        log_w = self.init_log_weight(y)
        for k in range(self.num_steps):
            mean, std = self.model_kernel(k, y, tab)
            y_next = mean + std * torch.randn_like(mean)
            if detach:
                y_next = y_next.detach()
            log_w = log_w + self.target_kernel_log_prob(k, y, y_next, tab) - gaussian_log_prob(y_next, mean, std)
            y = y_next
            if path is not None:
                path.append(y)
        log_w = log_w + self.terminal_log_weight(y, self.target.log_prob_unchecked(y))
        if path is not None:
            return y, log_w, torch.stack(path)
        return y, log_w

    def target_path_log_weights(self, x: torch.Tensor) -> torch.Tensor:
        """``log w`` along paths of the target path measure started from exact samples ``x = y_K``."""
        tab = self._table(x)
        y_next = x
        log_w = self.terminal_log_weight(x, self.target.log_prob_unchecked(x))
        for k in reversed(range(self.num_steps)):
            y = self.target_kernel_sample(k, y_next, tab)
            mean, std = self.model_kernel(k, y, tab)
            log_w = log_w + self.target_kernel_log_prob(k, y, y_next, tab) - gaussian_log_prob(y_next, mean, std)
            y_next = y
        return log_w + self.init_log_weight(y_next)

    # ---------------------------------------------------------------- losses
    def loss(self, batch: int | torch.Tensor) -> torch.Tensor:
        """Training loss on ``batch`` fresh paths (``fokker.train.fit`` passes the batch size)."""
        n = int(batch) if not isinstance(batch, torch.Tensor) or batch.dim() == 0 else batch.shape[0]
        if not self._checked:
            self.check_target()
        if self.loss_type == "kl":
            _, log_w = self.rollout(n)
            return -log_w.mean()
        _, log_w = self.rollout(n, detach=True)
        return log_w.var()

    def check_target(self, n: int = 64) -> None:
        """Raise :class:`NonFiniteError` if ``log gamma`` or its score is NaN/inf where training starts.

        Evaluated at the initial states ``y_0`` (when not a point mass) and at the end points
        ``y_K`` of ``n`` paths of the current (untrained) sampler.
        """
        with torch.no_grad():
            like = self._param_like()
            y0 = self.init_sample(n, like)
            points = [] if float(y0.abs().max()) == 0 else [("initial", y0)]
            _, _, path = self.rollout(n, return_path=True)
            points.append(("terminal", path[-1]))
            for where, y in points:
                lp, sc = self.target.log_prob_and_score(y)
                for name, val in (("log_prob", lp), ("score", sc)):
                    bad = ~torch.isfinite(val.reshape(n, -1)).all(-1)
                    if bad.any():
                        raise NonFiniteError(
                            f"target {self.target.name!r}: {name} is NaN/inf at {float(bad.float().mean()):.0%} of "
                            f"{n} {where} samples of the untrained sampler (e.g. x = {y[bad][0].tolist()}); "
                            "check the target's support and parameters"
                        )
        self._checked = True

    def fit(
        self,
        steps: int = 2000,
        batch_size: int = 300,
        lr: float = 5e-3,
        grad_clip: float | None = 1.0,
        **kwargs: Any,
    ):
        """Train with :func:`fokker.train.fit` (data-free: ``loss(batch_size)``); returns its ``FitResult``.

        Defaults follow DDS / sde_sampler (Adam, lr ``5e-3``, batch 300, gradient-norm
        clip 1).  Extra keyword arguments (``checkpoint``, ``ema``, ``progress``,
        ``scheduler``, ``seed``, ...) go to ``fit``.
        """
        from ..train import fit as _fit

        self.check_target()
        return _fit(self, None, steps=steps, batch_size=batch_size, lr=lr, grad_clip=grad_clip, **kwargs)

    # -------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample(self, n: int, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` samples ``(n, dim)`` and their log importance weights ``(n,)`` (unnormalized: ``E w = Z``)."""
        check_int(n, "n")
        xs, lws = [], []
        for start in range(0, n, chunk):
            x, lw = self.rollout(min(chunk, n - start))
            xs.append(x)
            lws.append(lw)
        return torch.cat(xs), torch.cat(lws)

    @torch.no_grad()
    def eubo_log_weights(self, n: int, chunk: int = 4096) -> torch.Tensor:
        """``log w`` on ``n`` target paths (requires exact target samples)."""
        check_int(n, "n")
        if not self.target.has_exact_samples:
            raise NoExactSamplesError(f"target {self.target.name!r} has no exact sampler: the EUBO is undefined")
        out = []
        for start in range(0, n, chunk):
            x = self.target.sample((min(chunk, n - start),)).to(self._param_like().dtype)
            out.append(self.target_path_log_weights(x))
        return torch.cat(out)

    def log_Z(self, n: int = 2000, eubo: bool | None = None) -> LogZResult:
        """ELBO, IS estimate, normalized ESS (and EUBO when exact samples exist) from ``n`` paths."""
        _, lw = self.sample(n)
        if not bool(torch.isfinite(lw).all()):
            raise NonFiniteError(
                f"{int((~torch.isfinite(lw)).sum())} of {n} log importance weights are NaN/inf; "
                "the sampler or the target produced non-finite values"
            )
        elbo, imp, ess, se = log_weight_stats(lw)
        want_eubo = self.target.has_exact_samples if eubo is None else eubo
        eu = float(self.eubo_log_weights(n).double().mean()) if want_eubo else None
        evals = n * (self.num_steps + 1) * (2 if want_eubo else 1)
        return LogZResult(elbo=elbo, importance=imp, ess=ess, eubo=eu, elbo_se=se, n=n, num_target_evals=evals)

    def extra_repr(self) -> str:
        return f"target={self.target.name}, dim={self.dim}, num_steps={self.num_steps}, T={self.T:g}, loss={self.loss_type!r}"
