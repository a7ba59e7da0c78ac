"""Networks (shapes, dtypes, gradients, conditioning) and the latent-diffusion wrapper."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions.transforms import AffineTransform

from fokker.diffusion import DiffusionModel, LatentDiffusion, ResidualTimeMLP, UNet
from fokker.errors import ParameterError, ShapeError
from fokker.tolerances import assert_close

from _diffusion_oracle import OracleNet


@pytest.mark.parametrize("embedding", ["sinusoidal", "fourier"])
def test_residual_time_mlp(embedding, device):
    net = ResidualTimeMLP(3, hidden=32, depth=2, embedding=embedding, num_classes=4).to(device).double()
    x = torch.randn(5, 3, dtype=torch.float64, device=device)
    t = torch.rand(5, dtype=torch.float64, device=device)
    out = net(x, t, torch.tensor([0, 1, 2, 3, 4], device=device))
    assert out.shape == x.shape and out.dtype == torch.float64
    out.square().sum().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad and p is not net.label.table.weight)
    with pytest.raises(ShapeError, match="t"):
        net(x, t[:2])


@pytest.mark.parametrize("hw,mult", [(8, (1, 2)), (28, (1, 2, 2))])
def test_unet(hw, mult):
    net = UNet(in_channels=1, channels=8, channel_mult=mult, num_classes=10)
    x = torch.randn(2, 1, hw, hw)
    out = net(x, torch.rand(2), torch.tensor([3, 10]))
    assert out.shape == x.shape
    # the zero-initialized output layer gets gradients and, after a step, the input matters
    out.sum().backward()
    assert net.out[-1].weight.grad is not None and float(net.out[-1].weight.grad.abs().sum()) > 0
    with pytest.raises(ShapeError, match="divisible"):
        net(torch.randn(2, 1, 6, 6) if len(mult) == 3 else torch.randn(2, 1, 7, 7), torch.rand(2))
    with pytest.raises(ShapeError, match="shape"):
        net(torch.randn(2, 3, hw, hw), torch.rand(2))


def test_unet_time_dependence_and_double():
    net = UNet(channels=8, attention=False).double()
    torch.nn.init.normal_(net.out[-1].weight)
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    a = net(x, torch.full((2,), 0.1, dtype=torch.float64))
    b = net(x, torch.full((2,), 0.9, dtype=torch.float64))
    assert a.dtype == torch.float64 and not torch.allclose(a, b)


def test_model_trains_with_fit(vpsde):
    """A few Adam steps through fokker.train.fit lower the DSM loss of an MLP on a 2-D Gaussian."""
    from fokker.train import fit

    data = torch.randn(2048, 2) * 0.5 + torch.tensor([1.0, -1.0])
    model = DiffusionModel(vpsde, ResidualTimeMLP(2, hidden=64, depth=2), "eps")
    res = fit(model, data, steps=150, batch_size=256, lr=3e-3, progress=False, ema=0.99)
    assert sum(res.losses[-20:]) / 20 < sum(res.losses[:20]) / 20
    assert res.ema is not None


def test_latent_diffusion_affine_encoder(gmm3, vpsde):
    """Encoder z = (x - 1)/2 (a bijection): log p(x) = log p_Z(z) - d log 2, decoder = inverse."""
    enc = AffineTransform(loc=-0.5, scale=0.5)  # z = 0.5 x - 0.5
    latent = DiffusionModel(vpsde, OracleNet(gmm3, "eps"), "eps")
    ldm = LatentDiffusion(latent, enc)
    z = gmm3.sample(6, latent.t_min)
    x = enc.inv(z)
    prior = lambda u: gmm3.log_prob(u, torch.ones(u.shape[0], dtype=u.dtype))  # noqa: E731
    lp = ldm.log_prob(x, rtol=1e-8, atol=1e-8, prior_log_prob=prior)
    exact = gmm3.log_prob(z, torch.full((6,), latent.t_min, dtype=torch.float64)) + 2 * math.log(0.5)
    assert_close(lp, exact, loose=True)  # an ODE solve at 1e-8
    g = lambda: torch.Generator().manual_seed(2)  # noqa: E731
    xs = ldm.sample((5,), sampler="ddim", num_steps=5, generator=g())
    assert_close(xs, enc.inv(latent.sample((5,), sampler="ddim", num_steps=5, generator=g())))  # D(z)
    torch.manual_seed(3)
    loss = ldm.loss(x)
    torch.manual_seed(3)
    assert_close(loss, latent.loss(enc(x)))  # the latent model's loss on E(x)
    with pytest.raises(ParameterError, match="decoder"):
        LatentDiffusion(latent, lambda u: u)
