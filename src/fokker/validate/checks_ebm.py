"""Validation checks for :mod:`fokker.ebm`.

* ``ebm.rbm_ais_log_z``: AIS (Salakhutdinov & Murray 2008 base-rate path)
  against the exact enumerated ``log Z`` for random RBMs and an RBM trained
  by CD-1 on binarized 8x8 digits (scikit-learn's bundled copy); pass when
  the difference is within ``Z_SCORE`` AIS standard errors (plus 0.01 nats
  for the low bias of ``log`` of an unbiased ``Z`` estimate).
* ``ebm.dbm_ais_log_z``: AIS for deep Boltzmann machines (even layers, odd ones summed out;
  Salakhutdinov & Hinton 2009) against the exact ``log Z`` (enumeration of the odd side) for a
  random 3-layer DBM and, in full mode, a DBM trained by mean field + persistent chains on the
  binarized digits; pass within ``Z_SCORE`` AIS standard errors (+ 0.01 nats).  Control: AIS of a
  DBM whose weights are 3% larger against the same exact value.
* ``ebm.gaussian_fit``: a 4-D Gaussian EBM fitted by every objective
  (exact / sliced / denoising SM, CD-k with Langevin and MALA, persistent CD,
  NCE) must recover the data's mean and covariance; NCE's learned ``log Z``
  must match the closed form of the fitted energy.
"""

from __future__ import annotations


import math

import torch

from .._random import rng_scope
from ..tolerances import Z_SCORE
from . import CheckResult, Context, register


def _digits_binary(dtype: torch.dtype) -> torch.Tensor:
    from sklearn.datasets import load_digits

    X = torch.as_tensor(load_digits().data, dtype=dtype)
    return (X > 7).to(dtype)


def _random_rbm(nv: int, nh: int, scale: float, seed: int):
    from ..ebm import RBM

    g = torch.Generator().manual_seed(seed)
    rbm = RBM(nv, nh, dtype=torch.float64, generator=g)
    with torch.no_grad():
        rbm.W.copy_(scale * torch.randn(nv, nh, generator=g, dtype=torch.float64))
        rbm.b.copy_(0.5 * torch.randn(nv, generator=g, dtype=torch.float64))
        rbm.c.copy_(0.5 * torch.randn(nh, generator=g, dtype=torch.float64))
    return rbm


def _ais_rows(cases: list, num_chains: int, num_steps: int, seed: int) -> list[CheckResult]:
    """AIS ``log Z`` of each ``(name, machine, data)`` (an RBM or a DBM) against its exact value."""
    rows = []
    for name, machine, d in cases:
        exact = machine.log_Z
        res = machine.ais(num_chains=num_chains, num_steps=num_steps, data=d, seed=seed, progress=False)
        details = f"AIS {num_chains} chains x {num_steps} temps, se {res.stderr:.4f}, ESS {res.ess:.3f} N"
        if d is not None:
            ll = float(machine.log_likelihood(d, log_Z=exact).mean())
            details += f"; exact train log-lik {ll:.3f} nats/image"
        # a non-finite stderr makes the tolerance NaN: the row fails instead of passing vacuously
        rows.append(CheckResult.compare(f"log Z {name}", res.log_Z, exact, Z_SCORE * res.stderr + 0.01, details=details))
    return rows


@register("ebm.rbm_ais_log_z", group="ebm")
def rbm_ais_log_z(ctx: Context) -> list[CheckResult]:
    from ..ebm import RBM
    from ..train import fit

    num_steps = 3000 if ctx.quick else 14_500
    num_chains = 100 if ctx.quick else 500
    cases: list[tuple[str, RBM, torch.Tensor | None]] = [
        ("random 20x10 (W~0.5N)", _random_rbm(20, 10, 0.5, ctx.seed), None),
        ("random 24x18 (W~0.3N)", _random_rbm(24, 18, 0.3, ctx.seed + 1), None),
    ]
    data = _digits_binary(torch.float64)
    digits = RBM(64, 16 if ctx.quick else 20, k=1, dtype=torch.float64, generator=torch.Generator().manual_seed(ctx.seed))
    fit(digits, data, steps=600 if ctx.quick else 5000, batch_size=64, lr=0.05, progress=False, seed=ctx.seed)
    cases.append((f"digits 64x{digits.num_hidden} CD-1", digits, data))

    rows = _ais_rows(cases, num_chains, num_steps, ctx.seed)
    # control: AIS of an RBM whose weights are 3% larger, against the exact log Z of the original
    name, rbm, _ = cases[0]
    wrong = _random_rbm(20, 10, 0.5, ctx.seed)
    with torch.no_grad():
        wrong.W.mul_(1.03)
    res = wrong.ais(num_chains=num_chains, num_steps=num_steps, seed=ctx.seed, progress=False)
    rows.append(CheckResult.compare(f"log Z {name}, AIS of weights x 1.03", res.log_Z, rbm.log_Z,
                                    Z_SCORE * res.stderr + 0.01, control=True))
    return rows


