"""GaussianMixture and mog40: log_prob, score, normalization, samples, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats
from target_testlib import KS_ALPHA, autograd_score, grid_log_Z, ks_pvalue

from fokker.errors import DeviceDtypeError, NonFiniteError, ParameterError, ShapeError
from fokker.targets import GaussianMixture, catalogue, mog40
from fokker.tolerances import Z_SCORE, assert_close


def random_mixture(K: int, d: int, dtype=torch.float64, device="cpu", seed=0) -> GaussianMixture:
    g = torch.Generator().manual_seed(seed)
    loc = 3 * torch.randn(K, d, generator=g, dtype=torch.float64)
    A = torch.randn(K, d, d, generator=g, dtype=torch.float64)
    L = torch.tril(A, -1) * 0.5 + torch.diag_embed(0.5 + torch.rand(K, d, generator=g, dtype=torch.float64))
    w = torch.rand(K, generator=g, dtype=torch.float64) + 0.1
    w = w / w.sum()
    return GaussianMixture(loc, L, w).to(device=device, dtype=dtype)


def torch_reference(gm: GaussianMixture) -> torch.distributions.Distribution:
    """Independent reference: torch's own MixtureSameFamily built from the raw parameters."""
    cov = gm.scale_tril @ gm.scale_tril.mT
    comp = torch.distributions.MultivariateNormal(gm.loc, covariance_matrix=cov)
    return torch.distributions.MixtureSameFamily(torch.distributions.Categorical(probs=gm.weights), comp)


@pytest.mark.parametrize("K,d", [(1, 1), (3, 2), (5, 4)])
def test_log_prob_and_score_match_torch(K, d, device):
    gm = random_mixture(K, d, device=device)
    ref = torch_reference(gm)
    x = 3 * torch.randn(7, 2, d, dtype=torch.float64, device=device)
    assert gm.log_prob(x).shape == (7, 2)
    assert_close(gm.log_prob(x), ref.log_prob(x))
    assert_close(gm.score(x), autograd_score(ref.log_prob, x))
    lp, sc = gm.log_prob_and_score(x)
    assert_close(lp, ref.log_prob(x))
    assert_close(sc, gm.score(x))


def test_float32_follows_dtype(device):
    gm = random_mixture(3, 2, dtype=torch.float32, device=device)
    x = torch.randn(5, 2, device=device)
    assert gm.log_prob(x).dtype == torch.float32
    ref = random_mixture(3, 2, device=device)
    assert_close(gm.log_prob(x), ref.log_prob(x.double()).float())


def test_normalized_by_quadrature():
    gm = random_mixture(3, 2, seed=1)
    assert gm.log_Z == 0.0
    lo, hi = gm.loc.min().item() - 15, gm.loc.max().item() + 15
    assert_close(torch.tensor(grid_log_Z(gm.log_prob, lo, hi, n=1201), dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64))


def test_one_dim_normalized_by_quadrature():
    gm = random_mixture(4, 1, seed=2)
    Z, _ = integrate.quad(lambda x: math.exp(gm.log_prob(torch.tensor([x], dtype=torch.float64)).item()), -np.inf, np.inf,
                          limit=200, epsabs=0, epsrel=1e-13)
    assert_close(torch.tensor(Z, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64))


def test_samples_marginals_ks_and_moments(device):
    gm = random_mixture(3, 2, device=device, seed=3)
    n = 20000
    x = gm.sample((n,))
    assert x.shape == (n, 2) and x.dtype == torch.float64 and x.device.type == torch.device(device).type
    w = gm.weights.cpu().numpy()
    mu = gm.loc.cpu().numpy()
    sd = torch.sqrt(torch.diagonal(gm.covariance_matrix, dim1=-2, dim2=-1)).cpu().numpy()
    for i in range(2):
        cdf = lambda t, i=i: sum(w[k] * stats.norm.cdf(t, mu[k, i], sd[k, i]) for k in range(len(w)))  # noqa: E731
        assert ks_pvalue(x[:, i], cdf) > KS_ALPHA
    # mean against the exact mixture mean, within Z_SCORE standard errors
    cov = gm.covariance()
    se = torch.sqrt(torch.diagonal(cov) / n)
    assert ((x.mean(0) - gm.mean()).abs() <= Z_SCORE * se).all()


def test_sample_shape_and_distribution_objects():
    gm = random_mixture(3, 2)
    assert gm.sample(()).shape == (2,)
    assert gm.sample((4, 5)).shape == (4, 5, 2)
    assert gm.sample((0,)).shape == (0, 2)
    assert gm.num_components == 3
    assert gm.component_distribution().batch_shape == (3,)
    x = torch.randn(6, 2, dtype=torch.float64)
    assert_close(gm.distribution().log_prob(x), gm.log_prob(x))
    assert gm.has_exact_samples


def test_isotropic_and_diagonal_builders():
    loc = torch.tensor([[0.0, 1.0], [2.0, -1.0]], dtype=torch.float64)
    gm = GaussianMixture.isotropic(loc, torch.tensor([0.5, 2.0], dtype=torch.float64))
    x = torch.randn(5, 2, dtype=torch.float64)
    ref = torch.logsumexp(
        torch.stack(
            [
                torch.distributions.Normal(loc[k], s).log_prob(x).sum(-1) + math.log(0.5)
                for k, s in enumerate([0.5, 2.0])
            ]
        ),
        0,
    )
    assert_close(gm.log_prob(x), ref)
    gd = GaussianMixture.diagonal(loc, torch.tensor([[0.5, 0.5], [2.0, 2.0]], dtype=torch.float64))
    assert_close(gd.log_prob(x), ref)


