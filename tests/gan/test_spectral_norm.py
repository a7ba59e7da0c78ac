"""fokker.nets.SpectralNormLinear: power iteration against torch.linalg.svdvals; Lipschitz discriminators."""

from __future__ import annotations

import pytest
import torch

from fokker import gan
from fokker.errors import ParameterError
from fokker.nets import SpectralNormLinear
from fokker.tolerances import assert_close, tolerance


def _layer(mode: str, coeff: float = 1.0, seed: int = 0, dtype=torch.float64) -> SpectralNormLinear:
    torch.manual_seed(seed)
    return SpectralNormLinear(6, 4, coeff, mode=mode, generator=torch.Generator().manual_seed(seed)).to(dtype)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_power_iteration_converges_to_the_largest_singular_value(seed: int, dtype) -> None:
    layer = _layer("exact", seed=seed, dtype=dtype)
    with torch.no_grad():
        layer.weight.mul_(3.0)
    layer.power_iteration(500)
    sv = torch.linalg.svdvals(layer.weight.detach().double())
    assert_close(layer.spectral_norm().detach(), sv[0].to(dtype), loose=True)
    # the estimate u^T W v never exceeds the norm (a lower bound at every iteration)
    fresh = _layer("exact", seed=seed + 10, dtype=dtype)
    for _ in range(5):
        assert float(fresh.spectral_norm()) <= float(torch.linalg.svdvals(fresh.weight.detach().double())[0]) * (1 + 1e-6)
        fresh.power_iteration(1)


def test_exact_and_bound_modes_rescale_to_the_coefficient() -> None:
    exact = _layer("exact", coeff=0.7)
    with torch.no_grad():
        exact.weight.mul_(0.1)  # norm below c: "exact" scales it up, "bound" leaves it
    exact.power_iteration(500)
    assert_close(torch.linalg.svdvals(exact.normalized_weight().detach())[0], torch.tensor(0.7, dtype=torch.float64),
                 loose=True)
    bound = _layer("bound", coeff=0.7)
    bound.load_state_dict(exact.state_dict())
    assert_close(bound.normalized_weight().detach(), bound.weight.detach())
    with torch.no_grad():
        bound.weight.mul_(100.0)  # a weight change: the next training-mode call iterates once (warm start)
    bound.power_iteration(500)
    assert_close(torch.linalg.svdvals(bound.normalized_weight().detach())[0], torch.tensor(0.7, dtype=torch.float64),
                 loose=True)


def test_gradient_of_the_estimate_is_u_v_transpose() -> None:
    """With u, v held fixed (Miyato et al. 2018, eq. 12): d(u^T W v)/dW = u v^T."""
    layer = _layer("exact")
    (g,) = torch.autograd.grad(layer.spectral_norm(), layer.weight)
    assert_close(g, torch.outer(layer.u, layer.v))


def test_power_iteration_runs_only_after_a_weight_change_in_training_mode() -> None:
    layer = _layer("exact")
    u0 = layer.u.clone()
    layer.train()
    layer(torch.randn(3, 6, dtype=torch.float64))
    assert torch.equal(layer.u, u0)  # weight unchanged since the construction's iteration
    with torch.no_grad():
        layer.weight.add_(torch.randn_like(layer.weight))
    layer.eval()
    layer(torch.randn(3, 6, dtype=torch.float64))
    assert torch.equal(layer.u, u0)  # eval mode: frozen
    layer.train()
    layer(torch.randn(3, 6, dtype=torch.float64))
    assert not torch.equal(layer.u, u0)


def test_spectrally_normalised_discriminator_is_one_lipschitz() -> None:
    torch.manual_seed(0)
    disc = gan.Discriminator(3, hidden=(32, 32), spectral_norm=True).double()
    with torch.no_grad():
        for m in disc.modules():
            if isinstance(m, SpectralNormLinear):
                m.weight.mul_(5.0)
                m.power_iteration(500)
    disc.eval()
    x = torch.randn(400, 3, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(disc(x).sum(), x)
    norms = g.norm(dim=-1)
    assert float(norms.max()) <= 1.0 + tolerance(torch.float64, loose=True).rtol
    plain = gan.Discriminator(3, hidden=(32, 32)).double()
    with torch.no_grad():
        for p in plain.parameters():
            p.mul_(5.0)
    (g2,) = torch.autograd.grad(plain(x).sum(), x)
    assert float(g2.norm(dim=-1).max()) > 2.0  # without normalisation the same network is not


def test_bad_arguments() -> None:
    with pytest.raises(ParameterError, match="mode"):
        SpectralNormLinear(2, 2, mode="clamp")
    with pytest.raises(ParameterError, match="coeff"):
        SpectralNormLinear(2, 2, coeff=0.0)
    with pytest.raises(ParameterError, match="num_iterations"):
        SpectralNormLinear(2, 2).power_iteration(-1)
