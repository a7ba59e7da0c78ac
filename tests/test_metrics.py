"""fokker.metrics against independent computations (loops, closed forms, scipy)."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment
from scipy.stats import wasserstein_distance

from fokker import metrics
from fokker.errors import DeviceDtypeError, ParameterError, ShapeError
from fokker.tolerances import Z_SCORE, assert_close


def _loop_mmd(x: list[list[float]], y: list[list[float]], h: float, unbiased: bool) -> float:
    def k(a, b):
        return math.exp(-sum((ai - bi) ** 2 for ai, bi in zip(a, b)) / (2 * h * h))

    n, m = len(x), len(y)
    sxx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if not unbiased or i != j)
    syy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if not unbiased or i != j)
    sxy = sum(k(a, b) for a in x for b in y)
    nxx = n * (n - 1) if unbiased else n * n
    nyy = m * (m - 1) if unbiased else m * m
    return sxx / nxx + syy / nyy - 2 * sxy / (n * m)


@given(n=st.integers(2, 7), m=st.integers(2, 6), d=st.integers(1, 3), unbiased=st.booleans())
@settings(max_examples=10)
def test_mmd_matches_loops(n, m, d, unbiased):
    g = torch.Generator().manual_seed(n * 100 + m * 10 + d)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randn(m, d, generator=g, dtype=torch.float64) + 0.5
    xl, yl = x.tolist(), y.tolist()
    z = xl + yl
    dists = [math.dist(z[i], z[j]) for i in range(len(z)) for j in range(i + 1, len(z))]
    # the documented convention: the lower middle element when the count is even
    h_low = sorted(dists)[(len(dists) - 1) // 2]
    if len(dists) % 2:
        assert h_low == statistics.median(dists)
    assert_close(metrics.median_bandwidth(x, y), torch.tensor(h_low, dtype=torch.float64))
    expected = _loop_mmd(xl, yl, h_low, unbiased)
    assert_close(metrics.mmd(x, y, unbiased=unbiased), torch.tensor(expected, dtype=torch.float64))
    assert_close(metrics.mmd(x, y, bandwidth=0.7, unbiased=unbiased), torch.tensor(_loop_mmd(xl, yl, 0.7, unbiased), dtype=torch.float64))


def test_mmd_same_law_is_zero_within_error(device):
    vals = torch.stack(
        [metrics.mmd(torch.randn(200, 3, device=device), torch.randn(200, 3, device=device)) for _ in range(20)]
    )
    assert abs(float(vals.mean())) <= Z_SCORE * float(vals.std()) / math.sqrt(20)
    shifted = metrics.mmd(torch.randn(200, 3, device=device), torch.randn(200, 3, device=device) + 1.0)
    assert float(shifted) > float(vals.mean()) + Z_SCORE * float(vals.std())


def _expected_abs_normal(delta: float, s: float) -> float:
    """E|Z| for Z ~ N(delta, s^2) (folded normal mean)."""
    return s * math.sqrt(2 / math.pi) * math.exp(-(delta**2) / (2 * s * s)) + delta * math.erf(delta / (s * math.sqrt(2)))


def test_energy_distance_two_gaussians_closed_form(device):
    m1, s1, m2, s2 = 0.3, 1.0, -0.4, 1.7
    exact = (
        2 * _expected_abs_normal(m1 - m2, math.hypot(s1, s2))
        - _expected_abs_normal(0.0, s1 * math.sqrt(2))
        - _expected_abs_normal(0.0, s2 * math.sqrt(2))
    )
    reps = torch.stack(
        [
            metrics.energy_distance(
                m1 + s1 * torch.randn(400, 1, device=device, dtype=torch.float64),
                m2 + s2 * torch.randn(300, 1, device=device, dtype=torch.float64),
            )
            for _ in range(16)
        ]
    )
    se = float(reps.std()) / math.sqrt(16)
    assert abs(float(reps.mean()) - exact) <= Z_SCORE * se


def test_energy_distance_matches_pairwise_loops():
    x = torch.randn(6, 2, dtype=torch.float64)
    y = torch.randn(4, 2, dtype=torch.float64)
    exy = sum(float((a - b).norm()) for a in x for b in y) / 24
    exx = sum(float((x[i] - x[j]).norm()) for i in range(6) for j in range(6) if i != j) / 30
    eyy = sum(float((y[i] - y[j]).norm()) for i in range(4) for j in range(4) if i != j) / 12
    assert_close(metrics.energy_distance(x, y), torch.tensor(2 * exy - exx - eyy, dtype=torch.float64))


@pytest.mark.parametrize("n,m", [(50, 50), (37, 23)])
def test_sliced_wasserstein_in_1d_is_exact_wasserstein(n, m):
    x = torch.randn(n, 1, dtype=torch.float64)
    y = 0.5 + 2.0 * torch.randn(m, 1, dtype=torch.float64)
    w1 = wasserstein_distance(x[:, 0].numpy(), y[:, 0].numpy())
    assert_close(metrics.sliced_wasserstein(x, y, num_projections=3, p=1), torch.tensor(w1, dtype=torch.float64))
    if n == m:
        w2 = float(((x[:, 0].sort().values - y[:, 0].sort().values) ** 2).mean().sqrt())
        assert_close(metrics.sliced_wasserstein(x, y, num_projections=3, p=2), torch.tensor(w2, dtype=torch.float64))


def test_sinkhorn_small_epsilon_approaches_assignment_cost():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(12, 2, generator=g, dtype=torch.float64)
    y = torch.randn(12, 2, generator=g, dtype=torch.float64) + 1.0
    c = ((x[:, None] - y[None]) ** 2).sum(-1).numpy()
    r, cidx = linear_sum_assignment(c)
    exact = float(c[r, cidx].mean())
    approx = float(metrics.sinkhorn(x, y, epsilon=1e-3, num_iters=2000, debiased=False))
    assert abs(approx - exact) <= 0.02 * exact
    assert float(metrics.sinkhorn(x, x, epsilon=0.05)) == pytest.approx(0.0, abs=1e-9)


def test_mode_coverage_entropy():
    means = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    # 3 samples at mode 0, 1 at mode 1, none elsewhere: p = (3/4, 1/4, 0, 0)
    s = torch.tensor([[0.1, 0.0], [0.0, -0.2], [0.3, 0.1], [9.5, 0.2]])
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert float(metrics.mode_coverage(s, means)) == pytest.approx(h / math.log(4), rel=1e-6)
    assert float(metrics.mode_coverage(torch.zeros(5, 2), means)) == 0.0
    uniform = means.repeat(25, 1) + 0.1 * torch.randn(100, 2)
    assert float(metrics.mode_coverage(uniform, means)) == pytest.approx(1.0, rel=1e-6)


def test_metric_errors():
    with pytest.raises(ShapeError, match="event dimension"):
        metrics.mmd(torch.randn(5, 2), torch.randn(5, 3))
    with pytest.raises(ShapeError, match=r"\(n, d\)"):
        metrics.energy_distance(torch.randn(5), torch.randn(5))
    with pytest.raises(DeviceDtypeError, match="dtype"):
        metrics.sliced_wasserstein(torch.randn(5, 2), torch.randn(5, 2, dtype=torch.float64))
    with pytest.raises(ParameterError, match="epsilon"):
        metrics.sinkhorn(torch.randn(5, 2), torch.randn(5, 2), epsilon=-1.0)
    with pytest.raises(ParameterError, match="at least 2 modes"):
        metrics.mode_coverage(torch.randn(5, 2), torch.randn(1, 2))
    with pytest.raises(ParameterError, match="bandwidth"):
        metrics.mmd(torch.randn(5, 2), torch.randn(5, 2), bandwidth=0.0)


def test_metrics_float32_and_numpy_free_inputs(device):
    x = torch.randn(64, 3, device=device)
    y = torch.randn(64, 3, device=device)
    for f in (metrics.mmd, metrics.energy_distance, metrics.sliced_wasserstein, metrics.sinkhorn):
        v = f(x, y)
        assert v.dtype == torch.float32 and v.device.type == device.type and np.isfinite(float(v))
