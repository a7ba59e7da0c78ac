"""Samplers against closed forms: the diffused GMM oracle and a 1-D Gaussian whose EM chain is linear."""

from __future__ import annotations

import math

import pytest
import torch

from fokker.sde import time_grid
from fokker.diffusion.samplers import (
    DEFAULT_SPACING,
    SAMPLERS,
    ddim,
    deis,
    dpm_solver,
    dpm_solver_2s,
    euler_maruyama,
    from_denoiser,
    from_eps,
    get_sampler,
    heun,
    sampler_defaults,
    ode_adaptive,
    ode_euler,
)
from fokker.errors import ParameterError, ShapeError
from fokker.tolerances import Z_SCORE, assert_close

from _diffusion_oracle import energy_distance

T_MIN = 1e-3

# (sampler, steps, options): the NFE at which each sampler is documented to converge on the oracle
CONVERGED = [
    ("euler_maruyama", 100, {}),
    ("predictor_corrector", 50, {}),
    ("ode_euler", 100, {}),
    ("heun", 25, {}),
    ("ode_adaptive", 1, {}),
    ("ddim", 50, {}),
    ("ddim", 100, {"eta": 1.0}),
    ("dpm_solver", 20, {}),
    ("annealed_langevin", 100, {"num_steps": 5}),
]
N = 2000


@pytest.fixture(scope="module")
def reference(gmm3):
    """Exact samples of p_{t_min} and the estimator's noise level (ED between two exact samples)."""
    g = torch.Generator().manual_seed(1)
    ref, ref2 = gmm3.sample(N, T_MIN, generator=g), gmm3.sample(N, T_MIN, generator=g)
    return ref, abs(float(energy_distance(ref2, ref)))


def test_oracle_energy_distance_matches_fokker_metrics():
    from fokker.metrics import energy_distance as ed_lib

    x, y = torch.randn(300, 2, dtype=torch.float64), torch.randn(200, 2, dtype=torch.float64) + 0.3
    # loose: one side may expand |a - b|^2 = |a|^2 + |b|^2 - 2 a.b (cdist's matmul mode), which keeps only
    # about eps^(1/2) of relative accuracy on the distances
    assert_close(energy_distance(x, y), ed_lib(x, y), loose=True)


@pytest.mark.parametrize("name,steps,opts", CONVERGED, ids=[f"{c[0]}-{c[1]}{'-eta1' if 'eta' in c[2] else ''}" for c in CONVERGED])
def test_sampler_converges_to_gmm(name, steps, opts, gmm3, vpsde, reference):
    ref, floor = reference
    g = torch.Generator().manual_seed(2)
    x = gmm3.sample(N, 1.0, generator=g)
    out, nfe = SAMPLERS[name](gmm3.score, vpsde, x, time_grid(steps, spacing=DEFAULT_SPACING[name], sde=vpsde), generator=g, **opts)
    assert out.shape == x.shape and out.dtype == torch.float64
    ed = float(energy_distance(out, ref))
    assert ed < 0.005 + 3 * floor, f"{name}: energy distance {ed:.4f} (exact-vs-exact {floor:.4f}), nfe={nfe}"


def test_samplers_fail_when_too_coarse(gmm3, vpsde, reference):
    """The ED test has power: annealed Langevin with 10 levels (50 NFE) is visibly off."""
    ref, _ = reference
    x = gmm3.sample(N, 1.0)
    out, _ = SAMPLERS["annealed_langevin"](gmm3.score, vpsde, x, time_grid(10, spacing="log_snr", sde=vpsde), step_ratio=0.05)
    assert float(energy_distance(out, ref)) > 0.05


