"""fokker.checks flow checkers: they pass on correct layers and catch broken ones."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import AffineTransform, Normal, Transform, constraints

from fokker import flows
from fokker.checks import check_inverse, check_log_det, check_normalized
from fokker.errors import ParameterError, ShapeError


@torch.no_grad()
def _perturb(m: torch.nn.Module) -> torch.nn.Module:
    g = torch.Generator().manual_seed(3)
    for p in m.parameters():
        p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return m


LAYERS = {
    "affine_coupling": lambda d: flows.AffineCoupling(flows.alternating_mask(d), hidden=(16,)),
    "spline_coupling": lambda d: flows.SplineCoupling(flows.half_mask(d), hidden=(16,), bins=4, bound=2.0),
    "maf": lambda d: flows.MAF(d, hidden=(16,)),
    "linear_lu": lambda d: flows.InvertibleLinear(d),
    "planar": lambda d: flows.Planar(d),
    "radial": lambda d: flows.Radial(d),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layers_pass_both_checks(name: str, device: torch.device) -> None:
    layer = _perturb(LAYERS[name](4)).to(device=device, dtype=torch.float64)
    x = 2.0 * torch.randn(6, 4, dtype=torch.float64, device=device)
    inv = check_inverse(layer, x)
    ld = check_log_det(layer, x)
    assert inv.passed, inv
    assert ld.passed, ld
    assert ld.details["events"] == 6


def test_conditional_layer_with_context() -> None:
    layer = _perturb(flows.MAF(3, hidden=(8,), context_dim=2)).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    ctx = torch.randn(2, dtype=torch.float64)
    assert check_inverse(layer, x, context=ctx)
    assert check_log_det(layer, x, context=ctx)


class WrongLogDet(AffineTransform):
    """An affine map whose log-det is off by 0.1 per event: the checker must catch it."""

    def log_abs_det_jacobian(self, x, y):
        return super().log_abs_det_jacobian(x, y) + 0.1


class OneWay(Transform):
    """y = x^3 + x with a wrong inverse (cube root): round trips must fail."""

    domain = codomain = constraints.real
    bijective = True

    def _call(self, x):
        return x**3 + x

    def _inverse(self, y):
        return y.sign() * y.abs().pow(1 / 3)

    def log_abs_det_jacobian(self, x, y):
        return torch.log(3 * x**2 + 1)


def test_checks_catch_broken_transforms() -> None:
    x = torch.randn(10, dtype=torch.float64)
    res = check_log_det(WrongLogDet(0.0, 2.0), x)
    assert not res.passed and res.error == pytest.approx(0.1, abs=1e-12)
    assert res.details["forward"] == pytest.approx(0.1, abs=1e-12)
    bad = check_inverse(OneWay(), x)
    assert not bad.passed and "FAIL" in repr(bad)
    ok = check_log_det(AffineTransform(1.0, torch.tensor([2.0, -0.5], dtype=torch.float64), event_dim=1),
                       torch.randn(3, 2, dtype=torch.float64))
    assert ok.passed and ok.error < 1e-12  # log|2 * -0.5| = 0 exactly


def test_normalized_1d_2d_and_failure() -> None:
    assert check_normalized(Normal(torch.tensor(0.3, dtype=torch.float64), 0.7), (-8.0, 8.0)).passed
    flow = flows.realnvp(2, transforms=2, hidden=(8,)).double()
    res = check_normalized(flow, ((-7.0, 7.0), (-7.0, 7.0)), n=301, tol=2e-3)
    assert res.passed, res

    class Off:
        event_shape = ()

        def log_prob(self, x):
            return Normal(0.0, 1.0).log_prob(x) + 0.05

    res = check_normalized(Off(), (-8.0, 8.0))
    assert not res.passed and res.details["mass"] == pytest.approx(math.exp(0.05), rel=1e-6)


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="transform must be a torch.distributions.Transform"):
        check_inverse(lambda x: x, torch.zeros(2))
    with pytest.raises(ShapeError, match="bounds must be"):
        check_normalized(Normal(0.0, 1.0), (1.0, 2.0, 3.0))
    with pytest.raises(ParameterError, match="low < high"):
        check_normalized(Normal(0.0, 1.0), (2.0, 1.0))
