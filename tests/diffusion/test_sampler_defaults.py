"""The defaults of ``DiffusionModel.sample`` (sampler, grid, final step) on the tight mixture of issue 14's
acceptance, with the exact score: at 10 steps the mixture weights are within 0.03 and the within-component
standard deviations within 8% (the previous default, Heun on a Karras grid, reached 30%: its grid spends the
steps at sigma/alpha up to 152)."""

from __future__ import annotations

import pytest
import torch

from fokker.analytic import DiffusedGaussianMixture
from fokker.diffusion import DiffusionModel
from fokker.diffusion.samplers import SAMPLERS, SDE_DEFAULTS, dpm_solver, sampler_defaults
from fokker.errors import ParameterError
from fokker.sde import VPSDE, time_grid
from fokker.targets import GaussianMixture
from fokker.tolerances import assert_close

SD = 0.05


def _tight3() -> GaussianMixture:
    """The benchmark's ``tight3`` (benchmarks/samplers_quality_vs_nfe.py): three components of sd 0.05."""
    loc = torch.tensor([[-1.5, 0.0], [1.5, 0.5], [0.0, 1.8]], dtype=torch.float64)
    weights = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    return GaussianMixture(loc, SD * torch.eye(2, dtype=torch.float64).expand(3, 2, 2), weights)


class _ExactScore(torch.nn.Module):
    dim = 2

    def __init__(self, oracle: DiffusedGaussianMixture) -> None:
        super().__init__()
        self.oracle = oracle
        self.register_buffer("anchor", torch.zeros((), dtype=torch.float64))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.oracle.score_fn(x, t)


def test_default_sampler_at_10_steps_on_the_tight_mixture() -> None:
    """Weights: the fraction of samples nearest (by responsibility) each component, against the true weights
    (SE 0.0035 at n = 20000, so 0.03 is a bias bound).  Spread: the RMS distance of those samples to the
    component's true mean per coordinate over 0.05 (mean error and spread error both count); also the plain
    within-component sd."""
    gm = _tight3()
    sde = VPSDE()
    model = DiffusionModel(sde, _ExactScore(DiffusedGaussianMixture(gm, sde)), "score")
    n = 20_000
    x, nfe = model.sample((n,), num_steps=10, generator=torch.Generator().manual_seed(0), return_nfe=True)
    k = DiffusedGaussianMixture(gm, sde).responsibilities(x, 0.0).argmax(-1)
    weights = torch.bincount(k, minlength=3).double() / n
    assert float((weights - gm.weights).abs().max()) <= 0.03, weights
    rms = torch.stack([(x[k == j] - gm.loc[j]).pow(2).mean().sqrt() for j in range(3)])
    sd = torch.stack([(x[k == j] - x[k == j].mean(0)).pow(2).mean().sqrt() for j in range(3)])
    assert float((rms / SD - 1).abs().max()) <= 0.08, rms / SD
    assert float((sd / SD - 1).abs().max()) <= 0.08, sd / SD
    assert nfe <= 21


@pytest.mark.parametrize("final_step", ["sampler", "denoise"])
def test_final_step_is_the_grid_end_of_the_denoiser(final_step: str) -> None:
    """``final_step="denoise"``: the sampler on the first ``num_steps`` intervals of a ``num_steps + 1`` grid, then
    Tweedie at that grid's second-to-last time; ``"sampler"``: the whole ``num_steps`` grid, then Tweedie at
    ``t_min``.  Both rebuilt by hand from the same prior draw; the NFE is the same."""
    gm = _tight3()
    sde = VPSDE()
    oracle = DiffusedGaussianMixture(gm, sde)
    model = DiffusionModel(sde, _ExactScore(oracle), "score")
    x, nfe = model.sample((64,), "dpm_solver", 6, final_step=final_step, generator=torch.Generator().manual_seed(3),
                          return_nfe=True)
    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * model.prior_std()
    default = sampler_defaults("dpm_solver", sde)
    grid = time_grid(6 + (final_step == "denoise"), model.T, model.t_min, default.spacing, sde=sde)
    grid = grid[:-1] if final_step == "denoise" else grid
    out, _ = dpm_solver(oracle.score_fn, sde, x_T, grid, **default.options)
    expected = oracle.denoise(out, torch.full((64,), float(grid[-1]), dtype=torch.float64))
    assert_close(x, expected, scale=float(expected.abs().max()))
    assert nfe == 7


