r"""``DiffusionModel``: a forward linear SDE plus a network read through a parameterization.

The model is composed (DESIGN principle 2): ``sde`` supplies :math:`\alpha(t), \sigma(t)`
(schedule math in float64), ``net(x, t[, y])`` predicts ``eps``, ``x0``, ``score`` or ``v``,
and the exact conversions of :mod:`fokker.diffusion.parameterization` give all four views.

* ``loss(batch)``: denoising score matching (Song et al. 2021, eq. 7; Ho et al. 2020, eq. 14;
  seed 001 eqs. 54-56) with the weightings of :mod:`fokker.diffusion.losses`; ``batch`` is
  ``x0`` or ``(x0, labels)``.
* ``sample(sample_shape, sampler=..., num_steps=...)``: any sampler of
  :mod:`fokker.diffusion.samplers` by name, from the prior :math:`N(0, \sigma(T)^2 I)`.
* ``log_prob(x)``: *exact* (up to ODE tolerance) log-density of the model's PF-ODE flow
  at ``t_min`` (Song et al. 2021, eq. 13 and appendix D.2; seed 001 eq. 63; instantaneous change
  of variables, :mod:`fokker.diffusion.likelihood`).  With Hutchinson's trace it is an unbiased estimate.
* ``elbo(x)``: the variational bound of the discrete DDPM chain on the grid
  ``t_k = t_min + k (T - t_min)/K`` (Ho et al. 2020, eq. 5; seed 003), a Monte-Carlo estimate.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from .._args import reference_tensor, check_finite, check_in_interval, check_int, check_like, check_tensor
from .._gaussian import isotropic_normal_log_prob
from .._progress import progress_bar
from .._random import rand, randn, randn_like, rng_scope
from ..errors import DeviceDtypeError, ParameterError, ShapeError
from ..sde import CriticallyDampedLangevin, Schedule, time_grid
from .cld import CLDFamily
from .likelihood import LikelihoodResult, cnf_log_prob
from .losses import LogNormalTimeSampler, LogSNRTimeSampler, check_weighting, dsm_loss, edm_coefficients
from .parameterization import check_parameterization, convert, expand_like
from .samplers import DEFAULT_SAMPLER, check_final_step, get_sampler, sampler_defaults

__all__ = ["DiffusionModel", "LinearFamily", "family_for"]


def _check_schedule_sde(sde: object, owner: str) -> None:
    """Raise :class:`~fokker.errors.ParameterError` unless ``sde`` is a linear SDE with the
    :class:`fokker.sde.Schedule` protocol and ``score_domain()`` (as every ``fokker.sde.LinearSDE``)."""
    if not isinstance(sde, Schedule) or not callable(getattr(sde, "score_domain", None)):
        raise ParameterError(
            f"{owner}: sde must be a linear SDE satisfying fokker.sde.Schedule (alpha, sigma, f, g2, log_snr, "
            f"coefficients, T, t_min) with score_domain(), e.g. fokker.sde.VPSDE(); got {type(sde).__name__}"
        )


def _check_net(net: object, owner: str) -> None:
    """Raise :class:`~fokker.errors.ParameterError` unless ``net`` is an ``nn.Module`` or a callable."""
    if not (isinstance(net, nn.Module) or callable(net)):
        raise ParameterError(
            f"{owner}: net must be a torch.nn.Module (or a callable) mapping (x, t) to a tensor of x's shape; "
            f"got {type(net).__name__}"
        )


def check_data_batch(
    x: torch.Tensor, net: object, event_shape: tuple[int, ...] | None, name: str, owner: str
) -> tuple[int, ...]:
    """Validate a training batch ``x`` ``(batch, *event)`` against a network and a (possibly unknown)
    event shape: floating, the network's dtype/device, the event shape, finite.  Returns the event shape
    (taken from ``x`` when it was unknown)."""
    check_tensor(x, name)
    check_like(x, reference_tensor(net), name, owner=owner)
    if event_shape is None:
        event_shape = tuple(x.shape[1:])
    elif tuple(x.shape[1:]) != tuple(event_shape):
        raise ShapeError(f"{name} must have shape (batch, {', '.join(map(str, event_shape))}); got {tuple(x.shape)}")
    check_finite(x, name)
    return tuple(event_shape)


def _resolve_device_dtype(
    net: object, device: torch.device | str | None, dtype: torch.dtype | None, owner: str
) -> tuple[torch.device, torch.dtype]:
    """Device and dtype of samples drawn from a model with network ``net``: the network's by default;
    a requested ``dtype``/``device`` that differs from the network's raises :class:`DeviceDtypeError`."""
    ref = reference_tensor(net)
    if ref is None:
        return torch.device(device if device is not None else "cpu"), dtype or torch.get_default_dtype()
    if dtype is not None and dtype != ref.dtype:
        raise DeviceDtypeError(
            f"{owner}.sample: dtype={dtype} differs from the network's dtype {ref.dtype}; "
            f"convert the model with .to({dtype}) or leave dtype=None"
        )
    if device is not None and torch.device(device).type != ref.device.type:
        raise DeviceDtypeError(
            f"{owner}.sample: device={device} differs from the network's device {ref.device}; "
            "move the model with .to(device) or leave device=None"
        )
    return ref.device, ref.dtype