def test_to_moves_buffers():
    gm = random_mixture(2, 3).to(torch.float32)
    assert gm.loc.dtype == gm.scale_tril.dtype == gm.weights.dtype == gm.log_weights.dtype == torch.float32
    assert set(dict(gm.named_buffers())) == {"loc", "scale_tril", "weights", "log_weights"}


# ------------------------------------------------------------------ mog40
def test_mog40_reproduces_fab_construction():
    # Independent re-run of the documented FAB construction with the global seed call.
    torch.manual_seed(0)
    expected_loc = (torch.rand((40, 2)) - 0.5) * 2 * 40
    t = mog40(dtype=torch.float32)
    for k in (0, 1, 17, 39):
        assert torch.equal(t.loc[k], expected_loc[k])
    assert t.loc.abs().max() <= 40
    scale = math.log1p(math.e)  # softplus(1)
    assert_close(t.scale_tril, scale * torch.eye(2).expand(40, 2, 2))
    assert_close(t.weights, torch.full((40,), 1 / 40))
    assert t.dim == 2 and t.num_components == 40 and t.log_Z == 0.0


def test_mog40_does_not_touch_global_rng():
    torch.manual_seed(123)
    a = torch.rand(3)
    torch.manual_seed(123)
    mog40()
    assert torch.equal(torch.rand(3), a)


def test_catalogue_has_mog40():
    assert catalogue()["mog40"]().name == "mog40"


# ------------------------------------------------------------- validation
def _parts(K=2, d=2):
    return torch.zeros(K, d), torch.eye(d).expand(K, d, d).clone(), torch.full((K,), 1.0 / K)


def test_weights_must_sum_to_one():
    loc, L, _ = _parts()
    with pytest.raises(ParameterError, match="weights must sum to 1"):
        GaussianMixture(loc, L, torch.tensor([0.5, 0.6]))


def test_weights_non_negative():
    loc, L, _ = _parts()
    with pytest.raises(ParameterError, match="weights must be non-negative"):
        GaussianMixture(loc, L, torch.tensor([-0.5, 1.5]))


def test_scale_tril_lower_and_positive():
    loc, L, w = _parts()
    up = L.clone()
    up[0, 0, 1] = 0.3
    with pytest.raises(ParameterError, match="scale_tril must be lower-triangular"):
        GaussianMixture(loc, up, w)
    neg = L.clone()
    neg[1, 1, 1] = -1.0
    with pytest.raises(ParameterError, match="scale_tril must have a positive diagonal"):
        GaussianMixture(loc, neg, w)
    with pytest.raises(ParameterError, match="scale must be positive"):
        GaussianMixture.isotropic(loc, 0.0)


def test_shapes_consistent():
    loc, L, w = _parts()
    with pytest.raises(ShapeError, match="loc must have shape"):
        GaussianMixture(loc[0], L, w)
    with pytest.raises(ShapeError, match="scale_tril must have shape"):
        GaussianMixture(loc, L[:, :1, :1], w)
    with pytest.raises(ShapeError, match="weights must have shape"):
        GaussianMixture(loc, L, torch.ones(3) / 3)


def test_parameter_dtype_mismatch_and_nonfinite():
    loc, L, w = _parts()
    with pytest.raises(DeviceDtypeError, match="scale_tril has dtype"):
        GaussianMixture(loc, L.double(), w)
    bad = loc.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ParameterError, match="loc must be finite"):
        GaussianMixture(bad, L, w)


def test_input_validation():
    gm = GaussianMixture(*_parts())
    with pytest.raises(ShapeError, match=r"x must have shape \(\.\.\., 2\)"):
        gm.log_prob(torch.zeros(3, 3))
    with pytest.raises(NonFiniteError, match="x contains 1 non-finite"):
        gm.score(torch.tensor([[0.0, float("inf")]]))
    with pytest.raises(DeviceDtypeError, match="x has dtype torch.float64"):
        gm.log_prob(torch.zeros(3, 2, dtype=torch.float64))


# ------------------------------------------------------------- properties
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=15)
@given(
    K=st.integers(1, 4),
    d=st.integers(1, 4),
    batch=st.lists(st.integers(1, 3), min_size=0, max_size=2),
    seed=st.integers(0, 2**16),
)
def test_property_log_prob_score_any_shape(K, d, batch, seed):
    gm = random_mixture(K, d, seed=seed)
    ref = torch_reference(gm)
    x = 4 * torch.randn(*batch, d, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    lp = gm.log_prob(x)
    assert lp.shape == tuple(batch)
    assert_close(lp, ref.log_prob(x))
    assert_close(gm.score(x), autograd_score(ref.log_prob, x))


def test_device_mismatch_named():
    gm = GaussianMixture(*_parts())
    with pytest.raises(DeviceDtypeError, match="x is on device meta"):
        gm.log_prob(torch.zeros(3, 2, device="meta"))
    loc, L, w = _parts()
    with pytest.raises(DeviceDtypeError, match="weights is on device meta"):
        GaussianMixture(loc, L, w.to("meta"))


def test_state_dict_roundtrip():
    a, b = random_mixture(3, 2, seed=1), random_mixture(3, 2, seed=2)
    b.load_state_dict(a.state_dict())
    x = torch.randn(5, 2, dtype=torch.float64)
    assert torch.equal(a.log_prob(x), b.log_prob(x))
