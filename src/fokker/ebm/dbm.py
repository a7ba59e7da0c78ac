"""Deep Boltzmann machine: binary layers ``v = x_0, x_1, ..., x_L`` coupled only to their neighbours.

Salakhutdinov & Hinton (2009), "Deep Boltzmann machines", AISTATS (seed 000, "restricted and deep
Boltzmann machines"):

.. math::  E(x) = -\\sum_{l=0}^{L} b_l^\\top x_l - \\sum_{l=1}^{L} x_{l-1}^\\top W_l\\, x_l,
           \\qquad p(x_l = 1 \\mid \\text{rest}) = \\sigma\\big(b_l + W_l^\\top x_{l-1} + W_{l+1} x_{l+1}\\big).

* **Bipartite structure.**  Even layers (``v, x_2, ...``) couple only to odd layers: the DBM is an
  RBM between the concatenated even and the concatenated odd units with a block weight matrix
  (:meth:`DBM.bipartite`).  So the odd layers sum out in closed form, block Gibbs alternates
  odd | even and even | odd, ``log Z`` is exact by enumerating the smaller side
  (:func:`fokker.analytic.rbm.rbm_log_Z`), and AIS runs on the even layers with the odd ones summed
  out, as in Salakhutdinov & Hinton (2009), sec. 4 (:meth:`DBM.ais`, via :meth:`fokker.ebm.RBM.ais`
  from a base-rate visible layer and uniform hidden layers).
* **Training** (their sec. 3, algorithm 1): the data-dependent statistics from the mean-field
  posterior ``q(h|v) = prod_l prod_j Bernoulli(mu_lj)``, a fixed point of
  ``mu_l = sigma(b_l + W_l^T mu_{l-1} + W_{l+1} mu_{l+1})`` (``mu_0 = v``); the model statistics
  from persistent Gibbs chains.  :meth:`DBM.loss` is the surrogate
  ``mean E(v, mu) - mean E(x_chains)`` whose gradient is minus that estimate of the gradient of the
  variational lower bound (``E`` is multilinear, so ``grad E(v, mu)`` is the mean-field expectation
  of ``grad E``).
* **Bounds.**  :meth:`DBM.elbo` is the mean-field bound ``-E(v, mu) + H(q) - log Z <= log p(v)``;
  :meth:`DBM.log_likelihood` is exact (enumeration of the even hidden layers) for small models.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn.functional import softplus

from .. import _random
from .._args import argument_checks_enabled, check_int, check_positive, check_tensor
from ..analytic.rbm import MAX_ENUMERATED_UNITS, enumerate_binary, rbm_log_Z
from ..errors import DomainError, ParameterError, ShapeError
from ..importance import LogZEstimate
from .rbm import RBM, _bernoulli, base_rate_bias

#: float64 numbers per block of the enumeration in :meth:`DBM.log_likelihood` (32 MiB)
ENUMERATION_BLOCK_ELEMENTS = 2**22

__all__ = ["DBM"]


class DBM(nn.Module):
    """Deep Boltzmann machine with mean-field + persistent-chain training, exact or AIS ``log Z``.

    Salakhutdinov & Hinton (2009), "Deep Boltzmann machines", AISTATS, eqs. (1)-(2) (energy and
    conditionals), sec. 3 (mean-field posterior, persistent chains) and sec. 4 (AIS); the module
    docstring has the formulas.

    Args:
        num_visible: size of ``v``.
        hidden: sizes of the hidden layers ``(n_1, ..., n_L)``, ``L >= 1`` (``L = 1`` is an RBM).
        num_chains: persistent Gibbs chains of the negative phase.
        gibbs_steps: Gibbs sweeps of the chains per :meth:`loss` call.
        mean_field_steps: fixed-point iterations of the positive phase.
        init_std: std of the initial weights (biases start at 0).
        dtype, device: of the parameters.
        generator: the ``torch.Generator`` of the initial weights and chains.

    The training loss draws its Gibbs samples from the global RNG (``fokker.train.fit(seed=)``).

    Example::

        >>> dbm = DBM(6, (4, 3))
        >>> v = torch.bernoulli(torch.full((32, 6), 0.5))
        >>> dbm.loss(v).backward()
        >>> ll = dbm.log_likelihood(v)          # exact for this size
    """

    def __init__(
        self,
        num_visible: int,
        hidden: Sequence[int] = (64, 32),
        num_chains: int = 100,
        gibbs_steps: int = 1,
        mean_field_steps: int = 10,
        init_std: float = 0.01,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        check_int(num_visible, "num_visible")
        if isinstance(hidden, int) or not hidden:
            raise ParameterError(f"hidden must be a non-empty sequence of layer sizes, e.g. (64, 32); got {hidden!r}")
        self.sizes = (num_visible, *(check_int(h, "hidden") for h in hidden))
        self.num_chains = check_int(num_chains, "num_chains")
        self.gibbs_steps = check_int(gibbs_steps, "gibbs_steps")
        self.mean_field_steps = check_int(mean_field_steps, "mean_field_steps")
        check_positive(init_std, "init_std")
        dtype = dtype or torch.get_default_dtype()
        self.weights = nn.ParameterList(
            nn.Parameter(init_std * _random.randn((a, b), generator=generator, dtype=dtype, device=device))
            for a, b in zip(self.sizes[:-1], self.sizes[1:])
        )
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(n, dtype=dtype, device=device)) for n in self.sizes)
        half = torch.full((num_chains, sum(self.sizes)), 0.5, dtype=dtype, device=device)
        self.register_buffer("chains", _bernoulli(half, generator))

    @property
    def num_layers(self) -> int:
        """``L``, the number of hidden layers."""
        return len(self.sizes) - 1

    def extra_repr(self) -> str:
        return f"sizes={self.sizes}, num_chains={self.num_chains}, gibbs_steps={self.gibbs_steps}"

    # -- layers -------------------------------------------------------------------------------------
    def split(self, state: Tensor) -> list[Tensor]:
        """A full state ``(..., sum of sizes)`` as the list of its layers ``[v, x_1, ..., x_L]``."""
        if state.shape[-1] != sum(self.sizes):
            raise ShapeError(f"a full state has shape (..., {sum(self.sizes)}); got {tuple(state.shape)}")
        return list(state.split(self.sizes, -1))

    def _check_visible(self, v: Tensor, name: str = "v") -> Tensor:
        check_tensor(v, name)
        if v.dim() == 0 or v.shape[-1] != self.sizes[0]:
            raise ShapeError(f"{name} must have shape (..., {self.sizes[0]}); got {tuple(v.shape)}")
        if argument_checks_enabled() and not bool(((v == 0) | (v == 1)).all()):
            raise DomainError(f"{name} must be binary (entries 0 or 1)")
        return v

    def layer_input(self, layers: Sequence[Tensor], l: int) -> Tensor:
        """``b_l + W_l^T x_{l-1} + W_{l+1} x_{l+1}``: the input of layer ``l`` given its neighbours."""
        a = self.biases[l]
        if l > 0:
            a = a + layers[l - 1] @ self.weights[l - 1]
        if l < self.num_layers:
            a = a + layers[l + 1] @ self.weights[l].mT
        return a

    def energy(self, layers: Sequence[Tensor]) -> Tensor:
        """``E(v, x_1, ..., x_L)`` for the list of layers (binary or mean-field values): ``(...)``."""
        if len(layers) != len(self.sizes):
            raise ShapeError(f"energy takes {len(self.sizes)} layers [v, x_1, ..., x_L]; got {len(layers)}")
        e = -sum((x * b).sum(-1) for x, b in zip(layers, self.biases))
        for l, W in enumerate(self.weights):
            e = e - ((layers[l] @ W) * layers[l + 1]).sum(-1)
        return e

    # -- inference and sampling ---------------------------------------------------------------------
    def mean_field(self, v: Tensor, num_steps: int | None = None) -> list[Tensor]:
        """Mean-field posterior ``[mu_1, ..., mu_L]`` of ``q(h | v)`` (Salakhutdinov & Hinton 2009, sec. 3).

        Initialised by a bottom-up pass with doubled weights for the layers that have a layer
        above (their recognition model), then ``num_steps`` (default ``mean_field_steps``) sweeps
        of the fixed-point equations, odd layers then even layers.
        """
        steps = self.mean_field_steps if num_steps is None else check_int(num_steps, "num_steps", minimum=0)
        mu = [v]
        for l in range(1, len(self.sizes)):
            scale = 2.0 if l < self.num_layers else 1.0
            mu.append(torch.sigmoid(self.biases[l] + scale * (mu[l - 1] @ self.weights[l - 1])))
        for _ in range(steps):
            for parity in (1, 0):
                for l in range(1, len(self.sizes)):
                    if l % 2 == parity:
                        mu[l] = torch.sigmoid(self.layer_input(mu, l))
        return mu[1:]

    def gibbs(self, state: Tensor, num_steps: int = 1, *, generator: torch.Generator | None = None) -> Tensor:
        """``num_steps`` block-Gibbs sweeps (odd layers | even, then even | odd) of full states ``(..., total)``."""
        check_int(num_steps, "num_steps", minimum=0)
        with torch.no_grad():
            layers = self.split(state)
            for _ in range(num_steps):
                for parity in (1, 0):
                    for l in range(len(self.sizes)):
                        if l % 2 == parity:
                            layers[l] = _bernoulli(torch.sigmoid(self.layer_input(layers, l)), generator)
            return torch.cat(layers, -1)

    @torch.no_grad()
    def sample(
        self, sample_shape: torch.Size | tuple[int, ...] | int = (), num_steps: int = 1000, *,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Approximate visible samples ``(*sample_shape, num_visible)``: ``num_steps`` Gibbs sweeps from fair coins."""
        shape = torch.Size((sample_shape,) if isinstance(sample_shape, int) else sample_shape)
        p = self.weights[0]
        half = torch.full((*shape, sum(self.sizes)), 0.5, dtype=p.dtype, device=p.device)
        return self.split(self.gibbs(_bernoulli(half, generator), num_steps, generator=generator))[0]

    # -- training -----------------------------------------------------------------------------------
    def loss(self, batch: Tensor) -> Tensor:
        """Surrogate ``mean E(v, mu(v)) - mean E(x_chains)`` (module docstring); the chains advance ``gibbs_steps`` sweeps."""
        self._check_visible(batch, "batch")
        with torch.no_grad():
            mu = self.mean_field(batch)
        self.chains = self.gibbs(self.chains, self.gibbs_steps)
        return self.energy([batch, *mu]).mean() - self.energy(self.split(self.chains)).mean()

    def forward(self, batch: Tensor) -> Tensor:
        return self.loss(batch)

    # -- the partition function ---------------------------------------------------------------------
    def bipartite(self) -> tuple[Tensor, Tensor, Tensor]:
        """The equivalent RBM ``(W, b_even, b_odd)``: even layers (``v, x_2, ...``) as visible, odd as hidden.

        ``W`` ``(n_even, n_odd)`` holds ``W_l`` in the block of layers ``(l-1, l)`` (transposed when
        ``l - 1`` is odd) and zeros elsewhere; detached float64 copies.
        """
        even = [l for l in range(len(self.sizes)) if l % 2 == 0]
        odd = [l for l in range(len(self.sizes)) if l % 2 == 1]
        offset = {l: sum(self.sizes[k] for k in (even if l % 2 == 0 else odd) if k < l) for l in range(len(self.sizes))}
        p = self.weights[0]
        W = torch.zeros(sum(self.sizes[l] for l in even), sum(self.sizes[l] for l in odd), dtype=torch.float64,
                        device=p.device)
        for l, Wl in enumerate(self.weights, start=1):
            block = Wl.detach().double() if (l - 1) % 2 == 0 else Wl.detach().double().mT  # rows: the even layer
            e, o = (l - 1, l) if (l - 1) % 2 == 0 else (l, l - 1)
            W[offset[e] : offset[e] + self.sizes[e], offset[o] : offset[o] + self.sizes[o]] = block
        b_even = torch.cat([self.biases[l].detach().double() for l in even])
        b_odd = torch.cat([self.biases[l].detach().double() for l in odd])
        return W, b_even, b_odd

    @property
    def has_exact_log_Z(self) -> bool:
        """Whether :attr:`log_Z` can be enumerated (at most 20 units on the even or on the odd side)."""
        even = sum(n for l, n in enumerate(self.sizes) if l % 2 == 0)
        return min(even, sum(self.sizes) - even) <= MAX_ENUMERATED_UNITS

    @property
    def log_Z(self) -> float:
        """Exact ``log Z`` by enumerating the smaller side of the bipartite graph (float64).

        Larger machines raise :class:`~fokker.errors.ParameterError`: estimate ``log Z`` with :meth:`ais`.
        """
        if not self.has_exact_log_Z:
            raise ParameterError(f"log Z of a DBM with layers {self.sizes} cannot be enumerated (more than "
                                 f"{MAX_ENUMERATED_UNITS} units on each side); estimate it with dbm.ais()")
        return float(rbm_log_Z(*self.bipartite()))

    @torch.no_grad()
    def ais(
        self,
        num_chains: int = 100,
        num_steps: int = 14_500,
        data: Tensor | None = None,
        betas: Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        progress: bool | None = None,
    ) -> LogZEstimate:
        """Annealed importance sampling estimate of ``log Z`` (Salakhutdinov & Hinton 2009, sec. 4).

        AIS on the even layers with the odd ones summed out: :meth:`fokker.ebm.RBM.ais` on
        :meth:`bipartite`, from the base model with the visible biases ``base_rate_bias(data)``
        (zeros without ``data``) and uniform hidden units; the intermediate models are
        ``p_beta ∝ exp(-(1 - beta) E_A - beta E)``.  Returns that method's
        :class:`~fokker.importance.LogZEstimate` (unbiased in ``Z``, biased low in ``log Z``).
        """
        W, b_even, b_odd = self.bipartite()
        rbm = RBM(W.shape[0], W.shape[1], dtype=torch.float64, device=W.device)
        rbm.W.copy_(W)
        rbm.b.copy_(b_even)
        rbm.c.copy_(b_odd)
        base = torch.zeros_like(b_even)
        if data is not None:
            base[: self.sizes[0]] = base_rate_bias(self._check_visible(data, "data").double())
        return rbm.ais(num_chains, num_steps, base_bias=base, betas=betas, generator=generator, seed=seed,
                       progress=progress)

    def _free_energy_given_v(self, v: Tensor) -> Tensor:
        """``-log sum_h exp(-E(v, h))`` by enumerating the even hidden layers (float64, no gradient).

        Blocks of rows and states of at most :data:`ENUMERATION_BLOCK_ELEMENTS` float64 numbers, combined by
        logsumexp: the full ``(rows, 2^n, n_odd)`` array of a 64-(16, 16) DBM on 1437 images would take 12 GB.
        """
        W, b_even, b_odd = self.bipartite()
        nv = self.sizes[0]
        num_even_hidden = W.shape[0] - nv
        if num_even_hidden > MAX_ENUMERATED_UNITS:
            raise ParameterError(f"log p(v) enumerates the {num_even_hidden} units of the even hidden layers; more than "
                                 f"{MAX_ENUMERATED_UNITS}: use elbo() (a lower bound) instead")
        flat = v.double().reshape(-1, nv)
        visible_in, visible_bias = flat @ W[:nv], flat @ b_even[:nv]  # (B, n_odd), (B,)
        num_states, width = 2**num_even_hidden, max(1, W.shape[1])
        states = max(1, min(num_states, ENUMERATION_BLOCK_ELEMENTS // width))
        rows = max(1, ENUMERATION_BLOCK_ELEMENTS // (states * width))
        out = [flat.new_zeros(0)]
        for r in range(0, flat.shape[0], rows):
            parts = []
            for start in range(0, num_states, states):
                h = enumerate_binary(num_even_hidden, torch.float64, W.device, start, min(num_states, start + states))
                # even state [v, h]: visible-side energy b_even . x + sum_j softplus(b_odd + x W)
                odd_in = visible_in[r : r + rows].unsqueeze(-2) + (h @ W[nv:]) + b_odd  # (rows, states, n_odd)
                terms = visible_bias[r : r + rows].unsqueeze(-1) + h @ b_even[nv:] + softplus(odd_in).sum(-1)
                parts.append(torch.logsumexp(terms, -1))
            out.append(torch.logsumexp(torch.stack(parts, -1), -1))
        return -torch.cat(out).reshape(v.shape[:-1])

    @torch.no_grad()
    def log_likelihood(self, v: Tensor, log_Z: float | None = None) -> Tensor:
        """``log p(v)`` per row (float64): exact (enumeration) with the exact ``log Z`` unless ``log_Z`` is given."""
        self._check_visible(v)
        lz = self.log_Z if log_Z is None else log_Z
        return -self._free_energy_given_v(v) - lz

    def log_prob(self, v: Tensor) -> Tensor:
        """Normalised ``log p(v)`` (float64, no gradient; exact, see :meth:`log_likelihood`)."""
        return self.log_likelihood(v)

    @torch.no_grad()
    def elbo(self, v: Tensor, log_Z: float | None = None) -> Tensor:
        """Mean-field lower bound ``-E(v, mu) + H(q) - log Z <= log p(v)`` per row (float64)."""
        self._check_visible(v)
        mu = self.mean_field(v)
        ent = sum(-(m * torch.log(m.clamp_min(1e-300)) + (1 - m) * torch.log((1 - m).clamp_min(1e-300))).sum(-1)
                  for m in (t.double() for t in mu))
        lz = self.log_Z if log_Z is None else log_Z
        return -self.energy([v, *mu]).double() + ent - lz

