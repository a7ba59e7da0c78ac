"""LogisticRegression (+ loaders), LGCP and EightSchools against independent computations."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from target_testlib import autograd_score

from fokker.data import data_dir
from fokker.errors import DataNotFoundError, DeviceDtypeError, NonFiniteError, ParameterError, ShapeError
from fokker.targets import (
    LGCP,
    EightSchools,
    LogisticRegression,
    breast_cancer,
    german_credit,
    ionosphere,
    sonar,
)
from fokker.targets.lgcp import bin_counts, load_pines
from fokker.tolerances import assert_close

D = torch.distributions
HAVE_DATA = data_dir(required=False) is not None and (data_dir(required=False) / "targets" / "sonar.csv").is_file()
needs_data = pytest.mark.skipif(not HAVE_DATA, reason="shared/validation data not found")


# -------------------------------------------------------------- logistic
def _toy_logreg(device, prior_scale=1.5, N=40, d=4):
    g = torch.Generator().manual_seed(1)
    X = torch.randn(N, d, generator=g, dtype=torch.float64).to(device)
    y = (torch.rand(N, generator=g, dtype=torch.float64) < 0.4).double().to(device)
    return LogisticRegression(X, y, prior_scale=prior_scale), X, y


@pytest.mark.parametrize("prior_scale", [1.5, None])
def test_logreg_log_prob_matches_torch_distributions(prior_scale, device):
    t, X, y = _toy_logreg(device, prior_scale)
    w = torch.randn(5, 3, 4, dtype=torch.float64, device=device)
    ref = D.Bernoulli(logits=w @ X.T).log_prob(y).sum(-1)
    if prior_scale is not None:
        ref = ref + D.Normal(w.new_tensor(0.0), w.new_tensor(prior_scale)).log_prob(w).sum(-1)
    assert_close(t.log_prob(w), ref)
    assert_close(t.score(w), autograd_score(t.log_prob, w))
    assert t.log_Z is None and not t.has_exact_samples


def test_logreg_validation():
    X = torch.randn(5, 2)
    with pytest.raises(ParameterError, match=r"y must hold labels in \{0, 1\}"):
        LogisticRegression(X, torch.tensor([0.0, 1.0, 2.0, 0.0, 1.0]))
    with pytest.raises(ShapeError, match=r"y must have shape \(5,\)"):
        LogisticRegression(X, torch.zeros(4))
    with pytest.raises(ShapeError, match=r"X must have shape \(N, d\)"):
        LogisticRegression(torch.randn(5), torch.zeros(5))
    with pytest.raises(ParameterError, match="prior_scale must be a positive"):
        LogisticRegression(X, torch.zeros(5), prior_scale=0.0)
    bad = X.clone()
    bad[0, 0] = float("inf")
    with pytest.raises(ParameterError, match="X must be finite"):
        LogisticRegression(bad, torch.zeros(5))
    t = LogisticRegression(X, torch.zeros(5))
    with pytest.raises(ShapeError, match=r"x must have shape \(\.\.\., 2\)"):
        t.log_prob(torch.zeros(3))
    with pytest.raises(NonFiniteError, match="x contains"):
        t.log_prob(torch.tensor([float("nan"), 0.0]))
    with pytest.raises(DeviceDtypeError, match="x has dtype"):
        t.log_prob(torch.zeros(2, dtype=torch.float64))


def test_breast_cancer_loader():
    from sklearn.datasets import load_breast_cancer

    t = breast_cancer(dtype=torch.float64)
    X0, y0 = load_breast_cancer(return_X_y=True)
    assert (t.num_data, t.dim) == (569, 31)
    assert torch.all(t.X[:, 0] == 1)
    # independent standardization: sklearn's StandardScaler (population sd)
    from sklearn.preprocessing import StandardScaler

    assert_close(t.X[:, 1:], torch.from_numpy(StandardScaler().fit_transform(X0)))
    assert np.array_equal(t.y.numpy(), y0.astype(float))


def _check_uci(t, N, d, raw_X, raw_y01):
    assert (t.num_data, t.dim) == (N, d)
    assert torch.all(t.X[:, 0] == 1)
    Xs = t.X[:, 1:].double()
    raw = torch.from_numpy(raw_X)
    sd = raw.std(0, correction=0)
    keep = sd > 0
    assert_close(Xs.mean(0), torch.zeros(d - 1, dtype=torch.float64))
    assert_close(Xs.std(0, correction=0)[keep], torch.ones(int(keep.sum()), dtype=torch.float64))
    # undoing the standardization gives the raw columns back (to rounding relative to their size)
    assert_close(Xs[:, keep] * sd[keep] + raw.mean(0)[keep], raw[:, keep])
    assert np.array_equal(t.y.double().numpy(), raw_y01)


@needs_data
def test_uci_loaders_published_dims():
    base = data_dir() / "targets"
    a = np.genfromtxt(base / "ionosphere.csv", delimiter=",", skip_header=1)
    _check_uci(ionosphere(dtype=torch.float64), 351, 35, a[:, :-1], (a[:, -1] > 0).astype(float))
    a = np.genfromtxt(base / "sonar.csv", delimiter=",", skip_header=1)
    _check_uci(sonar(dtype=torch.float64), 208, 61, a[:, :-1], (a[:, -1] > 0).astype(float))
    a = np.genfromtxt(base / "german.data-numeric")
    g = german_credit(dtype=torch.float64)
    _check_uci(g, 1000, 25, a[:, :-1], (a[:, -1] == 2).astype(float))
    assert g.prior_scale == 1.0 and german_credit(prior=False).prior_scale is None
    # explicit path works too
    assert sonar(path=base / "sonar.csv").dim == 61


def test_loader_missing_file_names_path(tmp_path):
    with pytest.raises(DataNotFoundError, match="nope.csv"):
        ionosphere(path=tmp_path / "nope.csv")


# ------------------------------------------------------------------ LGCP
@needs_data
def test_lgcp_counts_match_histogram():
    for name, n in (("pines127", 127), ("pines126", 126)):
        pts = load_pines(name)
        assert pts.shape == (n, 2)
        c = bin_counts(pts, 40)
        edges = np.linspace(0, 1, 41)
        h, _, _ = np.histogram2d(pts[:, 0], pts[:, 1], bins=[edges, edges])  # last bin closed: same edge rule
        assert np.array_equal(c, h) and c.sum() == n


def _lgcp_reference_log_prob(t: LGCP, x: torch.Tensor, grid: int) -> torch.Tensor:
    """Independent: torch MultivariateNormal prior with a kernel built by explicit loops + Poisson pmf."""
    M = grid
    K = torch.empty(M * M, M * M, dtype=torch.float64)
    coords = [(i, j) for i in range(M) for j in range(M)]
    for a, (i, j) in enumerate(coords):
        for b, (k, l) in enumerate(coords):
            K[a, b] = 1.91 * math.exp(-math.hypot(i - k, j - l) / (M / 33.0))
    mu = math.log(126.0) - 1.91 / 2
    prior = D.MultivariateNormal(torch.full((M * M,), mu, dtype=torch.float64), covariance_matrix=K)
    y = t.counts
    # Poisson(y | a e^x) without the data-only constants -log y! and y log a (dropped by the papers)
    pois = D.Poisson(torch.exp(x) / M**2).log_prob(y).sum(-1) + torch.lgamma(y + 1).sum() + y.sum() * math.log(M**2)
    return prior.log_prob(x) + pois


@needs_data
def test_lgcp_log_prob_and_score_small_grid(device):
    grid = 6
    t = LGCP("pines127", grid=grid).to(device=device, dtype=torch.float64)
    x = (math.log(126.0) + torch.randn(3, grid * grid, dtype=torch.float64)).to(device)
    ref = _lgcp_reference_log_prob(t.cpu(), x.cpu(), grid)
    t = t.to(device)
    # loose: the reference adds and removes O(100) data constants (cancellation ~1e-13 * 1e3)
    assert_close(t.log_prob(x).cpu(), ref, loose=True)
    assert_close(t.score(x), autograd_score(t.log_prob, x))
    tw = LGCP("pines127", grid=grid, whitened=True).to(device=device, dtype=torch.float64)
    e = torch.randn(3, grid * grid, dtype=torch.float64, device=device)
    # change of variables x = L e + mu: log gamma_w(e) = log gamma(x) + log|det L|
    half_logdet = torch.log(torch.diagonal(tw.scale_tril)).sum()
    # loose: the round trip goes through a triangular solve with the ill-conditioned Gram factor
    assert_close(tw.log_prob(e), t.log_prob(tw.latent(e)) + half_logdet, loose=True)
    assert_close(tw.score(e), autograd_score(tw.log_prob, e))
    assert_close(t.whiten(tw.latent(e)), e, loose=True)


@needs_data
def test_lgcp_full_size():
    t = LGCP()  # pines127, 40 x 40
    assert t.dim == 1600 and t.num_points == 127 and float(t.counts.sum()) == 127
    x = t.prior_sample((2,))
    assert x.shape == (2, 1600) and torch.isfinite(t.log_prob(x)).all() and t.score(x).shape == (2, 1600)
    assert LGCP("pines126").num_points == 126


def test_lgcp_parameter_errors(tmp_path):
    with pytest.raises(ParameterError, match="grid must be an integer >= 1"):
        LGCP(grid=0)
    with pytest.raises(ParameterError, match="signal_variance must be a positive"):
        LGCP(signal_variance=-1.0)
    p = tmp_path / "pts.csv"
    p.write_text("0.5,1.5\n0.2,0.3\n")
    with pytest.raises(ParameterError, match=r"must be finite and lie in \[0, 1\]\^2"):
        LGCP(p, grid=4)
    with pytest.raises(DataNotFoundError, match="missing.csv"):
        LGCP(tmp_path / "missing.csv")


# ----------------------------------------------------------- eight schools
Y = torch.tensor([28.0, 8, -3, 7, -1, 1, 18, 12], dtype=torch.float64)
S = torch.tensor([15.0, 10, 16, 11, 9, 11, 10, 18], dtype=torch.float64)


def _eight_ref(z: torch.Tensor, centered: bool) -> torch.Tensor:
    """Independent: torch distributions in constrained space + log-Jacobian of tau = exp(log tau)."""
    mu, log_tau, t = z[..., 0], z[..., 1], z[..., 2:]
    tau = log_tau.exp()
    zero, five = z.new_tensor(0.0), z.new_tensor(5.0)
    lp = D.Normal(zero, five).log_prob(mu) + D.HalfCauchy(five).log_prob(tau) + log_tau
    if centered:
        theta = t
        lp = lp + D.Normal(mu.unsqueeze(-1), tau.unsqueeze(-1)).log_prob(theta).sum(-1)
    else:
        theta = mu.unsqueeze(-1) + tau.unsqueeze(-1) * t
        lp = lp + D.Normal(zero, zero + 1).log_prob(t).sum(-1)
    return lp + D.Normal(theta, S.to(z.device)).log_prob(Y.to(z.device)).sum(-1)


@pytest.mark.parametrize("centered", [False, True])
def test_eight_schools_log_prob_and_score(centered, device):
    t = EightSchools(centered=centered).to(device=device, dtype=torch.float64)
    z = torch.randn(6, 10, dtype=torch.float64, device=device) * 2
    z[:, 2:] = z[:, 2:] * (5 if centered else 1)
    assert_close(t.log_prob(z), _eight_ref(z, centered))
    assert_close(t.score(z), autograd_score(t.log_prob, z))


def test_eight_schools_constrain_roundtrip_and_data():
    t = EightSchools().double()
    z = torch.randn(4, 10, dtype=torch.float64)
    c = t.constrain(z)
    assert c["theta"].shape == (4, 8) and c["mu"].shape == (4,)
    assert_close(c["tau"], z[:, 1].exp())
    assert_close(c["theta"], z[:, :1] + z[:, 1:2].exp() * z[:, 2:])
    assert_close(t.unconstrain(c["mu"], c["tau"], c["theta"]), z)
    tc = EightSchools(centered=True).double()
    # the two parameterizations are the same posterior: densities differ by the Jacobian tau^8
    zc = tc.unconstrain(c["mu"], c["tau"], c["theta"])
    assert_close(t.log_prob(z), tc.log_prob(zc) + 8 * z[:, 1])
    if HAVE_DATA:
        d = json.loads((data_dir() / "posteriordb" / "eight_schools-eight_schools_noncentered" / "data.json").read_text())
        assert d["y"] == t.y.tolist() and d["sigma"] == t.sigma.tolist()
    with pytest.raises(ShapeError, match=r"z must have shape \(\.\.\., 10\)"):
        t.constrain(torch.zeros(3, 9, dtype=torch.float64))
