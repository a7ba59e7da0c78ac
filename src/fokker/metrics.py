"""Sample-based discrepancies between two point clouds, and mode coverage.

All functions take ``x`` of shape ``(n, d)`` and ``y`` of shape ``(m, d)`` (same
device and dtype) and return a 0-d tensor.  Every value is a *Monte-Carlo
estimate* of a population quantity; which estimator is used (biased V-statistic
or unbiased U-statistic) is stated per function.

* :func:`mmd` -- maximum mean discrepancy with a Gaussian kernel whose bandwidth is
  the median heuristic (Gretton et al., 2012, JMLR 13, eq. 3 and sec. 8).
* :func:`energy_distance` -- ``2 E|X-Y| - E|X-X'| - E|Y-Y'|`` (Szekely & Rizzo, 2013).
* :func:`sliced_wasserstein` -- Monte-Carlo over random directions of the exact 1-D
  Wasserstein-p distance between sorted projections (Bonneel et al., 2015).
* :func:`sinkhorn` -- entropic optimal transport cost (Cuturi, 2013) in the log
  domain; no dependency beyond torch.
* :func:`mode_coverage` -- entropy of the mode-assignment histogram of samples of a
  mixture, normalized to ``[0, 1]`` (the "entropic mode coverage" of Blessing et
  al., 2024, "Beyond ELBOs"); :func:`component_coverage` the same with each sample assigned to
  its most probable mixture component (modes that are rings or curves).

Structure-aware tests, for validation rows that must be able to fail (energy distance and a
wide-kernel MMD cannot see mode structure: samples smeared into a ring around eight
clusters pass them):

* :func:`low_density_fraction` -- the fraction of samples where a *known* true density is
  below the level that holds a small fraction of its own mass; a smeared or noisy sampler
  puts far more samples there than the level allows.
* :func:`mmd_test` -- a permutation test of equal distributions with the MMD at a chosen
  (narrow) bandwidth (Gretton et al. 2012, sec. 5).
* :func:`classifier_two_sample_test` -- a classifier trained to tell the two samples apart;
  held-out accuracy near 1/2 means it cannot (Lopez-Paz & Oquab 2017).

Scores of a detector:

* :func:`auroc` -- the area under the ROC curve of anomaly scores, exactly the Mann-Whitney
  statistic ``P(score of an anomaly > score of a normal point)`` (ties count 1/2; Hanley &
  McNeil 1982, eq. 1).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ._args import check_int, check_positive, check_tensor
from ._random import rand, randint, randn
from .errors import DeviceDtypeError, ParameterError, ShapeError

__all__ = [
    "median_bandwidth",
    "mmd",
    "energy_distance",
    "sliced_wasserstein",
    "sinkhorn",
    "mode_coverage",
    "component_coverage",
    "TwoSampleTest",
    "LowDensityFraction",
    "low_density_fraction",
    "mmd_test",
    "classifier_two_sample_test",
    "auroc",
]


def _pair(x: torch.Tensor, y: torch.Tensor) -> None:
    check_tensor(x, "x")
    check_tensor(y, "y")
    if x.dim() != 2 or y.dim() != 2:
        raise ShapeError(f"x and y must have shape (n, d) and (m, d); got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[1] != y.shape[1]:
        raise ShapeError(f"x and y must share the event dimension d; got x (n, {x.shape[1]}) and y (m, {y.shape[1]})")
    if x.shape[0] < 2 or y.shape[0] < 2:
        raise ShapeError(f"x and y need at least 2 points each; got n={x.shape[0]}, m={y.shape[0]}")
    if x.device != y.device or x.dtype != y.dtype:
        raise DeviceDtypeError(
            f"x and y must share device and dtype; got {x.device}/{x.dtype} and {y.device}/{y.dtype}"
        )


def _dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise Euclidean distances ``|a_i - b_j|``, ``(n, m)``, from explicit differences.

    Each entry is ``sqrt(sum_k (a_ik - b_jk)^2)`` computed pair by pair, so it is accurate to
    a few ulps relative to the distance itself and exactly 0 where ``a_i == b_j`` (the
    diagonal of ``_dist(x, x)``).  The matmul expansion ``|a|^2 + |b|^2 - 2 a.b`` would
    cancel catastrophically for points far from the origin (at ``|a| ~ 1e3`` in float32 its
    error is of order 0.1 on a squared distance of order 1), and its diagonal is rounding
    residue that a square root amplifies to ``sqrt(eps) |a|``.  ``torch.cdist`` in this mode
    accumulates each pair in a kernel: memory ``O(n m)`` for the output only, no
    ``(n, m, d)`` intermediate, and its backward is finite at zero distance.
    """
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")


