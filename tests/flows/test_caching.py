"""Caching follows torch's contract: nothing is cached by default, ``with_cache(1)`` opts in.

The old forward cache (keyed on the output tensor) made ``t.inv(t(x))`` return ``x`` without
running the inverse, so tests of inverses were satisfied by the cache; the old inverse cache
made ``log_abs_det_jacobian`` after ``inv`` return the inverse's log-det instead of the
forward one.  Counters and deliberately broken layers show that every call now computes.
"""

from __future__ import annotations

import pytest
import torch

from fokker import flows
from fokker.errors import ParameterError, ShapeError
from fokker.tolerances import assert_close, tolerance

from flows_testlib import perturb

F64 = torch.float64


class Counting(flows.IAF):
    """An IAF layer that counts its calls (and can have a broken inverse / forward log-det)."""

    def __init__(self, features: int, broken_inverse: bool = False, broken_ladj: bool = False, **kw) -> None:
        super().__init__(features, (8,), **kw)
        self.calls = {"call": 0, "call_and_ladj": 0, "inverse_and_ladj": 0, "ladj": 0}
        self.broken_inverse, self.broken_ladj = broken_inverse, broken_ladj

    def call(self, x, context=None):
        self.calls["call"] += 1
        return super().call(x, context)

    def call_and_ladj(self, x, context=None):
        self.calls["call_and_ladj"] += 1
        return super().call_and_ladj(x, context)

    def inverse_and_ladj(self, y, context=None):
        self.calls["inverse_and_ladj"] += 1
        x, ladj = super().inverse_and_ladj(y, context)
        return (x + 1.0, ladj) if self.broken_inverse else (x, ladj)

    def ladj(self, x, y, context=None):
        self.calls["ladj"] += 1
        return super().ladj(x, y, context) + (0.5 if self.broken_ladj else 0.0)


def test_inverse_of_an_output_is_computed_not_cached() -> None:
    layer = perturb(Counting(3, broken_inverse=True)).double()
    x = torch.randn(5, 3, dtype=F64)
    x_back = layer.inv(layer(x))
    assert layer.calls["inverse_and_ladj"] == 1
    # the broken inverse shows: the old cache returned x itself here
    assert_close(x_back, x + 1.0)
    assert layer._cache_size == 0 and layer.with_cache(0) is layer


def test_log_abs_det_jacobian_after_inv_is_the_forward_log_det() -> None:
    layer = perturb(Counting(3, broken_ladj=True)).double()
    y = torch.randn(5, 3, dtype=F64)
    x = layer.inv(y)
    # the forward path (deliberately off by 0.5) is what runs, not the inverse's log-det negated
    _, ladj_inv = flows.IAF.inverse_and_ladj(layer, y)
    assert_close(layer.log_abs_det_jacobian(x, y), -ladj_inv + 0.5, loose=True)
    assert_close(layer.inv.log_abs_det_jacobian(y, x), ladj_inv - 0.5, loose=True)


def test_with_cache_follows_torch_semantics() -> None:
    layer = perturb(Counting(3)).double()
    cached = layer.with_cache(1)
    assert cached is not layer and cached._cache_size == 1
    x = torch.randn(4, 3, dtype=F64)
    y = cached(x)
    assert cached.inv(y) is x and layer.calls["inverse_and_ladj"] == 0
    assert cached(x) is y and layer.calls["call"] == 1
    # parameters are the layer's (a view), and a new input is computed
    x2 = torch.randn(4, 3, dtype=F64)
    assert_close(cached(x2), layer(x2))
    with pytest.raises(ParameterError, match="cache_size"):
        layer.with_cache(2)
    cond = flows.MAF(3, (8,), context_dim=2)
    with pytest.raises(ShapeError, match="condition"):
        cond.with_cache(1)
    c = torch.randn(2)
    ccached = cond.condition(c).with_cache(1)
    yc = ccached(x.float())
    assert ccached.inv(yc) is not None and ccached._cache_size == 1


def test_distribution_log_prob_one_inverse_pass_per_layer_no_cache_by_default() -> None:
    layers = [perturb(Counting(3)), perturb(Counting(3, rank=torch.tensor([3, 1, 2])))]
    flow = flows.Flow(layers, 3).double()
    d = flow.distribution()
    y = d.rsample((6,))
    for layer in layers:
        layer.calls.update({k: 0 for k in layer.calls})
    lp = d.log_prob(y)
    assert_close(lp, flow.log_prob(y), loose=True)
    # every layer inverted, once, and its log-det taken from that same pass
    for layer in layers:
        assert layer.calls["inverse_and_ladj"] == 2  # d.log_prob and flow.log_prob
        assert layer.calls["ladj"] == 0


def test_distribution_cache_size_one_scores_rsamples_without_inverting() -> None:
    """The SVI-guide use: log_prob of the value just drawn by rsample needs no inversion (IAF)."""
    layers = [perturb(Counting(3)), perturb(Counting(3, rank=torch.tensor([3, 1, 2])))]
    flow = flows.Flow(layers, 3).double()
    d = flow.distribution(cache_size=1)
    y = d.rsample((6,))
    for layer in layers:
        layer.calls.update({k: 0 for k in layer.calls})
    lp = d.log_prob(y)
    assert all(layer.calls["inverse_and_ladj"] == 0 and layer.calls["ladj"] == 1 for layer in layers)
    assert_close(lp, flow.log_prob(y), loose=True)
    # a value the distribution did not produce is inverted
    other = torch.randn(6, 3, dtype=F64)
    assert_close(d.log_prob(other), flow.log_prob(other), loose=True)
    with pytest.raises(ParameterError, match="cache_size"):
        flow.distribution(cache_size=3)


def test_no_stale_value_after_an_optimizer_step() -> None:
    torch.manual_seed(0)
    flow = flows.iaf(3, 2, (8,)).double()
    d = flow.distribution()
    y = d.rsample((8,)).detach()
    before = d.log_prob(y).detach()
    opt = torch.optim.SGD(flow.parameters(), lr=0.5)
    (-d.log_prob(y).mean()).backward()
    opt.step()
    after = d.log_prob(y)
    assert_close(after, flow.log_prob(y))
    # the step changed the density, and log_prob saw it
    assert (after - before).abs().max() > 100 * tolerance(F64, loose=True).atol
