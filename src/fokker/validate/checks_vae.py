"""Validation checks for :mod:`fokker.vae`.

* ``vae.ppca``: the linear-Gaussian VAE is probabilistic PCA, where ``log p(x)`` is exact.  A
  :func:`fokker.vae.linear_vae` trained by ``fit`` on 5-D data must reach Tipping & Bishop's
  closed-form maximum likelihood within 0.05 nats per point, and its importance-sampled
  ``log_prob`` (IWAE, ``K = 1000``) must match its exact ``log p(x)`` within ``Z_SCORE`` standard
  errors.  The DDPM as a hierarchical VAE (:func:`fokker.vae.ddpm_as_hierarchical_vae`): its layer
  terms at the DDPM's latents equal :meth:`fokker.sde.DDPM.elbo_terms`.  Controls: the untrained
  linear VAE against the maximum likelihood, the IWAE estimate against the exact ``log p`` of a
  pPCA whose noise variance is 10% larger, a DDPM whose posterior variance is 10% off.
* ``vae.digits`` (full mode only): scikit-learn's 8x8 digits with pixel levels ``k / 16`` as 17-bin
  data (:func:`fokker.datasets.digits` with ``dequantize=False``), a discretised-logistic decoder,
  so ``log p`` is a discrete log-likelihood.  A VAE trained on the ELBO, one trained on the IWAE
  bound (``K = 5``, DReG gradients) and one with an IAF posterior; test log-likelihood by
  importance sampling with ``K = 5000`` in bits/dim, ``-log2 P(k) / 64``, next to the flows'
  figure (MAF 2.745 bits/dim on the dequantised bound of the same data).  Pass: each beats the
  independent-pixels model (each pixel's 17-level histogram, Laplace-smoothed); the ``K = 5000``
  estimate lies above the ELBO (the bounds' order).  Control: the untrained VAE against the same
  baseline.  Figures: samples of each model and the training curves.
"""

from __future__ import annotations

import math

import torch

from .._random import rng_scope
from ..tolerances import Z_SCORE
from . import CheckResult, Context, register

#: MAF test bits/dim on the digits in fokker's flows validation (full mode), for comparison
MAF_DIGITS_BITS_PER_DIM = 2.745


def _ppca_data(num_samples: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(5, 2, generator=g, dtype=torch.float64)
    mu = torch.randn(5, generator=g, dtype=torch.float64)
    z = torch.randn(num_samples, 2, generator=g, dtype=torch.float64)
    return mu + z @ W.T + 0.5 * torch.randn(num_samples, 5, generator=g, dtype=torch.float64)


@register("vae.ppca", group="vae")
def ppca(ctx: Context) -> list[CheckResult]:
    from .. import vae
    from ..sde import DDPM
    from ..train import fit

    x = _ppca_data(1000, ctx.seed)
    ml = vae.ProbabilisticPCA.maximum_likelihood(x, 2)
    ml_ll = float(ml.log_prob(x).mean())
    with rng_scope(seed=ctx.seed):
        model = vae.linear_vae(5, 2, dtype=torch.float64)
    untrained_ll = float(vae.ProbabilisticPCA.from_vae(model).log_prob(x).mean())
    steps = 300 if ctx.quick else 2000
    fit(model, x, steps=steps, batch_size=500, lr=0.05, seed=ctx.seed, progress=False,
        scheduler=lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps))
    learned = vae.ProbabilisticPCA.from_vae(model)
    ll = float(learned.log_prob(x).mean())
    rows = [
        CheckResult.compare("linear VAE: exact log-likelihood vs Tipping-Bishop maximum (nats/point)", ll, ml_ll, 0.05,
                            details=f"{steps} steps of fit; untrained {untrained_ll:.3f}"),
        CheckResult.compare("untrained linear VAE: exact log-likelihood vs the maximum", untrained_ll, ml_ll, 0.05,
                            control=True),
    ]
    xs = x[:200]
    with torch.no_grad():
        lw = model.log_weights(xs, 1000, generator=torch.Generator().manual_seed(ctx.seed))
        est = torch.logsumexp(lw, 0) - math.log(1000)
    exact = learned.log_prob(xs)
    w = torch.softmax(lw, 0)
    # delta-method standard error of each log-mean-weight, then of the mean over points
    se = float(torch.sqrt(((w * 1000 - 1) ** 2).mean(0) / 1000).pow(2).sum().sqrt() / len(xs))
    rows.append(CheckResult.compare("linear VAE: IWAE (K=1000) log_prob vs exact log p(x) (nats/point)",
                                    float(est.mean()), float(exact.mean()), Z_SCORE * se + 1e-4,
                                    details=f"standard error {se:.2e}"))
    wrong = vae.ProbabilisticPCA(learned.loc, learned.weight, learned.noise_variance * 1.1)
    rows.append(CheckResult.compare("linear VAE: IWAE log_prob vs exact log p of a pPCA with 10% more noise",
                                    float(est.mean()), float(wrong.log_prob(xs).mean()), Z_SCORE * se + 1e-4,
                                    control=True))
    rows += _ddpm_rows(DDPM.linear(N=20, beta_start=0.02, beta_end=0.3), ctx.seed)
    return rows