def _sq_dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise squared distances ``|a_i - b_j|^2``, exact to rounding (the square of :func:`_dist`)."""
    return _dist(a, b).square()


def median_bandwidth(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Median heuristic: the median of the pairwise distances ``|z_i - z_j|``, i < j, over ``z = [x; y]``.

    For an even number of pairs the lower of the two middle values is taken (``torch.median``).
    """
    _pair(x, y)
    z = torch.cat([x, y])
    d = _dist(z, z)
    iu = torch.triu_indices(z.shape[0], z.shape[0], offset=1, device=z.device)
    return d[iu[0], iu[1]].median()


def mmd(
    x: torch.Tensor, y: torch.Tensor, bandwidth: float | torch.Tensor | None = None, unbiased: bool = True
) -> torch.Tensor:
    """Squared MMD with the Gaussian kernel ``k(a, b) = exp(-|a - b|^2 / (2 h^2))``.

    .. math:: \\mathrm{MMD}^2 = E k(X, X') + E k(Y, Y') - 2 E k(X, Y)

    Args:
        x, y: samples ``(n, d)`` and ``(m, d)``.
        bandwidth: ``h``; default the median heuristic :func:`median_bandwidth`.
        unbiased: U-statistic (diagonal terms dropped; can be slightly negative) when
            True, else the biased V-statistic (always >= 0).

    Returns:
        0-d tensor, an estimate of ``MMD^2`` (not its square root).
    """
    _pair(x, y)
    h = median_bandwidth(x, y) if bandwidth is None else torch.as_tensor(bandwidth, dtype=x.dtype, device=x.device)
    if bandwidth is not None:
        check_positive(float(h), "bandwidth")
    gamma = 1.0 / (2.0 * h * h)
    kxx = torch.exp(-gamma * _sq_dist(x, x))
    kyy = torch.exp(-gamma * _sq_dist(y, y))
    kxy = torch.exp(-gamma * _sq_dist(x, y))
    n, m = x.shape[0], y.shape[0]
    if unbiased:
        exx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
        eyy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    else:
        exx, eyy = kxx.mean(), kyy.mean()
    return exx + eyy - 2.0 * kxy.mean()


