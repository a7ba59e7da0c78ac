"""Score-based generative models: parameterizations, DSM losses, samplers, exact likelihood,
flow matching, guidance, posterior sampling and latent diffusion (see ``docs/diffusion.md``)."""

from __future__ import annotations

from . import anomaly, likelihood, nets, parameterization, samplers
from .posterior import dps, posterior_score
from .anomaly import anomaly_score, partial_diffusion
from .flow_matching import FlowMatching, ot_pairing
from .guidance import classifier_free_guidance, classifier_guidance
from .latent import LatentDiffusion
from .likelihood import LikelihoodResult, cnf_log_prob
from .losses import LogSNRTimeSampler, dsm_loss
from .model import DiffusionModel
from .nets import ResidualTimeMLP, TimeEmbedding, UNet
from .parameterization import convert, to_eps, to_score, to_v, to_x0
from .samplers import SAMPLERS, from_denoiser, from_eps, get_sampler

__all__ = [
    "DiffusionModel",
    "FlowMatching",
    "LatentDiffusion",
    "ResidualTimeMLP",
    "UNet",
    "TimeEmbedding",
    "SAMPLERS",
    "get_sampler",
    "from_denoiser",
    "from_eps",
    "convert",
    "to_x0",
    "to_eps",
    "to_score",
    "to_v",
    "dsm_loss",
    "LogSNRTimeSampler",
    "cnf_log_prob",
    "LikelihoodResult",
    "classifier_free_guidance",
    "classifier_guidance",
    "dps",
    "posterior_score",
    "ot_pairing",
    "anomaly_score",
    "partial_diffusion",
    "anomaly",
    "likelihood",
    "nets",
    "parameterization",
    "samplers",
]
