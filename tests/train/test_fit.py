"""Tests of fokker.train.fit against independent computations."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from fokker.errors import NonFiniteError, ParameterError, TrainingDivergedError
from fokker.train import fit, load_checkpoint, save_atomic


class GaussianMean(nn.Module):
    """loss = mean |x - mu|^2 / 2, minimised by the data mean (closed form)."""

    def __init__(self, d: int = 3) -> None:
        super().__init__()
        self.mu = nn.Parameter(torch.zeros(d, dtype=torch.float64))

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((x - self.mu) ** 2).sum(-1).mean()


def test_full_batch_gradient_descent_matches_closed_form_iteration() -> None:
    # With SGD and the full data set as the batch, mu_k = m + (1 - lr)^k (mu_0 - m) exactly.
    x = torch.randn(64, 3, dtype=torch.float64) + 2.0
    model = GaussianMean()
    lr, k = 0.1, 30
    fit(model, x, steps=k, batch_size=64, optimizer=lambda p: torch.optim.SGD(p, lr=lr), progress=False)
    m = x.mean(0)
    expected = m + (1 - lr) ** k * (0.0 - m)
    torch.testing.assert_close(model.mu.data, expected, rtol=1e-10, atol=1e-10)


def test_adam_converges_to_data_mean() -> None:
    x = torch.randn(2000, 3, dtype=torch.float64) * 0.5 + torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    model = GaussianMean()
    res = fit(model, x, steps=600, batch_size=500, lr=0.05, progress=False)
    assert res.steps == 600 and len(res.losses) == 600
    se = 0.5 / math.sqrt(500)  # noise of a minibatch mean; Adam's stationary jitter is far below this
    assert torch.all((model.mu.data - x.mean(0)).abs() < 4 * se)


def test_resume_reproduces_uninterrupted_run(tmp_path: Path) -> None:
    x = torch.randn(100, 3, dtype=torch.float64)
    torch.manual_seed(1)
    a = GaussianMean()
    fit(a, x, steps=20, batch_size=16, lr=0.05, seed=5, progress=False)

    ck = tmp_path / "run.pt"
    b = GaussianMean()
    fit(b, x, steps=10, batch_size=16, lr=0.05, seed=5, progress=False, checkpoint=ck, checkpoint_every=5)
    assert load_checkpoint(ck)["step"] == 10
    c = GaussianMean()  # fresh process after a "crash": resumes from step 10
    res = fit(c, x, steps=20, batch_size=16, lr=0.05, seed=5, progress=False, checkpoint=ck, checkpoint_every=5)
    assert res.resumed_from == 10 and res.steps == 20 and len(res.losses) == 20
    torch.testing.assert_close(c.mu.data, a.mu.data, rtol=0, atol=0)


class ExplodesAt(GaussianMean):
    def __init__(self, step: int, once: bool = False) -> None:
        super().__init__()
        self.calls, self.at, self.once = 0, step, once

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        base = super().loss(x)
        bad = self.calls > self.at and (not self.once or self.calls == self.at + 1)
        return base * float("nan") if bad else base


def test_nan_guard_stops_and_keeps_last_good_checkpoint(tmp_path: Path) -> None:
    x = torch.randn(50, 3, dtype=torch.float64)
    ck = tmp_path / "ck.pt"
    model = ExplodesAt(12)
    with pytest.raises(TrainingDivergedError, match="non-finite"):
        fit(model, x, steps=100, batch_size=10, progress=False, checkpoint=ck, checkpoint_every=5, max_bad_steps=3)
    state = load_checkpoint(ck)
    assert state["step"] == 10
    assert torch.isfinite(state["model"]["mu"]).all()
    assert torch.isfinite(model.mu).all()  # restored in memory too


def test_single_bad_step_is_skipped() -> None:
    x = torch.randn(50, 3, dtype=torch.float64)
    model = ExplodesAt(4, once=True)
    res = fit(model, x, steps=10, batch_size=10, progress=False)
    assert res.bad_steps == 1 and math.isnan(res.losses[4])
    assert all(math.isfinite(v) for i, v in enumerate(res.losses) if i != 4)


def test_ema_follows_the_recursion() -> None:
    x = torch.randn(40, 3, dtype=torch.float64)
    model = GaussianMean()
    traj = []
    decay = 0.9
    res = fit(
        model, x, steps=15, batch_size=8, lr=0.1, ema=decay, progress=False,
        callback=lambda s, l, m: traj.append(m.mu.detach().clone()),
    )
    # AveragedModel starts from the first update, then e <- d e + (1 - d) p
    e = traj[0]
    for p in traj[1:]:
        e = decay * e + (1 - decay) * p
    torch.testing.assert_close(res.ema.module.mu.data, e, rtol=1e-12, atol=1e-12)


def test_tuple_data_and_callable_and_none() -> None:
    x = torch.arange(20, dtype=torch.float64).unsqueeze(-1)
    seen = []

    class Pairs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.zeros((), dtype=torch.float64))

        def loss(self, batch):
            if isinstance(batch, int):
                seen.append(batch)
                return self.w**2
            a, b = batch
            assert torch.equal(b, 2 * a)  # rows stay aligned across the tuple
            return ((a - self.w) ** 2).mean()

    fit(Pairs(), (x, 2 * x), steps=5, batch_size=7, progress=False)
    fit(Pairs(), lambda n: (torch.ones(n, 1, dtype=torch.float64), 2 * torch.ones(n, 1, dtype=torch.float64)), steps=2, batch_size=4, progress=False)
    fit(Pairs(), None, steps=3, batch_size=9, progress=False)
    assert seen == [9, 9, 9]


def test_bad_arguments() -> None:
    x = torch.randn(10, 3, dtype=torch.float64)
    x_nan = x.clone()
    x_nan[3, 1] = float("nan")
    with pytest.raises(NonFiniteError, match="data contains 1 non-finite"):
        fit(GaussianMean(), x_nan, steps=1, progress=False)
    with pytest.raises(ParameterError, match="lr must be a positive"):
        fit(GaussianMean(), x, steps=1, lr=0.0, progress=False)
    with pytest.raises(ParameterError, match="batch_size must be an integer"):
        fit(GaussianMean(), x, steps=1, batch_size=0, progress=False)
    with pytest.raises(ValueError, match="ema must be a decay"):
        fit(GaussianMean(), x, steps=1, ema=1.5, progress=False)
    with pytest.raises(TypeError, match="no loss"):
        fit(nn.Linear(2, 2), x, steps=1, progress=False)
    with pytest.raises(ValueError, match="share their first dimension"):
        fit(GaussianMean(), (x, x[:5]), steps=1, progress=False)


def test_atomic_save_leaves_old_file_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "a.pt"
    save_atomic({"v": 1}, p)

    def boom(obj, f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        save_atomic({"v": 2}, p)
    monkeypatch.undo()
    assert load_checkpoint(p) == {"v": 1}
    assert [f.name for f in tmp_path.iterdir()] == ["a.pt"]  # no temp file left behind


def test_torchrun_two_processes_match_single_process(tmp_path: Path) -> None:
    script = Path(__file__).with_name("_ddp_train.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FOKKER_DIST_BACKEND": "gloo"}
    single, double = tmp_path / "single.pt", tmp_path / "ddp.pt"
    subprocess.run([sys.executable, str(script), str(single)], check=True, env=env, timeout=120)
    subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(script), str(double)],
        check=True, env=env, timeout=180, capture_output=True,
    )
    a, b = torch.load(single), torch.load(double)
    assert a["world"] == 1 and b["world"] == 2  # the second run really was data-parallel
    a, b = a["state"], b["state"]
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-9, atol=1e-10)


def test_validation_loss_and_early_stopping() -> None:
    # train on data centred at +1, validate on data centred at -1: the validation loss
    # 0.5 |mu + 1|^2 + const is minimal at the start (mu = 0 is nearer -1 than later
    # iterates) so early stopping must trigger and restore mu = 0 exactly.
    x_train = torch.ones(64, 3, dtype=torch.float64)
    x_val = -torch.ones(32, 3, dtype=torch.float64)
    model = GaussianMean()
    res = fit(model, x_train, steps=200, batch_size=16, lr=0.05, val_data=x_val, val_every=1, patience=3,
              progress=False)
    assert res.stopped_early and res.best_step == 1 and res.steps == 4
    first_val = res.val_losses[0][1]
    # independent value of the validation loss at mu after one Adam step (mu = 0.05 per coord)
    torch.testing.assert_close(torch.tensor(first_val), torch.tensor(0.5 * 3 * (1 + 0.05) ** 2), rtol=1e-6, atol=0)
    torch.testing.assert_close(model.mu.data, torch.full((3,), 0.05, dtype=torch.float64), rtol=1e-6, atol=0)
    with pytest.raises(ValueError, match="patience .* needs val_data"):
        fit(GaussianMean(), x_train, steps=1, patience=2, progress=False)


def test_validation_loss_is_the_full_heldout_mean() -> None:
    x = torch.randn(50, 3, dtype=torch.float64)
    v = torch.randn(37, 3, dtype=torch.float64)  # not a multiple of the batch size
    model = GaussianMean()
    res = fit(model, x, steps=5, batch_size=8, val_data=v, val_every=5, progress=False)
    expected = 0.5 * ((v - model.mu.data) ** 2).sum(-1).mean()
    assert res.val_losses[-1][0] == 5
    assert res.val_losses[-1][1] == pytest.approx(float(expected), rel=1e-12)