def test_nfe_counts(gmm3, vpsde):
    calls = [0]

    def score(x, t):
        calls[0] += 1
        return gmm3.score(x, t)

    x = gmm3.sample(8, 1.0)
    expect = {"euler_maruyama": 7, "predictor_corrector": 14, "ode_euler": 7, "heun": 14, "ddim": 7,
              "dpm_solver": 7, "annealed_langevin": 35}
    for name, n in expect.items():
        calls[0] = 0
        _, nfe = SAMPLERS[name](score, vpsde, x, time_grid(7, sde=vpsde))
        assert nfe == n == calls[0], name
    calls[0] = 0
    _, nfe = SAMPLERS["predictor_corrector"](score, vpsde, x, time_grid(7, sde=vpsde), num_corrector_steps=3)
    assert nfe == calls[0] == 7 * (1 + 3)
    calls[0] = 0
    _, nfe = ode_adaptive(score, vpsde, x, time_grid(7, sde=vpsde))
    assert nfe == calls[0]


def _path_errors(gmm, sde, n=300):
    x = gmm.sample(n, 1.0, generator=torch.Generator().manual_seed(3))
    ref, _ = ode_adaptive(gmm.score, sde, x, time_grid(1, sde=sde), rtol=1e-10, atol=1e-10)
    return x, lambda out: float((out - ref).norm(dim=-1).mean())


def test_pf_ode_solvers_orders(gmm8, vpsde):
    """Pathwise error to a dopri5 (1e-10) reference: Euler/DDIM first order, Heun/DPM-Solver++ second order,
    and DPM-Solver++(2M) at 20 NFE beats Euler at 200 NFE on the stiff 8-mode oracle."""
    x, err = _path_errors(gmm8, vpsde)
    e = {}
    for name, fn, sp in [("euler", ode_euler, "uniform"), ("ddim", ddim, "quadratic"),
                         ("heun", heun, "karras"), ("dpm", dpm_solver, "quadratic")]:
        e[name] = [err(fn(gmm8.score, vpsde, x, time_grid(n, spacing=sp, sde=vpsde))[0]) for n in (50, 100)]
    assert 1.7 < e["euler"][0] / e["euler"][1] < 2.3
    assert 1.7 < e["ddim"][0] / e["ddim"][1] < 2.3
    assert e["heun"][0] / e["heun"][1] > 3.2
    assert e["dpm"][0] / e["dpm"][1] > 3.2
    euler200 = err(ode_euler(gmm8.score, vpsde, x, time_grid(200, sde=vpsde))[0])
    dpm20 = err(dpm_solver(gmm8.score, vpsde, x, time_grid(20, spacing="quadratic", sde=vpsde))[0])
    heun100 = err(heun(gmm8.score, vpsde, x, time_grid(50, spacing="quadratic", sde=vpsde))[0])
    assert dpm20 < euler200
    assert heun100 < euler200


def _deis_weights_by_quadrature(u, i, order):
    """mpmath (40 digits) quadrature of the Lagrange basis on the nodes u_i, .., u_{i-order+1} times e^u
    over [u_i, u_{i+1}]: the DEIS weights, independently of the closed form."""
    mp = pytest.importorskip("mpmath")
    with mp.workdps(40):
        nodes = [mp.mpf(float(u[i - k])) for k in range(order)]

        def basis(j):
            return lambda v: mp.fprod((v - nodes[k]) / (nodes[j] - nodes[k]) for k in range(order) if k != j) * mp.exp(v)

        return [float(mp.quad(basis(j), [nodes[0], mp.mpf(float(u[i + 1]))])) for j in range(order)]


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("step", [1e-4, 1e-3, 1e-2, 0.1, 1.0, 4.0])
@pytest.mark.parametrize("history", [1.0, 0.3, 3.0])
def test_deis_weights_match_quadrature(order, step, history):
    """The closed-form DEIS weights equal the quadrature to float64 rounding for steps from 1e-4 to 4 in
    u = log(sigma/alpha) (earlier steps ``history`` times as long), at u_i = 7 where e^u ~ 1e3 as near T under
    the cosine SDE.  The antiderivative differenced at both ends lost ~eps/step^order: 6e-5 relative at order 3
    and step 1e-4, 3e-9 at order 2."""
    from fokker.diffusion.samplers import _deis_coefficients

    u = torch.tensor([7.0 + 3 * history * step, 7.0 + 2 * history * step, 7.0 + history * step, 7.0, 7.0 - step],
                     dtype=torch.float64)
    expected = torch.tensor(_deis_weights_by_quadrature(u, 3, order), dtype=torch.float64)
    got = torch.tensor(_deis_coefficients(u, 3, order), dtype=torch.float64)
    assert_close(got, expected, scale=float(expected.abs().max()))


