"""flows.fit_to_target: the reverse-KL loss against the closed-form Gaussian KL, every loss reaching the
exact optimum of a family that contains the target, log Z within its standard error with
ELBO <= log Z <= EUBO, and bad input."""

from __future__ import annotations

import math

import pytest
import torch

from fokker import flows, targets
from fokker.errors import DeviceDtypeError, NonFiniteError, ParameterError, ShapeError
from fokker.tolerances import Z_SCORE

D = 3
MU = torch.tensor([-1.0, 0.5, 2.0], dtype=torch.float64)
SD = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)


def _gaussian(device: torch.device) -> targets.GaussianMixture:
    """N(MU, diag SD^2) with exact samples and log Z = 0."""
    return targets.GaussianMixture(MU[None].to(device), torch.diag(SD).to(device)[None])


def _affine_flow(device: torch.device) -> flows.Flow:
    """Diagonal Gaussians N(b, diag e^{2s}): a family that contains the target."""
    return flows.Flow([flows.ActNorm(D)], D).to(device, torch.float64)


def test_kl_loss_is_the_closed_form_reverse_kl(device: torch.device) -> None:
    """At q = N(0, I) the loss of the first iteration (lr = 0) estimates KL(q || pi) - log Z, written out for
    diagonal Gaussians: sum log(s_p / s_q) + (s_q^2 + (m_q - m_p)^2) / (2 s_p^2) - 1/2."""
    flow = _affine_flow(device)
    est = flows.fit_to_target(flow, _gaussian(device), 200, lr=0.0, batch_size=500, num_samples=8, seed=0, progress=False)
    kl = float((torch.log(SD) + (1 + MU**2) / (2 * SD**2) - 0.5).sum())
    losses = est.details["losses"].double()
    assert abs(float(losses.mean()) - kl) <= Z_SCORE * float(losses.std()) / math.sqrt(losses.numel())
    # a wrong sign of the log-det term (log q + ... ) would be off by 2 sum log s_q + ...: check it has power
    assert float(losses.std()) / math.sqrt(losses.numel()) < 0.05 * kl


@pytest.mark.parametrize("loss", ["kl", "forward_kl", "alpha"])
def test_every_loss_reaches_the_target_in_a_family_that_contains_it(loss: str, device: torch.device) -> None:
    """From N(0, I) the diagonal-Gaussian flow converges to N(MU, SD^2): the parameters within a few
    per cent, ESS near 1, log Z = 0 within Z_SCORE standard errors, ELBO <= log Z <= EUBO."""
    flow = _affine_flow(device)
    est = flows.fit_to_target(flow, _gaussian(device), 400, loss=loss, lr=0.05, batch_size=256, num_samples=4000,
                              seed=1, progress=False)
    layer = flow.transforms[0]
    assert float((layer.loc.detach().cpu() - MU).abs().max()) < 0.1
    assert float((layer.log_scale.detach().exp().cpu() / SD - 1).abs().max()) < 0.1
    assert est.ess > 0.97
    assert abs(est.log_Z) <= Z_SCORE * est.stderr
    assert est.elbo <= est.log_Z <= est.eubo
    assert est.eubo - est.elbo < 0.05  # both near log Z = 0 when q = pi
    assert est.samples.shape == (4000, D) and est.num_target_evals == 400 * 256 + 2 * 4000


def test_log_z_of_an_unnormalized_target_from_an_imperfect_flow() -> None:
    """A flow that cannot represent the target (a diagonal Gaussian for a correlated one, scaled by e^c):
    the estimate is still within Z_SCORE standard errors of c (importance sampling is exact in mean)."""
    c = 2.5
    # correlation 0.4: the reverse-KL fit N(0, 0.84 I) keeps E_q[w^2] finite (2 Sigma^-1 - Sigma_q^-1 > 0)
    cov = torch.tensor([[1.0, 0.4], [0.4, 1.0]], dtype=torch.float64)
    normal = torch.distributions.MultivariateNormal(torch.zeros(2, dtype=torch.float64), cov)
    target = targets.CallableTarget(lambda x: normal.log_prob(x) + c, dim=2)
    flow = flows.Flow([flows.ActNorm(2)], 2).double()
    est = flows.fit_to_target(flow, target, 300, lr=0.05, num_samples=20000, seed=2, progress=False)
    assert 0.5 < est.ess < 0.97  # visibly imperfect, so the check below has something to check
    assert abs(est.log_Z - c) <= Z_SCORE * est.stderr
    assert est.elbo < c


def test_fit_to_target_bad_input() -> None:
    target = _gaussian(torch.device("cpu"))
    with pytest.raises(ShapeError, match=r"event_shape \(2,\) does not match the target's dimension \(3,\)"):
        flows.fit_to_target(flows.Flow([flows.ActNorm(2)], 2).double(), target, 1, progress=False)
    with pytest.raises(DeviceDtypeError, match=r"the flow is torch.float32.*target 'gaussian_mixture' is torch.float64"):
        flows.fit_to_target(flows.Flow([flows.ActNorm(D)], D), target, 1, progress=False)
    with pytest.raises(ParameterError, match="loss must be one of"):
        flows.fit_to_target(_affine_flow(torch.device("cpu")), target, 1, loss="fkl", progress=False)
    with pytest.raises(ParameterError, match="alpha must be a number > 1"):
        flows.fit_to_target(_affine_flow(torch.device("cpu")), target, 1, loss="alpha", alpha=0.5, progress=False)
    def half(x: torch.Tensor) -> torch.Tensor:  # a plain callable: NaN on half the space
        return torch.where(x[..., 0] > 0, -0.5 * (x * x).sum(-1), torch.nan)

    with pytest.raises(NonFiniteError, match=r"'kl' loss is nan at iteration 0"):
        flows.fit_to_target(_affine_flow(torch.device("cpu")), half, 5, seed=0, progress=False)
    with pytest.raises(NonFiniteError, match="returned NaN"):  # a Target says so itself
        flows.fit_to_target(_affine_flow(torch.device("cpu")), targets.CallableTarget(half, dim=D), 5, seed=0, progress=False)
