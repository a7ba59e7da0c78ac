"""Shared test fixtures: devices, dtypes, hypothesis profiles, seeding.

* ``device``: "cpu", plus "cuda" when ``torch.cuda.is_available()``; every
  numerical test that takes it runs on each available device.
* ``dtype``: float32 and float64 (tolerances from ``fokker.tolerances``).
* hypothesis profiles: ``ci`` (derandomized, bounded examples, no deadline;
  the default) and ``dev`` (more random examples).  Choose with
  ``HYPOTHESIS_PROFILE=dev``.
* every test starts from ``torch.manual_seed(0)``, so statistical tests are
  deterministic.
"""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

from fokker.tolerances import Tolerance, tolerance

settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=20,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "dev",
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
DTYPES = [torch.float32, torch.float64]


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> torch.device:
    return torch.device(request.param)


@pytest.fixture(params=DTYPES, ids=["float32", "float64"])
def dtype(request: pytest.FixtureRequest) -> torch.dtype:
    return request.param


@pytest.fixture
def tol(dtype: torch.dtype) -> Tolerance:
    return tolerance(dtype)


@pytest.fixture(autouse=True)
def _seed_and_validate() -> None:
    import fokker

    torch.manual_seed(0)
    fokker.set_argument_checks(True)
    yield
    fokker.set_argument_checks(True)


if os.environ.get("PYTEST_XDIST_WORKER"):
    # one intra-op thread per xdist worker: 2 workers on 2 cores, no oversubscription
    torch.set_num_threads(1)