def energy_distance(x: torch.Tensor, y: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Energy distance ``D^2 = 2 E|X - Y| - E|X - X'| - E|Y - Y'|`` (Euclidean norm).

    ``unbiased``: within-sample means over ``i != j`` (U-statistic) instead of all pairs.
    Returns an estimate of ``D^2`` (the squared energy distance, >= 0 in population).
    """
    _pair(x, y)
    dxy = _dist(x, y)
    dxx = _dist(x, x)  # exactly 0 on the diagonal, so the U-statistic sums over i != j
    dyy = _dist(y, y)
    n, m = x.shape[0], y.shape[0]
    if unbiased:
        exx, eyy = dxx.sum() / (n * (n - 1)), dyy.sum() / (m * (m - 1))
    else:
        exx, eyy = dxx.mean(), dyy.mean()
    return 2.0 * dxy.mean() - exx - eyy


def _quantiles(v: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Empirical quantile function (inverse CDF, left-continuous) of each column of ``v`` at levels ``q``."""
    s, _ = torch.sort(v, dim=0)
    n = v.shape[0]
    idx = torch.clamp(torch.ceil(q * n).long() - 1, 0, n - 1)
    return s[idx]


def sliced_wasserstein(
    x: torch.Tensor,
    y: torch.Tensor,
    num_projections: int = 128,
    p: int = 2,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sliced Wasserstein-p distance ``(E_theta W_p^p(theta.X, theta.Y))^(1/p)``.

    ``theta`` uniform on the unit sphere (``num_projections`` Monte-Carlo draws); the
    1-D ``W_p^p`` between empirical measures is exact: the integral over
    ``u in (0, 1)`` of ``|F_x^{-1}(u) - F_y^{-1}(u)|^p``, evaluated on the merged
    breakpoints ``{i/n} U {j/m}`` (so ``n != m`` is handled exactly).

    ``generator`` draws the directions (the global RNG when ``None``); with a fixed
    generator the estimate is a deterministic function of ``x`` and ``y``.
    """
    _pair(x, y)
    check_int(num_projections, "num_projections")
    check_int(p, "p")
    theta = randn((x.shape[1], num_projections), generator=generator, dtype=x.dtype, device=x.device)
    theta = theta / theta.norm(dim=0, keepdim=True)
    px, py = x @ theta, y @ theta
    n, m = x.shape[0], y.shape[0]
    levels = torch.cat(
        [torch.arange(1, n + 1, dtype=x.dtype, device=x.device) / n, torch.arange(1, m + 1, dtype=x.dtype, device=x.device) / m]
    )
    levels, _ = torch.sort(levels)
    widths = torch.diff(levels, prepend=levels.new_zeros(1))
    mid = levels - 0.5 * widths  # a level strictly inside each piece of constancy
    diff = (_quantiles(px, mid) - _quantiles(py, mid)).abs().pow(p)
    wpp = (widths[:, None] * diff).sum(0)
    return wpp.mean().pow(1.0 / p)


def sinkhorn(
    x: torch.Tensor,
    y: torch.Tensor,
    epsilon: float = 0.05,
    num_iters: int = 200,
    debiased: bool = True,
) -> torch.Tensor:
    """Entropic OT cost with squared-Euclidean ground cost, log-domain Sinkhorn iterations.

    .. math:: OT_\\epsilon(\\mu, \\nu) = \\min_P \\langle P, C \\rangle + \\epsilon KL(P \\| \\mu \\otimes \\nu)

    with uniform weights; ``epsilon`` is relative to the mean of ``C`` (scale free).
    ``debiased=True`` returns the Sinkhorn divergence
    ``OT(x, y) - (OT(x, x) + OT(y, y)) / 2`` (Genevay et al., 2018), which is 0 for
    identical clouds.  Cost ``O(num_iters n m)`` in time and ``O(n m)`` in memory:
    intended for a few thousand points.
    """
    _pair(x, y)
    check_positive(epsilon, "epsilon")
    check_int(num_iters, "num_iters")

    scale = _sq_dist(x, y).mean()

    def ot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        c = _sq_dist(a, b)
        eps = epsilon * scale
        log_mu = torch.full((a.shape[0],), -math.log(a.shape[0]), dtype=a.dtype, device=a.device)
        log_nu = torch.full((b.shape[0],), -math.log(b.shape[0]), dtype=a.dtype, device=a.device)
        f = torch.zeros_like(log_mu)
        g = torch.zeros_like(log_nu)
        for _ in range(num_iters):
            f = -eps * torch.logsumexp(log_nu[None, :] + (g[None, :] - c) / eps, dim=1)
            g = -eps * torch.logsumexp(log_mu[:, None] + (f[:, None] - c) / eps, dim=0)
        log_p = log_mu[:, None] + log_nu[None, :] + (f[:, None] + g[None, :] - c) / eps
        return (log_p.exp() * c).sum()

    if not debiased:
        return ot(x, y)
    return ot(x, y) - 0.5 * (ot(x, x) + ot(y, y))


def mode_coverage(samples: torch.Tensor, means: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Entropic mode coverage of samples of a mixture with component ``means`` ``(K, d)``.

    Each sample is assigned to its nearest mean; with ``p_k`` the fraction assigned
    to mode ``k``, returns ``H(p) / H(w)`` where ``H`` is the Shannon entropy and ``w``
    the mixture ``weights`` (uniform by default, then ``H(w) = log K``).  Equals 1
    when the samples visit the modes in the right proportions (up to Monte-Carlo
    error) and 0 when they collapse onto a single mode.
    """
    check_tensor(samples, "samples")
    check_tensor(means, "means")
    if samples.dim() != 2 or means.dim() != 2 or samples.shape[1] != means.shape[1]:
        raise ShapeError(
            f"samples must be (n, d) and means (K, d) with the same d; got {tuple(samples.shape)} and {tuple(means.shape)}"
        )
    k = means.shape[0]
    if k < 2:
        raise ParameterError(f"means must hold at least 2 modes; got K={k}")
    # Only the ordering of |s_i - mu_k|^2 within a row is used, and each row shares the term
    # |s_i|^2, so the fast matmul expansion is safe here: no square root follows, and the
    # rounding of |mu_k|^2 - 2 s_i.mu_k can only reorder modes whose distances tie to within
    # a few ulps.  This keeps the assignment of 1e5+ samples to K modes one matmul.
    mu = means.to(samples)
    assign = ((mu * mu).sum(-1)[None, :] - 2.0 * samples @ mu.T).argmin(dim=1)
    return _entropic_coverage(assign, k, weights, samples)


def component_coverage(
    samples: torch.Tensor,
    component_log_prob: Callable[[torch.Tensor], torch.Tensor],
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Entropic coverage of the components of a mixture ``p(x) = sum_k w_k p_k(x)``.

    Each sample goes to its most probable component, ``argmax_k log w_k + log p_k(x)`` (the
    Bayes classifier of the mixture); with ``p_k`` the fraction assigned to component ``k``,
    returns ``H(p) / H(w)`` as :func:`mode_coverage` does (which is the special case of equal
    isotropic Gaussians: the most probable component is the nearest mean).  For modes that are
    not points (rings, moons: :func:`fokker.datasets.toy_components`).  1 (up to Monte-Carlo
    error) when the samples visit the components in the right proportions, 0 when they all fall
    into one.

    Args:
        samples: ``(n, d)``.
        component_log_prob: ``(n, d) -> (n, K)``, the log-densities ``log p_k`` (or any
            per-component scores whose argmax after adding ``log w_k`` picks the component).
        weights: ``(K,)`` mixture weights (uniform by default).
    """
    check_tensor(samples, "samples")
    if samples.dim() != 2:
        raise ShapeError(f"samples must be (n, d); got {tuple(samples.shape)}")
    scores = component_log_prob(samples)
    if not isinstance(scores, torch.Tensor) or scores.dim() != 2 or scores.shape[0] != samples.shape[0]:
        raise ShapeError(
            f"component_log_prob must map samples (n, d) to (n, K); got {getattr(scores, 'shape', type(scores).__name__)} "
            f"for n={samples.shape[0]}"
        )
    k = scores.shape[1]
    if k < 2:
        raise ParameterError(f"component_log_prob must return at least 2 components; got K={k}")
    log_w = torch.zeros(k, dtype=scores.dtype, device=scores.device)
    if weights is not None:
        check_tensor(weights, "weights")
        if weights.shape != (k,):
            raise ShapeError(f"weights must have shape ({k},); got {tuple(weights.shape)}")
        if not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()):
            raise ParameterError("weights must be finite and non-negative")
        log_w = weights.to(scores).log()
    assign = (scores + log_w).argmax(dim=1)
    return _entropic_coverage(assign, k, weights, samples)


def _entropic_coverage(
    assign: torch.Tensor, k: int, weights: torch.Tensor | None, like: torch.Tensor
) -> torch.Tensor:
    """``H(p) / H(w)``: ``p`` the histogram of the component indices ``assign`` over ``k`` components."""
    if weights is None:
        weights = torch.full((k,), 1.0 / k, dtype=like.dtype, device=like.device)
    elif weights.shape != (k,):
        raise ShapeError(f"weights must have shape ({k},); got {tuple(weights.shape)}")
    counts = torch.bincount(assign, minlength=k).to(like.dtype)
    p = counts / counts.sum()
    w = weights.to(like)
    # p log(1/p), not -p log p: one mode alone gives +0.0, not -0.0
    h = torch.where(p > 0, p * p.clamp_min(1e-300).reciprocal().log(), torch.zeros_like(p)).sum()
    hw = torch.where(w > 0, w * w.clamp_min(1e-300).reciprocal().log(), torch.zeros_like(w)).sum()
    return h / hw


@dataclass(frozen=True)
class TwoSampleTest:
    """Result of a test of ``H0: x and y come from the same distribution``.

    Attributes:
        statistic: the test statistic (an MMD^2, a held-out accuracy).
        p_value: probability under ``H0`` of a statistic at least as large.
        name: which test.
    """

    statistic: float
    p_value: float
    name: str

    def rejects(self, level: float = 1e-3) -> bool:
        """Whether ``H0`` is rejected at ``level``."""
        return self.p_value < level


@dataclass(frozen=True)
class LowDensityFraction:
    """Fraction of samples in the true density's low-density region (see :func:`low_density_fraction`).

    Attributes:
        fraction: observed fraction of samples with ``log p(x) < threshold``.
        level: the fraction an exact sampler puts there (in expectation).
        stderr: binomial standard error ``sqrt(level (1 - level) / n)`` of ``fraction`` for an
            exact sampler.
        threshold: the log-density level.
    """

    fraction: float
    level: float
    stderr: float
    threshold: float

    @property
    def z_score(self) -> float:
        """``(fraction - level) / stderr``: how many standard errors too many samples sit there."""
        return (self.fraction - self.level) / self.stderr


def low_density_fraction(
    samples: torch.Tensor,
    log_prob: Callable[[torch.Tensor], torch.Tensor],
    reference: torch.Tensor,
    level: float = 0.01,
) -> LowDensityFraction:
    """Fraction of ``samples`` where the true ``log_prob`` is below its ``level``-quantile on exact draws.

    The threshold ``tau`` is the ``level``-quantile of ``log p`` over ``reference`` (exact samples of
    ``p``), so an exact sampler puts a fraction ``level`` of its samples below it, with binomial
    error.  Samples between modes, off a manifold, or noise put many more there.

    Args:
        samples: ``(n, d)`` samples to judge.
        log_prob: the exact (or unnormalized: only its level sets matter) log-density of the data.
        reference: ``(m, d)`` exact samples of the data distribution (``m >> 1/level``).
        level: the mass of the low-density region (e.g. 0.01).
    """
    check_tensor(samples, "samples")
    check_tensor(reference, "reference")
    if not 0.0 < level < 0.5:
        raise ParameterError(f"level must lie in (0, 0.5); got {level!r}")
    if reference.shape[0] * level < 10:
        raise ParameterError(f"reference needs at least {math.ceil(10 / level)} samples for level={level}")
    with torch.no_grad():
        ref_lp = log_prob(reference).double()
        lp = log_prob(samples).double()
    tau = float(torch.quantile(ref_lp[torch.isfinite(ref_lp)], level))
    below = ~(lp >= tau)  # NaN log-densities count as low density
    n = samples.shape[0]
    return LowDensityFraction(float(below.double().mean()), level, math.sqrt(level * (1 - level) / n), tau)


def mmd_test(
    x: torch.Tensor,
    y: torch.Tensor,
    bandwidth: float,
    num_permutations: int = 200,
    *,
    generator: torch.Generator | None = None,
) -> TwoSampleTest:
    """Permutation test of ``x ~ y`` with the unbiased MMD^2 at a fixed Gaussian ``bandwidth``.

    Tie the bandwidth to the scale of the structure that matters (e.g. a mixture component's
    standard deviation): the median heuristic smooths over modes.  The p-value is
    ``(1 + #{permuted MMD^2 >= observed}) / (1 + num_permutations)`` (Gretton et al. 2012, sec. 5;
    Phipson & Smyth 2010).  Costs one ``(n + m)^2`` kernel matrix and one matrix-vector product
    per permutation.
    """
    _pair(x, y)
    check_positive(bandwidth, "bandwidth")
    check_int(num_permutations, "num_permutations")
    z = torch.cat([x, y])
    n, m = x.shape[0], y.shape[0]
    K = torch.exp(-_sq_dist(z, z) / (2.0 * bandwidth**2))
    K.fill_diagonal_(0.0)  # U-statistic: no i = j terms

    row = K.sum(1)

    def stat(labels: torch.Tensor) -> torch.Tensor:  # labels (B, n + m), True = "x"
        u = labels.to(z.dtype)
        v = 1.0 - u
        Ku = u @ K  # K is symmetric
        Kv = row - Ku
        return (Ku * u).sum(-1) / (n * (n - 1)) + (Kv * v).sum(-1) / (m * (m - 1)) - 2.0 * (Ku * v).sum(-1) / (n * m)

    base = torch.zeros(1, n + m, dtype=torch.bool, device=z.device)
    base[0, :n] = True
    observed = stat(base)[0]
    keys = rand((num_permutations, n + m), generator=generator, dtype=torch.float64, device=z.device)
    null = stat(keys.argsort(-1) < n)  # each row: a uniformly random subset of size n labelled "x"
    p = (1.0 + float((null >= observed).sum())) / (1.0 + num_permutations)
    return TwoSampleTest(float(observed), p, f"MMD^2 permutation test (bandwidth {bandwidth:g})")


def classifier_two_sample_test(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    hidden: Sequence[int] = (64, 64),
    steps: int = 400,
    lr: float = 3e-3,
    test_fraction: float = 0.5,
    generator: torch.Generator | None = None,
) -> TwoSampleTest:
    """Classifier two-sample test (Lopez-Paz & Oquab 2017): held-out accuracy of a learned classifier.

    An MLP is trained for ``steps`` full-batch Adam iterations to tell ``x`` (label 1) from ``y``
    (label 0) on a random ``1 - test_fraction`` of each, after standardizing with the pooled
    mean and scale; its accuracy on the rest is the statistic.  Under ``H0`` the accuracy is
    ``Binomial(n_test, 1/2) / n_test``; the one-sided p-value uses the normal approximation.
    Use equal sample sizes.
    """
    _pair(x, y)
    check_int(steps, "steps")
    if not 0.1 <= test_fraction <= 0.9:
        raise ParameterError(f"test_fraction must lie in [0.1, 0.9]; got {test_fraction!r}")
    z = torch.cat([x, y]).detach()
    labels = torch.cat([torch.ones(x.shape[0]), torch.zeros(y.shape[0])]).to(z)
    order = torch.argsort(randn((z.shape[0],), generator=generator, dtype=torch.float64, device=z.device))
    z, labels = z[order], labels[order]
    n_test = max(2, int(round(test_fraction * z.shape[0])))
    mean, scale = z.mean(0), z.std(0).clamp_min(1e-12)
    z = (z - mean) / scale
    z_tr, y_tr, z_te, y_te = z[n_test:], labels[n_test:], z[:n_test], labels[:n_test]
    sizes = [z.shape[1], *hidden, 1]
    layers: list[torch.nn.Module] = []
    seed = int(randint(2**31, (1,), generator=generator))
    g = torch.Generator().manual_seed(seed)
    for a, b in zip(sizes[:-1], sizes[1:]):
        lin = torch.nn.Linear(a, b).to(z)
        with torch.no_grad():  # initialized from the generator (no global RNG)
            bound = 1.0 / math.sqrt(a)
            lin.weight.copy_((torch.rand(b, a, generator=g, dtype=torch.float64) * 2 - 1) * bound)
            lin.bias.copy_((torch.rand(b, generator=g, dtype=torch.float64) * 2 - 1) * bound)
        layers += [lin, torch.nn.SiLU()]
    net = torch.nn.Sequential(*layers[:-1])
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(net(z_tr).squeeze(-1), y_tr)
            loss.backward()
            opt.step()
    with torch.no_grad():
        acc = float(((net(z_te).squeeze(-1) > 0).to(z) == y_te).double().mean())
    zscore = (acc - 0.5) / math.sqrt(0.25 / n_test)
    p = 0.5 * math.erfc(zscore / math.sqrt(2))
    return TwoSampleTest(acc, p, f"classifier two-sample test (held-out accuracy, n_test={n_test})")


def auroc(normal: torch.Tensor, anomalous: torch.Tensor) -> float:
    """Area under the ROC curve of scores where larger means "more anomalous" (Hanley & McNeil 1982,
    *The meaning and use of the area under a ROC curve*, eq. 1: the Mann-Whitney statistic).

    ``normal`` ``(n,)`` and ``anomalous`` ``(m,)`` hold the scores of the two groups; the value is the
    fraction of the ``n m`` pairs where the anomaly scores higher, ties counting 1/2 (midranks), exact.
    1 separates perfectly, 1/2 is chance, 0 ranks every anomaly below every normal point.
    """
    for v, name in ((normal, "normal"), (anomalous, "anomalous")):
        check_tensor(v, name)
        if v.dim() != 1 or v.numel() == 0:
            raise ShapeError(f"{name} must be a non-empty 1-D tensor of scores; got shape {tuple(v.shape)}")
        if not bool(torch.isfinite(v).all()):
            raise ParameterError(f"{name} must hold finite scores")
    if normal.dtype != anomalous.dtype or normal.device != anomalous.device:
        raise DeviceDtypeError(
            f"normal and anomalous must share dtype and device; got {normal.dtype}/{normal.device} and "
            f"{anomalous.dtype}/{anomalous.device}"
        )
    n, m = normal.numel(), anomalous.numel()
    z = torch.cat([normal, anomalous]).double()
    order = torch.argsort(z)
    sz = z[order]
    ranks = torch.empty_like(z)
    # midranks: every member of a run of equal values gets the run's mean rank (1-based)
    _, inverse, counts = torch.unique_consecutive(sz, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    mid = ends - (counts.double() - 1) / 2
    ranks[order] = mid[inverse]
    u = float(ranks[n:].sum()) - m * (m + 1) / 2
    return u / (n * m)
