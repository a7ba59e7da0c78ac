"""The one training loop: ``fit(model, data, steps=...)``.

Every fokker model (flows, diffusion models, EBMs, learned samplers) exposes
``loss(batch) -> scalar`` and is trained here.  ``fit`` is a plain loop over named parts
that are tested on their own:

* :class:`~fokker.train.data.BatchSource` -- minibatches from a tensor / tuple / Dataset /
  callable, or ``loss(batch_size)`` for data-free objectives (``data=None``);
* :func:`~fokker.train.step.compute_gradients` -- forward, backward, all-reduce, clip;
* :class:`~fokker.train.state.TrainState` -- optimizer / scheduler / EMA update, and the
  state a checkpoint or the NaN guard saves;
* :class:`~fokker.train.guard.NanGuard` -- skips non-finite steps, returns to the last
  good state and raises :class:`fokker.errors.TrainingDivergedError` when the run diverged;
* :class:`~fokker.train.checkpoint.Checkpointer` -- atomic checkpoints and resume;
* :func:`~fokker.train.validation.heldout_loss` and
  :class:`~fokker.train.validation.EarlyStopping` -- validation loss, early stopping with
  best-weight restore;
* :class:`~fokker.train.randomness.RunRandomness` -- ``generator=`` / ``seed=`` semantics;
* data parallelism under ``torchrun`` (:mod:`fokker.train.distributed`) and a progress bar.

The loss is read to the host once per step (one sync) to drive the guard and the progress bar.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .._args import check_int, check_positive
from .._progress import progress_bar
from ..errors import ParameterError
from .checkpoint import Checkpointer
from .data import BatchSource, DataLike, check_data, to_device
from .distributed import broadcast_parameters, world_info
from .guard import NanGuard
from .randomness import RunRandomness
from .state import TrainState
from .step import compute_gradients
from .validation import EarlyStopping, heldout_loss

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


@dataclass
class FitResult:
    """What :func:`fit` returns."""

    losses: list[float] = field(default_factory=list)  #: loss per completed step (NaN for skipped steps)
    steps: int = 0  #: total optimizer steps done, including those before a resume
    bad_steps: int = 0  #: steps skipped by the NaN guard
    ema: AveragedModel | None = None  #: EMA of the weights (``ema.module`` is a model copy)
    seconds: float = 0.0  #: wall time of this call
    resumed_from: int | None = None  #: step loaded from the checkpoint, if any
    val_losses: list[tuple[int, float]] = field(default_factory=list)  #: (step, validation loss)
    best_step: int | None = None  #: step of the lowest validation loss
    stopped_early: bool = False  #: early stopping ended the run


def fit(
    model: nn.Module,
    data: DataLike = None,
    *,
    steps: int = 1000,
    batch_size: int = 256,
    lr: float = 1e-3,
    optimizer: torch.optim.Optimizer | OptimizerFactory | None = None,
    scheduler: Callable[[torch.optim.Optimizer], Any] | None = None,
    grad_clip: float | None = None,
    ema: float | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 500,
    resume: bool = True,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    progress: bool | None = None,
    callback: Callable[[int, float, nn.Module], bool | None] | None = None,
    max_bad_steps: int = 10,
    loss_fn: Callable[[nn.Module, Any], torch.Tensor] | None = None,
    val_data: DataLike = None,
    val_every: int = 100,
    patience: int | None = None,
) -> FitResult:
    """Train ``model`` by minimising ``model.loss(batch)`` for ``steps`` optimizer steps.

    Args:
        model: an ``nn.Module`` with ``loss(batch) -> scalar tensor`` (or pass ``loss_fn``).
        data: tensor ``(N, ...)``; tuple of tensors sharing ``N`` (batches are tuples);
            ``Dataset``; callable ``data(n) -> batch``; or ``None`` (``loss(batch_size)``).
            Floating tensors must have the dtype of the model's parameters and finite
            values; they may live on another device (each batch is moved to the model's).
        steps: total number of optimizer steps (a resumed run continues up to it).
        batch_size: global batch size (split across ranks under torchrun).
        lr: learning rate of the default Adam optimizer.
        optimizer: an optimizer instance, or a factory ``params -> optimizer``.
        scheduler: factory ``optimizer -> lr scheduler`` stepped once per step.
        grad_clip: max global gradient norm (``None``: no clipping).
        ema: EMA decay (e.g. ``0.999``); the average is returned as ``result.ema``.
        checkpoint: path of the checkpoint file; written atomically (format:
            :mod:`fokker.train.checkpoint`; read it with :func:`fokker.train.load_checkpoint`).
        checkpoint_every: steps between checkpoints (and between refreshes of the NaN
            guard's last good state, also without ``checkpoint``).
        resume: continue from ``checkpoint`` if it exists.
        generator: the run's randomness.  With ``generator`` (or ``seed``) the batch order
            and every global-RNG draw of the loss come from it, the caller's global RNG is
            left untouched, and a resumed run repeats an uninterrupted one exactly.  With
            neither, the global RNG is used as it is.
        seed: shorthand for ``generator=torch.Generator().manual_seed(seed)``.
        progress: tqdm progress bar (rank 0 only): ``None`` on a terminal only, ``True``, ``False``.
        callback: ``callback(step, loss, model)`` after every step; returning ``True`` stops training.
        max_bad_steps: consecutive non-finite steps tolerated before giving up.
        loss_fn: ``loss_fn(model, batch)`` used instead of ``model.loss``.
        val_data: held-out data (same kinds as ``data``) evaluated in eval mode without
            gradients every ``val_every`` steps and at the end: a tensor / tuple / Dataset
            whole (row-weighted mean over chunks of ``batch_size``), a callable as one batch.
        val_every: steps between validation evaluations.
        patience: stop after this many evaluations without a lower validation loss and
            restore the weights of the best one (``None``: never stop early).

    Returns:
        :class:`FitResult` with the loss history, step count, validation history and EMA model.

    Raises:
        TrainingDivergedError: the loss stayed non-finite for more than ``max_bad_steps``
            steps, or the parameters became non-finite; model, optimizer, scheduler and EMA
            are restored to the last good state first (see :mod:`fokker.train.guard`).
        DeviceDtypeError: floating ``data`` / ``val_data`` of another dtype than the model.
    """
    check_int(steps, "steps", minimum=0)
    check_int(batch_size, "batch_size")
    check_positive(lr, "lr")
    check_int(checkpoint_every, "checkpoint_every")
    check_int(max_bad_steps, "max_bad_steps", minimum=0)
    check_int(val_every, "val_every")
    if grad_clip is not None:
        check_positive(grad_clip, "grad_clip")
    if ema is not None and not (0.0 < float(ema) < 1.0):
        raise ParameterError(f"ema must be a decay in (0, 1); got {ema!r}")
    if patience is not None:
        check_int(patience, "patience")
        if val_data is None:
            raise ParameterError("patience (early stopping) needs val_data")
    if loss_fn is None and not callable(getattr(model, "loss", None)):
        raise TypeError(f"{type(model).__name__} has no loss(batch) method; pass loss_fn=")
    loss_of = loss_fn or (lambda m, b: m.loss(b))
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ParameterError(f"{type(model).__name__} has no trainable parameters")
    device = params[0].device
    dtype = next((p.dtype for p in params if p.is_floating_point()), None)
    check_data(data, "data", dtype)
    val_kind = check_data(val_data, "val_data", dtype) if val_data is not None else None

    rank, world = world_info()
    if world > 1:
        broadcast_parameters(model)
    opt = optimizer if isinstance(optimizer, torch.optim.Optimizer) else (optimizer or _adam(lr))(params)
    averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(float(ema)), use_buffers=True) if ema else None
    rng = RunRandomness(generator, seed, device, rank, world)
    t0 = time.perf_counter()
    with rng.scope():
        state = TrainState(
            model, opt, scheduler(opt) if scheduler is not None else None, averaged,
            BatchSource(data, batch_size, rng.batch_seed, rank, world),
        )
        result = FitResult(ema=averaged)
        stopping = EarlyStopping(patience)
        saver = Checkpointer(checkpoint, checkpoint_every, rank)
        saved = saver.load(map_location=device) if resume else None
        if saved is not None:
            result.resumed_from = _restore(saved, state, rng, stopping, result)
        step = result.resumed_from or 0
        guard = NanGuard(state, max_bad_steps, step, saver.path, bad_steps=result.bad_steps)
        bar = progress_bar(total=steps, initial=step, progress=progress if rank == 0 else False,
                           desc=type(model).__name__)
        was_training = model.training
        model.train()
        try:
            while step < steps:
                opt.zero_grad(set_to_none=True)
                batch = to_device(state.batches.next(), device)
                loss, grad_norm = compute_gradients(model, batch, loss_of, params, grad_clip, world)
                step += 1
                if guard.check_step(step, loss, grad_norm):
                    state.update()
                    result.losses.append(loss)
                else:
                    opt.zero_grad(set_to_none=True)
                    result.losses.append(math.nan)
                bar.update(1)
                if step % 10 == 0 or step == steps:
                    bar.set_postfix(loss=f"{loss:.4g}")
                stop = False
                if not guard.in_bad_streak and val_kind is not None and (step % val_every == 0 or step == steps):
                    value = heldout_loss(model, loss_of, val_data, val_kind, batch_size, device)
                    result.val_losses.append((step, value))
                    if stopping.update(step, value, model):
                        stopping.restore_best(model)
                        result.stopped_early = stop = True
                if not guard.in_bad_streak and (saver.due(step, steps) or stop):
                    guard.mark_good(step)
                    saver.save(step, _checkpoint_state(state, rng, stopping, result, guard.total))
                if callback is not None and callback(step, loss, model):
                    stop = True
                if stop:
                    break
            guard.check_parameters(step)  # no run ends with non-finite weights
            if saver.saved_step != step:
                saver.save(step, _checkpoint_state(state, rng, stopping, result, guard.total))
        finally:
            bar.close()
            model.train(was_training)
    result.steps = step
    result.bad_steps = guard.total
    result.best_step = stopping.best_step
    result.seconds = time.perf_counter() - t0
    return result


def _adam(lr: float) -> OptimizerFactory:
    return lambda params: torch.optim.Adam(params, lr=lr)


def _checkpoint_state(
    state: TrainState, rng: RunRandomness, stopping: EarlyStopping, result: FitResult, bad_steps: int
) -> dict[str, Any]:
    """Everything after ``"format"`` and ``"step"`` in a checkpoint (see :mod:`fokker.train.checkpoint`)."""
    return {
        **state.state_dict(),
        "rng": rng.state_dict(),
        "losses": list(result.losses),
        "bad_steps": bad_steps,
        "val_losses": list(result.val_losses),
        "early_stopping": stopping.state_dict(),
    }


def _restore(
    saved: dict[str, Any], state: TrainState, rng: RunRandomness, stopping: EarlyStopping, result: FitResult
) -> int:
    """Load a checkpoint into the run; returns its step."""
    state.load_state_dict(saved)
    rng.load_state_dict(saved["rng"])
    stopping.load_state_dict(saved["early_stopping"])
    result.losses = list(saved["losses"])
    result.bad_steps = saved["bad_steps"]
    result.val_losses = list(saved["val_losses"])
    return int(saved["step"])
