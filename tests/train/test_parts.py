"""The parts fit is made of, each against an independent computation."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from fokker.errors import ParameterError, TrainingDivergedError
from fokker.tolerances import assert_close
from fokker.train.checkpoint import Checkpointer, save_atomic
from fokker.train.data import BatchSource
from fokker.train.guard import NanGuard
from fokker.train.randomness import RunRandomness
from fokker.train.state import TrainState
from fokker.train.step import compute_gradients
from fokker.train.validation import EarlyStopping, heldout_loss


def _state(d: int = 3) -> TrainState:
    model = nn.Linear(d, 1).double()
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    return TrainState(model, opt, None, None, BatchSource(torch.randn(10, d, dtype=torch.float64), 4, seed=0))


def test_compute_gradients_matches_the_closed_form_gradient_and_clips(device) -> None:
    w = torch.tensor([3.0, -4.0], dtype=torch.float64, device=device)
    model = nn.Module()
    model.w = nn.Parameter(w.clone())
    x = torch.randn(5, 2, dtype=torch.float64, device=device)
    loss_of = lambda m, b: 0.5 * ((b - m.w) ** 2).sum(-1).mean()  # noqa: E731
    loss, norm = compute_gradients(model, x, loss_of, [model.w], grad_clip=0.5)
    grad = w - x.mean(0)  # d/dw of the mean squared error / 2
    assert_close(torch.tensor(loss, dtype=torch.float64), 0.5 * ((x - w) ** 2).sum(-1).mean().cpu())
    assert_close(torch.tensor(norm, dtype=torch.float64), grad.norm().cpu())  # reported before clipping
    assert_close(model.w.grad, grad * 0.5 / (grad.norm() + 1e-6))  # clipped to norm 0.5 (torch adds 1e-6)


def test_nan_guard_skips_then_gives_up_and_restores_the_marked_state() -> None:
    state = _state()
    guard = NanGuard(state, max_bad_steps=2, step=0)
    with torch.no_grad():
        state.model.weight.fill_(1.0)
    guard.mark_good(5)
    marked = state.model.weight.detach().clone()
    with torch.no_grad():
        state.model.weight.fill_(2.0)  # a later good step, finite
    assert guard.check_step(6, 1.0, 1.0)
    assert not guard.check_step(7, math.nan, 1.0) and not guard.check_step(8, 1.0, math.inf)
    assert guard.in_bad_streak and guard.total == 2
    with pytest.raises(TrainingDivergedError, match=r"3 consecutive .* step 9.*\(step 5\)"):
        guard.check_step(9, math.nan, math.nan)
    assert torch.equal(state.model.weight, marked)


def test_nan_guard_refuses_to_mark_nonfinite_parameters() -> None:
    state = _state()
    guard = NanGuard(state, max_bad_steps=10, step=0)
    start = state.model.weight.detach().clone()
    with torch.no_grad():
        state.model.bias.fill_(math.inf)
    with pytest.raises(TrainingDivergedError, match="non-finite by step 3"):
        guard.mark_good(3)
    assert torch.equal(state.model.weight, start) and torch.isfinite(state.model.bias).all()


def test_train_state_weights_are_a_copy_that_later_steps_do_not_change() -> None:
    state = _state()
    x = torch.randn(8, 3, dtype=torch.float64)
    for _ in range(2):
        state.optimizer.zero_grad()
        state.model(x).pow(2).mean().backward()
        state.update()
    saved = state.weights()
    exp_avg = saved["optimizer"]["state"][0]["exp_avg"].clone()
    state.optimizer.zero_grad()
    state.model(x).pow(2).mean().backward()
    state.update()
    assert torch.equal(saved["optimizer"]["state"][0]["exp_avg"], exp_avg)
    state.load_weights(saved)
    state.optimizer.zero_grad()
    state.model(x).pow(2).mean().backward()
    state.update()  # steps after a restore must not write into the saved copy
    assert torch.equal(saved["optimizer"]["state"][0]["exp_avg"], exp_avg)


def test_early_stopping_counts_evaluations_since_the_best_and_restores_it() -> None:
    model = nn.Linear(1, 1)
    stop = EarlyStopping(patience=2)
    values = [3.0, 2.0, 2.5, 1.0, 1.5, 1.2]
    decisions = []
    for step, v in enumerate(values, start=1):
        with torch.no_grad():
            model.bias.fill_(v)
        decisions.append(stop.update(step, v, model))
    assert decisions == [False, False, False, False, False, True] and stop.best_step == 4
    stop.restore_best(model)
    assert float(model.bias.detach()) == 1.0
    never = EarlyStopping(patience=None)
    assert not any(never.update(s, v, model) for s, v in enumerate(values)) and never.best_weights is None


def test_heldout_loss_is_the_mean_over_every_row_in_eval_mode() -> None:
    x = torch.randn(23, 2, dtype=torch.float64)
    y = torch.randn(23, dtype=torch.float64)
    model = nn.Sequential(nn.Linear(2, 1), nn.Dropout(0.9)).double()
    loss_of = lambda m, b: ((m(b[0]).squeeze(-1) - b[1]) ** 2).mean()  # noqa: E731
    expected = ((model[0](x).squeeze(-1) - y) ** 2).mean().detach()  # dropout off
    for data, kind in [((x, y), "tuple"), (torch.utils.data.TensorDataset(x, y), "dataset")]:
        got = heldout_loss(model, loss_of, data, kind, batch_size=5, device=torch.device("cpu"))
        assert_close(torch.tensor(got, dtype=torch.float64), expected)
    assert model.training


def test_checkpointer_writes_on_schedule_and_only_on_rank_0(tmp_path: Path) -> None:
    saver = Checkpointer(tmp_path / "c.pt", every=4)
    assert [s for s in range(1, 11) if saver.due(s, 10)] == [4, 8, 10]
    saver.save(4, {"x": 1})
    assert saver.load("cpu") == {"format": 1, "step": 4, "x": 1}
    Checkpointer(tmp_path / "r1.pt", every=4, rank=1).save(4, {"x": 1})
    assert not (tmp_path / "r1.pt").exists()
    save_atomic({"step": 3}, tmp_path / "old.pt")
    with pytest.raises(ParameterError, match="resume=False"):
        Checkpointer(tmp_path / "old.pt", every=4).load("cpu")


def test_batch_source_visits_every_row_once_per_epoch_and_resumes() -> None:
    data = torch.arange(10.0)
    src = BatchSource(data, 5, seed=1)
    epoch = torch.cat([src.next(), src.next()])
    assert sorted(epoch.tolist()) == list(range(10))
    saved = src.state_dict()
    ahead = [src.next() for _ in range(3)]
    again = BatchSource(data, 5, seed=999)
    again.load_state_dict(saved)
    assert all(torch.equal(a, again.next()) for a in ahead)
    halves = [BatchSource(data, 6, seed=2, rank=r, world=2).next() for r in range(2)]
    assert torch.equal(torch.sort(torch.cat(halves)).values, torch.sort(BatchSource(data, 6, seed=2).next()).values)


def test_run_randomness_scope_is_reproducible_and_private() -> None:
    before = torch.get_rng_state()
    draws = []
    for _ in range(2):
        rng = RunRandomness(None, 3, torch.device("cpu"))
        with rng.scope():
            draws.append((rng.batch_seed, torch.randn(4)))
    assert torch.equal(torch.get_rng_state(), before)
    assert draws[0][0] == draws[1][0] and torch.equal(draws[0][1], draws[1][1])
    unscoped = RunRandomness(None, None, torch.device("cpu"))
    assert unscoped.state_dict() == {} and not torch.equal(torch.get_rng_state(), before)  # drew from the global RNG
