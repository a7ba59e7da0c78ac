r"""A neural SDE fitted to discretely observed paths by Euler maximum likelihood.

The model is the Ito SDE

.. math::

    dX_t = f_\theta(X_t, t)\, dt + g_\theta(X_t, t)\, dW_t, \qquad g_\theta > 0 \text{ diagonal},

with drift and diffusion given as modules ``net(x, t)`` (Tzen & Raginsky 2019; Li et al. 2020).
A path observed at ``t_0 < ... < t_{K-1}`` has the Euler (Gaussian pseudo-) likelihood
(Iacus 2008, sec. 3.3; Kloeden & Platen 1992, sec. 10.2), with ``h_k = t_{k+1} - t_k``,

.. math::

    \log p(x_{1:K-1} \mid x_0) = \sum_{k=0}^{K-2} \sum_{j=1}^d
        \log \mathcal N\big(x_{k+1,j};\; x_{k,j} + h_k f_j(x_k, t_k),\; h_k\, g_j(x_k, t_k)^2\big),

exact for the Euler-Maruyama chain on the observation grid and an ``O(h)`` approximation of the
continuous-time transition density.  Maximising it over ``theta`` (``loss`` + :func:`fokker.train.fit`)
gives the Euler MLE; for small parametric models :meth:`NeuralSDE.confidence_intervals` returns
Wald intervals from the observed Fisher information (the autograd Hessian of the total negative
log-likelihood at the MLE).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from .._args import argument_checks, argument_checks_enabled, check_finite, check_int, check_like, check_positive, check_tensor
from .._random import randn
from ..errors import NonFiniteError, ParameterError, ShapeError
from .nets import DiffusionNet, DriftNet
from .paths import check_paths

__all__ = ["NeuralSDE", "ConfidenceIntervals"]

#: Largest number of parameters for which the dense Hessian of confidence_intervals is built.
MAX_HESSIAN_PARAMETERS = 2000


@dataclass(frozen=True)
class ConfidenceIntervals:
    """Wald confidence intervals ``estimate +- z_{(1+level)/2} * stderr`` (Wald 1943).

    The standard errors are the square roots of the diagonal of the inverse observed Fisher
    information ``H^{-1}``, ``H`` the Hessian of the total negative log-likelihood at the
    estimate (Efron & Hinkley 1978).  Asymptotic: exact coverage only as the data grow.

    Attributes:
        estimate, stderr, lower, upper: per parameter name (as in ``model.named_parameters()``),
            tensors of the parameter's shape.
        level: the nominal coverage, e.g. 0.95.
        covariance: ``H^{-1}`` over all trainable parameters, flattened in ``names`` order.
        names: the parameter names, in the order of ``covariance``.
    """

    estimate: dict[str, torch.Tensor]
    stderr: dict[str, torch.Tensor]
    lower: dict[str, torch.Tensor]
    upper: dict[str, torch.Tensor]
    level: float
    covariance: torch.Tensor = field(repr=False)
    names: tuple[str, ...] = ()

    def covers(self, name: str, value: float | torch.Tensor) -> torch.Tensor:
        """Boolean tensor (parameter's shape): whether the interval of ``name`` contains ``value``."""
        if name not in self.estimate:
            raise ParameterError(f"no interval for {name!r}; intervals exist for {sorted(self.estimate)}")
        v = torch.as_tensor(value, dtype=self.lower[name].dtype, device=self.lower[name].device)
        return (self.lower[name] <= v) & (v <= self.upper[name])


def _time_vector(t: Any, x: torch.Tensor) -> torch.Tensor:
    """``t`` (float, 0-d or ``(batch,)``) as a ``(batch,)`` tensor in the dtype of ``x``."""
    tt = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    if tt.dim() == 0:
        return tt.expand(x.shape[0])
    if tt.shape != (x.shape[0],):
        raise ShapeError(f"t must be a number, a 0-d tensor or have shape ({x.shape[0]},); got shape {tuple(tt.shape)}")
    return tt


class NeuralSDE(nn.Module):
    r"""Neural SDE ``dX = f(X, t) dt + g(X, t) dW`` with diagonal ``g > 0`` (Tzen & Raginsky 2019; Li et al. 2020).

    Trained by maximum likelihood on discretely observed paths through the Euler transition
    density (Iacus 2008, sec. 3.3; see the module docstring for the formula).  Follows
    torchsde's protocol (``f(t, y)``, ``g(t, y)``, ``noise_type="diagonal"``, ``sde_type="ito"``),
    so ``torchsde.sdeint(model, x0, ts)`` and ``sdeint_adjoint`` run on it.

    Args:
        drift: module ``drift(x (B, d), t (B,)) -> (B, d)``; default :class:`DriftNet` (needs ``dim``).
        diffusion: module ``diffusion(x, t) -> (B, d)``, positive; default :class:`DiffusionNet`
            (``softplus(MLP) + min_diffusion``).
        dim: state dimension (needed for the default networks; checked against ``drift.dim`` if set).
        hidden, num_layers: size of the default networks.
        min_diffusion: floor of the default diffusion network.

    Example:
        >>> from fokker.neural_sde import LinearDrift, ConstantDiffusion
        >>> model = NeuralSDE(LinearDrift(1), ConstantDiffusion(1))
        >>> paths = model.sample((8,), torch.zeros(1), torch.linspace(0, 1, 11))
        >>> paths.shape, model.log_prob(torch.linspace(0, 1, 11), paths).shape
        (torch.Size([8, 11, 1]), torch.Size([8]))
    """

    noise_type: str = "diagonal"
    sde_type: str = "ito"

    def __init__(
        self,
        drift: nn.Module | None = None,
        diffusion: nn.Module | None = None,
        *,
        dim: int | None = None,
        hidden: int = 64,
        num_layers: int = 2,
        min_diffusion: float = 1e-3,
    ) -> None:
        super().__init__()
        dims = {d for d in (dim, getattr(drift, "dim", None), getattr(diffusion, "dim", None)) if d is not None}
        if len(dims) > 1:
            raise ShapeError(f"dim, drift.dim and diffusion.dim disagree: {sorted(dims)}")
        if (drift is None or diffusion is None) and not dims:
            raise ParameterError("pass dim= to build the default drift / diffusion networks")
        self.dim = check_int(dims.pop(), "dim") if dims else None
        for mod, name in ((drift, "drift"), (diffusion, "diffusion")):
            if mod is not None and not callable(mod):
                raise TypeError(f"{name} must be a module net(x, t); got {type(mod).__name__}")
        self.drift_net = drift if drift is not None else DriftNet(self.dim, hidden, num_layers)
        self.diffusion_net = (
            diffusion if diffusion is not None else DiffusionNet(self.dim, hidden, num_layers, min_diffusion)
        )

    # ------------------------------------------------------------ coefficients
    def _reference(self) -> torch.Tensor | None:
        return next(iter(self.parameters()), None)

    def _coefficient(self, which: str, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        net = self.drift_net if which == "drift" else self.diffusion_net
        out = net(x, t)
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ShapeError(f"the {which} network must return the shape of the state {tuple(x.shape)}; got {shape}")
        return out

    def drift(self, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        """``f(x, t)``: ``x`` ``(B, d)``, ``t`` a number or ``(B,)``; returns ``(B, d)``."""
        self._check_state(x, "x")
        return self._coefficient("drift", x, _time_vector(t, x))

    def diffusion(self, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        """``g(x, t) > 0`` (diagonal): ``x`` ``(B, d)``, ``t`` a number or ``(B,)``; returns ``(B, d)``."""
        self._check_state(x, "x")
        g = self._coefficient("diffusion", x, _time_vector(t, x))
        self._check_diffusion(g)
        return g

    def f(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """torchsde drift ``f(t, y)`` (``t`` 0-d, ``y`` ``(B, d)``), no value checks."""
        return self._coefficient("drift", y, _time_vector(t, y))

    def g(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """torchsde diagonal diffusion ``g(t, y)`` of shape ``y.shape``, no value checks."""
        return self._coefficient("diffusion", y, _time_vector(t, y))

    # ---------------------------------------------------------------- checks
    def _check_state(self, x: torch.Tensor, name: str) -> None:
        check_tensor(x, name)
        if x.dim() != 2 or (self.dim is not None and x.shape[-1] != self.dim):
            raise ShapeError(f"{name} must have shape (batch, {self.dim or 'd'}); got shape {tuple(x.shape)}")
        check_like(x, self._reference(), name, owner="the model")
        check_finite(x, name)

    @staticmethod
    def _check_diffusion(g: torch.Tensor) -> None:
        if argument_checks_enabled() and not bool((g > 0).all()):
            if not bool(torch.isfinite(g).all()):
                raise NonFiniteError(f"the diffusion network returned {int((~torch.isfinite(g)).sum())} non-finite value(s)")
            raise ParameterError(
                f"the diffusion must be positive; the diffusion network returned {int((g <= 0).sum())} value(s) <= 0 "
                f"(min {float(g.detach().min()):.3g}); make it positive, e.g. softplus + a floor as DiffusionNet does"
            )

    # ------------------------------------------------------------ likelihood
    def _transitions(self, times: torch.Tensor, paths: torch.Tensor) -> torch.Tensor:
        """Per-transition Euler log-densities ``(B, K-1)`` of validated inputs."""
        num_paths, num_times, d = paths.shape
        x, x_next = paths[:, :-1], paths[:, 1:]
        t = times[:, :-1]
        h = (times[:, 1:] - t)[..., None]
        flat_x, flat_t = x.reshape(-1, d), t.reshape(-1)
        f = self._coefficient("drift", flat_x, flat_t).reshape(x.shape)
        g = self._coefficient("diffusion", flat_x, flat_t).reshape(x.shape)
        self._check_diffusion(g)
        var = h * g * g
        r = x_next - x - h * f
        logp = -0.5 * (r * r / var + torch.log(2 * math.pi * var))
        return logp.sum(-1)

    def log_prob(self, times: torch.Tensor, paths: torch.Tensor) -> torch.Tensor:
        """Euler log-likelihood ``log p(x_1, ..., x_{K-1} | x_0)`` of each path, shape ``(B,)``.

        Args:
            times: ``(K,)`` or ``(B, K)``, strictly increasing.
            paths: ``(B, K, d)``.

        Exact for the Euler-Maruyama chain on the observation grid (the density of the first
        state is not included).
        """
        times, paths = check_paths(times, paths)
        self._check_state(paths[:, 0], "paths")
        return self._transitions(times, paths).sum(-1)

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Negative mean Euler log-likelihood per transition of a batch ``(times, paths)``.

        ``-log_prob(times, paths).mean() / (K - 1)``: the objective :func:`fokker.train.fit`
        minimises (give it ``path_data(times, paths)`` or a callable returning such a batch).
        """
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise TypeError("batch must be a pair (times, paths); see fokker.neural_sde.path_data")
        times, paths = batch
        return -self.log_prob(times, paths).mean() / (paths.shape[1] - 1)

    # -------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample(
        self,
        sample_shape: tuple[int, ...] | int,
        x0: torch.Tensor,
        times: torch.Tensor,
        *,
        dt: float | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Euler-Maruyama paths observed at ``times``: shape ``(*sample_shape, K, d)``.

        Args:
            sample_shape: number (or shape) of paths.
            x0: initial state ``(d,)`` (shared) or ``(*sample_shape, d)``.
            times: ``(K,)`` strictly increasing observation times; ``x0`` sits at ``times[0]``.
            dt: largest solver step: each observation interval is split into
                ``ceil(h / dt)`` equal Euler steps.  ``None``: one step per interval, i.e. exactly
                the chain whose density :meth:`log_prob` evaluates.
            generator: randomness of the Brownian increments.
        """
        shape = (sample_shape,) if isinstance(sample_shape, int) else tuple(sample_shape)
        check_tensor(x0, "x0")
        check_tensor(times, "times")
        if times.dim() != 1 or times.numel() < 2:
            raise ShapeError(f"times must have shape (K,) with K >= 2; got shape {tuple(times.shape)}")
        d = x0.shape[-1] if x0.dim() else 0
        if x0.dim() == 0 or (self.dim is not None and d != self.dim) or x0.shape[:-1] not in ((), torch.Size(shape)):
            raise ShapeError(f"x0 must have shape ({self.dim or 'd'},) or (*sample_shape, d) = {(*shape, d)}; "
                             f"got shape {tuple(x0.shape)}")
        check_like(x0, self._reference(), "x0", owner="the model")
        check_like(times, x0, "times", owner="x0")
        check_finite(x0, "x0")
        check_finite(times, "times")
        grid = times.detach().to("cpu", torch.float64)
        gaps = (grid[1:] - grid[:-1]).tolist()
        if not all(h > 0 for h in gaps):
            raise ParameterError("times must be strictly increasing")
        if dt is not None:
            check_positive(dt, "dt")
        x = x0.expand(*shape, d).reshape(-1, d).clone()
        out = [x.clone()]
        for k, gap in enumerate(gaps):
            substeps = 1 if dt is None else max(1, math.ceil(gap / dt - 1e-9))
            h = gap / substeps
            for j in range(substeps):
                t = torch.full((x.shape[0],), float(grid[k]) + j * h, dtype=x.dtype, device=x.device)
                f = self._coefficient("drift", x, t)
                g = self._coefficient("diffusion", x, t)
                x = x + h * f + g * math.sqrt(h) * randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
            out.append(x.clone())
        paths = torch.stack(out, dim=1).reshape(*shape, len(out), d)
        if argument_checks_enabled() and not bool(torch.isfinite(paths).all()):
            raise NonFiniteError("the simulated paths diverged (non-finite values); reduce dt or check the drift")
        return paths

    # -------------------------------------------------- confidence intervals
    def confidence_intervals(
        self, times: torch.Tensor, paths: torch.Tensor, level: float = 0.95
    ) -> ConfidenceIntervals:
        """Wald intervals for every trainable parameter from the observed Fisher information.

        Computes ``H``, the autograd Hessian of the total negative Euler log-likelihood
        ``-sum_b log_prob(times, paths)_b`` at the current parameters (meant to be the MLE,
        e.g. after :func:`fokker.train.fit`), and returns ``estimate +- z * sqrt(diag H^{-1})``.
        Asymptotic (large data), and only meaningful at a minimum of the loss.

        Args:
            times, paths: the data the model was fitted to (as for :meth:`log_prob`).
            level: nominal coverage in (0, 1).

        Raises:
            ParameterError: more than ``MAX_HESSIAN_PARAMETERS`` parameters (a neural network:
                use a parametric drift/diffusion), or ``H`` not positive definite (not at a
                minimum, or parameters not identifiable).
        """
        if not (isinstance(level, float) and 0.0 < level < 1.0):
            raise ParameterError(f"level must be a float in (0, 1); got {level!r}")
        times, paths = check_paths(times, paths)
        self._check_state(paths[:, 0], "paths")
        named = [(k, p) for k, p in self.named_parameters() if p.requires_grad]
        if not named:
            raise ParameterError("the model has no trainable parameters")
        total = sum(p.numel() for _, p in named)
        if total > MAX_HESSIAN_PARAMETERS:
            raise ParameterError(
                f"confidence_intervals builds a dense Hessian; the model has {total} parameters "
                f"(> {MAX_HESSIAN_PARAMETERS}): use parametric drift / diffusion modules"
            )
        names = tuple(k for k, _ in named)
        shapes = [p.shape for _, p in named]
        sizes = [p.numel() for _, p in named]
        flat = torch.cat([p.detach().reshape(-1) for _, p in named])

        def nll(vec: torch.Tensor) -> torch.Tensor:
            params = {k: v.reshape(s) for k, v, s in zip(names, vec.split(sizes), shapes)}
            return -functional_call(self, params, (times, paths), strict=False, tie_weights=True)

        self.forward(times, paths)  # the value checks (positive, finite diffusion) once, outside the transforms
        with argument_checks(False), torch.enable_grad():
            hess = torch.func.jacrev(torch.func.grad(nll), chunk_size=64)(flat)
        hess = 0.5 * (hess + hess.T)
        evals = torch.linalg.eigvalsh(hess)
        if not bool(torch.isfinite(hess).all()) or float(evals.min()) <= 0:
            raise ParameterError(
                "the Hessian of the negative log-likelihood is not positive definite at the current parameters "
                f"(smallest eigenvalue {float(evals.min()):.3g}): fit the model to convergence first, or the "
                "parameters are not identifiable from these data"
            )
        cov = torch.linalg.inv(hess)
        cov = 0.5 * (cov + cov.T)
        se = cov.diagonal().clamp_min(0).sqrt()
        z = statistics.NormalDist().inv_cdf(0.5 + level / 2)
        est, sd, lo, hi = {}, {}, {}, {}
        for k, v, s, shape in zip(names, flat.split(sizes), se.split(sizes), shapes):
            est[k], sd[k] = v.reshape(shape), s.reshape(shape)
            lo[k], hi[k] = est[k] - z * sd[k], est[k] + z * sd[k]
        return ConfidenceIntervals(est, sd, lo, hi, level, cov, names)

    def forward(self, times: torch.Tensor, paths: torch.Tensor) -> torch.Tensor:
        """Total Euler log-likelihood ``sum_b log_prob(times, paths)_b`` (a scalar), on validated inputs."""
        return self._transitions(times, paths).sum()
