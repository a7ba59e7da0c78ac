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
from fokker.tolerances import Z_SCORE, assert_close, tolerance


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


def _loop_energy(x: list[list[float]], y: list[list[float]], unbiased: bool) -> float:
    """Energy distance from float64 pairwise loops over explicit differences (math.dist)."""
    n, m = len(x), len(y)
    exy = sum(math.dist(a, b) for a in x for b in y) / (n * m)
    exx = sum(math.dist(x[i], x[j]) for i in range(n) for j in range(n)) / (n * (n - 1) if unbiased else n * n)
    eyy = sum(math.dist(y[i], y[j]) for i in range(m) for j in range(m)) / (m * (m - 1) if unbiased else m * m)
    return 2 * exy - exx - eyy


def test_energy_distance_matches_pairwise_loops():
    x = torch.randn(6, 2, dtype=torch.float64)
    y = torch.randn(4, 2, dtype=torch.float64)
    for unbiased in (True, False):
        expected = _loop_energy(x.tolist(), y.tolist(), unbiased)
        assert_close(metrics.energy_distance(x, y, unbiased=unbiased), torch.tensor(expected, dtype=torch.float64))


def test_pairwise_distances_are_exact_on_the_diagonal(device, dtype):
    # far from the origin the matmul form |a|^2 + |b|^2 - 2 a.b leaves rounding residue on the
    # diagonal, which a square root turns into sqrt(eps) * |a| per entry
    x = 1e3 + torch.randn(9, 3, device=device, dtype=dtype)
    assert torch.equal(metrics._dist(x, x).diagonal(), torch.zeros(9, device=device, dtype=dtype))
    assert torch.equal(metrics._sq_dist(x, x).diagonal(), torch.zeros(9, device=device, dtype=dtype))


