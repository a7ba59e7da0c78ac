"""The calibration of gan.toys' bounds on the rings: an exact sampler passes every row, the controls fail."""

from __future__ import annotations

import torch

from fokker import datasets
from fokker.tolerances import assert_close
from fokker.validate import checks_gan


def test_rings_bounds_pass_exact_samples_and_reject_the_controls() -> None:
    ref = datasets.sample("rings", 20_000, seed=100)
    exact = datasets.sample("rings", 4000, seed=200)
    log_p = checks_gan._ToyLogProb("rings", ref)
    rows = checks_gan._control_rows(log_p, checks_gan._TOYS["rings"], ref, exact, seed=0)
    exact_rows = [r for r in rows if "exact sampler" in r.name]
    assert len(exact_rows) == 3 and all(r.passed and not r.control for r in exact_rows)
    controls = [r for r in rows if r.control]
    assert {"mode coverage", "fraction below the 5% density level", "energy distance to exact samples"} <= {
        r.name.split(": ")[-1] for r in controls}
    assert all(r.passed for r in controls)  # a control passes when its metric rejects the wrong model
    # the cached log-density is the toy's exact one, on the reference and on new points
    x = torch.randn(50, 2)
    assert_close(log_p(x), datasets.toy_log_prob("rings")(x))
    assert_close(log_p(ref), datasets.toy_log_prob("rings")(ref))
