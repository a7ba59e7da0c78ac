"""The README's "At a glance" example runs as written (and its claims hold), without a ConvergenceWarning."""

from __future__ import annotations

import re
from pathlib import Path

import warnings

import torch

from fokker.errors import ConvergenceWarning

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs() -> None:
    text = README.read_text()
    section = text[text.index("## At a glance") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    ns: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # 16 x 200 draws warned at R-hat 1.021
        exec(compile(code, str(README), "exec"), ns)
    # independent checks of what the example computed
    assert ns["x"].shape == (1000, 10) and ns["t"].log_Z == 0.0
    assert ns["x0"].shape == (500, 2) and ns["nfe"] > 0 and torch.isfinite(ns["x0"]).all()
    assert ns["res"].samples.shape == (32, 1000, 10)
    est = ns["dds"].log_Z(4000)
    assert abs(est.log_Z) < 0.1  # the target is a normalized Gaussian: log Z = 0
