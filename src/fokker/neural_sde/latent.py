r"""The latent SDE of Li, Wong, Chen & Duvenaud (2020), trained with the stochastic adjoint.

Generative model (prior): ``z_0 ~ p(z_0) = N(0, I)`` (buffers, fixed: they pin the latent scale), ``dZ = f(Z, t) dt + g(Z, t) dW``,
observations ``x_{t_i} ~ N(D(z_{t_i}), diag sigma_x^2)`` with a linear decoder ``D``.

Inference (posterior): an encoder gives a context ``c_i = [W r_i, x_{t_i}]`` per observation time,
``r_i`` the state of a GRU run over the *reversed* observation sequence (it summarises
``x_{t_i}, ..., x_{t_{K-1}}``), and ``q(z_0 | x) = N(mu, diag sigma^2)`` from ``c_0``.  The posterior
SDE ``dZ = h(Z, t, c(t)) dt + g(Z, t) dW`` shares the diffusion ``g`` with the prior (needed for a
finite path KL); on ``[t_i, t_{i+1})`` its drift reads ``c(t) = [c_{i+1}, t_{i+1} - t]``: the context
of the observation the path is heading for and the time left until it, the inputs of a bridge
drift such as ``(x_{t_{i+1}} - z) / (t_{i+1} - t)``.

Evidence lower bound (Li et al. 2020, sec. 5; the path KL by Girsanov as in :func:`fokker.sde.kl_path`):

.. math::

    \log p(x) \ge \mathbb E_q\Big[\sum_i \log p(x_{t_i} \mid z_{t_i})\Big]
        - \mathrm{KL}\big(q(z_0 \mid x) \,\|\, p(z_0)\big)
        - \mathbb E_q \int_{t_0}^{t_{K-1}} \tfrac12 \big|(h - f) / g\big|^2 (Z_t, t)\, dt .

The path KL is integrated alongside ``Z`` as one extra state coordinate with drift
:func:`fokker.sde.girsanov_integrand` and zero diffusion, in one call of
``torchsde.sdeint_adjoint`` (memory flat in the number of solver steps) or ``torchsde.sdeint``
(backpropagation through the solver).  With the default ``sde_type="ito"`` and Euler steps the
coordinate is exactly the Monte-Carlo summand of :func:`fokker.sde.kl_path` (unbiased for the KL
between the Euler chains).  ``sde_type="stratonovich"`` (reversible Heun, exact adjoint; Kidger,
Foster, Li & Lyons 2021) has the same KL: posterior and prior share ``g``, so their Ito and
Stratonovich drifts differ by the same correction and ``h - f`` is unchanged.  The initial
KL is in closed form; the reconstruction term and the path KL are single-sample estimates per
posterior draw (``num_samples`` draws are averaged).
"""

from __future__ import annotations

import bisect
import math
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.distributions import Normal, kl_divergence
from torch.nn import functional as F

from .._args import argument_checks_enabled, check_finite, check_int, check_like, check_positive, check_tensor
from .._random import randn, spawn_seed
from ..errors import NonFiniteError, ParameterError, ShapeError
from ..sde import girsanov_integrand
from .nets import DiffusionNet, DriftNet
from .paths import check_paths

__all__ = ["LatentSDE", "LatentELBO"]

_METHODS = {"ito": ("euler", "milstein", "srk"), "stratonovich": ("reversible_heun", "midpoint", "heun", "milstein")}
_ADJOINT_METHODS = {"ito": ("euler", "milstein", "srk"),
                    "stratonovich": ("adjoint_reversible_heun", "midpoint", "heun", "milstein", "reversible_heun")}


class LatentELBO(NamedTuple):
    """The three terms of the latent SDE's ELBO (Li et al. 2020, sec. 5), each ``(B,)``, averaged over posterior draws."""

    reconstruction: torch.Tensor  #: ``sum_i log p(x_{t_i} | z_{t_i})`` (single-sample estimate per draw)
    kl_initial: torch.Tensor  #: ``KL(q(z_0 | x) || p(z_0))`` (closed form)
    kl_path: torch.Tensor  #: Girsanov KL of the posterior from the prior SDE (Euler estimate)

    @property
    def elbo(self) -> torch.Tensor:
        """``reconstruction - kl_initial - kl_path``, shape ``(B,)``."""
        return self.reconstruction - self.kl_initial - self.kl_path