def _random_dbm(num_visible: int, hidden: tuple[int, ...], scale: float, seed: int):
    from ..ebm import DBM

    g = torch.Generator().manual_seed(seed)
    dbm = DBM(num_visible, hidden, dtype=torch.float64, generator=g)
    with torch.no_grad():
        for W in dbm.weights:
            W.copy_(scale * torch.randn(W.shape, generator=g, dtype=torch.float64))
        for b in dbm.biases:
            b.copy_(0.5 * torch.randn(b.shape, generator=g, dtype=torch.float64))
    return dbm


@register("ebm.dbm_ais_log_z", group="ebm")
def dbm_ais_log_z(ctx: Context) -> list[CheckResult]:
    from ..ebm import DBM
    from ..train import fit

    num_steps = 1500 if ctx.quick else 14_500
    num_chains = 100 if ctx.quick else 500
    cases: list[tuple[str, DBM, torch.Tensor | None]] = [("random 16-(12, 8) (W~0.4N)", _random_dbm(16, (12, 8), 0.4, ctx.seed), None)]
    if not ctx.quick:
        data = _digits_binary(torch.float64)
        dbm = DBM(64, (16, 16), num_chains=100, gibbs_steps=5, dtype=torch.float64,
                  generator=torch.Generator().manual_seed(ctx.seed))
        fit(dbm, data, steps=3000, batch_size=100, optimizer=lambda p: torch.optim.SGD(p, lr=0.05), progress=False,
            seed=ctx.seed)
        cases.append(("digits 64-(16, 16), mean field + PCD", dbm, data))
    rows = _ais_rows(cases, num_chains, num_steps, ctx.seed)
    name, dbm, _ = cases[0]
    wrong = _random_dbm(16, (12, 8), 0.4, ctx.seed)
    with torch.no_grad():
        for W in wrong.weights:
            W.mul_(1.03)
    res = wrong.ais(num_chains=num_chains, num_steps=num_steps, seed=ctx.seed, progress=False)
    rows.append(CheckResult.compare(f"log Z {name}, AIS of weights x 1.03", res.log_Z, dbm.log_Z,
                                    Z_SCORE * res.stderr + 0.01, control=True))
    return rows


