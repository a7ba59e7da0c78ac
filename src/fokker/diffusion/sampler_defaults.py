"""Each sampler's default time grid, final step and options, per SDE family, chosen by measurement.

A sampler's accuracy at a fixed NFE depends on where its grid puts the steps, and the best place depends on
the noise schedule: a grid uniform in log-SNR suits the linear VP SDE's second-order solvers, while on the
cosine schedule (whose log-SNR runs off to -infinity at ``T``) it wastes steps at high noise and a grid uniform
in ``t`` is better.  So the defaults are looked up per SDE family: :data:`SDE_DEFAULTS` holds the families the
benchmark measured separately (the cosine VP, sub-VP and VE SDEs, matched by class along the SDE's MRO);
every other SDE -- the linear VP SDE, a user's own :class:`~fokker.sde.LinearSDE` -- takes the base table
(:data:`DEFAULT_SPACING`, :data:`DEFAULT_FINAL_STEP`, :data:`DEFAULT_OPTIONS`, chosen on the linear VP SDE).

How they were chosen: ``benchmarks/samplers_quality_vs_nfe.py --search`` runs every spacing of
:func:`fokker.sde.time_grid`, both final steps and the sampler's discrete options from the *same* exact draws of
p_T (float64, the exact score of a diffused Gaussian mixture) over five mixtures (wide, two tight, anisotropic,
d = 64) and NFE 10 / 20 / 50, and scores each against the *best* of the peers' defaults in each cell (diffusers
and k-diffusion driven with the same oracle; diffusers on VP-type SDEs only): RMS path error against the
converged PF-ODE map (deterministic samplers), energy distance to exact data samples, and the worst relative error
of the within-component spread (which the other two barely see: a last denoising jump from a noise level near a
tight component's width shrinks it, one from higher noise leaves samples between the components).  Per (sampler,
family) the default is the candidate worse than the best peer in the fewest cells (path error above by more than
0.1%, energy distance by more than two of its noise sds, or spread error by more than 0.03), among those whose
worst path-error ratio is at most 2.5, ties broken by the geometric-mean ratio.  One exception: UniPC,
``DiffusionModel.sample``'s default sampler, keeps the cosine grid on the VP SDE, because the rule's pick
(quadratic) shrinks the tight mixture's components by 32-40% at 10 NFE (diffusers' UniPC there misses them the
other way, 2.1-2.2x too wide on the two smaller components), where the cosine grid keeps them within 6%.
Families without a peer for a sampler (diffusers' UniPC, DEIS and 3M on sub-VP and VE) take the base table.
Euler-Maruyama has no peer default; its grid was chosen by the samples' mean log-likelihood under the exact data
density against exact samples' (mean |gap| per dimension over the same problems at NFE 20 / 50 / 100: quadratic
with the final denoising step 0.041, the uniform grid it had 0.26 nats; on VE the log-SNR grid 0.023 against
quadratic 0.051).
The table with every candidate and cell is printed by the benchmark; the measured figures are in
``docs/diffusion.md`` ("Defaults").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from ..errors import ParameterError

__all__ = [
    "DEFAULT_SPACING",
    "DEFAULT_FINAL_STEP",
    "DEFAULT_OPTIONS",
    "SDE_DEFAULTS",
    "FINAL_STEPS",
    "SamplerDefaults",
    "sampler_defaults",
    "check_final_step",
]

#: ``final_step`` values: ``"denoise"`` -- the grid is spaced for ``num_steps + 1`` intervals and the Tweedie
#: denoiser replaces the last one (the final step to sigma = 0 of diffusers and k-diffusion); ``"sampler"`` -- the
#: sampler runs down to ``t_min``, then the denoiser.  The NFE is the same.
FINAL_STEPS = ("sampler", "denoise")


class SamplerDefaults(NamedTuple):
    """A sampler's defaults for one SDE: grid ``spacing`` (:func:`fokker.sde.time_grid`: uniform in log-SNR as
    Lu et al. 2022, the rho = 7 levels of Karras et al. 2022, quadratic, cosine or uniform in t), ``final_step``
    (:data:`FINAL_STEPS`) and the sampler ``options`` it is called with unless the caller sets them."""

    spacing: str
    final_step: str
    options: Mapping[str, object]


#: Base table (the linear VP SDE and any family not in :data:`SDE_DEFAULTS`): grid spacing per sampler.
DEFAULT_SPACING: dict[str, str] = {
    "euler_maruyama": "quadratic",
    "predictor_corrector": "uniform",
    "ode_euler": "uniform",
    "heun": "quadratic",
    "ode_adaptive": "uniform",
    "ddim": "quadratic",
    "dpm_solver": "quadratic",
    "dpm_solver_3m": "quadratic",
    "dpm_solver_2s": "quadratic",
    "dpm_solver_sde": "cosine",
    "unipc": "cosine",
    "deis": "quadratic",
    "euler_ancestral": "quadratic",
    "annealed_langevin": "log_snr",
}

#: Base table: how each sampler ends its grid (:data:`FINAL_STEPS`).
DEFAULT_FINAL_STEP: dict[str, str] = {
    "euler_maruyama": "denoise",
    "predictor_corrector": "sampler",
    "ode_euler": "sampler",
    "heun": "denoise",
    "ode_adaptive": "sampler",
    "ddim": "denoise",
    "dpm_solver": "denoise",
    "dpm_solver_3m": "denoise",
    "dpm_solver_2s": "denoise",
    "dpm_solver_sde": "denoise",
    "unipc": "denoise",
    "deis": "denoise",
    "euler_ancestral": "denoise",
    "annealed_langevin": "sampler",
}

#: Base table: sampler options that differ from the function's own defaults.
DEFAULT_OPTIONS: dict[str, dict[str, object]] = {
    "dpm_solver": {"lower_order_final": False},
    "dpm_solver_2s": {"midpoint": "time"},
    "dpm_solver_sde": {"lower_order_final": False},
    "unipc": {"lower_order_final": False},
    "deis": {"lower_order_final": False},
}

#: Per-family overrides of the base table: ``{SDE class name: {sampler: (spacing, final_step, options)}}``.
SDE_DEFAULTS: dict[str, dict[str, tuple[str, str, dict[str, object]]]] = {
    "CosineVPSDE": {
        "heun": ("log_snr", "denoise", {}),
        "ddim": ("uniform", "sampler", {}),
        "dpm_solver": ("uniform", "denoise", {"lower_order_final": False}),
        "dpm_solver_3m": ("uniform", "denoise", {"lower_order_final": False}),
        "dpm_solver_2s": ("uniform", "sampler", {"midpoint": "time"}),
        "dpm_solver_sde": ("quadratic", "denoise", {"lower_order_final": False}),
        "unipc": ("uniform", "denoise", {"lower_order_final": False}),
        "deis": ("uniform", "sampler", {"lower_order_final": False}),
    },
    "SubVPSDE": {
        "heun": ("uniform", "denoise", {}),
        "ddim": ("uniform", "denoise", {}),
        "dpm_solver": ("karras", "sampler", {}),
        "euler_ancestral": ("karras", "sampler", {}),
    },
    "VESDE": {
        "euler_maruyama": ("log_snr", "denoise", {}),
        "heun": ("karras", "sampler", {}),
        "ddim": ("karras", "denoise", {}),
        "dpm_solver": ("karras", "sampler", {"lower_order_final": False}),
        "dpm_solver_2s": ("karras", "sampler", {"midpoint": "time"}),
        "dpm_solver_sde": ("karras", "sampler", {"lower_order_final": False}),
        "euler_ancestral": ("karras", "sampler", {}),
    },
}


def sampler_defaults(sampler: str, sde: object | None = None) -> SamplerDefaults:
    """``sampler``'s default grid spacing, final step and options for ``sde`` (the first class along
    ``type(sde).__mro__`` with an entry in :data:`SDE_DEFAULTS`, else the base table)."""
    if sampler not in DEFAULT_SPACING:
        raise ParameterError(f"sampler must be one of {tuple(DEFAULT_SPACING)}; got {sampler!r}")
    for cls in type(sde).__mro__ if sde is not None else ():
        family = SDE_DEFAULTS.get(cls.__name__)
        if family is not None:
            if sampler in family:
                spacing, final_step, options = family[sampler]
                return SamplerDefaults(spacing, final_step, dict(options))
            break
    options = dict(DEFAULT_OPTIONS.get(sampler, {}))
    return SamplerDefaults(DEFAULT_SPACING[sampler], DEFAULT_FINAL_STEP[sampler], options)


def check_final_step(final_step: str | None, default: str) -> str:
    """``final_step``, or ``default`` (the sampler's, :func:`sampler_defaults`) when ``None``; a
    :class:`~fokker.errors.ParameterError` names the allowed values otherwise."""
    if final_step is None:
        return default
    if final_step not in FINAL_STEPS:
        raise ParameterError(f"final_step must be one of {FINAL_STEPS} or None; got {final_step!r}")
    return final_step
