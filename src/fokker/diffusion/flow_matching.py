r"""Conditional flow matching (Lipman, Chen, Ben-Hamu, Nickel & Le 2023; Liu, Gong & Liu 2023;
seed 000 "Flow matching").

Noise :math:`x_0 \sim N(0, I)` at ``t = 0``, data :math:`x_1` at ``t = 1``, a conditional path
:math:`x_t = \mu_t(x_1) + \sigma_t \varepsilon`-style interpolation and its velocity :math:`u_t`;
the network regresses the velocity (Lipman et al. 2023, eq. 9; seed 000):

.. math:: \mathcal L = E_{t, x_0, x_1}\,\|v_\theta(x_t, t) - u_t(x_t \mid x_0, x_1)\|^2 .

Paths:

* ``"linear"`` (rectified flow / OT path): :math:`x_t = (1-t)x_0 + t x_1`, :math:`u_t = x_1 - x_0`;
* ``"vp"`` (Lipman et al. 2023 eq. 18-19): :math:`x_t = \alpha_{1-t} x_1 + \sigma_{1-t} x_0` with the
  VP schedule of an SDE (default ``VPSDE(0.1, 20)``), :math:`u_t = -(\dot\alpha_{1-t} x_1 + \dot\sigma_{1-t} x_0)`.

Couplings: ``"independent"`` pairs noise and data at random; ``"ot"`` re-pairs each minibatch by
the exact optimal assignment for the squared Euclidean cost (Tong et al. 2024, Pooladian et al.
2023) via ``scipy.optimize.linear_sum_assignment`` (a Hungarian-type solver; O(B^3) on the CPU,
one host round-trip per batch, the reason scipy is a dependency).

Sampling integrates :math:`dx/dt = v_\theta(x, t)` from 0 to ``t_max``; ``log_prob`` uses the same
instantaneous change of variables as the diffusion models (:mod:`.likelihood`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .._args import check_finite, check_int, check_like, check_tensor
from .._gaussian import isotropic_normal_log_prob
from .._progress import progress_bar
from .._random import rand, randn, randn_like
from ..errors import ParameterError, ShapeError
from .likelihood import LikelihoodResult, cnf_log_prob
from .._args import reference_tensor
from .model import _check_net, _check_schedule_sde, _resolve_device_dtype, check_data_batch

__all__ = ["FlowMatching", "ot_pairing"]


def ot_pairing(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """Permutation ``perm`` minimizing ``sum_i |x0[perm[i]] - x1[i]|^2`` (exact assignment)."""
    from scipy.optimize import linear_sum_assignment

    cost = torch.cdist(x0.reshape(x0.shape[0], -1).double(), x1.reshape(x1.shape[0], -1).double()) ** 2
    rows, cols = linear_sum_assignment(cost.cpu().numpy())
    perm = torch.empty(x0.shape[0], dtype=torch.long)
    perm[torch.as_tensor(cols)] = torch.as_tensor(rows)
    return perm.to(x0.device)


class FlowMatching(nn.Module):
    """Flow-matching generative model ``dx/dt = net(x, t)`` from ``N(0, I)`` (t=0) to data (t=1).

    Lipman, Chen, Ben-Hamu, Nickel & Le (2023), *Flow matching for generative modeling*: the
    conditional flow-matching loss (eq. 9), Gaussian conditional paths (eqs. 10-11) and the VP
    path (eqs. 18-19); the linear path with velocity ``x1 - x0`` is the rectified flow of Liu,
    Gong & Liu (2023), *Flow straight and fast*, eq. 1.  Minibatch OT coupling: Tong et al. (2024),
    Pooladian et al. (2023).

    Args:
        net: ``(x, t) -> velocity`` of ``x``'s shape (e.g. :class:`~fokker.diffusion.nets.ResidualTimeMLP`);
            data must have the dtype and device of its parameters (:class:`~fokker.errors.DeviceDtypeError`).
        path: ``"linear"`` or ``"vp"``.
        coupling: ``"independent"`` or ``"ot"`` (minibatch exact OT).
        sde: the VP SDE of the ``"vp"`` path (default ``fokker.sde.VPSDE()``).
        t_max: end time (``1`` for linear; the VP path is singular at 1, default ``1 - 1e-3``).
        event_shape: shape of one data point (default ``(net.dim,)`` or from the first batch).
    """

    def __init__(
        self,
        net: nn.Module,
        path: str = "linear",
        coupling: str = "independent",
        *,
        sde: nn.Module | None = None,
        t_max: float | None = None,
        event_shape: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__()
        _check_net(net, "FlowMatching")
        if path not in ("linear", "vp"):
            raise ParameterError(f"path must be 'linear' or 'vp'; got {path!r}")
        if coupling not in ("independent", "ot"):
            raise ParameterError(f"coupling must be 'independent' or 'ot'; got {coupling!r}")
        self.net, self.path, self.coupling = net, path, coupling
        if path == "vp" and sde is None:
            from ..sde.vp import VPSDE

            sde = VPSDE()
        if sde is not None:
            _check_schedule_sde(sde, "FlowMatching")
        self.sde = sde
        self.t_max = float(t_max) if t_max is not None else (1.0 if path == "linear" else 1.0 - 1e-3)
        if not 0.0 < self.t_max <= 1.0:
            raise ParameterError(f"t_max must lie in (0, 1]; got {t_max!r}")
        if event_shape is None and isinstance(getattr(net, "dim", None), int):
            event_shape = (net.dim,)
        self.event_shape = tuple(event_shape) if event_shape is not None else None
        self.last_nfe: int | None = None

    # ------------------------------------------------------------------ paths
    def interpolate(self, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x_t, u_t)`` of the conditional path between noise ``x0`` and data ``x1`` at ``t (batch,)``."""
        shape = (-1,) + (1,) * (x0.dim() - 1)
        if self.path == "linear":
            tt = t.reshape(shape)
            return (1 - tt) * x0 + tt * x1, x1 - x0
        c = self.sde.coefficients(1.0 - t.double()).to(x0.dtype, x0.device)
        a, s = c.alpha.reshape(shape), c.sigma.reshape(shape)
        da = c.f.reshape(shape) * a  # d alpha / d s
        ds = (c.g2 + 2 * c.f * c.sigma**2).reshape(shape) / (2 * s)  # d sigma / d s
        return a * x1 + s * x0, -(da * x1 + ds * x0)

    def _velocity_net(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = self.net(x, t)
        if out.shape != x.shape:
            raise ShapeError(f"net output must have the shape of its input x {tuple(x.shape)}; got {tuple(out.shape)}")
        return out

    def velocity(self, x: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        """Learned velocity ``v(x, t)``; ``t`` scalar or ``(batch,)``."""
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        return self._velocity_net(x, t.expand(x.shape[0]) if t.dim() == 0 else t)

    def loss(self, x1: torch.Tensor) -> torch.Tensor:
        """Conditional flow-matching loss of a data batch ``x1`` (mean over batch of the squared error summed
        over event dims).  Draws from the global RNG (``fokker.train.fit`` controls it)."""
        self.event_shape = check_data_batch(x1, self.net, self.event_shape, "x1", "the network of the FlowMatching model")
        x0 = randn_like(x1)
        if self.coupling == "ot":
            x0 = x0[ot_pairing(x0, x1)]
        t = self.t_max * rand((x1.shape[0],), dtype=x1.dtype, device=x1.device)
        xt, ut = self.interpolate(x0, x1, t)
        v = self._velocity_net(xt, t)
        return ((v - ut) ** 2).reshape(x1.shape[0], -1).sum(-1).mean()

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample(
        self,
        sample_shape: tuple[int, ...] | int = (1,),
        num_steps: int | None = None,
        *,
        method: str = "heun",
        rtol: float = 1e-5,
        atol: float = 1e-5,
        generator: torch.Generator | None = None,
        return_nfe: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        progress: bool | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, int]:
        """Integrate the learned ODE from ``N(0, I)``: fixed ``num_steps`` of ``"euler"``/``"heun"``
        (NFE ``num_steps`` / ``2 num_steps``) or, with ``num_steps=None``, adaptive dopri5 at ``rtol``/``atol``.

        ``generator`` draws the initial noise; ``device``/``dtype`` default to the network's (another
        dtype or device than the network's raises :class:`~fokker.errors.DeviceDtypeError`)."""
        if isinstance(sample_shape, int):
            sample_shape = (sample_shape,)
        if self.event_shape is None:
            raise ShapeError("event_shape is unknown: pass event_shape= or train the model first")
        device, dtype = _resolve_device_dtype(self.net, device, dtype, "FlowMatching")
        num_samples = math.prod(sample_shape)
        x = randn((num_samples, *self.event_shape), generator=generator, dtype=dtype, device=device)
        x, nfe = self.integrate(x, 0.0, self.t_max, num_steps, method=method, rtol=rtol, atol=atol, progress=progress)
        self.last_nfe = nfe
        x = x.reshape(*sample_shape, *self.event_shape)
        return (x, nfe) if return_nfe else x

    def integrate(
        self, x: torch.Tensor, t0: float, t1: float, num_steps: int | None = None, *,
        method: str = "heun", rtol: float = 1e-5, atol: float = 1e-5, progress: bool | None = None,
    ) -> tuple[torch.Tensor, int]:
        """Solve ``dx/dt = v(x, t)`` from ``t0`` to ``t1`` in ``num_steps`` fixed steps (``None``: adaptive);
        returns ``(x(t1), nfe)``.  ``progress``: a bar over the steps (adaptive: over the NFE)."""
        if num_steps is None:
            from torchdiffeq import odeint

            counter = [0]
            lo, hi = min(t0, t1), max(t0, t1)
            bar = progress_bar(progress=progress, desc="FlowMatching (NFE)")

            def rhs(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
                counter[0] += 1
                bar.update(1)
                return self.velocity(y, t.to(y.dtype).clamp(lo, hi))

            ts = torch.tensor([t0, t1], dtype=x.dtype, device=x.device)
            with bar:
                return odeint(rhs, x, ts, rtol=rtol, atol=atol, method="dopri5")[-1], counter[0]
        check_int(num_steps, "num_steps")
        if method not in ("euler", "heun"):
            raise ParameterError(f"method must be 'euler' or 'heun'; got {method!r}")
        ts = torch.linspace(t0, t1, num_steps + 1, dtype=torch.float64).to(x.dtype).to(x.device)
        nfe = 0
        for i in progress_bar(range(num_steps), progress=progress, desc="FlowMatching"):
            h = ts[i + 1] - ts[i]
            d = self.velocity(x, ts[i])
            if method == "euler":
                x, nfe = x + h * d, nfe + 1
            else:
                xe = x + h * d
                x, nfe = x + 0.5 * h * (d + self.velocity(xe, ts[i + 1])), nfe + 2
        return x, nfe

    # ------------------------------------------------------------------ likelihood
    def log_prob_result(self, x: torch.Tensor, *, trace: str = "auto", rtol: float = 1e-5, atol: float = 1e-5,
                        generator: torch.Generator | None = None) -> LikelihoodResult:
        """:meth:`log_prob` with its parts and the NFE."""
        check_tensor(x, "x")
        check_like(x, reference_tensor(self.net), "x", owner="the network of the FlowMatching model")
        check_finite(x, "x")
        return cnf_log_prob(
            lambda z, t: self._velocity_net(z, t), x, self.t_max, 0.0,
            lambda z: isotropic_normal_log_prob(z, None, 1.0, z.dim() - 1),
            trace=trace, rtol=rtol, atol=atol, generator=generator,
        )

    def log_prob(self, x: torch.Tensor, **options: object) -> torch.Tensor:
        """Log-density ``(batch,)`` of the learned flow at ``t_max`` (exact up to the ODE tolerance
        with the exact trace; unbiased with Hutchinson's)."""
        res = self.log_prob_result(x, **options)  # type: ignore[arg-type]
        self.last_nfe = res.nfe
        return res.log_prob