@pytest.mark.parametrize("offset", [0.0, 1e3])
def test_distances_far_from_the_origin_match_float64_loops(device, dtype, offset):
    # The reference runs in float64 on the very same (already rounded) points, so the only
    # error left in the metric is its own rounding: relative eps of each distance.  With the
    # matmul expansion the squared distances at offset 1e3 carry errors of eps * 1e6 and the
    # comparison fails by orders of magnitude in both dtypes.
    g = torch.Generator().manual_seed(11)
    x = (offset + torch.randn(7, 2, generator=g, dtype=torch.float64)).to(device=device, dtype=dtype)
    y = (offset + 0.5 + 1.3 * torch.randn(5, 2, generator=g, dtype=torch.float64)).to(device=device, dtype=dtype)
    xl, yl = x.double().tolist(), y.double().tolist()
    for unbiased in (True, False):
        ed = _loop_energy(xl, yl, unbiased)
        assert_close(metrics.energy_distance(x, y, unbiased=unbiased), torch.tensor(ed, dtype=torch.float64))
        for h in (0.8, None):
            if h is None:
                z = xl + yl
                dists = sorted(math.dist(z[i], z[j]) for i in range(len(z)) for j in range(i + 1, len(z)))
                h_ref = dists[(len(dists) - 1) // 2]
                assert_close(metrics.median_bandwidth(x, y), torch.tensor(h_ref, dtype=torch.float64))
            else:
                h_ref = h
            expected = _loop_mmd(xl, yl, h_ref, unbiased)
            assert_close(metrics.mmd(x, y, bandwidth=h, unbiased=unbiased), torch.tensor(expected, dtype=torch.float64))


def test_sliced_wasserstein_draws_directions_from_the_generator():
    x, y = torch.randn(40, 3), torch.randn(30, 3) + 0.3
    a = metrics.sliced_wasserstein(x, y, num_projections=8, p=1, generator=torch.Generator().manual_seed(4))
    state = torch.get_rng_state()
    b = metrics.sliced_wasserstein(x, y, num_projections=8, p=1, generator=torch.Generator().manual_seed(4))
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is not touched
    assert torch.equal(a, b)
    # independently: the same directions, scipy's exact 1-D W_1 per projection, averaged
    theta = torch.randn(3, 8, generator=torch.Generator().manual_seed(4))
    theta = theta / theta.norm(dim=0, keepdim=True)
    w1 = [wasserstein_distance((x @ theta[:, k]).numpy(), (y @ theta[:, k]).numpy()) for k in range(8)]
    assert_close(a, torch.tensor(float(np.mean(w1))))


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
    epsilon = 1e-3
    approx = float(metrics.sinkhorn(x, y, epsilon=epsilon, num_iters=2000, debiased=False))
    # The converged entropic plan costs at most eps' * log(n) more than the optimal assignment
    # (eps' = epsilon * mean(C); KL(P_0 | mu x nu) = log n for a permutation plan P_0).  After
    # finitely many iterations its row marginals are slightly off, so it may also undercut the
    # optimum by a little: bound the gap by the same amount on both sides.
    assert abs(approx - exact) <= epsilon * float(c.mean()) * math.log(12)
    assert_close(metrics.sinkhorn(x, x, epsilon=0.05), torch.tensor(0.0, dtype=torch.float64))


def test_mode_coverage_entropy():
    means = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    # 3 samples at mode 0, 1 at mode 1, none elsewhere: p = (3/4, 1/4, 0, 0)
    s = torch.tensor([[0.1, 0.0], [0.0, -0.2], [0.3, 0.1], [9.5, 0.2]])
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert_close(metrics.mode_coverage(s, means), torch.tensor(h / math.log(4)))
    assert float(metrics.mode_coverage(torch.zeros(5, 2), means)) == 0.0
    uniform = means.repeat(25, 1) + 0.1 * torch.randn(100, 2)
    assert_close(metrics.mode_coverage(uniform, means), torch.tensor(1.0))
    # far from the origin (the matmul expansion is kept there: only the order within a row counts)
    far = torch.tensor([1e4, -1e4])
    assert_close(metrics.mode_coverage(s + far, means + far), torch.tensor(h / math.log(4)))


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


def test_metrics_in_float32_agree_with_float64(device):
    x = torch.randn(64, 3, device=device)
    y = torch.randn(64, 3, device=device) + 0.2
    for f in (metrics.mmd, metrics.energy_distance, metrics.sinkhorn):
        v = f(x, y)
        assert v.dtype == torch.float32 and v.device.type == device.type
        # loose: float32 sums over 64^2 pairs (and Sinkhorn iterates)
        assert_close(v, f(x.double(), y.double()), loose=True, msg=f.__name__)
    # float32 and float64 normals from one seed differ, so the sliced distance keeps its dtype only
    v = metrics.sliced_wasserstein(x, y, generator=torch.Generator().manual_seed(1))
    assert v.dtype == torch.float32 and v.device.type == device.type


# ---------------------------------------------------------------- structure-aware tests
def _ring_and_clusters(n: int, seed: int):
    from fokker.datasets import toy

    g = torch.Generator().manual_seed(seed)
    ang = torch.rand(n, generator=g, dtype=torch.float64) * 2 * math.pi
    ring = (4 / math.sqrt(2)) * torch.stack([ang.cos(), ang.sin()], -1) + 0.35 * torch.randn(n, 2, generator=g, dtype=torch.float64)
    return ring, toy.eight_gaussians(n, seed=seed, dtype=torch.float64)


def test_low_density_fraction_sees_a_ring_that_energy_distance_misses() -> None:
    from fokker.datasets import toy
    from fokker.datasets.densities import toy_log_prob

    lp = toy_log_prob("eight_gaussians")
    ref = toy.eight_gaussians(20000, seed=3, dtype=torch.float64)
    ring, exact = _ring_and_clusters(2000, 1)
    good = metrics.low_density_fraction(exact, lp, ref, level=0.01)
    assert abs(good.z_score) < Z_SCORE  # an exact sampler puts ~1% there
    assert good.threshold == pytest.approx(float(torch.quantile(lp(ref), 0.01)))  # independent quantile
    bad = metrics.low_density_fraction(ring, lp, ref, level=0.01)
    assert bad.z_score > 5 * Z_SCORE
    assert float(metrics.energy_distance(exact, ring)) < 0.05  # the old row's threshold: blind to it


def test_mmd_test_statistic_pvalue_and_power() -> None:
    ring, exact = _ring_and_clusters(600, 2)
    _, exact2 = _ring_and_clusters(600, 5)
    g = torch.Generator().manual_seed(0)
    same = metrics.mmd_test(exact, exact2, 0.35, 200, generator=g)
    # the statistic is the unbiased MMD^2 at that bandwidth (independent implementation)
    assert same.statistic == pytest.approx(float(metrics.mmd(exact, exact2, bandwidth=0.35)), rel=1e-9, abs=1e-12)
    assert same.p_value > 0.01 and not same.rejects(0.01)
    diff = metrics.mmd_test(exact, ring, 0.35, 200, generator=g)
    assert diff.p_value == pytest.approx(1 / 201) and diff.rejects(0.01)


def test_classifier_two_sample_test() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(800, 3, generator=g, dtype=torch.float64)
    y = torch.randn(800, 3, generator=g, dtype=torch.float64)
    kw = dict(hidden=(32,), steps=150, generator=torch.Generator().manual_seed(1))
    same = metrics.classifier_two_sample_test(x, y, **kw)
    assert abs(same.statistic - 0.5) < Z_SCORE * math.sqrt(0.25 / 800)
    kw = dict(hidden=(32,), steps=150, generator=torch.Generator().manual_seed(1))
    shifted = metrics.classifier_two_sample_test(x, y + 1.0, **kw)
    # the Bayes accuracy of N(0, I) vs N(1, I) in 3-D is Phi(sqrt(3)/2) = 0.807
    bayes = 0.5 * (1 + math.erf(math.sqrt(3) / 2 / math.sqrt(2)))
    assert abs(shifted.statistic - bayes) < 0.05 and shifted.rejects()
    again = metrics.classifier_two_sample_test(x, y + 1.0, hidden=(32,), steps=150, generator=torch.Generator().manual_seed(1))
    assert again.statistic == shifted.statistic


# ---------------------------------------------------------------------------------------------- auroc
@given(st.lists(st.integers(-3, 3), min_size=1, max_size=12), st.lists(st.integers(-3, 3), min_size=1, max_size=12))
@settings(max_examples=60, deadline=None)
def test_auroc_equals_the_pair_count(normal, anomalous):
    """AUROC against the count over all pairs (ties 1/2); integer scores make ties frequent."""
    pairs = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in anomalous for b in normal)
    got = metrics.auroc(torch.tensor(normal, dtype=torch.float64), torch.tensor(anomalous, dtype=torch.float64))
    expected = pairs / (len(normal) * len(anomalous))
    assert_close(torch.tensor(got, dtype=torch.float64), torch.tensor(expected, dtype=torch.float64))