@pytest.mark.parametrize("order, corrector", [(2, True), (3, False), (3, True)])
@pytest.mark.parametrize("step", [1e-4, 1e-3, 1e-2, 0.1, 1.0, 4.0])
def test_unipc_weights_match_quadrature(order, corrector, step):
    """UniPC's weights solve R rho = b with b_m = -h phi_{m+1}(-h) m! / (e^{-h} - 1); with the phi functions by
    mpmath quadrature, phi_k(z) = int_0^1 e^{(1-s) z} s^{k-1}/(k-1)! ds, the float64 weights agree to rounding
    for steps 1e-4 to 4 (earlier steps 0.7 times as long).  The recurrence phi_{k+1} = (phi_k - 1/k!)/z lost
    5e-4 relatively in the order-3 corrector at h = 1e-4."""
    from fokker.diffusion.samplers import _unipc_coefficients

    mp = pytest.importorskip("mpmath")
    lam = torch.tensor([0.0, 0.7 * step, 1.4 * step, 2.1 * step, 2.1 * step + step], dtype=torch.float64)
    rks, rho = _unipc_coefficients(lam, 3, order, corrector)
    with mp.workdps(40):
        z = -mp.mpf(step)
        nodes = [mp.mpf(float(r)) for r in rks] + [mp.mpf(1)]
        phi = [mp.quad(lambda s, k=k: mp.exp((1 - s) * z) * s ** (k - 1) / mp.factorial(k - 1), [0, 1])
               for k in range(order + 2)[2:]]
        b = [z * phi[m - 1] * mp.factorial(m) / mp.expm1(z) for m in range(1, order + 1)]
        rows = [[r ** (m - 1) for r in nodes] for m in range(1, order + 1)]
        if not corrector:
            rows, b = [r[:-1] for r in rows[:-1]], b[:-1]
        expected = torch.tensor([float(v) for v in mp.lu_solve(mp.matrix(rows), mp.matrix(b))], dtype=torch.float64)
    assert_close(rho, expected, scale=float(expected.abs().max()))


def test_deis_converges_at_its_order(gmm3, vpsde):
    """DEIS of order p halves its pathwise error (to a dopri5 reference at 1e-10) 2^p times from 50 to 100 steps
    (quadratic grid, asymptotic there; measured 2.01 / 3.69 / 7.18); the order-p method of 100 steps beats
    the order-(p-1) one."""
    x, err = _path_errors(gmm3, vpsde)
    e = {p: [err(deis(gmm3.score, vpsde, x, time_grid(n, spacing="quadratic", sde=vpsde), order=p,
                      lower_order_final=False)[0]) for n in (50, 100)] for p in (1, 2, 3)}
    for p, (e50, e100) in e.items():
        assert 0.8 * 2**p < e50 / e100 < 1.25 * 2**p, (p, e50, e100)
    assert e[3][1] < e[2][1] < e[1][1]


def _gauss_coefs(sde, grid, m, s2):
    """Exact law of the EM chain for N(m, s2) data: x_{i+1} = A_i x_i + B_i + C_i z (all float64)."""
    c = sde.coefficients(grid)
    h = c.t[:-1] - c.t[1:]
    var_t = c.alpha**2 * s2 + c.sigma**2
    # score = -(x - alpha m)/var_t  ->  x - h (f x - g2 score) = (1 - h f - h g2/var) x + h g2 alpha m / var
    A = 1 - h * c.f[:-1] - h * c.g2[:-1] / var_t[:-1]
    B = h * c.g2[:-1] * c.alpha[:-1] * m / var_t[:-1]
    C2 = h * c.g2[:-1]
    return c, A, B, C2, var_t


