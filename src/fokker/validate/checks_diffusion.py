"""Validation of ``fokker.diffusion``: samplers and likelihood on the exact GMM oracle, trained MLP score
models on 2-D toys and a small U-Net on scikit-learn's 8x8 digits.

Tables (sample quality vs NFE per sampler, NLL) go to the report's details; PNGs to ``ctx.out``.
``ctx.quick`` shortens training and evaluation (the whole group runs in well under a minute on a CPU).
"""

from __future__ import annotations

import math
import time

import torch

from .._random import make_generator, randn, rng_scope
from ..tolerances import Z_SCORE, tolerance
from . import CheckResult, Context, register

#: samplers, evaluation function NFE per grid step
_PER_STEP = {"euler_maruyama": 1, "predictor_corrector": 2, "ode_euler": 1, "heun": 2, "ddim": 1,
             "dpm_solver": 1, "annealed_langevin": 5}


def _ed(x: torch.Tensor, y: torch.Tensor) -> float:
    from ..metrics import energy_distance

    return float(energy_distance(x.double().flatten(1), y.double().flatten(1)))


def _quality_table(score_fn, sde, x_T, ref, nfes, t_min, denoise_fn=None, tols=(1e-2, 1e-3, 1e-5)):
    """``{sampler: {nfe: energy distance}}`` for every sampler at the given NFE budgets."""
    from ..sde import time_grid
    from ..diffusion.samplers import DEFAULT_SPACING, SAMPLERS

    table: dict[str, dict[int, float]] = {}
    for name, per in _PER_STEP.items():
        table[name] = {}
        for nfe in nfes:
            steps = max(1, nfe // per)
            grid = time_grid(steps, sde.T, t_min, DEFAULT_SPACING[name], sde=sde)
            with torch.no_grad():
                out, used = SAMPLERS[name](score_fn, sde, x_T.clone(), grid, generator=torch.Generator(x_T.device).manual_seed(0))
                if denoise_fn is not None:
                    out = denoise_fn(out)
            table[name][used] = _ed(out, ref)
    table["ode_adaptive"] = {}
    for tol in tols:
        grid = time_grid(1, sde.T, t_min, sde=sde)
        with torch.no_grad():
            out, used = SAMPLERS["ode_adaptive"](score_fn, sde, x_T.clone(), grid, rtol=tol, atol=tol)
            if denoise_fn is not None:
                out = denoise_fn(out)
        table["ode_adaptive"][used] = _ed(out, ref)
    return table


def _format_table(title: str, table: dict[str, dict[int, float]], floor: float) -> str:
    lines = [title, f"(energy distance to held-out/exact samples; exact-vs-exact noise level {floor:.4f})", ""]
    for name, row in table.items():
        cells = "  ".join(f"NFE {n:>4}: {v:8.4f}" for n, v in row.items())
        lines.append(f"{name:<20} {cells}")
    return "\n".join(lines)


def _plot_quality(path, title, table, floor):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib is an optional extra
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, row in table.items():
        ax.plot(list(row.keys()), [max(v, 1e-5) for v in row.values()], marker="o", label=name)
    ax.axhline(max(floor, 1e-5), color="k", ls=":", label="exact vs exact")
    ax.set(xscale="log", yscale="log", xlabel="NFE", ylabel="energy distance", title=title)
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _plot_points(path, sets: dict[str, torch.Tensor]):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover
        return
    fig, axes = plt.subplots(1, len(sets), figsize=(3 * len(sets), 3))
    for ax, (k, v) in zip(axes, sets.items()):
        v = v.detach().cpu()
        ax.scatter(v[:, 0], v[:, 1], s=1)
        ax.set_title(k, fontsize=8)
        ax.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _plot_images(path, imgs: torch.Tensor, nrow: int = 8):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover
        return
    imgs = imgs.detach().cpu().clamp(-1, 1)
    n = imgs.shape[0]
    ncol = math.ceil(n / nrow)
    fig, axes = plt.subplots(ncol, nrow, figsize=(nrow, ncol))
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(imgs[i, 0], cmap="gray", vmin=-1, vmax=1)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


# --------------------------------------------------------------------------- oracle checks
@register("diffusion.samplers_oracle", group="diffusion")
def samplers_oracle(ctx: Context) -> list[CheckResult]:
    """Every sampler with the exact score of an 8-mode 2-D GMM under VP(0.1, 20): energy distance to
    exact samples of p_{t_min} at the NFE documented in docs/diffusion.md."""
    from ..analytic import DiffusedGaussianMixture
    from ..sde import time_grid
    from ..diffusion.samplers import DEFAULT_SPACING, SAMPLERS
    from ..sde import VPSDE
    from ..targets import GaussianMixture

    gen = make_generator(seed=ctx.seed)
    ang = torch.arange(8, dtype=torch.float64) * 2 * math.pi / 8
    gm = GaussianMixture.isotropic(3 * torch.stack([ang.cos(), ang.sin()], -1), 0.2)
    sde = VPSDE()
    oracle = DiffusedGaussianMixture(gm, sde)
    n = 1000 if ctx.quick else 5000
    t_min = 1e-3
    ref = oracle.sample((n,), t_min, generator=gen)
    floor = abs(_ed(oracle.sample((n,), t_min, generator=gen), ref))
    x_T = oracle.sample((n,), sde.T, generator=gen)
    documented = {"euler_maruyama": 100, "predictor_corrector": 50, "ode_euler": 100, "heun": 25,
                  "ode_adaptive": 1, "ddim": 50, "dpm_solver": 20, "annealed_langevin": 100}
    rows, lines = [], []
    tol = 0.01 + 3 * floor
    for name, steps in documented.items():
        grid = time_grid(steps, sde.T, t_min, DEFAULT_SPACING[name], sde=sde)
        out, nfe = SAMPLERS[name](oracle.score_fn, sde, x_T.clone(), grid, generator=gen)
        ed = _ed(out, ref)
        lines.append(f"{name:<20} NFE {nfe:>5}  ED {ed:.4f}")
        rows.append(CheckResult.bound(f"{name} @ NFE {nfe} energy distance", ed, tol))
    rows[0].details = "\n".join(lines)
    return rows


@register("diffusion.pf_ode_likelihood_oracle", group="diffusion")
def pf_ode_likelihood_oracle(ctx: Context) -> list[CheckResult]:
    """PF-ODE log-likelihood with the exact score of a full-covariance GMM equals log p_{t_min} (loose float64
    tolerance of an ODE solve at rtol = atol = 1e-8, relative to |log p|); Hutchinson's estimate averages to it
    (within Z_SCORE standard errors)."""
    from ..analytic import DiffusedGaussianMixture
    from ..diffusion import DiffusionModel
    from ..sde import VPSDE
    from ..targets import GaussianMixture

    gen = make_generator(seed=ctx.seed)
    loc = torch.tensor([[-1.5, 0.0, 0.5], [1.0, 1.0, -0.5]], dtype=torch.float64)
    tril = torch.tensor([[[0.5, 0, 0], [0.2, 0.4, 0], [0.0, -0.1, 0.3]], [[0.3, 0, 0], [0.0, 0.6, 0], [0.1, 0.1, 0.5]]],
                        dtype=torch.float64)
    gm = GaussianMixture(loc, tril, torch.tensor([0.4, 0.6], dtype=torch.float64))
    sde = VPSDE()
    oracle = DiffusedGaussianMixture(gm, sde)

    class Exact(torch.nn.Module):
        dim = 3

        def forward(self, x, t):
            return oracle.score_fn(x, t)

    model = DiffusionModel(sde, Exact(), "score")
    x = oracle.sample((8 if ctx.quick else 64,), model.t_min, generator=gen)
    prior = lambda z: oracle.log_prob(z, sde.T)  # noqa: E731
    res = model.log_prob_result(x, trace="exact", rtol=1e-8, atol=1e-8, prior_log_prob=prior)
    exact = oracle.log_prob(x, model.t_min)
    err = float((res.log_prob - exact).abs().max())
    tol = tolerance(torch.float64, loose=True, scale=max(1.0, float(exact.abs().max()))).atol
    reps = 200 if ctx.quick else 1000
    xr = x[:1].repeat(reps, 1)
    hut = model.log_prob_result(
        xr, trace="hutchinson", rtol=1e-6, atol=1e-6, prior_log_prob=prior, generator=gen
    ).log_prob
    z = float((hut.mean() - res.log_prob[0]).abs() / (hut.std() / math.sqrt(reps)))
    return [
        CheckResult.bound("max |PF-ODE log p - exact| (nats)", err, tol, details=f"NFE {res.nfe}"),
        CheckResult.bound("Hutchinson mean vs exact trace (standard errors)", z, Z_SCORE),
    ]


# --------------------------------------------------------------------------- trained models
def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _bits_per_dim(log_prob: torch.Tensor, d: int) -> float:
    return float(-log_prob.mean() / (d * math.log(2)))


@register("diffusion.toy2d", group="diffusion")
def toy2d(ctx: Context) -> list[CheckResult]:
    """MLP eps-model (VP SDE) trained on 2-D toys; quality (energy distance to held-out data) vs NFE for
    every sampler, test NLL (bits/dim) by the PF-ODE, PNG scatter plots and quality-vs-NFE plots."""
    from .. import datasets
    from ..diffusion import DiffusionModel, ResidualTimeMLP
    from ..sde import VPSDE
    from ..train import fit

    names = ["eight_gaussians"] if ctx.quick else ["two_moons", "eight_gaussians", "checkerboard"]
    steps = 1200 if ctx.quick else 8000
    n_eval = 1000 if ctx.quick else 2000
    nfes = [10, 20, 50] if ctx.quick else [10, 20, 50, 100, 1000]
    rows = []
    for name in names:
        gen = make_generator(seed=ctx.seed)
        dev = _device()
        train = datasets.sample(name, 20000, seed=ctx.seed, device=dev)
        test = datasets.sample(name, n_eval, seed=ctx.seed + 1, device=dev)
        test2 = datasets.sample(name, n_eval, seed=ctx.seed + 2, device=dev)
        sde = VPSDE()
        with rng_scope(gen):  # the network's initialization
            net = ResidualTimeMLP(2, hidden=96, depth=2) if ctx.quick else ResidualTimeMLP(2, hidden=128, depth=3)
        model = DiffusionModel(sde, net.to(dev), "eps")
        t0 = time.perf_counter()
        res = fit(model, train, steps=steps, batch_size=256 if ctx.quick else 512, lr=3e-3 if ctx.quick else 1e-3,
                  ema=0.999 if not ctx.quick else 0.98,
                  progress=False, seed=ctx.seed)
        train_s = time.perf_counter() - t0
        ema = res.ema.module if res.ema is not None else model
        ema.eval()
        x_T = randn((n_eval, 2), generator=gen, device=dev) * ema.prior_std()
        floor = abs(_ed(test2, test))
        table = _quality_table(ema.score_fn(), sde, x_T, test, nfes, ema.t_min)
        # NLL in bits/dim by the PF-ODE (exact trace, d = 2) vs a Gaussian fitted to the training data
        xe = test[: 100 if ctx.quick else 1000]
        lp = ema.log_prob(xe, rtol=1e-3 if ctx.quick else 1e-5, atol=1e-3 if ctx.quick else 1e-5)
        bpd = _bits_per_dim(lp, 2)
        gauss = torch.distributions.MultivariateNormal(train.mean(0), torch.cov(train.T))
        bpd_gauss = _bits_per_dim(gauss.log_prob(xe), 2)
        txt = _format_table(f"{name}: MLP eps-model, VP SDE, {steps} steps ({train_s:.0f} s)", table, floor)
        txt += f"\n\ntest NLL {bpd:.3f} bits/dim by PF-ODE (NFE {ema.last_nfe}); Gaussian fit {bpd_gauss:.3f}"
        _plot_quality(ctx.out / f"diffusion_{name}_quality_vs_nfe.png", name, table, floor)
        with torch.no_grad():
            samples = {f"{s} (NFE {n})": ema.sample((n_eval,), sampler=s, num_steps=st, generator=gen)
                       for s, st, n in (("dpm_solver", 20, 20), ("heun", 10, 20), ("euler_maruyama", 100, 100))}
        _plot_points(ctx.out / f"diffusion_{name}_samples.png", {"held-out data": test, **samples})
        best = min(min(r.values()) for r in table.values())
        # the energy distance sees large-scale structure only (a ring scores like 8 modes); a narrow-kernel
        # MMD (h = 0.2, below the modes' spread) checks the small-scale structure of the DPM-Solver samples
        from ..metrics import mmd

        h = 0.2
        mmd_model = float(mmd(samples["dpm_solver (NFE 20)"].double(), test.double(), bandwidth=h))
        mmd_null = abs(float(mmd(test2.double(), test.double(), bandwidth=h)))
        txt += f"\nMMD^2 (Gaussian kernel h={h}) of dpm_solver@20 samples: {mmd_model:.5f} (exact-vs-exact {mmd_null:.5f})"
        rows.append(CheckResult.bound(f"{name}: best energy distance (any sampler)", best, 0.05 if ctx.quick else 0.01,
                                      details=txt))
        rows.append(CheckResult.bound(f"{name}: MMD^2 (h={h}) of DPM-Solver samples, 20 NFE", mmd_model,
                                      (0.02 if ctx.quick else 0.005) + 3 * mmd_null))
        rows.append(CheckResult.bound(f"{name}: test NLL bits/dim < Gaussian fit", bpd, bpd_gauss))
    return rows


@register("diffusion.digits_unet", group="diffusion")
def digits_unet(ctx: Context) -> list[CheckResult]:
    """U-Net eps-model on scikit-learn's 8x8 digits (dequantized, scaled to [-1, 1]): quality vs NFE,
    test NLL in bits/dim (discrete, 17 levels) by the PF-ODE with Hutchinson's trace, a PNG grid."""
    from .. import datasets
    from ..diffusion import DiffusionModel, UNet
    from ..sde import VPSDE
    from ..train import fit

    gen = make_generator(seed=ctx.seed)
    dev = _device()
    x_train, _ = datasets.digits("train", seed=ctx.seed, scale="symmetric", dtype=torch.float32, device=dev)
    x_test, _ = datasets.digits("test", seed=ctx.seed, scale="symmetric", dtype=torch.float32, device=dev)
    steps = 120 if ctx.quick else 4000
    sde = VPSDE()
    with rng_scope(gen):  # the network's initialization
        net = UNet(1, channels=8 if ctx.quick else 32, channel_mult=(1, 2), num_res_blocks=1, attention=not ctx.quick)
    model = DiffusionModel(sde, net.to(dev), "eps", event_shape=(1, 8, 8))
    t0 = time.perf_counter()
    res = fit(model, x_train, steps=steps, batch_size=64 if ctx.quick else 128, lr=3e-3 if ctx.quick else 1e-3,
              ema=0.99 if ctx.quick else 0.999, progress=False, seed=ctx.seed)
    train_s = time.perf_counter() - t0
    ema = res.ema.module if res.ema is not None else model
    ema.eval()
    n_eval = 64 if ctx.quick else 360
    nfes = [20] if ctx.quick else [10, 20, 50, 100]
    ref = x_test[:n_eval]
    x_T = randn((n_eval, 1, 8, 8), generator=gen, device=dev) * ema.prior_std()
    floor = abs(_ed(x_train[:n_eval], ref))
    table = _quality_table(ema.score_fn(), sde, x_T, ref, nfes, ema.t_min, tols=(1e-2,) if ctx.quick else (1e-2, 1e-3, 1e-5))
    # NLL: log P(k) >= E_U log p_sym(x) + 64 log 2 - 64 log 17 (datasets.digits docstring)
    xe = x_test[: 8 if ctx.quick else 128]
    lp = ema.log_prob(xe, trace="hutchinson", rtol=1e-3 if ctx.quick else 1e-5, atol=1e-3 if ctx.quick else 1e-5,
                      generator=gen)
    lp_disc = lp + 64 * math.log(2) - 64 * math.log(17)
    bpd = _bits_per_dim(lp_disc, 64)
    uniform_bpd = math.log2(17)
    txt = _format_table(f"digits 8x8: U-Net eps-model, VP SDE, {steps} steps ({train_s:.0f} s)", table, floor)
    txt += (f"\n\ntest NLL {bpd:.3f} bits/dim (17 levels, dequantized bound, PF-ODE + Hutchinson, NFE {ema.last_nfe});"
            f" uniform {uniform_bpd:.3f}")
    first, last = sum(res.losses[:10]) / 10, sum(res.losses[-10:]) / 10
    _plot_quality(ctx.out / "diffusion_digits_quality_vs_nfe.png", "digits 8x8", table, floor)
    with torch.no_grad():
        imgs = ema.sample((32 if ctx.quick else 64,), sampler="dpm_solver", num_steps=20, generator=gen)
    _plot_images(ctx.out / "diffusion_digits_samples.png", imgs)
    if ctx.quick:
        # a 120-step run is a smoke test: the loss must fall; sample quality/NLL are reported, not judged
        return [CheckResult.bound("digits (quick): DSM loss, last 10 / first 10 steps", last / first, 0.6, details=txt)]
    best = min(min(r.values()) for r in table.values())
    return [
        CheckResult.bound("digits: test NLL bits/dim < uniform dequantized baseline", bpd, uniform_bpd, details=txt),
        CheckResult.bound("digits: best energy distance to test images", best, 3 * floor + 0.5),
    ]