def test_auroc_rejects_bad_scores():
    with pytest.raises(ShapeError, match="normal"):
        metrics.auroc(torch.zeros(2, 2), torch.zeros(3))
    with pytest.raises(ParameterError, match="anomalous"):
        metrics.auroc(torch.zeros(2), torch.tensor([0.0, math.nan]))
    with pytest.raises(DeviceDtypeError):
        metrics.auroc(torch.zeros(2), torch.zeros(2, dtype=torch.float64))


def test_component_coverage_against_the_construction_labels(dtype) -> None:
    """Samples of the rings / two moons drawn here with known components: the coverage equals the entropy of the known
    labels' histogram (independent of any density), exact for well-separated rings, within the few points in the
    moons' overlap otherwise; it equals mode_coverage on the eight Gaussians (equal isotropic components)."""
    from fokker.datasets import toy_components

    g = torch.Generator().manual_seed(5)
    n = 3000
    # rings: labels 0..3 with the skewed shares (1/2, 1/4, 1/8, 1/8) -> coverage H(p) / log 4
    share = torch.tensor([0.5, 0.25, 0.125, 0.125], dtype=torch.float64)
    labels = torch.repeat_interleave(torch.arange(4), (share * n).long())
    radii = 3 * torch.tensor([1.0, 0.75, 0.5, 0.25], dtype=torch.float64)
    ang = 2 * math.pi * torch.rand(n, generator=g, dtype=torch.float64)
    x = radii[labels, None] * torch.stack([ang.cos(), ang.sin()], -1) + 0.08 * torch.randn(n, 2, generator=g, dtype=torch.float64)
    expected = -(share * share.log()).sum() / math.log(4)
    comps = toy_components("rings")
    assert_close(metrics.component_coverage(x.to(dtype), comps.log_prob, comps.weights), expected.to(dtype))
    # every point of one ring: coverage 0; weighted: H(p) / H(w) with the true weights
    assert float(metrics.component_coverage(x[labels == 2].to(dtype), comps.log_prob)) == 0.0
    assert_close(metrics.component_coverage(x.to(dtype), comps.log_prob, share), torch.tensor(1.0, dtype=dtype))
    # two moons (the sampler's construction): 70% upper, 30% lower; the moons' noise overlaps a little, so the
    # assignment may differ on a few points: H(p) is flat near p, 1% of misassigned points moves it by < 0.02
    m = torch.rand(n, generator=g, dtype=torch.float64) < 0.7
    t = math.pi * torch.rand(n, generator=g, dtype=torch.float64)
    p = torch.stack([torch.where(m, t.cos(), 1 - t.cos()), torch.where(m, t.sin(), 0.5 - t.sin())], -1)
    p = 2 * (p + 0.1 * torch.randn(n, 2, generator=g, dtype=torch.float64) - torch.tensor([0.5, 0.25], dtype=torch.float64))
    q = m.double().mean()
    expected = -(q * q.log() + (1 - q) * (1 - q).log()) / math.log(2)
    comps = toy_components("two_moons")
    got = metrics.component_coverage(p.to(dtype), comps.log_prob, comps.weights)
    assert abs(float(got) - float(expected)) < 0.02
    assert (comps.log_prob(p).argmax(-1) == (~m).long()).double().mean() > 0.98  # the assignment is the moon
    # eight Gaussians: the most probable component is the nearest mean
    x = torch.randn(500, 2, generator=g, dtype=torch.float64) * 2
    ang = torch.arange(8, dtype=torch.float64) * math.pi / 4
    means = 4 * torch.stack([ang.cos(), ang.sin()], -1) / math.sqrt(2)
    comps = toy_components("eight_gaussians")
    assert_close(metrics.component_coverage(x.to(dtype), comps.log_prob), metrics.mode_coverage(x.to(dtype), means.to(dtype)))


def test_component_coverage_bad_input() -> None:
    from fokker.datasets import toy_components

    comps = toy_components("rings")
    with pytest.raises(ShapeError, match=r"\(n, K\)"):
        metrics.component_coverage(torch.randn(5, 2), lambda x: x.sum(-1))
    with pytest.raises(ParameterError, match="at least 2 components"):
        metrics.component_coverage(torch.randn(5, 2), lambda x: x[:, :1])
    with pytest.raises(ShapeError, match="weights"):
        metrics.component_coverage(torch.randn(5, 2), comps.log_prob, torch.ones(3) / 3)
    with pytest.raises(ParameterError, match="non-negative"):
        metrics.component_coverage(torch.randn(5, 2), comps.log_prob, torch.tensor([1.0, 1.0, 1.0, -2.0]))
    with pytest.raises(ShapeError, match=r"\(n, d\)"):
        metrics.component_coverage(torch.randn(5), comps.log_prob)
    with pytest.raises(ParameterError, match="component structure"):
        toy_components("checkerboard")
