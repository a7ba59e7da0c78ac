"""Validation checks for :mod:`fokker.gan`.

* ``gan.toys``: GANs trained by ``fit`` on the eight Gaussians, every variant with the same networks
  (generator 2-128-128-128-2 on a 2-D latent, discriminator 2-64-64-1, batches of 256), judged against
  exact samples and the toy's exact density (:func:`fokker.datasets.toy_log_prob`): the fraction of
  generated samples below the density's 5% quantile (:func:`fokker.metrics.low_density_fraction`; an
  exact sampler puts 5% there; bound 0.15), mode coverage (:func:`fokker.metrics.mode_coverage`, 1
  when every mode gets its share; bound 0.95) and the energy distance to exact samples (bound 0.03;
  seven of the eight modes: 0.056).  Quick: the vanilla (minimax) GAN and WGAN-GP, 2000 steps each.
  Full: also the non-saturating GAN, WGAN with weight clipping and a spectrally normalised critic
  (4000 steps).  The known failures are controls the metrics must reject: with these networks the
  vanilla and the non-saturating GAN collapse onto one mode (mode dropping), the clipped critic
  underfits (Gulrajani et al. 2017, fig. 1: samples smeared over the low-density region).  Further
  controls: the untrained generator (every metric), exact samples of two of the eight modes (the
  coverage), exact samples blurred by ``N(0, 0.5^2)`` noise (the low-density fraction).  Figures:
  samples per model and the two players' loss curves.
* ``gan.digits`` (full mode only): a Wasserstein GAN with a spectrally normalised critic on the
  8x8 digits; sample quality by the Fréchet distance (:func:`fokker.gan.frechet_distance`)
  in the feature space of a classifier trained on the digits' training split (an MLP
  64-128-64-10, features = its last hidden layer; no network is downloaded), against the test
  split.  Pass: the GAN's distance is below that of the independent-pixels model (each pixel
  drawn from its own training histogram); the distance between the training and test images is
  reported as the floor.  Control: the untrained generator.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .._random import rng_scope
from . import CheckResult, Context, register

#: the level of the low-density region and the bound on the fraction of samples in it: an exact
#: sampler puts 5% there, exact samples blurred by N(0, 0.5^2) noise 34% (the control); GANs leave
#: thin bridges between modes, which the bound allows up to 3x the exact share
_LEVEL, _LDF_BOUND = 0.05, 0.15
_COVERAGE_BOUND = 0.95
#: energy distance to 4000 exact samples: two exact samples of that size give ~4e-4, exact samples blurred
#: by N(0, 0.5^2) 0.007, exact samples of seven of the eight modes 0.056
_ED_BOUND = 0.03
#: every variant trains the same networks: generator 2 -> 128 -> 128 -> 128 -> 2, discriminator
#: 2 -> 64 -> 64 -> 1, batches of 256
_GENERATOR_HIDDEN, _DISCRIMINATOR_HIDDEN, _BATCH_SIZE = (128, 128, 128), (64, 64), 256
_METRICS = ("density", "coverage", "energy")


def _eight_means() -> torch.Tensor:
    ang = torch.arange(8, dtype=torch.float64) * math.pi / 4
    return 4 * torch.stack([torch.cos(ang), torch.sin(ang)], -1) / math.sqrt(2)


#: name -> (GAN kwargs, Discriminator kwargs, optimizer kwargs, known failure).  A known failure is
#: (what, metrics that must reject it): those variants are natural controls.
_VARIANTS: dict[str, tuple[dict, dict, dict, tuple[str, tuple[str, ...]] | None]] = {
    "vanilla (minimax) GAN": ({"loss": "minimax"}, {}, {"lr": 1e-3, "betas": (0.5, 0.999)},
                              ("mode dropping", _METRICS)),
    "non-saturating GAN": ({"loss": "non_saturating"}, {}, {"lr": 1e-3, "betas": (0.5, 0.999)},
                           ("mode dropping", _METRICS)),
    # Gulrajani et al. 2017, fig. 1: a clipped critic is too simple, the generator smears the modes
    "WGAN (weight clipping)": ({"loss": "wasserstein", "clip": 0.05, "critic_steps": 5}, {},
                               {"lr": 5e-4, "betas": (0.0, 0.9)}, ("underfitting", ("density", "energy"))),
    "WGAN-GP": ({"loss": "wasserstein", "gradient_penalty": 0.1, "critic_steps": 2}, {},
                {"lr": 2e-3, "betas": (0.0, 0.9)}, None),
    "spectral-norm critic": ({"loss": "wasserstein", "critic_steps": 2}, {"spectral_norm": True},
                             {"lr": 2e-3, "betas": (0.0, 0.9)}, None),
}


def _plan(quick: bool) -> list[tuple[str, list[tuple[str, int]]]]:
    """(toy, [(variant, fit steps)]): 2000 steps of 256 (the spectral-norm critic needs 4000: after 2000, 53% of
    its samples lie below the 5% density level)."""
    if quick:
        return [("eight_gaussians", [("vanilla (minimax) GAN", 2000), ("WGAN-GP", 2000)])]
    return [("eight_gaussians", [(name, 4000 if name == "spectral-norm critic" else 2000) for name in _VARIANTS])]


def _train_gan(data: torch.Tensor, kw: dict, disc_kw: dict, opt_kw: dict, steps: int, seed: int):
    from .. import gan
    from ..train import fit

    with rng_scope(seed=seed):
        model = gan.GAN(gan.Generator(2, 2, hidden=_GENERATOR_HIDDEN),
                        gan.Discriminator(2, hidden=_DISCRIMINATOR_HIDDEN, **disc_kw), **kw)
    res = fit(model, data, steps=steps, batch_size=_BATCH_SIZE, optimizer=model.optimizer(**opt_kw), seed=seed,
              progress=False)
    return model, res.losses


def _metric_rows(label: str, toy: str, samples: torch.Tensor, ref: torch.Tensor, control: bool = False,
                 only: tuple[str, ...] = _METRICS) -> list[CheckResult]:
    """Rows for the metrics named in ``only`` (the values of the others go into the details)."""
    from .. import datasets, metrics

    ldf = metrics.low_density_fraction(samples, datasets.toy_log_prob(toy), ref, _LEVEL)
    rows = {"density": CheckResult.bound(f"{toy} {label}: fraction below the 5% density level", ldf.fraction,
                                         _LDF_BOUND, control=control, details=f"exact sampler: {_LEVEL} +- {ldf.stderr:.3f}")}
    if toy == "eight_gaussians":
        cov = float(metrics.mode_coverage(samples, _eight_means().to(samples)))
        rows["coverage"] = CheckResult.bound(f"{toy} {label}: mode coverage", cov, _COVERAGE_BOUND, upper=False,
                                             control=control)
    ed = float(metrics.energy_distance(samples, ref[: len(samples)]))
    rows["energy"] = CheckResult.bound(f"{toy} {label}: energy distance to exact samples", ed, _ED_BOUND,
                                       control=control)
    # over-concentration (samples piled on the modes' centres) is invisible to all three: report the share above the
    # exact samples' median log-density (an exact sampler: 1/2)
    high = 1.0 - metrics.low_density_fraction(samples, datasets.toy_log_prob(toy), ref, 0.5 - 1e-9).fraction
    kept = [rows[k] for k in _METRICS if k in rows and k in only]
    kept[0].details += f"; fraction above the median density level {high:.3f} (exact: 0.5)"
    for k, r in rows.items():
        if k not in only:
            kept[0].details += f"; {r.name.split(': ')[-1]} {r.measured:.4g}"
    return kept


@register("gan.toys", group="gan")
def toys(ctx: Context) -> list[CheckResult]:
    from .. import datasets, gan

    rows: list[CheckResult] = []
    panels: list[tuple[str, str, torch.Tensor]] = []
    curves: dict[str, tuple[list[float], int]] = {}
    for t, (toy, variants) in enumerate(_plan(ctx.quick)):
        data = datasets.sample(toy, 20_000, seed=ctx.seed)
        ref = datasets.sample(toy, 20_000, seed=ctx.seed + 100)
        panels.append((toy, "exact samples", ref[:4000]))
        for name, steps in variants:
            kw, disc_kw, opt_kw, failure = _VARIANTS[name]
            model, losses = _train_gan(data, kw, disc_kw, opt_kw, steps, ctx.seed + t)
            s = model.sample((4000,), generator=torch.Generator().manual_seed(ctx.seed))
            if failure is None:
                rows += _metric_rows(f"{name} ({steps} steps)", toy, s, ref)
            else:  # a GAN with a known failure is a natural control: the metrics that see the failure must reject it
                rows += _metric_rows(f"{name} ({steps} steps; known failure: {failure[0]})", toy, s, ref, control=True,
                                     only=failure[1])
            panels.append((toy, name, s))
            if t == 0:
                curves[name] = (losses, model.critic_steps)
        if t == 0:  # controls on the first toy
            with rng_scope(seed=ctx.seed):
                g0 = gan.GAN(gan.Generator(2, 2, hidden=_GENERATOR_HIDDEN),
                             gan.Discriminator(2, hidden=_DISCRIMINATOR_HIDDEN))
            rows += _metric_rows("untrained generator", toy, g0.sample((4000,), generator=torch.Generator().manual_seed(0)),
                                 ref, control=True)
            two_modes = ref[:4000][((ref[:4000] @ _eight_means().float().T).argmax(-1) < 2)]
            rows += [r for r in _metric_rows("samples of two of the eight modes", toy, two_modes, ref, control=True)
                     if "coverage" in r.name]
            blurred = ref[:4000] + 0.5 * torch.randn(4000, 2, generator=torch.Generator().manual_seed(ctx.seed))
            rows += [r for r in _metric_rows("exact samples blurred by N(0, 0.5^2)", toy, blurred, ref, control=True)
                     if "5% density" in r.name]
    _plots(ctx, panels, curves)
    return rows


def _plots(ctx: Context, panels: list[tuple[str, str, torch.Tensor]], curves: dict) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plots are optional
        return
    ctx.out.mkdir(parents=True, exist_ok=True)
    toys = list(dict.fromkeys(p[0] for p in panels))
    ncol = max(sum(p[0] == toy for p in panels) for toy in toys)
    fig, axes = plt.subplots(len(toys), ncol, figsize=(2.2 * ncol, 2.2 * len(toys)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    column = dict.fromkeys(toys, 0)
    for toy, name, s in panels:
        ax = axes[toys.index(toy)][column[toy]]
        column[toy] += 1
        ax.axis("on")
        x = s.numpy()
        ax.hist2d(x[:, 0], x[:, 1], bins=80, range=[[-4.5, 4.5], [-4.5, 4.5]], cmap="viridis", cmin=1,
                  norm=matplotlib.colors.LogNorm())
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_title(f"{toy}: {name}", fontsize=6)
    fig.tight_layout()
    fig.savefig(ctx.figure("gan_toys.png", "eight Gaussians: histograms (log colour scale, which makes single samples "
                                           "visible) of 4000 exact samples (left) and of 4000 samples of each GAN "
                                           "trained with the same networks: the vanilla and non-saturating GANs "
                                           "collapse onto one mode (mode dropping), the weight-clipped WGAN smears the "
                                           "modes (full mode), WGAN-GP and the spectral-norm critic cover every mode "
                                           "with thin bridges between them; rows judge the fraction below the 5% "
                                           "density level, mode coverage and the energy distance"),
                dpi=80)
    plt.close(fig)
    fig, axes = plt.subplots(1, len(curves), figsize=(3.2 * len(curves), 2.6), squeeze=False)
    for ax, (name, (losses, critic_steps)) in zip(axes[0], curves.items()):
        cycle = critic_steps + 1
        t = torch.tensor(losses)
        for label, keep in (("discriminator", torch.arange(len(t)) % cycle < critic_steps),
                            ("generator", torch.arange(len(t)) % cycle >= critic_steps)):
            v = t[keep]
            k = max(1, len(v) // 100)
            ax.plot((torch.arange(len(v) // k) * k * cycle / max(1, keep.float().mean() * cycle)).numpy(),
                    v[: len(v) // k * k].reshape(-1, k).mean(-1).numpy(), label=label)
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("step", fontsize=7)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(ctx.figure("gan_toys_loss.png", "eight Gaussians: the discriminator's and the generator's losses per "
                                                "fit step (averaged over windows)"), dpi=80)
    plt.close(fig)


# -- digits ---------------------------------------------------------------------------------------


class _Classifier(nn.Module):
    """MLP 64-128-64-10 on flattened 8x8 digits; :meth:`features` is the 64-d last hidden layer."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU())
        self.head = nn.Linear(64, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.reshape(-1, 64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _digit_classifier(train: torch.Tensor, labels: torch.Tensor, seed: int) -> _Classifier:
    with rng_scope(seed=seed):
        clf = _Classifier()
        opt = torch.optim.Adam(clf.parameters(), lr=1e-3)
        for _ in range(1500):
            idx = torch.randint(0, len(train), (128,))
            loss = nn.functional.cross_entropy(clf(train[idx]), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return clf.eval()


@register("gan.digits", group="gan")
def digits(ctx: Context) -> list[CheckResult]:
    if ctx.quick:
        return [CheckResult("gan.digits", "-", "-", "-", True,
                            "skipped: full mode only (a GAN on the digits does not converge in the quick budget)")]
    from .. import datasets, gan
    from ..train import fit

    train, y_train = datasets.digits("train", seed=ctx.seed, flat=True)
    test, y_test = datasets.digits("test", seed=ctx.seed + 1, flat=True)
    clf = _digit_classifier(train, y_train, ctx.seed)
    with torch.no_grad():
        acc = float((clf(test).argmax(-1) == y_test).float().mean())

        def fd(x: torch.Tensor) -> float:
            return float(gan.frechet_distance(clf.features(x), clf.features(test)))

        floor = fd(train[: len(test)])
        g = torch.Generator().manual_seed(ctx.seed)
        idx = torch.randint(0, len(train), (len(test), 64), generator=g)
        independent = train[idx, torch.arange(64)]  # each pixel from its own marginal
        fd_independent = fd(independent)
    steps = 20_000
    with rng_scope(seed=ctx.seed):
        model = gan.GAN(gan.Generator(16, 64, hidden=(256, 256)),
                        gan.Discriminator(64, hidden=(256, 256), spectral_norm=True), loss="wasserstein", critic_steps=2)
    res = fit(model, train, steps=steps, batch_size=128, optimizer=model.optimizer(lr=2e-4, betas=(0.5, 0.9)),
              seed=ctx.seed, progress=False)
    with torch.no_grad():
        samples = model.sample((len(test),), generator=torch.Generator().manual_seed(ctx.seed)).clamp(0, 1)
        fd_gan = fd(samples)
        with rng_scope(seed=ctx.seed):
            untrained = gan.GAN(gan.Generator(16, 64, hidden=(256, 256)), gan.Discriminator(64, hidden=(256, 256)))
        fd_untrained = fd(untrained.sample((len(test),)).clamp(0, 1))
    details = (f"classifier test accuracy {acc:.3f}; Frechet distance train vs test {floor:.3f}, independent pixels "
               f"{fd_independent:.3f}, GAN {fd_gan:.3f}, untrained {fd_untrained:.3f}")
    rows = [
        CheckResult.bound("spectral-norm WGAN: Frechet classifier distance < independent pixels", fd_gan, fd_independent,
                          details=details),
        CheckResult.bound("untrained generator: Frechet classifier distance < independent pixels", fd_untrained,
                          fd_independent, control=True),
    ]
    _digit_plots(ctx, samples, model.split_losses(res.losses), fd_gan)
    return rows


def _digit_plots(ctx: Context, samples: torch.Tensor, losses: tuple[list[float], list[float]], fd_gan: float) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plots are optional
        return
    ctx.out.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3))
    # a blank pixel between images: 4 rows of 8 images of 8x8
    padded = torch.nn.functional.pad(samples[:32].reshape(32, 8, 8), (0, 1, 0, 1))
    grid = padded.reshape(4, 8, 9, 9).permute(0, 2, 1, 3).reshape(36, 72)
    axes[0].imshow(grid.numpy(), cmap="gray_r", vmin=0, vmax=1)
    axes[0].set_xticks([]), axes[0].set_yticks([])
    axes[0].set_title(f"GAN samples (Frechet classifier distance {fd_gan:.2f})", fontsize=8)
    for label, v in zip(("critic", "generator"), losses):
        t = torch.tensor(v)
        k = max(1, len(t) // 200)
        axes[1].plot(t[: len(t) // k * k].reshape(-1, k).mean(-1).numpy(), label=label)
    axes[1].set_xlabel("update (windows)"), axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(ctx.figure("gan_digits.png", "8x8 digits: samples of the spectral-norm WGAN and its critic / generator "
                                             "losses"), dpi=80)
    plt.close(fig)