class LinearFamily:
    """What a :class:`DiffusionModel` does with a linear SDE (scalar ``alpha(t)``, ``sigma(t)``; every
    :class:`fokker.sde.LinearSDE`): denoising score matching on ``x_t = alpha x0 + sigma eps``, the samplers of
    :mod:`fokker.diffusion.samplers` from the prior ``N(0, sigma(T)^2 I)`` with a final Tweedie denoising step,
    and the PF-ODE likelihood (Song, Sohl-Dickstein, Kingma, Kumar, Ermon & Poole 2021, eqs. 5-7 and 13).  (One
    strategy object per SDE family; :class:`fokker.diffusion.cld.CLDFamily` is the phase-space one.)"""

    phase_space = False
    default_sampler = DEFAULT_SAMPLER

    def __init__(self, sde: Schedule, owner: str) -> None:
        _check_schedule_sde(sde, owner)
        self.sde = sde

    def time_domain(self) -> tuple[float, float]:
        return self.sde.score_domain()

    def data_shape(self, state_shape: tuple[int, ...] | None) -> tuple[int, ...] | None:
        return state_shape

    def loss(self, model: "DiffusionModel", x0: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        t = model.sample_t(x0.shape[0], x0.device, x0.dtype)
        eps = randn_like(x0)
        a, s = model._ab(t, x0)
        xt = a * x0 + s * eps
        pred = model._net(xt, t, y)
        iw = model._t_sampler.Z if (model.importance_sampling and model._t_sampler is not None) else None
        return dsm_loss(
            pred, model._kind, x0, xt, eps, t, self.sde, model.weighting, (model.t_min, model.T), iw, model.sigma_data
        ).mean()

    def generate(
        self, model: "DiffusionModel", num_samples: int, sampler: str, num_steps: int, *, spacing: str | None,
        y: torch.Tensor | None, score_fn: Callable | None, denoise: bool, final_step: str | None,
        generator: torch.Generator | None, dtype: torch.dtype, device: torch.device, on_call: Callable[[], object],
        **options: object,
    ) -> tuple[torch.Tensor, int]:
        fn = get_sampler(sampler)
        default = sampler_defaults(sampler, self.sde)
        final_step = check_final_step(final_step, default.final_step)
        options = {**default.options, **options}
        jump = denoise and final_step == "denoise"
        grid = time_grid(num_steps + jump, model.T, model.t_min, spacing or default.spacing, sde=self.sde)
        if jump:  # the denoiser replaces the grid's last interval (a jump to sigma = 0)
            grid = grid[:-1]
        x = randn((num_samples, *model.event_shape), generator=generator, dtype=dtype, device=device) * model.prior_std()
        inner = score_fn if score_fn is not None else model.score_fn(y)

        def score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            on_call()
            return inner(x, t)

        x, nfe = fn(score, self.sde, x, grid, generator=generator, **options)
        if denoise:
            t = torch.full((num_samples,), float(grid[-1]), dtype=dtype, device=device)
            a, s = model._ab(t, x)
            x = (x + s**2 * inner(x, t)) / a
            nfe += 1
        return x, nfe

    def velocity(self, model: "DiffusionModel", y: torch.Tensor | None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            c = self.sde.coefficients(t).to(x.dtype)
            return expand_like(c.f, x) * x - 0.5 * expand_like(c.g2, x) * model.predict(x, t, "score", y)

        return velocity

    def log_prob_result(
        self, model: "DiffusionModel", x: torch.Tensor, y: torch.Tensor | None, t0: float,
        prior_log_prob: Callable[[torch.Tensor], torch.Tensor] | None, **solver: object,
    ) -> LikelihoodResult:
        prior = prior_log_prob or (lambda z: isotropic_normal_log_prob(z, None, model.prior_std(), z.dim() - 1))
        return cnf_log_prob(self.velocity(model, y), x, t0, model.T, prior, **solver)  # type: ignore[arg-type]


def family_for(sde: object, owner: str) -> "LinearFamily | CLDFamily":
    """The strategy object of ``sde``'s family: :class:`~fokker.diffusion.cld.CLDFamily` for critically-damped
    Langevin (phase space), else :class:`LinearFamily` (which checks the schedule protocol)."""
    if isinstance(sde, CriticallyDampedLangevin):
        return CLDFamily(sde)
    return LinearFamily(sde, owner)


class DiffusionModel(nn.Module):
    """Score-based generative model ``(sde, net, parameterization)``.

    Song, Sohl-Dickstein, Kingma, Kumar, Ermon & Poole (2021), *Score-based generative modeling
    through stochastic differential equations* (forward SDE eq. 5, reverse SDE eq. 6, DSM loss
    eq. 7, probability-flow ODE eq. 13); Ho, Jain & Abbeel (2020), *Denoising diffusion
    probabilistic models* (the ``eps`` parameterization and the "simple" loss, eq. 14; the
    ELBO, eq. 5).  Seed 001 eqs. 49-65 restate both.

    Args:
        sde: forward linear SDE satisfying :class:`fokker.sde.Schedule` with ``score_domain()``
            (every :class:`fokker.sde.LinearSDE`: ``VPSDE``, ``VESDE``, ``SubVPSDE``, ...).
        net: ``nn.Module`` (or callable) mapping ``(x, t)`` (or ``(x, t, y)`` when conditional)
            to a tensor of ``x``'s shape.  Inputs must have the dtype and device of its
            parameters (:class:`~fokker.errors.DeviceDtypeError` otherwise).
        parameterization: what ``net`` predicts: ``"eps"``, ``"x0"``, ``"score"`` or ``"v"``; or
            ``"edm"``: the preconditioning of Karras, Aittala, Aila & Laine (2022, *Elucidating the
            design space of diffusion-based generative models*, table 1) in the scaled variables
            ``x/alpha``, ``sigma_tilde = sigma/alpha`` of any linear SDE:
            ``x0_hat = c_skip x/alpha + c_out net(c_in x/alpha, t)`` (the net is conditioned on ``t``,
            a monotone function of ``sigma_tilde``, in place of EDM's ``c_noise = ln(sigma_tilde)/4``),
            trained with EDM's loss weight (``weighting="edm"``) at EDM's log-normal noise levels
            ``ln sigma_tilde ~ N(p_mean, p_std^2)``.
        weighting: DSM weighting ``"simple"``, ``"sigma2"``, ``"likelihood"`` or ``"edm"`` (default:
            ``"edm"`` for the EDM parameterization, else ``"simple"``).
            CLD models take ``"eps"`` (the net predicts the velocity noise) or ``"mixed"``, Dockhorn et al.'s
            mixed score: the net predicts the residual to the velocity noise of Gaussian data
            ``N(0, sigma_data^2 I)`` (see :class:`fokker.diffusion.cld.CLDFamily`).
        sigma_data, p_mean, p_std: EDM's data scale and noise-level distribution (EDM only; ``sigma_data`` is
            also the Gaussian part's scale of the CLD ``"mixed"`` parameterization).
        importance_sampling: draw ``t`` uniformly in log-SNR for the likelihood weighting.
        t_min: smallest time used for training/sampling/likelihood (default: the SDE's
            ``t_min``, moved to ``1e-3 T`` when ``sigma(t_min) = 0``).
        event_shape: shape of one data point (default: the SDE's ``event_shape``, else
            ``(net.dim,)``, else taken from the first training batch).
        label_dropout: probability of replacing a label by the null label in ``loss``
            (classifier-free guidance training); needs ``num_classes``.
        num_classes: number of classes of a conditional ``net``; label ``num_classes`` is null.

    Raises:
        ParameterError: ``sde`` is not a linear SDE with the schedule protocol, ``net`` is neither
            a module nor a callable, or an option is out of range.
    """

    def __init__(
        self,
        sde: Schedule,
        net: nn.Module | Callable[..., torch.Tensor],
        parameterization: str = "eps",
        *,
        weighting: str | None = None,
        sigma_data: float = 0.5,
        p_mean: float = -1.2,
        p_std: float = 1.2,
        importance_sampling: bool = False,
        t_min: float | None = None,
        event_shape: tuple[int, ...] | None = None,
        label_dropout: float = 0.0,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        _check_net(net, "DiffusionModel")
        self.family = family_for(sde, "DiffusionModel")
        self.sde = sde
        self.net = net
        if self.family.phase_space and parameterization not in ("eps", "mixed"):
            raise ParameterError(
                f"a phase-space SDE (CLD) model predicts the velocity noise eps_v: parameterization must be 'eps' or "
                f"'mixed' (eps_v added to the Gaussian-data eps_v); got {parameterization!r}"
            )
        self.edm = parameterization == "edm"
        if self.family.phase_space:
            self.parameterization = parameterization
        else:
            self.parameterization = "edm" if self.edm else check_parameterization(parameterization)
        #: what the network's (preconditioned) output is read as
        self._kind = "x0" if self.edm else self.parameterization
        weighting = ("edm" if self.edm else "simple") if weighting is None else weighting
        self.weighting = check_weighting(weighting)
        if self.family.phase_space and (weighting != "simple" or importance_sampling):
            raise ParameterError("a CLD model trains by hybrid score matching: weighting='simple', no importance_sampling")
        if self.edm and weighting != "edm":
            raise ParameterError(f"the EDM parameterization trains with weighting='edm'; got {weighting!r}")
        if not (isinstance(sigma_data, (int, float)) and sigma_data > 0):
            raise ParameterError(f"sigma_data must be a positive number; got {sigma_data!r}")
        self.sigma_data, self.p_mean, self.p_std = float(sigma_data), float(p_mean), float(p_std)
        if importance_sampling and weighting != "likelihood":
            raise ParameterError("importance_sampling is defined for weighting='likelihood' only")
        self.importance_sampling = bool(importance_sampling)
        lo, T = self.family.time_domain()
        t_min = lo if t_min is None else float(t_min)
        if not (float(sde.t_min) <= t_min < T):
            raise ParameterError(f"t_min must lie in [sde.t_min, T) = [{sde.t_min}, {T}); got {t_min}")
        self.t_min, self.T = t_min, T
        if event_shape is None:
            event_shape = self.family.data_shape(getattr(sde, "event_shape", None))
        if event_shape is None and isinstance(getattr(net, "dim", None), int):
            event_shape = self.family.data_shape((net.dim,))
        self.event_shape: tuple[int, ...] | None = tuple(event_shape) if event_shape is not None else None
        if not 0.0 <= label_dropout < 1.0:
            raise ParameterError(f"label_dropout must lie in [0, 1); got {label_dropout!r}")
        if label_dropout > 0 and num_classes is None:
            raise ParameterError("label_dropout > 0 needs num_classes (label num_classes is the null label)")
        self.label_dropout = float(label_dropout)
        self.num_classes = num_classes
        self._t_sampler: LogSNRTimeSampler | None = None
        self.last_nfe: int | None = None

    # ------------------------------------------------------------------ core
    def _ab(self, t: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.sde.coefficients(t)
        return expand_like(c.alpha, x), expand_like(c.sigma, x)

    def _net(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        x_in = x
        if self.edm:
            a, s = self._ab(t, x)
            c_skip, c_out, c_in, _ = edm_coefficients(s / a, self.sigma_data)
            x_in = c_in * (x / a)
        out = self.net_output(x_in, t, y)
        if out.shape != x.shape:
            raise ShapeError(
                f"net output must have the shape of its input x {tuple(x.shape)}; got {tuple(out.shape)}"
            )
        return c_skip * (x / a) + c_out * out if self.edm else out

    def _linear_only(self, what: str) -> None:
        if self.family.phase_space:
            raise ParameterError(
                f"DiffusionModel.{what} needs a linear SDE (scalar alpha, sigma); a CLD model has the velocity score "
                "score(z, t) of phase-space states z = cat([x, v], -1) only"
            )

    def predict(self, x: torch.Tensor, t: torch.Tensor, kind: str, y: torch.Tensor | None = None) -> torch.Tensor:
        """The prediction of type ``kind`` at ``(x, t)`` without input checks (inner loops)."""
        self._linear_only("predict")
        t = t.to(x.dtype)
        a, s = self._ab(t, x)
        return convert(x, self._net(x, t, y), self._kind, kind, a, s)

    def _check(self, x: torch.Tensor, t: torch.Tensor | float, name: str = "x") -> torch.Tensor:
        check_tensor(x, name)
        check_like(x, reference_tensor(self.net), name, owner="the network of the DiffusionModel")
        if self.event_shape is not None:
            k = len(self.event_shape)
            if x.dim() != k + 1 or tuple(x.shape[1:]) != self.event_shape:
                raise ShapeError(
                    f"{name} must have shape (batch, {', '.join(map(str, self.event_shape))}); got {tuple(x.shape)}"
                )
        check_finite(x, name)
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        if t.shape != (x.shape[0],):
            raise ShapeError(f"t must be a scalar or have shape (batch,) = ({x.shape[0]},); got {tuple(t.shape)}")
        check_in_interval(t, self.t_min, self.T, "t")
        return t

    def score(self, x: torch.Tensor, t: torch.Tensor | float, y: torch.Tensor | None = None) -> torch.Tensor:
        r"""Model score :math:`s_\theta(x, t) \approx \nabla_x \log p_t(x)`, shape of ``x``.  CLD: the velocity
        score :math:`s^v_\theta(z, t) \approx \nabla_v \log p_t(z)` of states ``z`` ``(batch, 2d)``, shape ``(batch, d)``."""
        if self.family.phase_space:
            d = self.event_shape[0] if self.event_shape is not None else x.shape[-1] // 2
            saved, self.event_shape = self.event_shape, (2 * d,)
            try:
                t = self._check(x, t, "z")
            finally:
                self.event_shape = saved
            return self.family.v_score(self, x, t, y)
        return self.predict(x, self._check(x, t), "score", y)

    def denoise(self, x: torch.Tensor, t: torch.Tensor | float, y: torch.Tensor | None = None) -> torch.Tensor:
        r"""Denoiser :math:`\hat x_0(x, t) \approx E[x_0 | x_t = x]` (Tweedie)."""
        return self.predict(x, self._check(x, t), "x0", y)

    def eps(self, x: torch.Tensor, t: torch.Tensor | float, y: torch.Tensor | None = None) -> torch.Tensor:
        r"""Noise prediction :math:`\hat\varepsilon(x, t) = -\sigma(t) s_\theta(x, t)`."""
        return self.predict(x, self._check(x, t), "eps", y)

    def v(self, x: torch.Tensor, t: torch.Tensor | float, y: torch.Tensor | None = None) -> torch.Tensor:
        r"""Velocity prediction :math:`\alpha\hat\varepsilon - \sigma\hat x_0`."""
        return self.predict(x, self._check(x, t), "v", y)

    def score_fn(self, y: torch.Tensor | None = None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The unchecked score as a plain callable ``(x, t) -> score`` for the samplers (CLD: the velocity score)."""
        if self.family.phase_space:
            return lambda z, t: self.family.v_score(self, z, t, y)
        return lambda x, t: self.predict(x, t, "score", y)

    # ------------------------------------------------------------------ training
    def sample_t(
        self,
        num_samples: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """``(num_samples,)`` training times: uniform on ``[t_min, T]``, uniform in log-SNR (importance
        sampling), or EDM's log-normal noise levels (the EDM parameterization)."""
        if self.edm:
            if self._t_sampler is None:
                self._t_sampler = LogNormalTimeSampler(self.sde, self.t_min, self.T, self.p_mean, self.p_std)
            return self._t_sampler(num_samples, device, generator=generator).to(dtype or torch.get_default_dtype())
        if self.importance_sampling:
            if self._t_sampler is None:
                self._t_sampler = LogSNRTimeSampler(self.sde, self.t_min, self.T)
            return self._t_sampler(num_samples, device, generator=generator).to(dtype or torch.get_default_dtype())
        u = rand((num_samples,), generator=generator, device=device, dtype=dtype)
        return self.t_min + (self.T - self.t_min) * u

    def loss(self, batch: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Denoising score-matching loss of a batch ``x0`` (or ``(x0, labels)``): a scalar.

        Draws ``t`` and the noise from the global RNG (``fokker.train.fit`` controls it).
        ``x0`` must have the network's dtype and device (:class:`~fokker.errors.DeviceDtypeError`)."""
        y = None
        if isinstance(batch, (tuple, list)):
            x0, y = batch[0], batch[1]
        else:
            x0 = batch
        self.event_shape = check_data_batch(x0, self.net, self.event_shape, "x0", "the network of the DiffusionModel")
        if y is not None and self.label_dropout > 0:
            drop = rand((x0.shape[0],), device=y.device) < self.label_dropout
            y = torch.where(drop, torch.full_like(y, self.num_classes), y)
        return self.family.loss(self, x0, y)

    def net_output(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """The network's output at ``(x, t)`` (label ``y`` when conditional), unchecked."""
        return self.net(x, t) if y is None and self.num_classes is None else self.net(x, t, y)

    # ------------------------------------------------------------------ sampling
    def _batch_shape(self, sample_shape: tuple[int, ...] | torch.Size | int) -> tuple[int, ...]:
        if isinstance(sample_shape, int):
            sample_shape = (sample_shape,)
        if self.event_shape is None:
            raise ShapeError("event_shape is unknown: pass event_shape= to DiffusionModel or train it first")
        return tuple(sample_shape)

    def prior_std(self) -> float:
        """Standard deviation ``sigma(T)`` of the Gaussian prior ``N(0, sigma(T)^2 I)``."""
        self._linear_only("prior_std")
        return float(self.sde.sigma(float(self.T)))

    @torch.no_grad()
    def sample(
        self,
        sample_shape: tuple[int, ...] | torch.Size | int = (1,),
        sampler: str | None = None,
        num_steps: int = 18,
        *,
        spacing: str | None = None,
        y: torch.Tensor | None = None,
        score_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        denoise: bool = True,
        final_step: str | None = None,
        generator: torch.Generator | None = None,
        return_nfe: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        progress: bool | None = None,
        **options: object,
    ) -> torch.Tensor | tuple[torch.Tensor, int]:
        """Draw samples of shape ``sample_shape + event_shape``.

        Args:
            sampler: a name of :data:`fokker.diffusion.samplers.SAMPLERS` (default: ``DEFAULT_SAMPLER``);
                for CLD one of :data:`fokker.diffusion.cld.CLD_SAMPLERS` (default ``"sscs"``).
            num_steps: number of grid intervals (the NFE per sampler is in its docstring).
            spacing: time-grid spacing (default per sampler and SDE family,
                :func:`fokker.diffusion.samplers.sampler_defaults`, which also sets default sampler options).
            y: labels for a conditional net (``None``: the null label when conditional).
            score_fn: override the score (e.g. a guided score from :mod:`.guidance`).
            denoise: return the Tweedie denoiser :math:`\\hat x_0` at the grid's last time (one more NFE).
            final_step: with ``denoise``, ``"sampler"``: the sampler runs all ``num_steps`` intervals down to
                ``t_min`` and the denoiser is applied there; ``"denoise"``: the grid is spaced for
                ``num_steps + 1`` intervals, the sampler runs the first ``num_steps`` and the denoiser replaces
                the last one (a jump to :math:`\\sigma = 0`, as the final step of diffusers and k-diffusion);
                the NFE is the same.  Default: the sampler's measured choice for this SDE,
                :func:`fokker.diffusion.samplers.sampler_defaults`.
            generator: every random draw (the prior sample and the samplers' noise) comes from it.
            device, dtype: default the network's; another dtype or device than the network's
                raises :class:`~fokker.errors.DeviceDtypeError`.
            progress: a bar counting the network evaluations (``None``: on a terminal only).
            options: sampler options (``eta``, ``snr``, ``rtol`` ...); they override the defaults of
                :func:`~fokker.diffusion.samplers.sampler_defaults`.
        """
        check_int(num_steps, "num_steps")
        shape = self._batch_shape(sample_shape)
        sampler = sampler or self.family.default_sampler
        device, dtype = _resolve_device_dtype(self.net, device, dtype, "DiffusionModel")
        bar = progress_bar(progress=progress, desc=f"DiffusionModel.sample ({sampler}, NFE)")
        with bar:
            x, nfe = self.family.generate(
                self, math.prod(shape), sampler, num_steps, spacing=spacing, y=y, score_fn=score_fn, denoise=denoise,
                final_step=final_step, generator=generator, dtype=dtype, device=device, on_call=lambda: bar.update(1),
                **options,
            )
        self.last_nfe = nfe
        x = x.reshape(*shape, *self.event_shape)
        return (x, nfe) if return_nfe else x

    # ------------------------------------------------------------------ likelihood
    def probability_flow(
        self, y: torch.Tensor | None = None
    ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        r"""PF-ODE velocity of the model's state (Song et al. 2021, eq. 13; seed 001 eq. 63): linear SDEs
        :math:`f(t) x - \tfrac12 g^2(t) s_\theta(x, t)`; CLD :math:`A z - (0, \Gamma\beta\, s_\theta^v(z, t))`."""
        return self.family.velocity(self, y)

    def log_prob_result(
        self,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        *,
        trace: str = "auto",
        rtol: float = 1e-5,
        atol: float = 1e-5,
        method: str = "dopri5",
        t_min: float | None = None,
        prior_log_prob: Callable[[torch.Tensor], torch.Tensor] | None = None,
        generator: torch.Generator | None = None,
    ) -> LikelihoodResult:
        """:meth:`log_prob` with the prior term, the divergence integral and the NFE."""
        self._check(x, self.T)
        t0 = self.t_min if t_min is None else float(t_min)
        return self.family.log_prob_result(
            self, x, y, t0, prior_log_prob, trace=trace, rtol=rtol, atol=atol, method=method, generator=generator
        )

    def log_prob(self, x: torch.Tensor, y: torch.Tensor | None = None, **options: object) -> torch.Tensor:
        """Log-density ``(batch,)`` of the model's PF-ODE flow at ``t_min`` (exact up to the ODE
        tolerance with ``trace="exact"``, the default for event size <= 16; unbiased with
        Hutchinson's trace).  ``options``: see :meth:`log_prob_result`; ``last_nfe`` holds the NFE."""
        res = self.log_prob_result(x, y, **options)  # type: ignore[arg-type]
        self.last_nfe = res.nfe
        return res.log_prob

    @torch.no_grad()
    def elbo(
        self,
        x: torch.Tensor,
        num_steps: int = 1000,
        y: torch.Tensor | None = None,
        chain: nn.Module | None = None,
        variance: str = "beta_tilde",
        *,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        r"""ELBO ``(batch,)`` of the discrete DDPM chain ``x -> x_1 -> ... -> x_K`` on the times
        ``t_k = t_0 + k (T - t_0)/K`` (``t_0`` = the SDE's ``t_min``), a Monte-Carlo estimate.

        The forward chain has marginals :math:`q(x_k|x) = N(\alpha_k x, \sigma_k^2 I)` (the SDE's),
        the reverse kernel is :math:`p_\theta(x_{k-1}|x_k) = q(x_{k-1}|x_k, x = \hat x_0(x_k, t_k))`
        and the decoder :math:`p(x|x_1) = N(\hat x_0(x_1, t_1), (\sigma_1/\alpha_1)^2 I)`
        (Ho et al. 2020 with a continuous decoder; seed 003):

        .. math::
            \mathrm{ELBO} = E_q[\log p(x|x_1)] - \sum_{k=2}^K E_q\,
            \frac{c_k^2\|x - \hat x_0(x_k, t_k)\|^2}{2 v_k}
            - \frac{\alpha_K^2\|x\|^2}{2\sigma_K^2},
            \quad c_k = \frac{\alpha_{k-1}\sigma_{k|k-1}^2}{\sigma_k^2},\;
            v_k = \frac{\sigma_{k|k-1}^2\sigma_{k-1}^2}{\sigma_k^2}

        (the KL terms between Gaussians of equal variance; the last term is the KL to the prior
        :math:`N(0, \sigma_K^2 I)`).  One draw of ``x_k`` per term: unbiased for the ELBO, which
        lower-bounds :math:`\log p(x)` of the chain's model.  ``num_steps`` network evaluations;
        the draws come from ``generator``.

        With ``chain`` (a :class:`fokker.sde.DDPM`, e.g. ``DDPM.from_sde(sde, N, exact=True)``) the
        bound is that chain's (``chain.elbo_terms`` with this model's noise prediction at
        ``t_k = chain.time(k)`` and reverse variance ``variance``: ``"beta"`` or ``"beta_tilde"``),
        for vector data ``(batch, d)``.
        """
        self._linear_only("elbo")
        self._check(x, self.T)
        if chain is not None:
            def eps_model(xk: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
                return self.predict(xk, chain.time(k).to(xk.dtype).to(xk.device), "eps", y)

            with rng_scope(generator, devices=(x.device,)):  # DDPM.elbo_terms takes no generator
                return -chain.elbo_terms(x, eps_model, variance=variance).total()
        check_int(num_steps, "num_steps", minimum=2)
        t0 = float(self.sde.t_min)
        ts = torch.linspace(t0, self.T, num_steps + 1, dtype=torch.float64)[1:]
        c = self.sde.coefficients(ts).to(x.dtype, x.device)
        b = x.shape[0]
        dims = tuple(range(1, x.dim()))
        d = x[0].numel()
        # decoder term at k = 1
        x1 = c.alpha[0] * x + c.sigma[0] * randn_like(x, generator)
        x0_hat = self.predict(x1, c.t[0].expand(b), "x0", y)
        tau2 = (c.sigma[0] / c.alpha[0]) ** 2
        total = -0.5 * ((x - x0_hat) ** 2).sum(dims) / tau2 - 0.5 * d * torch.log(2 * math.pi * tau2)
        for k in range(1, num_steps):
            a_t, s_t, a_s, s_s = c.alpha[k], c.sigma[k], c.alpha[k - 1], c.sigma[k - 1]
            var_ts = s_t**2 - (a_t / a_s) ** 2 * s_s**2  # sigma^2_{t|s}
            coef = a_s * var_ts / s_t**2
            var = var_ts * s_s**2 / s_t**2
            xt = a_t * x + s_t * randn_like(x, generator)
            x0_hat = self.predict(xt, c.t[k].expand(b), "x0", y)
            total = total - 0.5 * coef**2 * ((x - x0_hat) ** 2).sum(dims) / var
        # KL(N(a_K x, s_K^2 I) || N(0, s_K^2 I))
        return total - 0.5 * c.alpha[-1] ** 2 * (x**2).sum(dims) / c.sigma[-1] ** 2
