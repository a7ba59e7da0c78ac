"""Energy-based models and their trainers.

* :class:`EnergyModel` — a network ``E`` as an unnormalized :class:`~fokker.targets.Target`
  (``log_prob = -E``); :class:`GaussianEnergy` — the quadratic energy with exact ``log Z``.
* objectives (``objective(model, x) -> loss``): score matching :func:`exact`,
  :func:`sliced`, :func:`denoising` (Hyvarinen 2005; Song et al. 2019; Vincent 2011;
  seed 002 eqs. 21-23); maximum likelihood with
  Langevin/MALA negatives :func:`contrastive_divergence` and
  :func:`persistent_contrastive_divergence` (replay buffer, Du & Mordatch 2019);
  :func:`nce` with a learned ``log Z`` (Gutmann & Hyvarinen 2010; seed 002 eqs. 37-39).
* :class:`EBM` — energy + objective + sampler; trains with ``fokker.train.fit``.
* :class:`RBM` — Bernoulli-Bernoulli restricted Boltzmann machine: free energy,
  block Gibbs, CD-k / PCD, exact ``log Z`` (enumeration) and AIS.
* :class:`DBM` — deep Boltzmann machine (Salakhutdinov & Hinton 2009): mean-field +
  persistent-chain training, exact ``log Z`` through its bipartite RBM form, AIS.

The per-point objective functions live in :mod:`fokker.ebm.score_matching`.
"""

from __future__ import annotations

from .contrastive import (
    ContrastiveDivergence,
    PersistentContrastiveDivergence,
    ReplayBuffer,
    contrastive_divergence,
    persistent_contrastive_divergence,
)
from .dbm import DBM
from .energy import EnergyModel, GaussianEnergy
from .langevin import langevin_chain
from .model import EBM, make_objective
from .nce import NCE, nce
from .objective import (
    DenoisingScoreMatching,
    ExactScoreMatching,
    Objective,
    SlicedScoreMatching,
    denoising,
    exact,
    sliced,
)
from .rbm import RBM, ais_betas, base_rate_bias
from .score_matching import (
    denoising_constant,
    denoising_score_matching,
    exact_score_matching,
    sliced_score_matching,
)

__all__ = [
    "EnergyModel",
    "GaussianEnergy",
    "EBM",
    "make_objective",
    "Objective",
    "ExactScoreMatching",
    "SlicedScoreMatching",
    "DenoisingScoreMatching",
    "ContrastiveDivergence",
    "PersistentContrastiveDivergence",
    "ReplayBuffer",
    "NCE",
    "exact",
    "sliced",
    "denoising",
    "contrastive_divergence",
    "persistent_contrastive_divergence",
    "nce",
    "exact_score_matching",
    "sliced_score_matching",
    "denoising_score_matching",
    "denoising_constant",
    "langevin_chain",
    "RBM",
    "DBM",
    "ais_betas",
    "base_rate_bias",
]
