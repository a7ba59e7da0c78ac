"""fokker.divergence against the trace of the full autograd Jacobian."""

from __future__ import annotations

import torch

from fokker.divergence import divergence_exact, divergence_hutchinson, rademacher


def _field(x: torch.Tensor) -> torch.Tensor:
    # couples every event coordinate with every other: a dense Jacobian
    return torch.tanh(x * x.flatten(-2).sum(-1)[..., None, None]) + x.roll(1, -1)


def _jacobian_trace(x: torch.Tensor) -> torch.Tensor:
    out = []
    for xi in x.reshape(-1, *x.shape[-2:]):
        J = torch.autograd.functional.jacobian(_field, xi).reshape(xi.numel(), xi.numel())
        out.append(J.trace())
    return torch.stack(out).reshape(x.shape[:-2])


def test_exact_divergence_equals_jacobian_trace_with_two_batch_and_two_event_dims():
    x = torch.randn(3, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    div = divergence_exact(_field(x), x, event_dim=2)
    torch.testing.assert_close(div, _jacobian_trace(x.detach()), rtol=1e-10, atol=1e-10)


def test_hutchinson_is_unbiased_and_exact_for_a_diagonal_jacobian():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 5, dtype=torch.float64, requires_grad=True)
    out = _field(x)
    probes = torch.stack([rademacher(x, g) for _ in range(500)])
    est = torch.stack([divergence_hutchinson(out, x, p, event_dim=2) for p in probes])
    exact = _jacobian_trace(x.detach())
    se = est.std(0) / 500**0.5
    assert ((est.mean(0) - exact).abs() < 4 * se).all()
    # elementwise field: J is diagonal and every Rademacher probe gives the trace exactly
    y = x.sin()
    torch.testing.assert_close(divergence_hutchinson(y, x, probes[0], event_dim=2), x.detach().cos().flatten(1).sum(-1))