def _gaussian_problem(dim: int, n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    B = torch.randn(dim, dim, generator=g, dtype=torch.float64)
    S = B @ B.T / dim + 0.3 * torch.eye(dim, dtype=torch.float64)
    m = torch.randn(dim, generator=g, dtype=torch.float64)
    x = m + torch.randn(n, dim, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(S).T
    return x


@register("ebm.gaussian_fit", group="ebm")
def gaussian_fit(ctx: Context) -> list[CheckResult]:
    import fokker.ebm as ebm
    from ..train import fit

    dim = 4
    data = _gaussian_problem(dim, 4000 if ctx.quick else 20_000, ctx.seed)
    m_hat, S_hat = data.mean(0), torch.cov(data.T)
    steps = 1000 if ctx.quick else 3000
    sigma = 0.2
    noise = torch.distributions.MultivariateNormal(m_hat, 2 * S_hat)
    objectives = {
        "exact SM": ebm.exact(),
        "sliced SM": ebm.sliced(),
        f"denoising SM (sigma={sigma})": ebm.denoising(sigma),
        "CD-10 Langevin": ebm.contrastive_divergence(k=10, step_size=0.02),
        "CD-10 MALA": ebm.contrastive_divergence(k=10, step_size=0.05, sampler="mala"),
        "PCD (replay buffer, MALA)": ebm.persistent_contrastive_divergence(
            buffer_size=1000, k=10, step_size=0.2, sampler="mala"
        ),
        "NCE (nu=2)": ebm.nce(noise, ratio=2),
    }
    rows = []
    for name, obj in objectives.items():
        with rng_scope(torch.Generator().manual_seed(ctx.seed)):  # the PCD buffer's initial fill
            model = ebm.EBM(ebm.GaussianEnergy(dim, dtype=torch.float64), obj)
        sched = lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)  # noqa: E731
        fit(model, data, steps=steps, batch_size=256, lr=0.05, scheduler=sched, progress=False, seed=ctx.seed)
        g = model.energy_model
        S_ref = S_hat + (sigma**2 * torch.eye(dim, dtype=torch.float64) if name.startswith("denoising") else 0)
        with torch.no_grad():
            err_m = float((g.loc - m_hat).norm())
            err_S = float((g.covariance - S_ref).norm() / S_ref.norm())
        rows.append(CheckResult.bound(f"{name}: |mu - mean(data)|", err_m, 0.1))
        rows.append(CheckResult.bound(f"{name}: |Sigma - cov(data)|_F / |cov|_F", err_S, 0.1))
        if isinstance(obj, ebm.NCE):
            rows.append(
                CheckResult.compare(f"{name}: learned log Z vs closed form", float(obj.log_Z.detach()), g.log_Z, 0.05)
            )
    # control: the same bounds on an untrained energy (the initial N(0, I)) reject it
    g = ebm.GaussianEnergy(dim, dtype=torch.float64)
    with torch.no_grad():
        err_m, err_S = float((g.loc - m_hat).norm()), float((g.covariance - S_hat).norm() / S_hat.norm())
    rows.append(CheckResult.bound("untrained energy: |mu - mean(data)|", err_m, 0.1, control=True))
    rows.append(CheckResult.bound("untrained energy: |Sigma - cov(data)|_F / |cov|_F", err_S, 0.1, control=True))
    return rows


@register("ebm.neural_nce_log_z", group="ebm")
def neural_nce_log_z(ctx: Context) -> list[CheckResult]:
    """NCE's learned ``log Z`` of a neural energy on two moons vs 2-D quadrature of ``exp(-E)``."""
    import fokker.ebm as ebm
    from ..datasets.toy import two_moons
    from ..train import fit

    dt = torch.float64
    data = two_moons(4000, seed=ctx.seed, dtype=dt)
    noise = torch.distributions.MultivariateNormal(data.mean(0), 1.5 * torch.cov(data.T))
    width = 32 if ctx.quick else 64
    with rng_scope(torch.Generator().manual_seed(ctx.seed)):  # the network's initial weights
        net = torch.nn.Sequential(
            torch.nn.Linear(2, width), torch.nn.SiLU(), torch.nn.Linear(width, width), torch.nn.SiLU(), torch.nn.Linear(width, 1)
        ).to(dt)
    obj = ebm.nce(noise, ratio=4)
    model = ebm.EBM(net, obj, dim=2)
    steps = 300 if ctx.quick else 3000
    sched = lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)  # noqa: E731
    fit(model, data, steps=steps, batch_size=256, lr=3e-3, scheduler=sched, progress=False, seed=ctx.seed)
    # quadrature on [-6, 6]^2 (the data lie within about 4 sd of the origin); Riemann sum of a smooth integrand
    lo, hi, n = -6.0, 6.0, 801
    g = torch.linspace(lo, hi, n, dtype=dt)
    pts = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        lp = model.log_prob(pts).reshape(n, n)
        log_Z = float(torch.logsumexp(lp.flatten(), 0)) + 2 * math.log((hi - lo) / (n - 1))
        edge = float(torch.logsumexp(torch.cat([lp[0], lp[-1], lp[:, 0], lp[:, -1]]), 0) - torch.logsumexp(lp.flatten(), 0))
        nll = float(-(model.log_prob(two_moons(2000, seed=ctx.seed + 1, dtype=dt)) - log_Z).mean())
    details = f"{steps} steps, width {width}; boundary/total mass {math.exp(edge):.1e}; held-out NLL {nll:.3f} nats"
    rows = [CheckResult.compare("two moons: NCE log Z vs quadrature", float(obj.log_Z.detach()), log_Z, 0.05, details=details)]
    # control: the learned log Z against the quadrature of the energy scaled by 1.1 (a mis-scaled model)
    with torch.no_grad():
        lp_wrong = 1.1 * model.log_prob(pts)  # -1.1 E: the energy scaled by 1.1
        log_Z_wrong = float(torch.logsumexp(lp_wrong, 0)) + 2 * math.log((hi - lo) / (n - 1))
    rows.append(CheckResult.compare("two moons: NCE log Z vs quadrature of 1.1 x the energy",
                                    float(obj.log_Z.detach()), log_Z_wrong, 0.05, control=True))
    return rows
