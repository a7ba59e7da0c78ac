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

from fokker.errors import DeviceDtypeError, NonFiniteError, ParameterError, ShapeError, TrainingDivergedError
from fokker.tolerances import Z_SCORE, assert_close
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
    assert_close(model.mu.data, expected)


def test_adam_converges_to_data_mean() -> None:
    x = torch.randn(2000, 3, dtype=torch.float64) * 0.5 + torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    model = GaussianMean()
    res = fit(model, x, steps=600, batch_size=500, lr=0.05, progress=False)
    assert res.steps == 600 and len(res.losses) == 600
    se = 0.5 / math.sqrt(500)  # noise of a minibatch mean; Adam's stationary jitter is far below this
    assert torch.all((model.mu.data - x.mean(0)).abs() < Z_SCORE * se)


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
    assert_close(res.ema.module.mu.data, e)


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
    for k in a:  # the same trajectory up to the summation order of the all-reduce
        assert_close(b[k], a[k])


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
    # independent value after one Adam step: the bias-corrected moments are g and g^2 (g = -1
    # per coordinate), so mu = lr * 1 / (1 + adam_eps) per coordinate
    mu1 = 0.05 / (1 + 1e-8)
    assert_close(torch.tensor(first_val, dtype=torch.float64), torch.tensor(0.5 * 3 * (1 + mu1) ** 2, dtype=torch.float64))
    assert_close(model.mu.data, torch.full((3,), mu1, dtype=torch.float64))
    with pytest.raises(ValueError, match="patience .* needs val_data"):
        fit(GaussianMean(), x_train, steps=1, patience=2, progress=False)


def test_validation_loss_is_the_full_heldout_mean() -> None:
    x = torch.randn(50, 3, dtype=torch.float64)
    v = torch.randn(37, 3, dtype=torch.float64)  # not a multiple of the batch size
    model = GaussianMean()
    res = fit(model, x, steps=5, batch_size=8, val_data=v, val_every=5, progress=False)
    expected = 0.5 * ((v - model.mu.data) ** 2).sum(-1).mean()
    assert res.val_losses[-1][0] == 5
    assert_close(torch.tensor(res.val_losses[-1][1], dtype=torch.float64), expected)


# ------------------------------------------------------------------ the last good state
def _adam_state(opt: torch.optim.Optimizer) -> dict:
    return {k: v for k, v in opt.state_dict()["state"][0].items()}


