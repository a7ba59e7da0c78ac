"""scikit-learn's 8x8 handwritten digits as a continuous (dequantized) tensor data set.

Source: ``sklearn.datasets.load_digits`` (1797 images, UCI optical recognition of
handwritten digits), pixel values are integers ``k in {0, ..., 16}``.

Processing, exactly:

1. fixed split: a permutation of the 1797 indices from
   ``torch.Generator().manual_seed(split_seed)``; the first ``1797 - 360 = 1437`` are
   ``"train"``, the last 360 are ``"test"``.  ``split_seed`` *defines* the split (the same for
   every call, so train and test never overlap); it is not a sampling stream;
2. uniform dequantization: ``u = (k + U) / 17`` with ``U ~ U[0, 1)`` i.i.d. per pixel, drawn
   from ``generator`` (or a new one seeded with ``seed``; the global RNG when neither), so
   ``u in [0, 1)`` and ``floor(17 u) = k`` recovers the pixel; ``dequantize=False`` gives
   ``(k + 1/2) / 17`` instead (cell centres, deterministic);
3. ``scale="unit"``: ``u``; ``scale="symmetric"``: ``2u - 1 in [-1, 1)``;
4. cast to ``dtype`` (default ``torch.get_default_dtype()``), values that round up to 1
   are set to the largest float below 1 so the interval stays half-open.

Likelihoods: a density ``p`` on the unit-scale data gives the discrete log-likelihood bound
``log P(k) >= E_U[log p(u)] - 64 log 17`` (Theis et al. 2016); with ``"symmetric"`` add
``64 log 2`` to ``log p``.  Images come as ``(n, 1, 8, 8)`` (``flat=False``) or ``(n, 64)``.
"""

from __future__ import annotations

import functools

import torch

from .._args import check_int
from .._random import make_generator, rand
from ..errors import ParameterError

__all__ = ["digits", "N_TEST_DIGITS", "NUM_LEVELS"]

N_TEST_DIGITS = 360
NUM_LEVELS = 17


@functools.lru_cache(maxsize=1)
def _load() -> tuple[torch.Tensor, torch.Tensor]:
    """The raw images ``(1797, 64)`` float64 in {0..16} and labels ``(1797,)`` (read once, never mutated)."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return torch.tensor(X, dtype=torch.float64), torch.tensor(y, dtype=torch.int64)


def digits(
    split: str = "train",
    *,
    split_seed: int = 0,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    flat: bool = False,
    scale: str = "unit",
    dequantize: bool = True,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(images, labels)``: images ``(n, 1, 8, 8)`` or ``(n, 64)``, labels ``(n,)`` int64.

    Args:
        split: ``"train"`` (1437 images) or ``"test"`` (360 images).
        split_seed: seed of the split permutation (defines which images are test images).
        generator: source of the dequantization noise (global RNG when ``None``).
        seed: shorthand for ``generator=torch.Generator().manual_seed(seed)``.
        flat: return ``(n, 64)`` instead of ``(n, 1, 8, 8)``.
        scale: ``"unit"`` (values in ``[0, 1)``) or ``"symmetric"`` (``[-1, 1)``).
        dequantize: add uniform noise (default) or use cell centres.
    """
    if split not in ("train", "test"):
        raise ParameterError(f"split must be 'train' or 'test'; got {split!r}")
    if scale not in ("unit", "symmetric"):
        raise ParameterError(f"scale must be 'unit' or 'symmetric'; got {scale!r}")
    check_int(split_seed, "split_seed", minimum=0)
    gen = make_generator(generator, seed)
    X, y = _load()
    perm = torch.randperm(X.shape[0], generator=torch.Generator().manual_seed(split_seed))
    num_train = X.shape[0] - N_TEST_DIGITS
    idx = perm[:num_train] if split == "train" else perm[num_train:]
    k, labels = X[idx], y[idx]
    if dequantize:
        u = (k + rand(k.shape, generator=gen, dtype=torch.float64)) / NUM_LEVELS
    else:
        u = (k + 0.5) / NUM_LEVELS
    if scale == "symmetric":
        u = 2 * u - 1
    u = u if flat else u.reshape(-1, 1, 8, 8)
    dtype = dtype or torch.get_default_dtype()
    u = u.to(dtype)
    # rounding to float32 can turn (16 + U) / 17 into exactly 1: keep the interval half-open
    below_one = torch.nextafter(torch.ones((), dtype=dtype), torch.zeros((), dtype=dtype))
    u = torch.minimum(u, below_one)
    return u.to(device=device), labels.to(device)