def test_euler_maruyama_weak_error_first_order(vpsde):
    """1-D Gaussian data: the EM chain is linear-Gaussian, its law is computed exactly; the sampler matches that
    law (Monte Carlo, Z_SCORE standard errors) and the exact weak error halves when the steps double."""
    m, s2 = 1.5, 0.25
    errors = []
    for steps in (20, 40, 80, 160):
        grid = time_grid(steps, sde=vpsde)
        c, A, B, C2, var_t = _gauss_coefs(vpsde, grid, m, s2)
        mean, var = c.alpha[0] * m, var_t[0]
        for i in range(steps):
            mean, var = A[i] * mean + B[i], A[i] ** 2 * var + C2[i]
        errors.append(abs(mean - c.alpha[-1] * m) + abs(var - var_t[-1]))
        if steps == 20:
            n = 200_000
            x0 = (c.alpha[0] * m + var_t[0].sqrt() * torch.randn(n, 1, dtype=torch.float64))

            def score(x, t):
                cc = vpsde.coefficients(t)
                v = (cc.alpha**2 * s2 + cc.sigma**2)[:, None]
                return -(x - cc.alpha[:, None] * m) / v

            out, _ = euler_maruyama(score, vpsde, x0, grid)
            se_mean = math.sqrt(float(var) / n)
            se_var = float(var) * math.sqrt(2 / n)
            assert abs(float(out.mean()) - float(mean)) < Z_SCORE * se_mean
            assert abs(float(out.var()) - float(var)) < Z_SCORE * se_var
    ratios = [float(errors[i] / errors[i + 1]) for i in range(3)]
    assert all(1.8 < r < 2.2 for r in ratios), ratios


def test_adapters_agree(gmm3, vpsde):
    x = gmm3.sample(16, 0.5)
    t = torch.full((16,), 0.3, dtype=torch.float64)
    c = vpsde.coefficients(t)
    s = gmm3.score(x, t)
    d = (x + c.sigma[:, None] ** 2 * s) / c.alpha[:, None]
    e = -c.sigma[:, None] * s
    assert_close(from_denoiser(lambda x, t: d, vpsde)(x, t), s)
    assert_close(from_eps(lambda x, t: e, vpsde)(x, t), s)


def test_float32_and_generator_reproducible(gmm3, vpsde):
    x = gmm3.sample(64, 1.0).float()
    score = lambda x, t: gmm3.score(x.double(), t.double()).float()  # noqa: E731
    a, _ = SAMPLERS["euler_maruyama"](score, vpsde, x, time_grid(10, sde=vpsde), generator=torch.Generator().manual_seed(5))
    b, _ = SAMPLERS["euler_maruyama"](score, vpsde, x, time_grid(10, sde=vpsde), generator=torch.Generator().manual_seed(5))
    assert a.dtype == torch.float32 and torch.equal(a, b)


def test_bad_arguments(gmm3, vpsde):
    x = gmm3.sample(4, 1.0)
    grid = time_grid(5, sde=vpsde)
    with pytest.raises(ParameterError, match="sampler"):
        get_sampler("rk4")
    with pytest.raises(ParameterError, match="decreasing"):
        ode_euler(gmm3.score, vpsde, x, grid.flip(0))
    with pytest.raises(ShapeError, match="x"):
        ode_euler(gmm3.score, vpsde, x[0], grid)
    with pytest.raises(ParameterError, match="eta"):
        ddim(gmm3.score, vpsde, x, grid, eta=1.5)
    with pytest.raises(ParameterError, match="snr"):
        SAMPLERS["predictor_corrector"](gmm3.score, vpsde, x, grid, snr=-1.0)