class _Clock:
    """Solver time ``s = (t - t0) / dt``: one solver step is ``1.0``.

    Step times are then exact integers (no accumulated rounding), and an observation time that is
    a multiple of ``dt`` after ``t0`` lands exactly on a step: the forward and the adjoint solve
    visit identical times, which makes the reversible-Heun adjoint gradient exact.  The SDE in
    solver time has drift ``dt * b`` and diffusion ``sqrt(dt) * g`` (Brownian scaling).
    """

    def __init__(self, t0: float, dt: float) -> None:
        self.t0, self.dt, self.sqrt_dt = t0, dt, math.sqrt(dt)

    def solver_times(self, times: torch.Tensor) -> torch.Tensor:
        s = (times.detach().double() - self.t0) / self.dt
        r = s.round()
        return torch.where((s - r).abs() <= 1e-6 * r.abs().clamp_min(1.0), r, s).to(times.dtype)

    def physical(self, s: torch.Tensor, y: torch.Tensor) -> tuple[float, torch.Tensor]:
        sf = float(s)
        return sf, torch.full((y.shape[0],), self.t0 + sf * self.dt, dtype=y.dtype, device=y.device)


class _PosteriorSDE:
    """torchsde view of the posterior in solver time, optionally with the running KL as last coordinate.

    Drift ``h(z, t, c(t))`` with the context of the next observation time ``> t``; diagonal noise;
    ``g = 0`` on the KL coordinate, whose drift is ``girsanov_integrand(h, f, g)``.
    """

    noise_type = "diagonal"

    def __init__(self, model: "LatentSDE", clock: _Clock, obs: list[float], context: torch.Tensor, with_kl: bool) -> None:
        self.model, self.clock, self.obs, self.context, self.with_kl = model, clock, obs, context, with_kl
        self.latent_dim, self.sde_type = model.latent_dim, model.sde_type

    def _parts(self, s: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z = y[:, : self.latent_dim]
        sf, t = self.clock.physical(s, z)
        g = self.model.diffusion_net(z, t)
        h = self.model.posterior_drift(z, t, self.context_at(sf, z))
        f = self.model.prior_drift(z, t) if self.with_kl else h
        return h, f, g

    def context_at(self, sf: float, z: torch.Tensor) -> torch.Tensor:
        """``[c_{i+1}, t_{i+1} - t]`` for ``t`` in ``[t_i, t_{i+1})`` (solver time ``sf``): the encoder's context
        of the next observation and the time left until it (the slack absorbs rounding of non-integer times)."""
        i = min(bisect.bisect_right(self.obs, sf + 1e-6), len(self.obs) - 1)
        remaining = torch.full_like(z[:, :1], (self.obs[i] - sf) * self.clock.dt)
        return torch.cat([self.context[:, i], remaining], 1)

    def f_and_g(self, s: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, f, g = self._parts(s, y)
        drift, diff = self.clock.dt * h, self.clock.sqrt_dt * g
        if not self.with_kl:
            return drift, diff
        kl_rate = self.clock.dt * girsanov_integrand(h, f, g)[:, None]
        return torch.cat([drift, kl_rate], dim=1), torch.cat([diff, torch.zeros_like(kl_rate)], dim=1)

    def f(self, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.f_and_g(s, y)[0]

    def g(self, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        z = y[:, : self.latent_dim]
        g = self.clock.sqrt_dt * self.model.diffusion_net(z, self.clock.physical(s, z)[1])
        return torch.cat([g, torch.zeros_like(g[:, :1])], dim=1) if self.with_kl else g


class _PriorSDE:
    """torchsde view of the prior SDE in solver time (``offset``: the solver time where the solve starts)."""

    noise_type = "diagonal"

    def __init__(self, model: "LatentSDE", clock: _Clock, offset: float = 0.0) -> None:
        self.model, self.clock, self.sde_type, self.offset = model, clock, model.sde_type, offset

    def _t(self, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.clock.physical(s + self.offset, y)[1]

    def f(self, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.clock.dt * self.model.prior_drift(y, self._t(s, y))

    def g(self, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.clock.sqrt_dt * self.model.diffusion_net(y, self._t(s, y))


class LatentSDE(nn.Module):
    r"""Latent SDE with a GRU encoder, trained on the ELBO by the stochastic adjoint (Li et al. 2020).

    See the module docstring for the model and the ELBO (Li, Wong, Chen & Duvenaud 2020,
    "Scalable gradients for stochastic differential equations", sec. 5).

    Args:
        data_dim: dimension ``D`` of the observations.
        latent_dim: dimension ``L`` of the latent SDE.
        context_dim: size of the encoder's learned context ``W r_i`` per observation time.
        hidden: width of the GRU and of the drift networks; ``num_layers``: their hidden layers.
        noise_std: fixed observation noise std; ``None`` learns one per data coordinate.
        min_diffusion: floor of the (softplus) diffusion.
        dt: solver step; ``None`` uses the smallest observation interval.  Observation times that are
            multiples of ``dt`` after ``times[0]`` land on solver steps; others are read off by linear
            interpolation between steps (torchsde).
        adjoint: train through ``torchsde.sdeint_adjoint`` (memory flat in the number of steps);
            ``False`` backpropagates through ``torchsde.sdeint`` (memory linear in the steps).
        sde_type: ``"ito"`` (default): Ito drifts as in Li et al. 2020, Euler-Maruyama forward and
            torchsde's Milstein adjoint, whose gradients approximate the solver's to ``O(dt^{1/2})``;
            the running KL is then exactly the Euler estimate of :func:`fokker.sde.kl_path`.
            ``"stratonovich"``: Stratonovich drifts solved by reversible Heun with its algebraically
            reversible adjoint (Kidger, Foster, Li & Lyons 2021): adjoint gradients equal those of
            backpropagation through the solver up to rounding, but reversible Heun is unstable for
            dissipative drifts (it diverges on ``dz = -lambda z dt`` once ``lambda dt`` reaches
            about 0.2), which rules it out for posteriors that steer sharply towards precise
            observations.  Both give the same path KL formula: posterior and prior share ``g``, so
            the Ito-Stratonovich correction cancels in ``h - f``.
        method, adjoint_method: torchsde solvers for the forward and the adjoint solve
            (``None``: reversible Heun / its adjoint for Stratonovich, Euler / Milstein for Ito).
        prior_drift: module ``f(z (N, L), t (N,)) -> (N, L)``; default :class:`DriftNet`.
        posterior_drift: module ``h(z, t, context) -> (N, L)`` with a context of
            ``context_dim + data_dim + 1`` columns ``[W r_{i+1}, x_{t_{i+1}}, t_{i+1} - t]`` (see the
            module docstring); default :class:`DriftNet` with a context input.
        diffusion: module ``g(z, t) -> (N, L)``, positive, with ``g_i`` a function of ``z_i``
            and ``t`` only (the diagonal-noise adjoint assumes it); default the coordinatewise
            :class:`DiffusionNet`.

    Example:
        >>> model = LatentSDE(data_dim=1, latent_dim=2, hidden=16, context_dim=4)
        >>> times, paths = torch.linspace(0, 1, 6), torch.randn(3, 6, 1)
        >>> model.elbo(times, paths).shape, model.sample_prior(4, times).shape
        (torch.Size([3]), torch.Size([4, 6, 1]))
    """

    def __init__(
        self,
        data_dim: int,
        latent_dim: int = 4,
        *,
        context_dim: int = 16,
        hidden: int = 64,
        num_layers: int = 2,
        noise_std: float | None = None,
        min_diffusion: float = 1e-3,
        dt: float | None = None,
        adjoint: bool = True,
        sde_type: str = "ito",
        method: str | None = None,
        adjoint_method: str | None = None,
        prior_drift: nn.Module | None = None,
        posterior_drift: nn.Module | None = None,
        diffusion: nn.Module | None = None,
    ) -> None:
        super().__init__()
        for v, name in ((data_dim, "data_dim"), (latent_dim, "latent_dim"), (context_dim, "context_dim"),
                        (hidden, "hidden"), (num_layers, "num_layers")):
            check_int(v, name)
        if dt is not None:
            check_positive(dt, "dt")
        if sde_type not in _METHODS:
            raise ParameterError(f"sde_type must be 'ito' or 'stratonovich'; got {sde_type!r}")
        method = method if method is not None else {"ito": "euler", "stratonovich": "reversible_heun"}[sde_type]
        if adjoint_method is None and method == "reversible_heun":
            adjoint_method = "adjoint_reversible_heun"
        if method not in _METHODS[sde_type]:
            raise ParameterError(f"method must be one of {_METHODS[sde_type]} for sde_type={sde_type!r}; got {method!r}")
        if adjoint_method is not None and adjoint_method not in _ADJOINT_METHODS[sde_type]:
            raise ParameterError(
                f"adjoint_method must be None or one of {_ADJOINT_METHODS[sde_type]} for sde_type={sde_type!r}; "
                f"got {adjoint_method!r}"
            )
        self.data_dim, self.latent_dim, self.context_dim = data_dim, latent_dim, context_dim
        self.sde_type = sde_type
        self.dt, self.adjoint, self.method, self.adjoint_method = dt, bool(adjoint), method, adjoint_method

        self.encoder = nn.GRU(data_dim, hidden, batch_first=True)
        self.encoder_out = nn.Linear(hidden, context_dim)
        self.qz0 = nn.Linear(context_dim + data_dim, 2 * latent_dim)
        # p(z_0) = N(0, I), fixed: it pins the scale of the latent space, which the decoder and the
        # SDE could otherwise trade off freely (z -> c z, g -> c g, D -> D / c leave the data's law unchanged)
        self.register_buffer("pz0_mean", torch.zeros(latent_dim))
        self.register_buffer("pz0_logstd", torch.zeros(latent_dim))
        self.prior_drift = prior_drift if prior_drift is not None else DriftNet(latent_dim, hidden, num_layers)
        self.posterior_drift = (
            posterior_drift if posterior_drift is not None
            else DriftNet(latent_dim, hidden, num_layers, context_dim=context_dim + data_dim + 1)
        )
        self.diffusion_net = (
            diffusion if diffusion is not None
            else DiffusionNet(latent_dim, hidden=16, min_diffusion=min_diffusion, coordinatewise=True)
        )
        self.decoder = nn.Linear(latent_dim, data_dim)
        if noise_std is None:
            self.log_noise_std = nn.Parameter(torch.full((data_dim,), math.log(0.1)))
        else:
            check_positive(noise_std, "noise_std")
            self.register_buffer("log_noise_std", torch.full((data_dim,), math.log(float(noise_std))))

    # ------------------------------------------------------------ pieces
    @property
    def noise_std(self) -> torch.Tensor:
        """Observation noise std ``(D,)``."""
        return self.log_noise_std.exp()

    def prior_z0(self) -> Normal:
        """``p(z_0) = N(m, diag s^2)`` (batch shape ``(L,)``); buffers ``pz0_mean = 0``, ``pz0_logstd = 0`` by default."""
        return Normal(self.pz0_mean, self.pz0_logstd.clamp(-20, 10).exp())

    def encode(self, times: torch.Tensor, paths: torch.Tensor) -> tuple[torch.Tensor, Normal]:
        """Context ``(B, K, context_dim + D)`` per observation time and ``q(z_0 | x)`` (batch shape ``(B, L)``).

        ``c_i = [W r_i, x_{t_i}]`` with ``r_i`` the state of a GRU that reads the sequence backwards,
        so the context at ``t_i`` depends on ``x_{t_i}, ..., x_{t_{K-1}}``.  ``times`` is validated but not fed to the GRU (the grid is
        shared by all paths).
        """
        times, paths = self._check_data(times, paths)
        return self._encode(paths)

    def _encode(self, paths: torch.Tensor) -> tuple[torch.Tensor, Normal]:
        out, _ = self.encoder(paths.flip(1))
        ctx = torch.cat([self.encoder_out(out).flip(1), paths], -1)
        loc, raw = self.qz0(ctx[:, 0]).chunk(2, dim=-1)
        return ctx, Normal(loc, raw.clamp(-20, 10).exp())

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Mean ``D(z)`` of ``p(x | z)``: ``(..., L) -> (..., D)``."""
        return self.decoder(z)

    # ------------------------------------------------------------ checks
    def _check_data(self, times: torch.Tensor, paths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        times, paths = check_paths(times, paths)
        if paths.shape[-1] != self.data_dim:
            raise ShapeError(f"paths must have shape (B, K, {self.data_dim}); got shape {tuple(paths.shape)}")
        check_like(paths, self.pz0_mean, "paths", owner="the model")
        if times.shape[0] > 1 and not bool((times == times[:1]).all()):
            raise ParameterError("a LatentSDE batch needs one time grid shared by all paths (rows of times differ)")
        return times[0], paths

    def _clock(self, times: torch.Tensor) -> tuple[_Clock, torch.Tensor, list[float]]:
        """The solver clock for an observation grid, the grid in solver time (tensor and list)."""
        grid = times.detach().to("cpu", torch.float64)
        dt = self.dt if self.dt is not None else float((grid[1:] - grid[:-1]).min()) if len(grid) > 1 else 1.0
        clock = _Clock(float(grid[0]), float(dt))
        s = clock.solver_times(times)
        return clock, s, s.detach().to("cpu", torch.float64).tolist()

    def _check_nets(self, z: torch.Tensor, t: torch.Tensor, sde: _PosteriorSDE) -> None:
        """Shapes of the three networks' outputs, and a positive finite diffusion, at the start state."""
        tt = t.expand(z.shape[0])
        ctx = sde.context_at(0.0, z)
        for name, out in (("prior_drift", self.prior_drift(z, tt)), ("posterior_drift", self.posterior_drift(z, tt, ctx)),
                          ("diffusion", self.diffusion_net(z, tt))):
            if not isinstance(out, torch.Tensor) or out.shape != z.shape:
                shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise ShapeError(f"the {name} network must return the shape of the latent state {tuple(z.shape)}; got {shape}")
            if name == "diffusion" and argument_checks_enabled() and not bool((out > 0).all()):
                if not bool(torch.isfinite(out).all()):
                    raise NonFiniteError("the diffusion network returned non-finite values")
                raise ParameterError(
                    f"the diffusion must be positive; the diffusion network returned values <= 0 (min {float(out.detach().min()):.3g})"
                )

    @staticmethod
    def _bm(s1: float, size: tuple[int, int], like: torch.Tensor, generator: torch.Generator | None) -> Any:
        """Brownian motion on the solver interval ``[0, s1]``, seeded from ``generator``."""
        import torchsde

        return torchsde.BrownianInterval(t0=0.0, t1=s1, size=size, dtype=like.dtype, device=like.device,
                                         entropy=spawn_seed(generator), dt=1.0, levy_area_approximation="none")

    def _solve(self, sde: Any, y0: torch.Tensor, ts: torch.Tensor, bm: Any, adjoint: bool,
               context: torch.Tensor | None) -> torch.Tensor:
        """Solve ``sde`` (in solver time, step 1) from ``y0`` at ``ts[0]``; the states at ``ts``."""
        import torchsde

        if adjoint:
            # each tensor once: a parameter listed twice would get its (complete) adjoint gradient twice
            params = list({id(p): p for m in (self.prior_drift, self.posterior_drift, self.diffusion_net)
                           for p in m.parameters()}.values())
            extra = [context] if context is not None and context.requires_grad else []
            return torchsde.sdeint_adjoint(sde, y0, ts, bm=bm, dt=1.0, method=self.method,
                                           adjoint_method=self.adjoint_method, adjoint_params=extra + params)
        return torchsde.sdeint(sde, y0, ts, bm=bm, dt=1.0, method=self.method)

    # -------------------------------------------------------------- ELBO
    def elbo_terms(
        self,
        times: torch.Tensor,
        paths: torch.Tensor,
        num_samples: int = 1,
        *,
        adjoint: bool | None = None,
        generator: torch.Generator | None = None,
    ) -> LatentELBO:
        """The ELBO's terms for each path, averaged over ``num_samples`` posterior draws.

        Args:
            times: ``(K,)`` (or ``(B, K)`` with identical rows), strictly increasing.
            paths: ``(B, K, D)`` observations.
            num_samples: posterior draws (``z_0`` and Brownian path) per observed path.
            adjoint: override the model's ``adjoint`` setting for this call.
            generator: randomness of ``z_0`` and of the Brownian motion (a ``BrownianInterval``
                seeded from it): equal generators give equal draws, with or without adjoint.
        """
        check_int(num_samples, "num_samples")
        times, paths = self._check_data(times, paths)
        adjoint = self.adjoint if adjoint is None else bool(adjoint)
        clock, s_times, s_list = self._clock(times)
        num_paths, L = paths.shape[0], self.latent_dim
        ctx, q = self._encode(paths)
        ctx = ctx.repeat(num_samples, 1, 1)
        loc, scale = q.loc.repeat(num_samples, 1), q.scale.repeat(num_samples, 1)
        z0 = loc + scale * randn(loc.shape, generator=generator, dtype=loc.dtype, device=loc.device)
        sde = _PosteriorSDE(self, clock, s_list, ctx, with_kl=True)
        self._check_nets(z0, times[0], sde)
        kl0 = kl_divergence(Normal(loc, scale), self.prior_z0()).sum(-1)
        y0 = torch.cat([z0, torch.zeros_like(z0[:, :1])], dim=1)
        bm = self._bm(s_list[-1], (y0.shape[0], L + 1), y0, generator)
        ys = self._solve(sde, y0, s_times, bm, adjoint, ctx)
        zs, kl_path = ys[..., :L].transpose(0, 1), ys[-1, :, L]
        obs = Normal(self.decode(zs), self.noise_std)
        rec = obs.log_prob(paths.repeat(num_samples, 1, 1)).sum((-2, -1))

        def per_path(v: torch.Tensor) -> torch.Tensor:
            return v.reshape(num_samples, num_paths).mean(0)

        return LatentELBO(per_path(rec), per_path(kl0), per_path(kl_path))

    def elbo(
        self,
        times: torch.Tensor,
        paths: torch.Tensor,
        num_samples: int = 1,
        *,
        adjoint: bool | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """ELBO estimate per path ``(B,)``: ``reconstruction - kl_initial - kl_path`` (see :meth:`elbo_terms`).

        A lower bound on ``log p(x)`` in expectation (the estimate averages ``num_samples`` draws).
        """
        return self.elbo_terms(times, paths, num_samples, adjoint=adjoint, generator=generator).elbo

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Negative ELBO averaged over a batch ``(times, paths)`` (one posterior draw per path)."""
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise TypeError("batch must be a pair (times, paths); see fokker.neural_sde.path_data")
        terms = self.elbo_terms(batch[0], batch[1])
        return -terms.elbo.mean()

    # -------------------------------------------------------------- sampling
    def _observe(self, zs: torch.Tensor, observation_noise: bool, generator: torch.Generator | None) -> torch.Tensor:
        x = self.decode(zs)
        if observation_noise:
            x = x + self.noise_std * randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        return x

    @torch.no_grad()
    def sample_prior(
        self,
        sample_shape: tuple[int, ...] | int,
        times: torch.Tensor,
        *,
        observation_noise: bool = True,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Observations of prior paths: ``z_0 ~ p(z_0)``, the prior SDE, the decoder: ``(*sample_shape, K, D)``.

        Args:
            sample_shape: number (or shape) of paths.
            times: ``(K,)`` strictly increasing.
            observation_noise: add the decoder noise ``N(0, sigma_x^2)`` (else return ``D(z_t)``).
            generator: randomness of ``z_0``, the Brownian motion and the observation noise.
        """
        shape = (sample_shape,) if isinstance(sample_shape, int) else tuple(sample_shape)
        times = self._check_times(times, "times")
        num = math.prod(shape)
        check_int(num, "number of samples")
        clock, s_times, s_list = self._clock(times)
        p = self.prior_z0()
        z0 = p.loc + p.scale * randn((num, self.latent_dim), generator=generator, dtype=times.dtype, device=times.device)
        if len(s_list) == 1:
            zs = z0[:, None]
        else:
            bm = self._bm(s_list[-1], (num, self.latent_dim), z0, generator)
            zs = self._solve(_PriorSDE(self, clock), z0, s_times, bm, adjoint=False, context=None).transpose(0, 1)
        return self._observe(zs, observation_noise, generator).reshape(*shape, len(s_list), self.data_dim)

    def _check_times(self, times: torch.Tensor, name: str) -> torch.Tensor:
        check_tensor(times, name)
        if times.dim() != 1 or times.numel() < 1:
            raise ShapeError(f"{name} must have shape (K,); got shape {tuple(times.shape)}")
        check_like(times, self.pz0_mean, name, owner="the model")
        check_finite(times, name)
        if argument_checks_enabled() and not bool((times[1:] > times[:-1]).all()):
            raise ParameterError(f"{name} must be strictly increasing")
        return times

    @torch.no_grad()
    def predict(
        self,
        times: torch.Tensor,
        paths: torch.Tensor,
        future_times: torch.Tensor,
        num_samples: int = 100,
        *,
        observation_noise: bool = True,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Posterior predictive observations at ``future_times``: ``(num_samples, B, len(future_times), D)``.

        Draws ``z_0 ~ q(z_0 | x)``, follows the posterior SDE (driven by the encoder's context)
        up to the last observation time and the prior SDE after it, and decodes.
        ``future_times`` may lie anywhere in ``[times[0], inf)``, inside the observed window
        (held-out times) or beyond it (forecasts).

        Args:
            times, paths: the observed data (as for :meth:`elbo`).
            future_times: ``(M,)`` strictly increasing, ``>= times[0]``.
            num_samples: predictive draws per path.
            observation_noise: add the decoder noise (predictive of ``x``), else ``D(z_t)``.
            generator: randomness of ``z_0``, the Brownian motion and the observation noise.
        """
        check_int(num_samples, "num_samples")
        times, paths = self._check_data(times, paths)
        future_times = self._check_times(future_times, "future_times")
        if argument_checks_enabled() and float(future_times[0]) < float(times[0]):
            raise ParameterError(f"future_times must be >= times[0] = {float(times[0]):g}")
        clock, _, s_list = self._clock(times)
        union = torch.unique(torch.cat([times, future_times]))  # sorted
        index = torch.searchsorted(union, future_times)
        num_paths = paths.shape[0]
        ctx, q = self._encode(paths)
        ctx = ctx.repeat(num_samples, 1, 1)
        loc, scale = q.loc.repeat(num_samples, 1), q.scale.repeat(num_samples, 1)
        z0 = loc + scale * randn(loc.shape, generator=generator, dtype=loc.dtype, device=loc.device)
        s_union = clock.solver_times(union)
        inside = int((union <= times[-1]).sum())  # union[:inside] is the observed window, ending at times[-1]
        # the posterior SDE over the observed window (its context ends there) ...
        bm = self._bm(s_list[-1], tuple(z0.shape), z0, generator)
        sde = _PosteriorSDE(self, clock, s_list, ctx, with_kl=False)
        zs = self._solve(sde, z0, s_union[:inside], bm, adjoint=False, context=None)
        if inside < len(union):  # ... then the prior SDE from the state at the last observation time
            start = float(s_union[inside - 1])
            s_out = s_union[inside - 1 :] - start
            bm = self._bm(float(s_out[-1]), tuple(z0.shape), z0, generator)
            zs_out = self._solve(_PriorSDE(self, clock, offset=start), zs[-1], s_out, bm, adjoint=False, context=None)
            zs = torch.cat([zs, zs_out[1:]])
        x = self._observe(zs[index].transpose(0, 1), observation_noise, generator)
        return x.reshape(num_samples, num_paths, len(index), self.data_dim)
