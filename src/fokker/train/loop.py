"""The one training loop: ``fit(model, data, steps=...)``.

Every fokker model (flows, diffusion models, EBMs, learned samplers) exposes
``loss(batch) -> scalar`` and is trained here.  The loop provides:

* minibatching from a tensor / tuple / Dataset / callable, or ``loss(batch_size)``
  for data-free objectives (``data=None``);
* Adam by default (or any optimizer factory), optional gradient clipping and
  learning-rate scheduler;
* an exponential moving average of the weights (``torch.optim.swa_utils.AveragedModel``);
* an optional validation loss (``val_data``) every ``val_every`` steps, with early
  stopping after ``patience`` evaluations without improvement (restoring the best
  weights);
* a NaN guard: a step with a non-finite loss or gradient is skipped; more than
  ``max_bad_steps`` in a row, or non-finite parameters, restore the last good
  state and raise :class:`fokker.errors.TrainingDivergedError` (the checkpoint on
  disk is never overwritten with a non-finite state);
* atomic checkpoints every ``checkpoint_every`` steps and at the end, and resume
  from an existing checkpoint (model, optimizer, scheduler, EMA, data order, RNG);
* data parallelism under ``torchrun`` (see :mod:`fokker.train.distributed`);
* a tqdm progress bar showing the loss.

The loss is read to the host once per step (one sync) to drive the guard and
the progress bar.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from .._args import check_int, check_positive
from ..errors import NonFiniteError, TrainingDivergedError
from . import checkpoint as ckpt
from .data import BatchSource, DataLike, to_device
from .distributed import average_gradients, broadcast_parameters, world_info

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


def _check_data(data: Any) -> None:
    tensors = [data] if isinstance(data, torch.Tensor) else list(data) if isinstance(data, (tuple, list)) else []
    for i, d in enumerate(tensors):
        if isinstance(d, torch.Tensor) and d.is_floating_point() and not bool(torch.isfinite(d).all()):
            name = "data" if isinstance(data, torch.Tensor) else f"data[{i}]"
            raise NonFiniteError(f"{name} contains {int((~torch.isfinite(d)).sum())} non-finite value(s)")


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
    seed: int = 0,
    progress: bool = True,
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
        steps: total number of optimizer steps (a resumed run continues up to it).
        batch_size: global batch size (split across ranks under torchrun).
        lr: learning rate of the default Adam optimizer.
        optimizer: an optimizer instance, or a factory ``params -> optimizer``.
        scheduler: factory ``optimizer -> lr scheduler`` stepped once per step.
        grad_clip: max global gradient norm (``None``: no clipping).
        ema: EMA decay (e.g. ``0.999``); the average is returned as ``result.ema``.
        checkpoint: path of the checkpoint file; written atomically.
        checkpoint_every: steps between checkpoints.
        resume: continue from ``checkpoint`` if it exists.
        seed: seeds torch's RNG and the batch order.
        progress: show a tqdm progress bar (rank 0 only).
        callback: ``callback(step, loss, model)``; returning ``True`` stops training.
        max_bad_steps: consecutive non-finite steps tolerated before giving up.
        loss_fn: ``loss_fn(model, batch)`` used instead of ``model.loss``.
        val_data: held-out data (same kinds as ``data``; a callable is asked for one
            batch) evaluated in eval mode without gradients every ``val_every`` steps.
        val_every: steps between validation evaluations.
        patience: stop after this many evaluations without a lower validation loss and
            restore the best weights (``None``: never stop early).

    Returns:
        :class:`FitResult` with the loss history, step count and EMA model.
    """
    check_int(steps, "steps", minimum=0)
    check_int(batch_size, "batch_size")
    check_positive(lr, "lr")
    check_int(checkpoint_every, "checkpoint_every")
    if grad_clip is not None:
        check_positive(grad_clip, "grad_clip")
    if ema is not None and not (0.0 < float(ema) < 1.0):
        raise ValueError(f"ema must be a decay in (0, 1); got {ema!r}")
    if loss_fn is None and not callable(getattr(model, "loss", None)):
        raise TypeError(f"{type(model).__name__} has no loss(batch) method; pass loss_fn=")
    _check_data(data)
    if val_data is not None:
        _check_data(val_data)
        check_int(val_every, "val_every")
    if patience is not None:
        check_int(patience, "patience")
        if val_data is None:
            raise ValueError("patience (early stopping) needs val_data")
    loss_of = loss_fn or (lambda m, b: m.loss(b))

    rank, world = world_info()
    torch.manual_seed(seed)
    source = BatchSource(data, batch_size, seed, rank, world)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{type(model).__name__} has no trainable parameters")
    device = params[0].device
    if world > 1:
        broadcast_parameters(model)

    if isinstance(optimizer, torch.optim.Optimizer):
        opt = optimizer
    else:
        opt = (optimizer or (lambda ps: torch.optim.Adam(ps, lr=lr)))(params)
    sched = scheduler(opt) if scheduler is not None else None
    averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(float(ema)), use_buffers=True) if ema else None

    result = FitResult(ema=averaged)
    start = 0
    path = Path(checkpoint) if checkpoint is not None else None
    if path is not None and resume and path.is_file():
        state = ckpt.load(path, map_location=device)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if sched is not None and state.get("scheduler") is not None:
            sched.load_state_dict(state["scheduler"])
        if averaged is not None and state.get("ema") is not None:
            averaged.load_state_dict(state["ema"])
        source.load_state_dict(state["data"])
        torch.set_rng_state(state["rng"])
        if torch.cuda.is_available() and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        result.losses = list(state["losses"])
        result.bad_steps = state.get("bad_steps", 0)
        start = result.resumed_from = int(state["step"])

    def snapshot(step: int) -> dict[str, Any]:
        return {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict() if sched is not None else None,
            "ema": averaged.state_dict() if averaged is not None else None,
            "data": source.state_dict(),
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "losses": list(result.losses),
            "bad_steps": result.bad_steps,
            "step": step,
        }

    def params_finite() -> bool:
        return all(bool(torch.isfinite(p).all()) for p in params)

    def save(step: int) -> None:
        if path is not None and rank == 0:
            ckpt.save_atomic(snapshot(step), path)

    def validate() -> float:
        was = model.training
        model.eval()
        try:
            with torch.no_grad():
                if isinstance(val_data, (torch.Tensor, tuple, list)):
                    parts = val_data if isinstance(val_data, (tuple, list)) else (val_data,)
                    n = len(parts[0])
                    total = 0.0
                    for i in range(0, n, batch_size):
                        chunk = tuple(p[i : i + batch_size] for p in parts)
                        b = chunk[0] if isinstance(val_data, torch.Tensor) else chunk
                        total += float(loss_of(model, to_device(b, device))) * len(chunk[0])
                    return total / n
                return float(loss_of(model, to_device(BatchSource(val_data, batch_size, seed).next(), device)))
        finally:
            model.train(was)

    best_val, best_state, since_best = math.inf, None, 0
    last_good = copy.deepcopy({"model": model.state_dict(), "optimizer": opt.state_dict()})
    was_training = model.training
    model.train()
    bar = tqdm(total=steps, initial=start, disable=not progress or rank != 0, desc=type(model).__name__, leave=False)
    t0 = time.perf_counter()
    consecutive_bad = 0
    step = start
    try:
        while step < steps:
            batch = to_device(source.next(), device)
            opt.zero_grad(set_to_none=True)
            loss = loss_of(model, batch)
            if loss.dim() != 0:
                raise ValueError(f"loss must be a scalar tensor; got shape {tuple(loss.shape)}")
            loss.backward()
            if world > 1:
                average_gradients(params, world)
            gnorm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip is not None else math.inf)
            loss_v, gnorm_v = torch.stack([loss.detach().float(), gnorm.detach().float().to(loss.device)]).tolist()
            step += 1
            if not (math.isfinite(loss_v) and math.isfinite(gnorm_v)):
                consecutive_bad += 1
                result.bad_steps += 1
                result.losses.append(float("nan"))
                opt.zero_grad(set_to_none=True)
                if consecutive_bad > max_bad_steps:
                    model.load_state_dict(last_good["model"])
                    opt.load_state_dict(last_good["optimizer"])
                    raise TrainingDivergedError(
                        f"training diverged: {consecutive_bad} consecutive non-finite losses/gradients at step "
                        f"{step}; parameters restored to the last good state"
                        + (f"; last good checkpoint kept at {path}" if path is not None else "")
                    )
            else:
                consecutive_bad = 0
                opt.step()
                if sched is not None:
                    sched.step()
                if averaged is not None:
                    averaged.update_parameters(model)
                result.losses.append(loss_v)
            bar.update(1)
            if step % 10 == 0 or step == steps:
                bar.set_postfix(loss=f"{loss_v:.4g}")
            if (step % checkpoint_every == 0 or step == steps) and consecutive_bad == 0:
                if not params_finite():
                    model.load_state_dict(last_good["model"])
                    opt.load_state_dict(last_good["optimizer"])
                    raise TrainingDivergedError(
                        f"parameters became non-finite by step {step}; restored the last good state"
                        + (f"; last good checkpoint kept at {path}" if path is not None else "")
                    )
                    last_good = copy.deepcopy({"model": model.state_dict(), "optimizer": opt.state_dict()})
                save(step)
            if val_data is not None and (step % val_every == 0 or step == steps) and consecutive_bad == 0:
                v = validate()
                result.val_losses.append((step, v))
                if v < best_val:
                    best_val, since_best, result.best_step = v, 0, step
                    if patience is not None:
                        best_state = copy.deepcopy(model.state_dict())
                else:
                    since_best += 1
                if patience is not None and since_best >= patience:
                    if best_state is not None:
                        model.load_state_dict(best_state)
                    result.stopped_early = True
                    save(step)
                    break
            if callback is not None and callback(step, loss_v, model):
                save(step)
                break
    finally:
        bar.close()
        model.train(was_training)
    result.steps = step
    result.seconds = time.perf_counter() - t0
    return result
