r"""Guided scores: classifier-free guidance and classifier guidance.

Both return a plain score callable ``(x, t) -> score`` usable by every sampler.

* Classifier-free guidance (Ho & Salimans 2022, *Classifier-free diffusion guidance*, eq. 6, whose
  ``w`` is our ``w - 1``) with guidance scale :math:`w \ge 0`:

  .. math:: \tilde s(x, t) = s(x, t \mid \varnothing) + w\,\big(s(x, t \mid y) - s(x, t \mid \varnothing)\big),

  so ``w = 0`` is the unconditional model, ``w = 1`` the conditional one and ``w > 1``
  sharpens towards :math:`p_t(x)\,p_t(y|x)^w`.  The network learns both scores with label
  dropout (``DiffusionModel(label_dropout=...)``); the null label is ``num_classes``.
* Classifier guidance (Dhariwal & Nichol 2021, *Diffusion models beat GANs on image synthesis*,
  sec. 4 and Algorithm 1; seed 004 "conditional sampling"): Bayes' rule :math:`\nabla\log p_t(x|y) = \nabla\log p_t(x) + \nabla\log p_t(y|x)` with any
  differentiable noisy classifier ``log_prob_y(x, t, y) -> (batch,)`` and scale ``w``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import ParameterError

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

__all__ = ["check_guidance_scale", "classifier_free_guidance", "classifier_guidance"]


def check_guidance_scale(scale: float) -> float:
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not float(scale) >= 0:
        raise ParameterError(f"guidance scale must be a number >= 0; got {scale!r}")
    return float(scale)


def classifier_free_guidance(model: object, y: torch.Tensor, scale: float) -> ScoreFn:
    """CFG score of a conditional :class:`~fokker.diffusion.DiffusionModel` for labels ``y`` (batch,)
    (Ho & Salimans 2022, eq. 6; see the module docstring).

    Costs two network evaluations per call (one for ``scale`` 0 or 1).
    """
    w = check_guidance_scale(scale)
    null = getattr(model, "num_classes", None)
    if null is None:
        raise ParameterError("classifier-free guidance needs a conditional model (num_classes set)")

    def score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if w == 1.0:
            return model.predict(x, t, "score", y)  # type: ignore[attr-defined]
        s_u = model.predict(x, t, "score", torch.full_like(y, null))  # type: ignore[attr-defined]
        if w == 0.0:
            return s_u
        s_c = model.predict(x, t, "score", y)  # type: ignore[attr-defined]
        return s_u + w * (s_c - s_u)

    return score


def classifier_guidance(
    score_fn: ScoreFn,
    log_prob_y: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    y: torch.Tensor,
    scale: float = 1.0,
) -> ScoreFn:
    r"""Score :math:`s(x, t) + w\,\nabla_x \log p_t(y \mid x)` from a differentiable classifier
    (Dhariwal & Nichol 2021, sec. 4; Song et al. 2021, eq. 14 for the conditional reverse SDE)."""
    w = check_guidance_scale(scale)

    def score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(log_prob_y(xg, t, y).sum(), xg)
        return score_fn(x, t) + w * g

    return score
