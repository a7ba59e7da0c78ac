"""Saving flows as plain data: ``flows.save`` / ``flows.load`` for every builder, loadable with
``torch.load(weights_only=True)`` (whole-module pickles are not)."""

from __future__ import annotations

import pickle

import pytest
import torch
from torch import nn

from fokker import flows
from fokker.errors import ParameterError

from flows_testlib import BUILDERS, UNCONDITIONAL_BUILDERS, perturb

CASES = {
    **{f"{n}|ctx": (lambda n=n: BUILDERS[n](3, 2)) for n in BUILDERS},
    **UNCONDITIONAL_BUILDERS,
    "maf(float64, tanh)": lambda: flows.maf(2, 2, (8,), activation=nn.Tanh).double(),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_save_load_round_trip_every_builder(name: str, tmp_path) -> None:
    torch.manual_seed(0)
    flow = perturb(CASES[name](), scale=0.1)
    ctx = torch.randn(4, flow.context_dim, dtype=flow.base_loc.dtype) if flow.context_dim else None
    x = torch.randn(4, *flow.event_shape, dtype=flow.base_loc.dtype)
    flow.log_prob(x, ctx)  # data-dependent initialisations happen before saving
    flow.eval()
    path = tmp_path / "flow.pt"
    flows.save(flow, path)
    raw = torch.load(path, weights_only=True)  # plain data: torch's safe loader reads it
    assert raw["builder"] == flow.config["builder"] and set(raw) >= {"kwargs", "state_dict", "dtype"}
    loaded = flows.load(path).eval()
    assert type(loaded) is flows.Flow and loaded.config == flow.config
    torch.testing.assert_close(loaded.log_prob(x, ctx), flow.log_prob(x, ctx), rtol=0, atol=0)
    c = None if ctx is None else ctx[0]
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    torch.testing.assert_close(loaded.sample((5,), c, generator=g1), flow.sample((5,), c, generator=g2), rtol=0, atol=0)


def test_whole_module_pickle_is_not_weights_only_but_save_is(tmp_path) -> None:
    flow = flows.nsf(2, 2, (8,))
    torch.save(flow, tmp_path / "module.pt")
    with pytest.raises(pickle.UnpicklingError):
        torch.load(tmp_path / "module.pt", weights_only=True)
    flows.save(flow, tmp_path / "data.pt")
    torch.load(tmp_path / "data.pt", weights_only=True)


def test_save_refuses_what_it_cannot_rebuild(tmp_path) -> None:
    hand_built = flows.Flow([flows.MAF(2, (8,)), flows.Reverse(2)], 2)
    with pytest.raises(ParameterError, match="not made by a fokker builder"):
        flows.save(hand_built, tmp_path / "f.pt")
    # the documented alternative: state dict, rebuilt by the user
    torch.save(hand_built.state_dict(), tmp_path / "sd.pt")
    rebuilt = flows.Flow([flows.MAF(2, (8,)), flows.Reverse(2)], 2)
    rebuilt.load_state_dict(torch.load(tmp_path / "sd.pt", weights_only=True))
    x = torch.randn(3, 2)
    torch.testing.assert_close(rebuilt.log_prob(x), hand_built.log_prob(x), rtol=0, atol=0)

    class Field(nn.Module):
        def forward(self, t, x):
            return -x

    with pytest.raises(ParameterError, match="module passed to the builder"):
        flows.save(flows.ffjord(2, vector_field=Field()), tmp_path / "g.pt")

    class MyAct(nn.Module):
        def forward(self, x):
            return x.tanh()

    with pytest.raises(ParameterError, match="only torch.nn activation classes"):
        flows.save(flows.maf(2, activation=MyAct), tmp_path / "h.pt")
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(ParameterError, match="not a flow written by fokker.flows.save"):
        flows.load(tmp_path / "other.pt")