@pytest.mark.parametrize("sde_name", ["ve", "subvp", "cosine"])
def test_samplers_other_linear_sdes(sde_name, gmm3):
    """The same samplers work unchanged for VE (t_min = 0, sigma_min > 0), sub-VP and cosine VP, each on its
    family's default grid and options (``sampler_defaults``)."""
    from fokker.sde import VESDE, VPSDE
    from fokker.sde.vp import SubVPSDE

    from _diffusion_oracle import IsoGMM

    sde = {"ve": lambda: VESDE(sigma_min=0.01, sigma_max=20.0), "subvp": SubVPSDE, "cosine": VPSDE.cosine}[sde_name]()
    g = IsoGMM(gmm3.mu, gmm3.s, gmm3.w, sde)
    t_min, T = sde.score_domain()
    gen = torch.Generator().manual_seed(4)
    ref, ref2 = g.sample(N, t_min, generator=gen), g.sample(N, t_min, generator=gen)
    floor = abs(float(energy_distance(ref2, ref)))
    for name, steps in (("euler_maruyama", 100), ("heun", 25), ("dpm_solver", 20)):
        default = sampler_defaults(name, sde)
        out, _ = SAMPLERS[name](g.score, sde, g.sample(N, T, generator=gen), time_grid(steps, spacing=default.spacing, sde=sde),
                                generator=gen, **default.options)
        assert float(energy_distance(out, ref)) < 0.005 + 3 * floor, (sde_name, name)


def test_samplers_follow_device_and_dtype(device, dtype, vpsde):
    """Every sampler keeps the device/dtype of its input; Gaussian data N(m, 0.25) whose score is linear."""
    m = torch.tensor([1.0, -1.0], dtype=dtype, device=device)

    def score(x, t):
        c = vpsde.coefficients(t)
        a = c.alpha.to(x)[:, None]
        s2 = (c.sigma**2).to(x)[:, None]
        return -(x - a * m) / (a**2 * 0.25 + s2)

    x = torch.randn(4000, 2, dtype=dtype, device=device)
    for name in SAMPLERS:
        steps = 1 if name == "ode_adaptive" else 30
        out, _ = SAMPLERS[name](score, vpsde, x, time_grid(steps, spacing=DEFAULT_SPACING[name], sde=vpsde))
        assert out.device.type == torch.device(device).type and out.dtype == dtype, name
        assert float((out.mean(0) - m).abs().max()) < Z_SCORE * 0.5 / math.sqrt(4000) + 0.02, name


def test_dpm_solver_2s_time_midpoint_converges_at_second_order(gmm3, vpsde):
    """``midpoint="time"`` (the intermediate evaluation halfway in t, r != 1/2 in log-SNR, with the
    weights (1 - 1/(2r), 1/(2r)) of Lu et al.'s Alg. 1): second order, its pathwise error to a dopri5 reference
    falls ~4x from 50 to 100 steps."""
    x, err = _path_errors(gmm3, vpsde)
    e50, e100 = (err(dpm_solver_2s(gmm3.score, vpsde, x, time_grid(n, spacing="quadratic", sde=vpsde),
                                   midpoint="time")[0]) for n in (50, 100))
    assert 0.8 * 4 < e50 / e100 < 1.25 * 4, (e50, e100)


def test_dpm_solver_2s_midpoints_agree_where_log_snr_is_linear_in_t():
    """On the VE SDE ``log sigma`` is linear in ``t``, so the time midpoint is the log-SNR midpoint (r = 1/2):
    the two variants are the same method and agree to rounding."""
    from fokker.analytic import DiffusedGaussianMixture
    from fokker.sde import VESDE
    from fokker.targets import GaussianMixture

    sde = VESDE(sigma_min=0.01, sigma_max=20.0)
    gm = GaussianMixture(torch.tensor([[-2.0, 0.0], [2.0, 0.5]], dtype=torch.float64),
                         0.3 * torch.eye(2, dtype=torch.float64).expand(2, 2, 2), torch.tensor([0.6, 0.4], dtype=torch.float64))
    oracle = DiffusedGaussianMixture(gm, sde)
    x = oracle.sample((64,), sde.T, generator=torch.Generator().manual_seed(0))
    grid = time_grid(8, sde=sde, spacing="karras")
    a, _ = dpm_solver_2s(oracle.score_fn, sde, x, grid)
    b, _ = dpm_solver_2s(oracle.score_fn, sde, x, grid, midpoint="time")
    assert_close(b, a, scale=float(a.abs().max()))
    with pytest.raises(ParameterError, match="midpoint"):
        dpm_solver_2s(oracle.score_fn, sde, x, grid, midpoint="half")
