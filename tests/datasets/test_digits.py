"""8x8 digits: split, dequantization is invertible, scaling, shapes."""

from __future__ import annotations

import pytest
import torch

from fokker.datasets import digits
from fokker.errors import ParameterError
from fokker.tolerances import Z_SCORE, assert_close


def _sklearn():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return torch.as_tensor(X, dtype=torch.float64), torch.as_tensor(y)


def test_split_and_dequantization_recover_pixels():
    X, y = _sklearn()
    perm = torch.randperm(1797, generator=torch.Generator().manual_seed(0))
    xtr, ltr = digits("train", seed=0, dtype=torch.float64)
    xte, lte = digits("test", seed=1, dtype=torch.float64)
    assert xtr.shape == (1437, 1, 8, 8) and xte.shape == (360, 1, 8, 8)
    assert ltr.dtype == torch.int64
    assert torch.equal(torch.floor(17 * xtr.reshape(-1, 64)), X[perm[:1437]])
    assert torch.equal(torch.floor(17 * xte.reshape(-1, 64)), X[perm[1437:]])
    assert torch.equal(ltr, y[perm[:1437]]) and torch.equal(lte, y[perm[1437:]])
    assert (xtr >= 0).all() and (xtr < 1).all()
    # the noise U = 17 x - k is uniform: mean 1/2, variance 1/12 within Z_SCORE standard errors
    u = (17 * xtr - torch.floor(17 * xtr)).flatten()
    assert abs(u.mean().item() - 0.5) < Z_SCORE * (1 / 12) ** 0.5 / u.numel() ** 0.5
    # and it is exactly the generator's uniforms (independent reconstruction)
    g = torch.Generator().manual_seed(0)
    expected = (X[perm[:1437]] + torch.rand(1437, 64, generator=g, dtype=torch.float64)) / 17
    assert torch.equal(xtr.reshape(-1, 64), expected)


def test_options():
    a, _ = digits("train", seed=1, flat=True, dtype=torch.float64)
    b, _ = digits("train", generator=torch.Generator().manual_seed(1), flat=True, scale="symmetric", dtype=torch.float64)
    assert a.shape == (1437, 64)
    assert_close(b, 2 * a - 1)
    c, _ = digits("test", dequantize=False, flat=True, dtype=torch.float64)
    assert_close(17 * c - 0.5, torch.round(17 * c - 0.5))
    x32, _ = digits("train")
    assert x32.dtype == torch.float32 and (x32 < 1).all()
    # the split is defined by split_seed alone: the noise seed does not move images between splits
    assert torch.equal(digits("train", seed=1)[1], digits("train", seed=0)[1])
    assert not torch.equal(digits("train", split_seed=1)[1], digits("train", split_seed=0)[1])
    state = torch.get_rng_state()
    digits("test", seed=3)
    assert torch.equal(torch.get_rng_state(), state)


def test_errors():
    with pytest.raises(ParameterError, match="split must be 'train' or 'test'"):
        digits("valid")
    with pytest.raises(ParameterError, match="scale must be 'unit' or 'symmetric'"):
        digits(scale="pm1")
