"""The fused rollout (one network time pass per rollout, closed-form kernel ratios) against the
kernel hooks it replaces: same log weights, same gradients, for both losses."""

from __future__ import annotations

import pytest
import torch

from fokker.samplers import CMCD, DDS, DIS, MCD, PIS, PISGradNet
from fokker.samplers.base import DiffusionSampler
from fokker.tolerances import assert_close

from .conftest import make_gaussian


def _perturbed(kind, device):
    target = make_gaussian(device)
    cls = {"DDS": DDS, "PIS": PIS, "DIS": DIS, "CMCD": CMCD, "MCD": MCD}[kind]
    s = cls(target, num_steps=7, width=8).to(device, torch.float64)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in s.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g, dtype=p.dtype).to(device))
    return s


def _generic_step(s, k, y, ev, noise, ctx, detach):
    return DiffusionSampler.step(s, k, y, ev, noise, ctx, detach)


@pytest.mark.parametrize("kind", ["DDS", "PIS", "DIS", "CMCD", "MCD"])
@pytest.mark.parametrize("detach", [False, True])
def test_fused_step_equals_kernel_hooks(kind, detach, device):
    s = _perturbed(kind, device)
    results = []
    for fused in (True, False):
        s.zero_grad()
        if not fused:
            s.step = lambda *a, _s=s: _generic_step(_s, *a)  # noqa: E731
        _, lw = s.rollout(32, detach=detach, generator=torch.Generator(device=device).manual_seed(5))
        loss = lw.var() if detach else -lw.mean()
        loss.backward()
        results.append((lw.detach(), [p.grad.clone() for p in s.parameters() if p.requires_grad]))
    (lw_f, g_f), (lw_g, g_g) = results
    assert_close(lw_f, lw_g, scale=float(lw_g.abs().max()))
    for a, b in zip(g_f, g_g):
        assert_close(a, b, scale=float(b.abs().max()) + 1.0)


def test_time_terms_reproduce_forward(device):
    net = PISGradNet(3, 8, 2).to(device, torch.float64)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype).to(device))
    x = torch.randn(5, 3, dtype=torch.float64, generator=g).to(device)
    feat = torch.randn(5, 3, dtype=torch.float64, generator=g).to(device)
    t = torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64, device=device)
    code_bias, gain, weight_x = net.time_terms(t)
    for i in range(3):
        # written out: the first layer on the concatenation [x, time code]
        emb = net.embed(t[i].reshape(1))
        h = net.state_net(torch.cat([x, net.time_code(emb).expand(5, -1)], -1))
        expected = (h + net.time_gain(emb) * feat.clamp(-net.feature_clip, net.feature_clip)).clamp(-1e4, 1e4)
        assert_close(net.forward_with_time_terms(x, code_bias[i], gain[i], weight_x, feat), expected)
        assert_close(net(x, t[i], feat), expected)
