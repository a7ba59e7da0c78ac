"""Bad input on the way from the reference to the target: a target NaN on part of the space, a score NaN
at intermediate states, a Pyro model in float64 with a float32 network; clear fokker errors naming the
target, or the sampler following the model's dtype."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch

from fokker import flows, samplers, targets
from fokker.errors import DeviceDtypeError, NonFiniteError
from fokker.targets.base import Target


def _nan_right(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x[..., 0] > 2.5, torch.nan, -0.5 * (x * x).sum(-1))


@pytest.mark.parametrize("cls", [samplers.CMCD, samplers.DDS])
def test_target_nan_at_end_points_names_the_target(cls) -> None:
    """The untrained sampler reaches x0 > 2.5 where log gamma is NaN: the error names the target and a point
    (it used to be a bare "log_weights: 79 of 512 log weights are NaN")."""
    target = targets.CallableTarget(_nan_right, dim=2, name="nan_right").double()
    s = cls(target, num_steps=8, sigma=3.0, width=8)
    with pytest.raises(NonFiniteError, match=r"target 'nan_right': log_prob is NaN/\+inf at \d+ of 512 samples \(e\.g\. x = \["):
        s.log_Z(512, generator=torch.Generator().manual_seed(0), progress=False)


class _NaNScore(Target):
    """A finite log density whose score is NaN in the band 1 < x0 < 1.5 (a broken hand-written gradient)."""

    def __init__(self) -> None:
        super().__init__(2, None, "nan_score")
        self.register_buffer("ref", torch.zeros((), dtype=torch.float64))

    def _log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return -0.5 * (x * x).sum(-1)

    def _score(self, x: torch.Tensor) -> torch.Tensor:
        band = (x[..., :1] > 1.0) & (x[..., :1] < 1.5)
        return torch.where(band, torch.nan, -x)


def test_score_nan_on_part_of_the_annealing_path_is_reported() -> None:
    s = samplers.CMCD(_NaNScore(), num_steps=16, sigma=2.0, width=8)
    with pytest.raises(NonFiniteError, match=r"target 'nan_score'.*paths became non-finite on the way"):
        s.log_Z(256, generator=torch.Generator().manual_seed(0), progress=False)


def _pyro_logistic_float64():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(30, 3, dtype=torch.float64, generator=g)
    y = (X[:, 0] > 0).double()

    def model(X, y):
        w = pyro.sample("w", dist.Normal(torch.zeros(3, dtype=torch.float64), 1.0).to_event(1))
        with pyro.plate("n", len(y)):
            pyro.sample("y", dist.Bernoulli(logits=X @ w), obs=y)

    return targets.from_pyro(model, X, y)


@pytest.mark.parametrize("cls", [samplers.CMCD, samplers.DDS])
def test_float64_pyro_model_the_sampler_follows_or_names_both_dtypes(cls) -> None:
    """By default the network is built in the model's float64; a float32 network is a DeviceDtypeError naming
    both dtypes and the fix, raised before any call into the user's model."""
    target = _pyro_logistic_float64()
    s = cls(target, num_steps=4, width=8)
    x, lw = s.sample(8, generator=torch.Generator().manual_seed(0))
    assert x.dtype == torch.float64 and bool(torch.isfinite(lw).all())
    with pytest.raises(DeviceDtypeError, match=r"net has dtype torch.float32.*'pyro:model' has dtype torch.float64.*net\.to\(torch\.float64\)"):
        cls(target, num_steps=4, net=samplers.PISGradNet(3, 8))
    with pytest.raises(DeviceDtypeError, match=r"the flow is torch.float32.*'pyro:model' is torch.float64"):
        flows.fit_to_target(flows.realnvp(3, transforms=1, hidden=(4,)), target, 1, progress=False)