def _ddpm_rows(ddpm, seed: int) -> list[CheckResult]:
    """DDPM.elbo_terms vs the hierarchical VAE's layer terms at the same latents (max abs difference, nats)."""
    from .. import vae
    from ..sde import DDPM

    def eps_model(x_k: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return 0.4 * torch.sin(x_k) + 0.05 * k.unsqueeze(-1).to(x_k) * x_k

    x0 = torch.randn(64, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)

    def gap(chain) -> float:
        with rng_scope(seed=seed):
            terms = ddpm.elbo_terms(x0, eps_model)
        with rng_scope(seed=seed):  # replay DDPM's draws: x_k for k = 2..N, then x_1
            xs = {k: ddpm.q_sample(x0, k, torch.randn_like(x0)) for k in range(2, ddpm.N + 1)}
            xs[1] = ddpm.q_sample(x0, 1, torch.randn_like(x0))
        hvae = vae.ddpm_as_hierarchical_vae(chain, eps_model, features=3)
        ours = hvae.elbo_terms(x0, [xs[k] for k in range(ddpm.N, 0, -1)])
        ref = torch.cat([terms.L_N[:, None], terms.L_mid.flip(-1), terms.L_0[:, None]], -1)
        got = torch.cat([ours.kl, -ours.reconstruction[:, None]], -1)
        return float((got - ref).abs().max())

    # a chain whose posterior variances are 10% off (its betas rescaled so tilde beta changes)
    off = DDPM(ddpm.betas * 1.1)
    tol = 1e-9  # float64 rounding of terms up to ~10 nats
    return [
        CheckResult.bound("DDPM as a hierarchical VAE: max |layer term - DDPM ELBO term| (nats)", gap(ddpm), tol,
                          details=f"N={ddpm.N}, 64 points in 3-D, every L_N, L_(k-1), L_0"),
        CheckResult.bound("hierarchical VAE of a chain with betas x 1.1 against the DDPM's terms", gap(off), tol,
                          control=True),
    ]


# -- digits ----------------------------------------------------------------------------------------


def _digits_models(hidden: tuple[int, ...], latent: int):
    from .. import flows, vae

    def decoder():
        return vae.DiscretizedLogisticDecoder(latent, (1, 8, 8), hidden, num_bins=17)

    return {
        "VAE (ELBO)": lambda: vae.VAE(vae.GaussianEncoder((1, 8, 8), latent, hidden), decoder()),
        "IWAE-trained VAE (K=5, DReG)": lambda: vae.VAE(vae.GaussianEncoder((1, 8, 8), latent, hidden), decoder(),
                                                        objective="dreg", num_particles=5),
        "VAE with IAF posterior": lambda: vae.VAE(
            vae.FlowEncoder((1, 8, 8), latent, flow=flows.iaf(latent, transforms=2, hidden=(64, 64), context_dim=32),
                            hidden=hidden, context_dim=32), decoder()),
    }


def _independent_pixels_bits(train: torch.Tensor, test: torch.Tensor) -> float:
    """Bits/dim of the model with independent pixels, each a Laplace-smoothed 17-level histogram."""
    k_train = torch.floor(train.reshape(-1, 64) * 17).long().clamp(0, 16)
    k_test = torch.floor(test.reshape(-1, 64) * 17).long().clamp(0, 16)
    counts = torch.stack([torch.bincount(k_train[:, i], minlength=17) for i in range(64)]).double() + 1.0
    log_p = torch.log(counts / counts.sum(-1, keepdim=True))  # (64, 17)
    ll = log_p[torch.arange(64), k_test].sum(-1)
    return float(-ll.mean() / (64 * math.log(2)))


@register("vae.digits", group="vae")
def digits(ctx: Context) -> list[CheckResult]:
    from .. import datasets
    from ..train import fit

    train, _ = datasets.digits("train", dequantize=False, dtype=torch.float32)
    test, _ = datasets.digits("test", dequantize=False, dtype=torch.float32)
    baseline = _independent_pixels_bits(train, test)
    to_bits = 1 / (64 * math.log(2))
    # quick: 1000 steps and K = 500 (the three VAEs in about a minute of one core); full: 6000 and K = 5000
    hidden, latent = (256, 256), 16
    steps, K = (1000, 500) if ctx.quick else (6000, 5000)
    rows: list[CheckResult] = []
    samples, curves, lines = {}, {}, []
    for i, (name, make) in enumerate(_digits_models(hidden, latent).items()):
        with rng_scope(seed=ctx.seed + i):
            model = make()
        if i == 0:
            with torch.no_grad():
                untrained = -float(model.log_prob(test, 500, generator=torch.Generator().manual_seed(ctx.seed)).mean())
            rows.append(CheckResult.bound("untrained VAE: test bits/dim < independent pixels", untrained * to_bits,
                                          baseline, control=True))
        res = fit(model, train, steps=steps, batch_size=128, lr=1e-3, seed=ctx.seed, progress=False,
                  scheduler=lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps))
        curves[name] = res.losses
        model.eval()
        with torch.no_grad():
            gen = torch.Generator().manual_seed(ctx.seed + 1)
            nll = -model.log_prob(test, K, generator=gen)
            elbo = model.elbo(test, generator=gen)
        bits = float(nll.mean()) * to_bits
        se = float(nll.std() / math.sqrt(len(nll))) * to_bits
        elbo_bits = -float(elbo.mean()) * to_bits
        rows.append(CheckResult.bound(f"{name}: test bits/dim (IWAE K={K}) < independent pixels", bits, baseline,
                                      details=f"{bits:.4f} +- {se:.4f} bits/dim; ELBO {elbo_bits:.4f}; independent "
                                              f"pixels {baseline:.4f}; MAF {MAF_DIGITS_BITS_PER_DIM} (flows.digits)"))
        rows.append(CheckResult.bound(f"{name}: IWAE K={K} bits/dim <= ELBO bits/dim", bits, elbo_bits + Z_SCORE * se))
        lines.append(f"{name}: {bits:.3f} bits/dim (ELBO {elbo_bits:.3f})")
        samples[name] = model.sample((32,), mean=True, generator=torch.Generator().manual_seed(ctx.seed))
    _plots(ctx, samples, curves, lines, steps)
    return rows


