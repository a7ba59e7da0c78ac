"""The argument-check switch and the check helpers raise the documented errors."""

from __future__ import annotations

import pytest
import torch

import fokker
from fokker._args import (
    check_event_shape,
    check_finite,
    check_in_interval,
    check_int,
    check_last_dim,
    check_like,
    check_positive,
    check_tensor,
)
from fokker.errors import DeviceDtypeError, DomainError, NonFiniteError, ParameterError, ShapeError


def test_switch_and_context_manager() -> None:
    x = torch.tensor([1.0, float("nan")])
    with pytest.raises(NonFiniteError, match="x contains 1 non-finite"):
        check_finite(x, "x")
    with fokker.argument_checks(False):
        assert not fokker.argument_checks_enabled()
        check_finite(x, "x")  # skipped: would need a host sync
    assert fokker.argument_checks_enabled()
    fokker.set_argument_checks(False)
    check_finite(x, "x")
    fokker.set_argument_checks(True)


def test_shape_checks() -> None:
    with pytest.raises(ShapeError, match=r"x must have shape \(\.\.\., 3\); got shape \(4, 2\)"):
        check_last_dim(torch.zeros(4, 2), 3, "x")
    with pytest.raises(ShapeError, match=r"x0 must have shape \(\.\.\., 2, 2\)"):
        check_event_shape(torch.zeros(4, 2), (2, 2), "x0")
    check_event_shape(torch.zeros(5, 2, 2), (2, 2), "x0")


def test_dtype_device_and_type_checks() -> None:
    with pytest.raises(DeviceDtypeError, match="x has dtype torch.float32 but the target has dtype torch.float64"):
        check_like(torch.zeros(2), torch.zeros(2, dtype=torch.float64), "x")
    with pytest.raises(DeviceDtypeError, match="floating-point"):
        check_tensor(torch.zeros(2, dtype=torch.long), "x")
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        check_tensor([1.0], "x")


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "a"])
def test_positive(bad) -> None:
    with pytest.raises(ParameterError, match="scale must be a positive"):
        check_positive(bad, "scale")


def test_positive_tensor_and_int() -> None:
    with pytest.raises(ParameterError, match="scale must be positive"):
        check_positive(torch.tensor([1.0, 0.0]), "scale")
    check_positive(torch.tensor([1.0, 2.0]), "scale")
    with pytest.raises(ParameterError, match="num_chains must be an integer >= 1"):
        check_int(0, "num_chains")
    with pytest.raises(ParameterError, match="num_chains must be an integer"):
        check_int(True, "num_chains")


def test_interval() -> None:
    with pytest.raises(DomainError, match=r"t must lie in \[0.001, 1.0\]"):
        check_in_interval(torch.tensor([0.5, 1.5]), 1e-3, 1.0)
    with pytest.raises(DomainError, match=r"t must lie in"):
        check_in_interval(0.0, 1e-3, 1.0)
    with pytest.raises(DomainError):
        check_in_interval(torch.tensor([float("nan")]), 0.0, 1.0)
    check_in_interval(torch.tensor([0.001, 1.0]), 1e-3, 1.0)
