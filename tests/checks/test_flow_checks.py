"""fokker.checks flow checkers: correct layers pass (float32 and float64), and a deliberately
broken layer fails for every path a checker claims to check."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
from torch.distributions import AffineTransform, Normal, Transform, constraints

from fokker import flows
from fokker.checks import check_inverse, check_log_det, check_normalized
from fokker.errors import ParameterError, ShapeError
from fokker.tolerances import tolerance

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "flows"))
from flows_testlib import ForwardLogDetOff, ForwardOffSomewhere, InverseLogDetOff, InverseMapOff, LadjOff  # noqa: E402


@torch.no_grad()
def _perturb(m: torch.nn.Module) -> torch.nn.Module:
    g = torch.Generator().manual_seed(3)
    for p in m.parameters():
        p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return m


LAYERS = {
    "affine_coupling": lambda d: flows.AffineCoupling(d, hidden=(16,), mask=flows.alternating_mask(d)),
    "spline_coupling": lambda d: flows.SplineCoupling(d, hidden=(16,), bins=4, bound=2.0),
    "maf": lambda d: flows.MAF(d, hidden=(16,)),
    "iaf": lambda d: flows.IAF(d, hidden=(16,)),
    "linear_lu": lambda d: flows.InvertibleLinear(d),
    "planar": lambda d: flows.Planar(d),
    "radial": lambda d: flows.Radial(d),
    "sylvester": lambda d: flows.Sylvester(d),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_correct_layers_pass(name: str, dtype: torch.dtype, device: torch.device) -> None:
    layer = _perturb(LAYERS[name](4)).to(device=device, dtype=dtype)
    x = 2.0 * torch.randn(6, 4, dtype=dtype, device=device)
    inv = check_inverse(layer, x)
    ld = check_log_det(layer, x)
    assert inv.passed, inv
    assert ld.passed, ld
    assert ld.details["events"] == 6
    # every path was compared: fast paths, ladj, the torch protocol both ways
    assert any("inv.log_abs_det_jacobian" in k for k in ld.details) and any("ladj vs" in k for k in ld.details)
    assert any("t.inv(y)" in k for k in inv.details) and any("call ==" in k for k in inv.details)


def test_conditional_layer_with_context(dtype: torch.dtype) -> None:
    layer = _perturb(flows.MAF(3, hidden=(8,), context_dim=2)).to(dtype)
    x = torch.randn(5, 3, dtype=dtype)
    for ctx in (torch.randn(2, dtype=dtype), torch.randn(5, 2, dtype=dtype)):
        assert check_inverse(layer, x, context=ctx)
        assert check_log_det(layer, x, context=ctx)
    assert check_log_det(layer.condition(torch.randn(2, dtype=dtype)), x)


# -- deliberately broken layers, one per path (shared with the layer contract test) ----------
BROKEN_LOG_DET = {"forward log-det": ForwardLogDetOff, "inverse log-det": InverseLogDetOff, "ladj": LadjOff}
BROKEN_INVERSE = {"inverse map": InverseMapOff, "forward map on some inputs": ForwardOffSomewhere}


@pytest.mark.parametrize("d", [2, 16])
@pytest.mark.parametrize("name", sorted(BROKEN_LOG_DET))
def test_check_log_det_catches_each_broken_path(name: str, d: int, dtype: torch.dtype) -> None:
    """An error of 0.05 nats fails by default, float32 included, for d up to 16."""
    layer = _perturb(BROKEN_LOG_DET[name](d, hidden=(16,))).to(dtype)
    x = 2.0 * torch.randn(6, d, dtype=dtype)
    res = check_log_det(layer, x)
    assert not res.passed, res
    assert res.error == pytest.approx(0.05, abs=0.01)
    assert res.tolerance < 0.05


@pytest.mark.parametrize("name", sorted(BROKEN_INVERSE))
def test_check_inverse_catches_each_broken_path(name: str, dtype: torch.dtype) -> None:
    layer = _perturb(BROKEN_INVERSE[name](4, hidden=(16,))).to(dtype)
    x = 2.0 * torch.randn(32, 4, dtype=dtype)
    res = check_inverse(layer, x)
    assert not res.passed and "FAIL" in repr(res), res


def test_old_defects_are_caught() -> None:
    """The two defects of the old checkers: an inverse log-det off by 0.5 passed (never
    compared), and the float32 default bound was 0.2 nats (an error of 0.15 passed)."""
    x = torch.randn(8, 4)
    for off in (0.5, 0.15):

        class Off(flows.AffineCoupling):
            def inverse_and_ladj(self, y, context=None, off=off):
                z, ladj = super().inverse_and_ladj(y, context)
                return z, ladj + off

        res = check_log_det(_perturb(Off(4, (8,))), x)
        assert not res.passed and res.tolerance < 0.01, res


class WrongLogDet(AffineTransform):
    """A torch affine map whose log-det is off by 0.1 per event: the checker must catch it."""

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


def test_plain_torch_transforms() -> None:
    x = torch.randn(10, dtype=torch.float64)
    res = check_log_det(WrongLogDet(0.0, 2.0), x)
    assert not res.passed and res.error == pytest.approx(0.1, abs=tolerance(torch.float64).atol)
    bad = check_inverse(OneWay(), x)
    assert not bad.passed and "FAIL" in repr(bad)
    ok = check_log_det(AffineTransform(1.0, torch.tensor([2.0, -0.5], dtype=torch.float64), event_dim=1),
                       torch.randn(3, 2, dtype=torch.float64))
    assert ok.passed and ok.error <= tolerance(torch.float64).atol  # log|2 * -0.5| = 0 exactly
    # a transform with torch's cache on is checked with the cache off: its wrong inverse shows
    cached = OneWay(cache_size=1)
    assert not check_inverse(cached, x).passed


def test_normalized_1d_2d_and_failure(dtype: torch.dtype) -> None:
    assert check_normalized(Normal(torch.tensor(0.3, dtype=dtype), 0.7), (-8.0, 8.0), dtype=dtype).passed
    flow = _perturb(flows.realnvp(2, transforms=2, hidden=(8,))).to(dtype)
    res = check_normalized(flow, ((-8.0, 8.0), (-8.0, 8.0)), num_points=301)
    assert res.passed, res
    assert "quadrature error estimate" in res.details

    class Off:
        """A log-density 0.05 nats too high: mass e^0.05 = 1.051."""

        event_shape = ()

        def log_prob(self, x):
            return Normal(0.0, 1.0).log_prob(x) + 0.05

    res = check_normalized(Off(), (-8.0, 8.0), dtype=dtype)
    assert not res.passed
    assert res.details["mass"] == pytest.approx(math.exp(0.05), rel=tolerance(dtype, loose=True).rtol)


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="transform must be a torch.distributions.Transform"):
        check_inverse(lambda x: x, torch.zeros(2))
    with pytest.raises(ShapeError, match="bounds must be"):
        check_normalized(Normal(0.0, 1.0), (1.0, 2.0, 3.0))
    with pytest.raises(ParameterError, match="low < high"):
        check_normalized(Normal(0.0, 1.0), (2.0, 1.0))
    with pytest.raises(ParameterError, match="num_points must be odd"):
        check_normalized(Normal(0.0, 1.0), (-1.0, 1.0), num_points=100)
    with pytest.raises(ParameterError, match="tol must be positive"):
        check_log_det(flows.Reverse(2), torch.zeros(3, 2), tol=0.0)
