"""Drive the peers' samplers (diffusers schedulers, k-diffusion sampling functions) with fokker's exact
oracle, so that their defaults can be compared with fokker's on the same SDE, score and prior draw.

Benchmark-only code: neither the library nor the tests import it (diffusers and k-diffusion are
optional, ``pip install diffusers k-diffusion``; k-diffusion is loaded without its training extras).

* diffusers (VP-type SDEs only, ``alpha^2 + sigma^2 = 1``): a scheduler built with
  ``trained_betas`` such that its ``alphas_cumprod[k] = alpha(t_k)^2`` at ``t_k = (k + 1) T / 1000``
  (the discrete chain of the continuous SDE; ``k = 0`` is fokker's ``t_min = 1e-3``), then its
  default ``set_timesteps(N)``; the model is the oracle's noise prediction at ``t = (k + 1) T / 1000``.
* k-diffusion (any linear SDE, in the EDM variables ``x/alpha``, ``sigma/alpha``): the denoiser
  ``D(x~, s~) = oracle.denoise(alpha(t) x~, t)`` with ``t`` the time of level ``s~``, and the
  default grid of Karras et al. (``get_sigmas_karras``, rho = 7) from ``sigma/alpha`` at ``t_min``
  to that at ``T``, ending with the step to 0 (a final denoising step).
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
import types
from pathlib import Path

import torch

NUM_TRAIN = 1000


def load_k_diffusion_sampling():
    """``k_diffusion.sampling`` without the package's training imports (clip, kornia, wandb ...)."""
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or spec.submodule_search_locations is None:
        return None
    root = Path(list(spec.submodule_search_locations)[0])
    pkg = types.ModuleType("_kd")
    pkg.__path__ = [str(root)]
    utils = types.ModuleType("_kd.utils")
    utils.append_dims = lambda x, n: x[(...,) + (None,) * (n - x.ndim)]
    sys.modules["_kd"], sys.modules["_kd.utils"] = pkg, utils
    sampling_spec = importlib.util.spec_from_file_location("_kd.sampling", root / "sampling.py")
    mod = importlib.util.module_from_spec(sampling_spec)
    sys.modules["_kd.sampling"] = mod
    sampling_spec.loader.exec_module(mod)
    return mod


def _time_of_level(sde, level: torch.Tensor) -> torch.Tensor:
    """``t`` with ``sigma(t)/alpha(t) = level`` (float64)."""
    return sde.time_at_log_snr(-2.0 * torch.log(level.double().cpu().reshape(1))).reshape(())


def k_diffusion_denoiser(oracle, sde, x_dtype=torch.float64):
    """k-diffusion's model ``(x~, sigma~) -> D`` from the oracle."""

    def model(xt: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        t = _time_of_level(sde, level[0])
        c = sde.coefficients(t)
        a = float(c.alpha)
        return oracle.denoise(xt * a, t.to(xt.dtype).expand(xt.shape[0]))

    return model


def k_diffusion_sigmas(kd, sde, num: int, t_min: float, rho: float = 7.0) -> torch.Tensor:
    """k-diffusion's default grid: Karras et al.'s levels from s~(t_min) to s~(T), then 0 (float64)."""
    c = sde.coefficients(torch.tensor([t_min, sde.T], dtype=torch.float64))
    st = c.sigma / c.alpha
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # k-diffusion builds the ramp in the default dtype
    try:
        return kd.get_sigmas_karras(num, float(st[0]), float(st[1]), rho=rho)
    finally:
        torch.set_default_dtype(default)


def k_diffusion_run(kd, fn_name: str, oracle, sde, x_T: torch.Tensor, sigmas: torch.Tensor, generator=None, **kw):
    """Run ``k_diffusion.sampling.<fn_name>`` from the prior draw ``x_T`` (x-scale); returns x-scale
    samples at the last level (data when the grid ends at 0) and the NFE."""
    calls = [0]
    den = k_diffusion_denoiser(oracle, sde)

    def model(x, s):
        calls[0] += 1
        return den(x, s)

    a_T = float(sde.coefficients(torch.tensor(sde.T, dtype=torch.float64)).alpha)
    fn = getattr(kd, fn_name)
    extra = {}
    if generator is not None and "noise_sampler" in inspect.signature(fn).parameters:
        extra["noise_sampler"] = lambda s, s_next: torch.randn(x_T.shape, generator=generator, dtype=x_T.dtype)
    out = fn(model, x_T / a_T, sigmas.to(x_T.dtype), disable=True, **extra, **kw)
    last = sigmas[-1]
    if float(last) > 0:
        out = out * float(sde.coefficients(_time_of_level(sde, last)).alpha)
    return out, calls[0]


# ---------------------------------------------------------------------------------------- diffusers
def vp_betas(sde) -> torch.Tensor:
    """Betas of the discrete chain with ``alphas_cumprod[k] = alpha((k + 1) T / 1000)^2`` (float64)."""
    t = torch.arange(1, NUM_TRAIN + 1, dtype=torch.float64) * sde.T / NUM_TRAIN
    acp = sde.coefficients(t).alpha ** 2
    prev = torch.cat([torch.ones(1, dtype=torch.float64), acp[:-1]])
    return 1.0 - acp / prev


def diffusers_scheduler(cls_name: str, sde, **config):
    import diffusers

    cls = getattr(diffusers, cls_name)
    return cls(num_train_timesteps=NUM_TRAIN, trained_betas=vp_betas(sde).numpy(), **config)


def diffusers_run(sched, oracle, sde, x_T: torch.Tensor, num_inference_steps: int, generator=None,
                  times: torch.Tensor | None = None, sigmas: torch.Tensor | None = None):
    """Sample with a diffusers scheduler (``prediction_type="epsilon"``) from the prior draw ``x_T``;
    returns the samples (x-scale) and the NFE.  ``times``/``sigmas`` (float64) replace the scheduler's
    own time of each model call and its ``sigmas`` (to line the grids up with fokker's exactly)."""
    sched.set_timesteps(num_inference_steps)
    if sigmas is not None:
        sched.sigmas = sigmas.double()
    euler_like = hasattr(sched, "init_noise_sigma") and float(sched.init_noise_sigma) > 1.5
    a_T = float(sde.coefficients(torch.tensor(sde.T, dtype=torch.float64)).alpha)
    x = x_T / a_T if euler_like else x_T.clone()
    nfe = 0
    for i, k in enumerate(sched.timesteps):
        inp = sched.scale_model_input(x, k)
        t = (float(k) + 1.0) * sde.T / NUM_TRAIN if times is None else float(times[i])
        tt = torch.full((x.shape[0],), t, dtype=x.dtype)
        c = sde.coefficients(tt)
        eps = -c.sigma[:, None].to(x) * oracle.score(inp.to(x.dtype), tt)
        nfe += 1
        kwargs = {"generator": generator} if generator is not None else {}
        try:
            x = sched.step(eps.to(x.dtype), k, x, **kwargs).prev_sample
        except TypeError:
            x = sched.step(eps.to(x.dtype), k, x).prev_sample
    return x.to(x_T.dtype), nfe