def test_final_step_rejects_unknown_values() -> None:
    sde = VPSDE()
    model = DiffusionModel(sde, _ExactScore(DiffusedGaussianMixture(_tight3(), sde)), "score")
    with pytest.raises(ParameterError, match="final_step"):
        model.sample((4,), final_step="zero")


class _MyVP(VPSDE):
    """A user's VP SDE subclass: no family entry of its own, so it takes the base table."""


@pytest.mark.parametrize("sde_factory", [VPSDE.cosine, _MyVP, VPSDE])
@pytest.mark.parametrize("sampler", ["dpm_solver", "dpm_solver_2s", "ddim"])
def test_sample_runs_the_defaults_of_the_sdes_family(sde_factory, sampler: str) -> None:
    """``DiffusionModel.sample`` on a cosine VP SDE uses that family's entry of ``SDE_DEFAULTS`` (grid, final
    step, options), a VP subclass without an entry the base table; rebuilt by hand from the table, the same
    prior draw gives the same samples, and an option given by the caller overrides the default."""
    sde = sde_factory()
    oracle = DiffusedGaussianMixture(_tight3(), sde)
    model = DiffusionModel(sde, _ExactScore(oracle), "score")
    family = SDE_DEFAULTS.get(type(sde).__name__, {})
    if sampler in family:
        spacing, final_step, options = family[sampler]
    else:
        spacing, final_step, options = (*sampler_defaults(sampler)[:2], sampler_defaults(sampler).options)
    assert sampler_defaults(sampler, sde) == (spacing, final_step, options)
    x = model.sample((32,), sampler, 6, generator=torch.Generator().manual_seed(3))
    x_T = torch.randn(32, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * model.prior_std()
    jump = final_step == "denoise"
    grid = time_grid(6 + jump, model.T, model.t_min, spacing, sde=sde)
    grid = grid[:-1] if jump else grid
    out, _ = SAMPLERS[sampler](oracle.score_fn, sde, x_T, grid, **options)
    expected = oracle.denoise(out, torch.full((32,), float(grid[-1]), dtype=torch.float64))
    assert_close(x, expected, scale=float(expected.abs().max()))
    if sampler == "dpm_solver":
        flipped = not options.get("lower_order_final", True)
        y = model.sample((32,), sampler, 6, generator=torch.Generator().manual_seed(3), lower_order_final=flipped)
        out, _ = dpm_solver(oracle.score_fn, sde, x_T, grid, lower_order_final=flipped)
        assert_close(y, oracle.denoise(out, torch.full((32,), float(grid[-1]), dtype=torch.float64)),
                     scale=float(expected.abs().max()))


def test_sampler_defaults_names_an_unknown_sampler() -> None:
    with pytest.raises(ParameterError, match="sampler must be one of"):
        sampler_defaults("rk4")


def test_every_sampler_has_a_default_in_the_base_table() -> None:
    """The base tables are written out per sampler (not derived from ``SAMPLERS``): each registered sampler has
    a spacing and a final step there, each family override names a registered sampler, and its final step and the
    base one are valid values."""
    from fokker.diffusion.samplers import DEFAULT_FINAL_STEP, DEFAULT_SPACING, FINAL_STEPS

    assert set(DEFAULT_SPACING) == set(DEFAULT_FINAL_STEP) == set(SAMPLERS)
    assert set(DEFAULT_FINAL_STEP.values()) <= set(FINAL_STEPS)
    for family in SDE_DEFAULTS.values():
        assert set(family) <= set(SAMPLERS)
        assert {final for _, final, _ in family.values()} <= set(FINAL_STEPS)
