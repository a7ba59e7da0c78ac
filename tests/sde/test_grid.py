"""The one time grid (fokker.sde.time_grid) against each spacing's defining formula."""

from __future__ import annotations

import math

import pytest
import torch

from fokker import sde
from fokker.errors import DomainError, ParameterError
from fokker.sde import SPACINGS, time_grid
from fokker.tolerances import assert_close


@pytest.mark.parametrize("start,end", [(0.0, 2.0), (2.0, 0.5)])
def test_uniform_and_quadratic(start: float, end: float) -> None:
    g = time_grid(8, start, end)
    assert_close(g, torch.tensor([start + (end - start) * k / 8 for k in range(9)], dtype=torch.float64))
    q = time_grid(8, start, end, "quadratic")
    # quadratic: the distance to `end` falls like (1 - k/N)^2
    assert_close(q, torch.tensor([end + (start - end) * (1 - k / 8) ** 2 for k in range(9)], dtype=torch.float64))


def test_cosine_is_the_dds_grid() -> None:
    """Step k proportional to cos^4(pi/2 (k/K + s)/(1 + s)), summing to T (Vargas et al. 2023 code)."""
    K, T, s = 16, 6.4, 0.008
    w = [math.cos((k / K + s) / (1 + s) * math.pi / 2) ** 4 for k in range(K)]
    expected = [0.0]
    for wk in w:
        expected.append(expected[-1] + T * wk / sum(w))
    g = time_grid(K, 0.0, T, "cosine")
    assert_close(g, torch.tensor(expected, dtype=torch.float64), scale=T)
    assert bool((g.diff()[1:] < g.diff()[:-1]).all())  # finer near `end`
    # the reversed direction is the mirror image
    assert_close(time_grid(K, T, 0.0, "cosine"), T - g, scale=T)


@pytest.mark.parametrize("sde_obj", [sde.VPSDE(), sde.VESDE(), sde.VPSDE.cosine(), sde.SubVPSDE()], ids=["vp", "ve", "cos", "subvp"])
def test_log_snr_and_karras_spacings(sde_obj) -> None:
    g = time_grid(10, spacing="log_snr", sde=sde_obj)
    lo, T = sde_obj.score_domain()
    assert float(g[0]) == T and float(g[-1]) == lo
    lam = sde_obj.log_snr(g)
    assert_close(lam.diff(), lam.diff().mean().expand(10), loose=True)
    k = time_grid(10, spacing="karras", sde=sde_obj)
    r = torch.exp(-0.5 * sde_obj.log_snr(k)) ** (1 / 7)  # (sigma / alpha)^(1/rho)
    assert_close(r.diff(), r.diff().mean().expand(10), loose=True)


def test_time_at_log_snr_inverts_log_snr() -> None:
    vp = sde.VPSDE()
    t = torch.linspace(0.002, 0.99, 9, dtype=torch.float64)
    assert_close(vp.time_at_log_snr(vp.log_snr(t)), t)


def test_score_domain() -> None:
    assert sde.VPSDE().score_domain() == pytest.approx((1e-3, 1.0))  # sigma(0) = 0: cut
    assert sde.VESDE().score_domain() == (0.0, 1.0)  # sigma(0) = sigma_min > 0: kept


def test_bad_arguments() -> None:
    with pytest.raises(ParameterError, match="num_steps"):
        time_grid(0, 0.0, 1.0)
    with pytest.raises(ParameterError, match="spacing"):
        time_grid(4, 0.0, 1.0, "cubic")
    with pytest.raises(ParameterError, match="needs the sde"):
        time_grid(4, 1.0, 0.1, "log_snr")
    with pytest.raises(ParameterError, match="start and end"):
        time_grid(4)
    with pytest.raises(ParameterError, match="differ"):
        time_grid(4, 1.0, 1.0)
    with pytest.raises(DomainError, match="must lie in"):
        time_grid(4, 1.0, -0.5, sde=sde.VPSDE())
    with pytest.raises(DomainError, match="finite log-SNR"):
        time_grid(4, 1.0, 0.0, "log_snr", sde=sde.VPSDE())
    assert set(SPACINGS) == {"uniform", "quadratic", "cosine", "log_snr", "karras"}


def test_schedule_protocol() -> None:
    for obj in (sde.VPSDE(), sde.VESDE(), sde.OrnsteinUhlenbeck(), sde.BrownianMotion(), sde.SubVPSDE()):
        assert isinstance(obj, sde.Schedule)
        c = obj.coefficients(torch.tensor([0.3, 0.7], dtype=torch.float64))
        assert_close(c.alpha, obj.alpha(torch.tensor([0.3, 0.7], dtype=torch.float64)))
        assert_close(c.f, obj.f(torch.tensor([0.3, 0.7], dtype=torch.float64)))