def _plots(ctx: Context, samples: dict, curves: dict, lines: list[str], steps: int) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plots are optional
        return
    ctx.out.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(len(samples), 1, figsize=(8, 1.3 * len(samples) + 0.4), squeeze=False)
    for ax, (name, s) in zip(axes[:, 0], samples.items()):
        grid = s[:16, 0].reshape(2, 8, 8, 8).permute(0, 2, 1, 3).reshape(16, 64)
        ax.imshow(grid.numpy(), cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(name, fontsize=8)
        ax.set_xticks([]), ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(ctx.figure("vae_digits_samples.png", "8x8 digits: decoder means of 16 prior samples per VAE; "
                                                     + "; ".join(lines)), dpi=80)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, losses in curves.items():
        t = torch.tensor(losses)
        k = 50
        smooth = t.unfold(0, k, k).mean(-1) / (64 * math.log(2))
        ax.plot((torch.arange(len(smooth)) + 1) * k, smooth.numpy(), label=name)
    ax.set_xlabel("step"), ax.set_ylabel("training loss (bits/dim)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(ctx.figure("vae_digits_loss.png", f"8x8 digits: training loss of each VAE over {steps} steps "
                                                  "(negative ELBO or IWAE bound, averaged over 50 steps)"), dpi=80)
    plt.close(fig)