class WithUnused(GaussianMean):
    """GaussianMean with a parameter the loss never touches (no gradient ever reaches it)."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(2, dtype=torch.float64))


def _poison(at: int, name: str = "mu"):
    def callback(step, loss, model):
        if step == at:
            with torch.no_grad():
                getattr(model, name).fill_(float("nan"))

    return callback


@pytest.mark.parametrize("max_bad_steps,name", [(3, "mu"), (1000, "mu"), (3, "unused")])
def test_divergence_restores_the_step_20_state(tmp_path: Path, max_bad_steps: int, name: str) -> None:
    # Non-finite parameters at step 25 with checkpoints every 10 steps: fit must raise and hand
    # back exactly the weights and optimizer state of step 20, which an independent 20-step run
    # reproduces; the checkpoint on disk is the step-20 one.  A NaN in `mu` makes the loss NaN
    # from step 26 on (caught at the first skipped step, however large max_bad_steps is); a NaN
    # in a parameter the loss never uses is caught at the next checkpoint step (30).
    x = torch.randn(60, 3, dtype=torch.float64)
    ref = WithUnused()
    ref_opt = torch.optim.Adam(ref.parameters(), lr=0.05)
    fit(ref, x, steps=20, batch_size=8, optimizer=ref_opt, seed=3, progress=False)

    model = WithUnused()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    ck = tmp_path / "ck.pt"
    with pytest.raises(TrainingDivergedError) as info:
        fit(model, x, steps=100, batch_size=8, optimizer=opt, seed=3, progress=False, checkpoint=ck,
            checkpoint_every=10, max_bad_steps=max_bad_steps, callback=_poison(25, name))
    assert torch.equal(model.mu.data, ref.mu.data) and not torch.equal(ref.mu.data, torch.zeros(3, dtype=torch.float64))
    assert torch.equal(model.unused.data, ref.unused.data)
    got, want = _adam_state(opt), _adam_state(ref_opt)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    state = load_checkpoint(ck)
    assert state["step"] == 20 and torch.equal(state["model"]["mu"], ref.mu.data)
    assert "parameters" in str(info.value) and "last good state (step 20)" in str(info.value)


def test_a_run_never_ends_with_nonfinite_weights(tmp_path: Path) -> None:
    # the last step leaves NaN parameters (after the step-30 checkpoint was written): the run
    # must not return them
    x = torch.randn(60, 3, dtype=torch.float64)
    ref = GaussianMean()
    fit(ref, x, steps=30, batch_size=8, seed=4, progress=False)
    model = GaussianMean()
    with pytest.raises(TrainingDivergedError) as info:
        fit(model, x, steps=30, batch_size=8, seed=4, progress=False, checkpoint=tmp_path / "c.pt",
            checkpoint_every=10, callback=_poison(30))
    assert torch.equal(model.mu.data, ref.mu.data)
    assert "non-finite by step 30" in str(info.value)
    assert torch.equal(load_checkpoint(tmp_path / "c.pt")["model"]["mu"], ref.mu.data)


# ------------------------------------------------------------------ randomness
class NoisyMean(GaussianMean):
    """A loss that draws noise with the global RNG (as diffusion / EBM losses do)."""

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        return super().loss(x + 0.3 * torch.randn_like(x))


def test_fit_with_a_seed_is_reproducible_and_leaves_the_global_rng_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch, "manual_seed", lambda *a: pytest.fail("fit reseeded the global RNG"))
    x = torch.randn(40, 3, dtype=torch.float64)
    before = torch.get_rng_state()
    a, b, c, d = NoisyMean(), NoisyMean(), NoisyMean(), NoisyMean()
    fit(a, x, steps=15, batch_size=8, seed=7, progress=False)
    assert torch.equal(torch.get_rng_state(), before)
    fit(b, x, steps=15, batch_size=8, seed=7, progress=False)
    fit(c, x, steps=15, batch_size=8, generator=torch.Generator().manual_seed(7), progress=False)
    fit(d, x, steps=15, batch_size=8, seed=8, progress=False)
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(a.mu.data, b.mu.data) and torch.equal(a.mu.data, c.mu.data)
    assert not torch.equal(a.mu.data, d.mu.data)
    with pytest.raises(ParameterError, match="either generator= or seed="):
        fit(NoisyMean(), x, steps=1, seed=1, generator=torch.Generator(), progress=False)


def test_fit_without_a_seed_uses_the_global_rng_as_it_is() -> None:
    x = torch.randn(40, 3, dtype=torch.float64)
    runs = []
    for _ in range(2):
        torch.manual_seed(11)  # the caller seeds; fit draws from the global stream
        m = NoisyMean()
        fit(m, x, steps=10, batch_size=8, progress=False)
        runs.append((m.mu.data.clone(), torch.get_rng_state()))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    torch.manual_seed(11)
    assert not torch.equal(torch.get_rng_state(), runs[0][1])  # the global RNG advanced


@pytest.mark.parametrize("with_val", [False, True])
def test_resume_with_a_noisy_loss_repeats_the_uninterrupted_run(tmp_path: Path, with_val: bool) -> None:
    x = torch.randn(50, 3, dtype=torch.float64)
    kw = dict(batch_size=8, lr=0.05, progress=False, seed=5, ema=0.9, checkpoint_every=4)
    if with_val:
        kw.update(val_data=x[:20] + 0.5, val_every=3, patience=3)  # stops at 15, after the interruption
    a = NoisyMean()
    full = fit(a, x, steps=24, checkpoint=tmp_path / "a.pt", **kw)
    before = torch.get_rng_state()
    b = NoisyMean()
    fit(b, x, steps=12, checkpoint=tmp_path / "b.pt", **kw)
    c = NoisyMean()
    resumed = fit(c, x, steps=24, checkpoint=tmp_path / "b.pt", **kw)
    assert torch.equal(torch.get_rng_state(), before)
    assert resumed.resumed_from == 12 and resumed.steps == full.steps
    assert torch.equal(c.mu.data, a.mu.data)
    assert torch.equal(resumed.ema.module.mu.data, full.ema.module.mu.data)
    assert resumed.losses == full.losses and resumed.val_losses == full.val_losses
    assert (resumed.best_step, resumed.stopped_early) == (full.best_step, full.stopped_early) == (
        (6, True) if with_val else (None, False)
    )
    assert set(load_checkpoint(tmp_path / "b.pt")) == {
        "format", "step", "model", "optimizer", "scheduler", "ema", "data", "rng", "losses", "bad_steps",
        "val_losses", "early_stopping",
    }


# ------------------------------------------------------------------ bad input
class Linear32(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 1)

    def loss(self, batch):
        x, y = batch if isinstance(batch, tuple) else (batch, None)
        out = self.lin(x).squeeze(-1)
        return (out**2).mean() if y is None else ((out - y) ** 2).mean()


def test_data_of_another_dtype_is_rejected_up_front() -> None:
    x32, x64 = torch.randn(20, 3), torch.randn(20, 3, dtype=torch.float64)
    with pytest.raises(DeviceDtypeError, match=r"^data has dtype torch.float64 but the model's parameters have dtype "
                       r"torch.float32; convert the data with data.to\(torch.float32\)"):
        fit(Linear32(), x64, steps=1, progress=False)
    with pytest.raises(DeviceDtypeError, match=r"^data\[1\] has dtype torch.float64 .* torch.float32"):
        fit(Linear32(), (x32, x64[:, 0]), steps=1, progress=False)
    with pytest.raises(DeviceDtypeError, match=r"^val_data has dtype torch.float64 .* torch.float32"):
        fit(Linear32(), x32, steps=1, val_data=x64, progress=False)
    labels = torch.arange(20)  # integer tensors are not floating data: passed as they are
    fit(Linear32(), (x32, labels.float(), labels), steps=1, loss_fn=lambda m, b: m.loss(b[:2]), progress=False)


def test_empty_data_is_rejected_up_front() -> None:
    with pytest.raises(ShapeError, match=r"^data is empty \(shape \(0, 3\)\)"):
        fit(GaussianMean(), torch.empty(0, 3, dtype=torch.float64), steps=1, progress=False)
    with pytest.raises(ShapeError, match=r"^val_data\[0\] is empty"):
        fit(GaussianMean(), torch.randn(4, 3, dtype=torch.float64), steps=1, progress=False,
            val_data=(torch.empty(0, 3, dtype=torch.float64),))
    with pytest.raises(ParameterError, match="empty Dataset"):
        fit(GaussianMean(), torch.utils.data.TensorDataset(torch.empty(0, 3)), steps=1, progress=False)
    with pytest.raises(ShapeError, match="scalar"):
        fit(GaussianMean(), torch.randn(4, 3, dtype=torch.float64), steps=1, progress=False,
            loss_fn=lambda m, b: (b - m.mu).pow(2).sum(-1))
    with pytest.raises(TypeError, match="progress"):
        fit(GaussianMean(), torch.randn(4, 3, dtype=torch.float64), steps=1, progress="yes")
