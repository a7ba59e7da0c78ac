"""Fit a flow to an unnormalized target density (variational inference with a flow).

``fit_to_target(flow, target)`` trains ``q = flow`` towards ``pi = gamma / Z`` from evaluations of
``log gamma`` only (no data), then returns the importance-sampling estimate of ``log Z`` with
``q`` as the proposal.  Losses, for ``x = T(e)``, ``e ~ p_base`` (reparameterized) and
``log w(x) = log gamma(x) - log q(x)``:

* ``"kl"`` -- reverse KL (Rezende & Mohamed 2015, sec. 4, eq. 15):
  ``KL(q || pi) - log Z = E_q[-log w]``, the negative ELBO.  Mode seeking.
* ``"forward_kl"`` -- forward KL ``KL(pi || q)`` with self-normalized importance weights (Müller
  et al. 2019, *Neural importance sampling*, sec. 3.2): gradient ``-sum_i W_i grad log q(x_i)``,
  ``x_i ~ q`` held fixed, ``W_i = softmax(log w)_i``; mass covering, no gradient through the target.
* ``"alpha"`` -- the alpha (Rényi) divergence ``D_alpha(pi || q) = log E_q[w^alpha] / (alpha - 1)``,
  ``alpha > 1`` (Midgley et al. 2023, *Flow annealed importance sampling bootstrap*, ICLR, eq. 5
  with ``alpha = 2``), by its exact score-function gradient
  ``grad D_alpha = -E_q[w^alpha grad log q] / E_q[w^alpha]``: the forward-KL update with weights
  ``softmax(alpha log w)``; more mass covering than the forward KL as ``alpha`` grows.
  (The reparameterized gradient of the same quantity, Li & Turner 2016, follows single dominant
  samples and diverged in our tests, so it is not used.)

The returned :class:`~fokker.importance.LogZEstimate` is exact in the importance-sampling sense:
``E_q[w] = Z`` for any flow, so ``log_Z`` is consistent (biased low for finite ``n``) and
``elbo = mean log w <= log Z`` in expectation; with exact target samples ``eubo`` (``E_pi[log w]
>= log Z``) too.

The target is used through ``target.log_prob(x)`` only (a :class:`fokker.targets.Target`, any
object with ``log_prob``, or a callable ``x -> log gamma(x)``), so this module does not depend on
``fokker.targets``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from .. import _random
from .._args import check_int
from .._progress import progress_bar
from ..errors import DeviceDtypeError, NonFiniteError, ParameterError, ShapeError
from ..importance import LogZEstimate
from .flow import Flow

__all__ = ["fit_to_target"]

_LOSSES = ("kl", "forward_kl", "alpha")


def _log_density(target: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    if hasattr(target, "log_prob") and callable(target.log_prob):
        return target.log_prob
    if callable(target):
        return target
    raise ParameterError(f"target must have log_prob(x) or be a callable x -> log gamma(x); got {type(target).__name__}")


def _check_target_like_flow(flow: Flow, target: Any) -> None:
    dim = getattr(target, "dim", None)
    if isinstance(dim, int) and flow.event_shape != (dim,):
        raise ShapeError(f"the flow's event_shape {flow.event_shape} does not match the target's dimension ({dim},)")
    ref_fn = getattr(target, "reference_tensor", None)
    ref = ref_fn() if callable(ref_fn) else None
    mine = next((p for p in flow.parameters() if p.is_floating_point()), None)
    if mine is None:
        mine = next((b for b in flow.buffers() if b.is_floating_point()), None)
    if isinstance(ref, torch.Tensor) and mine is not None and (ref.dtype != mine.dtype or ref.device != mine.device):
        raise DeviceDtypeError(
            f"the flow is {mine.dtype} on {mine.device} but the target {getattr(target, 'name', '')!r} is {ref.dtype} "
            f"on {ref.device}; move one of them, e.g. flow.to({ref.dtype})"
        )


def _log_weights(flow: Flow, log_gamma, num_samples: int, generator, reparameterized: bool):
    x, log_q = flow.sample_and_log_prob((num_samples,), generator=generator)
    if not reparameterized:
        x, log_q = x.detach(), log_q.detach()
    return x, log_gamma(x) - log_q


def fit_to_target(
    flow: Flow,
    target: Any,
    steps: int = 2000,
    *,
    loss: str = "kl",
    alpha: float = 2.0,
    batch_size: int = 256,
    lr: float = 1e-3,
    grad_clip: float | None = 10.0,
    num_samples: int = 4096,
    eubo: bool | None = None,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    progress: bool | None = None,
) -> LogZEstimate:
    """Train ``flow`` (in place, Adam) to the unnormalized ``target``; return ``log Z`` by importance sampling.

    Args:
        flow: an unconditional :class:`~fokker.flows.Flow` with event shape ``(dim,)``, in the
            target's dtype and device.
        target: ``log gamma``: a Target, an object with ``log_prob``, or a callable.
        steps: optimisation iterations.
        loss: ``"kl"`` (reverse KL), ``"forward_kl"`` (self-normalized importance weights) or
            ``"alpha"`` (Rényi divergence of order ``alpha > 1``); see the module docstring.
        batch_size: samples of ``q`` per iteration.
        lr, grad_clip: Adam learning rate and gradient-norm clip (``None``: no clip).
        num_samples: importance samples of the final estimate.
        eubo: also the EUBO from exact target samples (default: when ``target.has_exact_samples``).
        generator, seed: randomness of training and estimate (``seed`` is a shorthand).
        progress: tqdm bar over the iterations (``None``: on a terminal only).

    Returns a :class:`~fokker.importance.LogZEstimate` from ``num_samples`` draws of the trained flow:
    ``log_Z = log mean w``, ``stderr``, ``ess`` (a fraction), ``elbo``, ``eubo``, ``samples``,
    ``log_weights``; ``details["losses"]`` holds the training losses ``(steps,)`` (the negative ELBO for
    ``"kl"``; for the other two the weighted ``-log q`` whose gradient is the divergence's).
    ``num_target_evals = (steps * batch_size + num_samples)`` (+ ``num_samples`` for the EUBO).

    Raises :class:`~fokker.errors.NonFiniteError` when the loss becomes NaN or infinite (naming the
    iteration: usually ``log gamma`` is NaN or ``-inf`` where the flow puts mass),
    :class:`~fokker.errors.ShapeError` / :class:`~fokker.errors.DeviceDtypeError` when flow and
    target disagree in dimension, dtype or device.
    """
    if not isinstance(flow, Flow):
        raise ParameterError(f"flow must be a fokker.flows.Flow; got {type(flow).__name__}")
    if flow.context_dim:
        raise ParameterError("fit_to_target needs an unconditional flow (context_dim=0)")
    if loss not in _LOSSES:
        raise ParameterError(f"loss must be one of {_LOSSES}; got {loss!r}")
    if loss == "alpha" and not (isinstance(alpha, (int, float)) and alpha > 1):
        raise ParameterError(f"alpha must be a number > 1; got {alpha!r}")
    check_int(steps, "steps", 0)
    check_int(batch_size, "batch_size", 1)
    check_int(num_samples, "num_samples", 1)
    log_gamma = _log_density(target)
    _check_target_like_flow(flow, target)
    ref = next((p for p in flow.parameters()), None)
    gen = _random.make_generator(generator, seed, ref.device if ref is not None else None)
    params = [p for p in flow.parameters() if p.requires_grad]
    if steps > 0 and not params:
        raise ParameterError("the flow has no trainable parameters")
    opt = torch.optim.Adam(params, lr=lr) if params else None
    losses = torch.empty(steps)
    flow.train()
    for step in progress_bar(range(steps), progress=progress, desc=f"fit flow ({loss})"):
        opt.zero_grad(set_to_none=True)
        if loss == "kl":
            _, lw = _log_weights(flow, log_gamma, batch_size, gen, reparameterized=True)
            value = -lw.mean()
        else:  # the score-function gradient of D_alpha (alpha = 1: the forward KL)
            with torch.no_grad():
                x, lw = _log_weights(flow, log_gamma, batch_size, gen, reparameterized=False)
                w = torch.softmax((alpha if loss == "alpha" else 1.0) * lw, 0)
            value = -(w * flow.log_prob(x)).sum()
        if not bool(torch.isfinite(value)):
            raise NonFiniteError(
                f"the {loss!r} loss is {float(value.detach())} at iteration {step}: log gamma is NaN or -inf at some samples of "
                f"the flow (or the flow diverged); check the target's support or lower lr"
            )
        value.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        opt.step()
        losses[step] = value.detach()
    flow.eval()
    with torch.no_grad():
        x, lw = _log_weights(flow, log_gamma, num_samples, gen, reparameterized=False)
        want_eubo = bool(getattr(target, "has_exact_samples", False)) if eubo is None else bool(eubo)
        eubo_w = None
        if want_eubo:
            xt = target.sample((num_samples,), generator=gen)
            eubo_w = log_gamma(xt) - flow.log_prob(xt)
    evals = steps * batch_size + num_samples * (2 if want_eubo else 1)
    return LogZEstimate.from_log_weights(
        lw, samples=x, eubo_log_weights=eubo_w, num_target_evals=evals, details={"losses": losses}
    )
