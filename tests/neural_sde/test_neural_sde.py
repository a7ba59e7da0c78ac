"""NeuralSDE: Euler likelihood against torch Normals, the OU MLE against least squares, Wald intervals
against the closed-form information and the spread over repeated data sets, sampling against the OU
marginal, and bad input."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fokker.errors import DeviceDtypeError, NonFiniteError, ParameterError, ShapeError
from fokker.neural_sde import ConstantDiffusion, DiffusionNet, DriftNet, LinearDrift, NeuralSDE, PolynomialDrift, path_data
from fokker.tolerances import Z_SCORE, assert_close
from fokker.train import fit
from ou_data import euler_mle, ou_paths


class SinDrift(nn.Module):
    dim = 2

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.sin(x) + t[:, None] * torch.tensor([1.0, -0.5], dtype=x.dtype, device=x.device)


class QuadraticDiffusion(nn.Module):
    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return 0.5 + x**2 + 0.1 * t[:, None]


def test_euler_log_prob_matches_normal_transitions(device, dtype) -> None:
    g = torch.Generator().manual_seed(0)
    num_paths, num_times = 3, 5
    times = torch.cumsum(0.05 + torch.rand(num_paths, num_times, generator=g), 1).to(dtype)  # a grid per path
    paths = torch.randn(num_paths, num_times, 2, generator=g).to(dtype)
    model = NeuralSDE(SinDrift(), QuadraticDiffusion()).to(device, dtype)
    expected = torch.zeros(num_paths, dtype=torch.float64)
    for b in range(num_paths):
        for k in range(num_times - 1):
            x, t = paths[b, k].double(), float(times[b, k])
            h = float(times[b, k + 1] - times[b, k])
            f = torch.sin(x) + t * torch.tensor([1.0, -0.5], dtype=torch.float64)
            s = 0.5 + x**2 + 0.1 * t
            expected[b] += torch.distributions.Normal(x + h * f, s * math.sqrt(h)).log_prob(paths[b, k + 1].double()).sum()
    times, paths = times.to(device), paths.to(device)
    assert_close(model.log_prob(times, paths).cpu(), expected.to(dtype))
    assert_close(model.loss((times, paths)).cpu(), -expected.mean().to(dtype) / (num_times - 1))


def test_default_networks_give_a_positive_diffusion_and_the_drift_shape() -> None:
    model = NeuralSDE(dim=3, hidden=8).double()
    x, t = torch.randn(5, 3, dtype=torch.float64) * 10, torch.rand(5, dtype=torch.float64)
    g = model.diffusion(x, t)
    assert model.drift(x, t).shape == (5, 3) and g.shape == (5, 3)
    assert float(g.detach().min()) >= model.diffusion_net.min_diffusion
    # the floor: a diffusion network driven far negative stays at min_diffusion
    net = DiffusionNet(3, hidden=4, min_diffusion=0.01).double()
    with torch.no_grad():
        net.net[-1].bias.fill_(-1e3)
    assert_close(net(x, t), torch.full((5, 3), 0.01, dtype=torch.float64))


@pytest.fixture(scope="module")
def ou_data() -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    times = torch.arange(101, dtype=torch.float64) * 0.02
    paths = ou_paths(torch.tensor([1.5], dtype=torch.float64), torch.tensor([0.5], dtype=torch.float64), 0.8, 128, times, g)
    return times, paths, euler_mle(paths, 0.02)


def _at(est: dict[str, torch.Tensor], dim: int = 1) -> NeuralSDE:
    model = NeuralSDE(LinearDrift(dim), ConstantDiffusion(dim)).double()
    with torch.no_grad():
        model.drift_net.theta.copy_(est["theta"])
        model.drift_net.mu.copy_(est["mu"])
        model.diffusion_net.log_sigma.copy_(est["sigma"].log())
    return model


def test_loss_is_stationary_at_the_closed_form_ou_mle(ou_data) -> None:
    times, paths, est = ou_data
    model = _at(est)
    model.loss((times, paths)).backward()
    for name, p in model.named_parameters():
        assert_close(p.grad, torch.zeros_like(p), msg=name, scale=1.0)


def test_fit_reaches_the_closed_form_mle_and_the_interval_covers_the_truth(ou_data) -> None:
    times, paths, est = ou_data
    model = NeuralSDE(LinearDrift(1, theta=0.5), ConstantDiffusion(1, sigma=0.3)).double()
    fit(model, path_data(times, paths), steps=200, batch_size=len(paths), lr=0.05, progress=False)
    ci = model.confidence_intervals(times, paths)
    # the optimiser's error is far below the statistical error (0.05 standard errors)
    for key, name, se in (("theta", "drift_net.theta", "se_theta"), ("mu", "drift_net.mu", "se_mu")):
        assert float((ci.estimate[name] - est[key]).abs()) <= 0.05 * float(est[se])
    assert bool(ci.covers("drift_net.theta", 1.5)) and bool(ci.covers("drift_net.mu", 0.5))
    # (not log sigma: the Euler MLE of the diffusion is biased by -theta h / 2 = -0.015 here, 2.4 of its
    # standard errors -- the discretisation bias the docs warn about; the drift's bias is far below its SE)
    assert abs(float(ci.estimate["diffusion_net.log_sigma"]) - (math.log(0.8) - 1.5 * 0.02 / 2)) <= Z_SCORE * float(
        ci.stderr["diffusion_net.log_sigma"]
    )


def test_hessian_standard_errors_match_the_closed_form_information(ou_data) -> None:
    times, paths, est = ou_data
    ci = _at(est).confidence_intervals(times, paths, level=0.9)
    assert_close(ci.stderr["drift_net.theta"], est["se_theta"])
    assert_close(ci.stderr["drift_net.mu"], est["se_mu"])
    assert_close(ci.stderr["diffusion_net.log_sigma"], est["se_log_sigma"])
    z = 1.6448536269514722  # the 95% normal quantile, for a 90% two-sided interval
    assert_close(ci.upper["drift_net.theta"] - ci.lower["drift_net.theta"], 2 * z * est["se_theta"])


def test_hessian_standard_error_matches_the_spread_over_repeated_data_sets() -> None:
    reps, truth = 200, 1.0
    g = torch.Generator().manual_seed(2)
    times = torch.arange(51, dtype=torch.float64) * 0.02
    theta = torch.full((reps,), truth, dtype=torch.float64)
    paths = ou_paths(theta, torch.zeros(reps, dtype=torch.float64), 1.0, 16, times, g)  # coordinate r = data set r
    est = euler_mle(paths, 0.02)
    se, covered = [], []
    for r in range(reps):
        ci = _at({k: v[r : r + 1] for k, v in est.items()}).confidence_intervals(times, paths[..., r : r + 1])
        se.append(ci.stderr["drift_net.theta"])
        covered.append(ci.covers("drift_net.theta", truth))
    se = torch.cat(se)
    # the sample std of the 200 estimates has relative standard error ~ 1/sqrt(2 * 199)
    ratio = float(est["theta"].std() / se.pow(2).mean().sqrt())
    assert abs(ratio - 1) <= Z_SCORE / math.sqrt(2 * (reps - 1))
    coverage = float(torch.cat(covered).double().mean())
    assert abs(coverage - 0.95) <= Z_SCORE * math.sqrt(0.95 * 0.05 / reps)


def test_sample_matches_the_ou_marginal() -> None:
    num, theta, mu, sigma, t_end = 20_000, 2.0, 1.0, 0.7, 1.0
    model = NeuralSDE(LinearDrift(1, theta, mu), ConstantDiffusion(1, sigma)).double()
    times = torch.tensor([0.0, 0.5, t_end], dtype=torch.float64)
    x = model.sample((num,), torch.zeros(1, dtype=torch.float64), times, dt=0.005, generator=torch.Generator().manual_seed(3))
    assert x.shape == (num, 3, 1) and bool((x[:, 0] == 0).all())
    xt = x[:, -1, 0]
    m = mu / theta * (1 - math.exp(-theta * t_end))
    v = sigma**2 / (2 * theta) * (1 - math.exp(-2 * theta * t_end))
    # Euler bias at dt = 0.005 is O(dt) ~ 1e-3, below the Monte-Carlo error
    assert abs(float(xt.mean()) - m) <= Z_SCORE * math.sqrt(v / num) + 0.005
    assert abs(float(xt.var()) - v) <= Z_SCORE * v * math.sqrt(2 / num) + 0.005


def test_sample_without_dt_is_the_euler_chain_of_log_prob() -> None:
    model = NeuralSDE(PolynomialDrift(1, 1.0, 1.0), ConstantDiffusion(1)).double()
    model.diffusion_net.log_sigma.data.fill_(math.log(0.5))  # in float64 (the float32 init would round it)
    times = torch.linspace(0, 1, 6, dtype=torch.float64)
    g = torch.Generator().manual_seed(4)
    x = model.sample((4,), torch.tensor([0.3], dtype=torch.float64), times, generator=g)
    g = torch.Generator().manual_seed(4)
    x_ref, h = torch.full((4, 1), 0.3, dtype=torch.float64), 0.2
    for k in range(5):
        x_ref = x_ref + h * (x_ref - x_ref**3) + 0.5 * math.sqrt(h) * torch.randn(4, 1, generator=g, dtype=torch.float64)
        assert_close(x[:, k + 1], x_ref)


class WrongShape(nn.Module):
    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.ones(x.shape[0], 1, dtype=x.dtype)


class Negative(nn.Module):
    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return -torch.ones_like(x)


class NaNDiffusion(nn.Module):
    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x, math.nan)


def test_bad_input() -> None:
    times = torch.linspace(0, 1, 5, dtype=torch.float64)
    paths = torch.randn(3, 5, 2, dtype=torch.float64)
    model = NeuralSDE(LinearDrift(2), ConstantDiffusion(2)).double()
    with pytest.raises(ShapeError, match="diffusion network"):
        NeuralSDE(LinearDrift(2), WrongShape()).double().log_prob(times, paths)
    with pytest.raises(ShapeError, match="drift network"):
        NeuralSDE(WrongShape(), ConstantDiffusion(2)).double().sample((2,), torch.zeros(2, dtype=torch.float64), times)
    with pytest.raises(ParameterError, match="positive"):
        NeuralSDE(LinearDrift(2), Negative()).double().log_prob(times, paths)
    with pytest.raises(NonFiniteError, match="diffusion"):
        NeuralSDE(LinearDrift(2), NaNDiffusion()).double().log_prob(times, paths)
    bad = paths.clone()
    bad[1, 2, 0] = math.nan
    with pytest.raises(NonFiniteError, match="paths"):
        model.log_prob(times, bad)
    with pytest.raises(NonFiniteError, match="paths"):
        fit(model, path_data(times, bad), steps=1, batch_size=3, progress=False)
    with pytest.raises(ParameterError, match="times must be strictly increasing"):
        model.log_prob(times.flip(0), paths)
    with pytest.raises(ParameterError, match="times"):
        model.sample((2,), torch.zeros(2, dtype=torch.float64), torch.tensor([0.0, 0.5, 0.5], dtype=torch.float64))
    with pytest.raises(NonFiniteError, match="times"):
        model.log_prob(torch.tensor([0.0, math.nan, 0.5, 0.7, 1.0], dtype=torch.float64), paths)
    with pytest.raises(ShapeError, match="times"):
        model.log_prob(times[:4], paths)
    with pytest.raises(ShapeError, match="paths"):
        model.log_prob(times, paths[0])
    with pytest.raises(ShapeError, match="paths"):
        model.log_prob(times, torch.randn(3, 5, 4, dtype=torch.float64))
    with pytest.raises(DeviceDtypeError, match="times"):
        model.log_prob(times.float(), paths)
    with pytest.raises(DeviceDtypeError, match="paths"):
        model.log_prob(times.float(), paths.float())
    with pytest.raises(ShapeError, match="x0"):
        model.sample((2,), torch.zeros(3, dtype=torch.float64), times)
    with pytest.raises(ParameterError, match="dim"):
        NeuralSDE(diffusion=QuadraticDiffusion())
    with pytest.raises(ShapeError, match="disagree"):
        NeuralSDE(LinearDrift(2), ConstantDiffusion(3))
    with pytest.raises(ParameterError, match="sigma"):
        ConstantDiffusion(2, sigma=0.0)
    with pytest.raises(ParameterError, match="level"):
        model.confidence_intervals(times, paths, level=1.5)
    with pytest.raises(ParameterError, match="dense Hessian"):
        NeuralSDE(dim=2, hidden=64).double().confidence_intervals(times, paths)


def test_torchsde_solves_the_model_through_its_protocol() -> None:
    import torchsde

    model = NeuralSDE(PolynomialDrift(1, 1.0, 1.0), DiffusionNet(1, hidden=4)).double()
    ts = torch.linspace(0, 1, 6, dtype=torch.float64)
    x0 = torch.full((3, 1), 0.2, dtype=torch.float64)
    bm = torchsde.BrownianInterval(0.0, 1.0, size=(3, 1), dtype=torch.float64, entropy=5)
    with torch.no_grad():
        ys = torchsde.sdeint(model, x0, ts, method="euler", dt=0.2, bm=bm)
        x = x0
        for k in range(5):  # Euler-Maruyama with the same Brownian increments
            t = ts[k].expand(3)
            x = x + 0.2 * (x - x**3) + model.diffusion(x, t) * bm(ts[k], ts[k + 1])
            # torchsde steps to t + dt, which differs from linspace's grid by rounding (1e-16): the Brownian
            # increments then differ by a bridge over that gap, ~sqrt(1e-16) = 1e-8 (the loose tolerance)
            assert_close(ys[k + 1], x, loose=True)
    ys = torchsde.sdeint_adjoint(model, x0, ts, method="euler", dt=0.2, bm=bm)
    ys[-1].sum().backward()
    assert all(p.grad is not None for p in model.parameters())
