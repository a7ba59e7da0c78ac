"""The Target base class: input checks, autograd score, to(), callable wrapping."""

from __future__ import annotations

import math

import pytest
import torch

from fokker.errors import DeviceDtypeError, NoExactSamplesError, NonFiniteError, ShapeError
from fokker.targets import CallableTarget, Target, as_target
from fokker.tolerances import assert_close


class Quadratic(Target):
    """log gamma(x) = -|x - m|^2 / 2 with a buffer m (so dtype/device are tracked)."""

    def __init__(self, m: torch.Tensor) -> None:
        super().__init__(dim=m.shape[-1], log_Z=0.5 * m.shape[-1] * math.log(2 * math.pi))
        self.register_buffer("m", m)

    def _log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return -0.5 * ((x - self.m) ** 2).sum(-1)


def test_autograd_score_matches_closed_form(device: torch.device) -> None:
    t = Quadratic(torch.tensor([1.0, -2.0], dtype=torch.float64)).to(device)
    x = torch.randn(5, 3, 2, dtype=torch.float64, device=device)
    assert_close(t.score(x), t.m - x)
    assert t.log_prob(x).shape == (5, 3)


def test_score_supports_double_backward() -> None:
    t = Quadratic(torch.zeros(2, dtype=torch.float64))
    x = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    s = t.score(x)
    (h,) = torch.autograd.grad(s.sum(), x)  # d/dx sum(-x) = -1
    assert_close(h, -torch.ones_like(x))


def test_input_errors() -> None:
    t = Quadratic(torch.zeros(2, dtype=torch.float64))
    with pytest.raises(ShapeError, match=r"x must have shape \(\.\.\., 2\)"):
        t.log_prob(torch.zeros(3, 4, dtype=torch.float64))
    with pytest.raises(NonFiniteError, match="x contains"):
        t.log_prob(torch.tensor([[0.0, float("inf")]], dtype=torch.float64))
    with pytest.raises(DeviceDtypeError, match="x has dtype torch.float32 but Quadratic has dtype torch.float64"):
        t.score(torch.zeros(1, 2))
    with pytest.raises(NoExactSamplesError, match="no exact sampler"):
        t.sample((3,))
    assert not t.has_exact_samples


def test_to_converts_buffers() -> None:
    t = Quadratic(torch.zeros(2)).to(torch.float64)
    assert t.dtype == torch.float64 and t.m.dtype == torch.float64
    assert t.log_prob(torch.zeros(1, 2, dtype=torch.float64)).dtype == torch.float64


def test_callable_target_and_as_target() -> None:
    t = as_target(lambda x: -(x**2).sum(-1), dim=3)
    assert isinstance(t, CallableTarget) and t.dim == 3 and t.log_Z is None
    x = torch.randn(7, 3, dtype=torch.float64)
    assert_close(t.score(x), -2 * x)
    lp, g = t.log_prob_and_score(x)
    assert_close(lp, -(x**2).sum(-1))
    assert_close(g, -2 * x)
    with pytest.raises(ValueError, match="dim is required"):
        as_target(lambda x: x)
    with pytest.raises(TypeError, match="expected a fokker Target"):
        as_target(3)
    with pytest.raises(ValueError, match="dim must be a positive integer"):
        CallableTarget(lambda x: x, dim=0)


# ------------------------------------------------------------------ user callables
def test_callable_output_shape_is_checked() -> None:
    t = CallableTarget(lambda x: x, dim=2)  # forgot to reduce over the last dimension
    with pytest.raises(ShapeError, match=r"returned shape \(3, 2\) for input of shape \(3, 2\); expected x.shape\[:-1\] = \(3,\)"):
        t.log_prob(torch.randn(3, 2))
    with pytest.raises(ShapeError, match=r"returned shape \(3, 2\)"):
        t.log_prob_unchecked(torch.randn(3, 2))  # free check: also on the unchecked path
    with pytest.raises(ShapeError, match=r"returned shape"):
        t.score(torch.randn(3, 2))
    with pytest.raises(TypeError, match="must return a tensor of shape \\(4,\\); got float"):
        CallableTarget(lambda x: 0.0, dim=2).log_prob(torch.randn(4, 2))
    with pytest.raises(DeviceDtypeError, match="returned dtype torch.int64"):
        CallableTarget(lambda x: (x > 0).sum(-1), dim=2).log_prob(torch.randn(4, 2))
    with pytest.raises(DeviceDtypeError, match="returned dtype torch.float64 .* input of dtype torch.float32"):
        CallableTarget(lambda x: x.double().sum(-1), dim=2).log_prob(torch.randn(4, 2))


def test_callable_nan_output_follows_the_argument_check_switch() -> None:
    import fokker

    def half_nan(x):
        lp = -(x**2).sum(-1)
        return torch.where(x[..., 0] > 0, lp, torch.nan)

    t = CallableTarget(half_nan, dim=2)
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [2.0, 1.0]])
    with pytest.raises(NonFiniteError, match="log_prob_fn half_nan returned NaN at 1 of 3"):
        t.log_prob(x)
    with fokker.argument_checks(False):
        assert torch.isnan(t.log_prob(x)).sum() == 1
    assert torch.isnan(t.log_prob_unchecked(x)).sum() == 1
    outside = CallableTarget(lambda x: torch.where(x[..., 0] > 0, -(x**2).sum(-1), -torch.inf), dim=2)
    assert torch.equal(torch.isinf(outside.log_prob(x)), torch.tensor([False, True, False]))  # -inf is allowed


# ------------------------------------------------------------------ sample(sample_shape, generator=)
class GlobalRNGHook(Quadratic):
    """An exact sampler written against the old hook: draws from the global RNG."""

    def _sample(self, sample_shape: torch.Size) -> torch.Tensor:
        return self.m + torch.randn(*sample_shape, self.dim, dtype=self.m.dtype)


def test_sample_with_a_hook_that_takes_no_generator() -> None:
    t = GlobalRNGHook(torch.tensor([1.0, 2.0], dtype=torch.float64))
    state = torch.get_rng_state()
    a = t.sample(5, generator=torch.Generator().manual_seed(3))
    b = t.sample((5,), generator=torch.Generator().manual_seed(3))
    assert torch.equal(torch.get_rng_state(), state) and torch.equal(a, b) and a.shape == (5, 2)
    with pytest.raises(ValueError, match="sample_shape"):
        t.sample((-1,))
