"""``from_pyro(model, *args, **kwargs)``: a Pyro model as a :class:`Target` on its unconstrained space.

For latent sites ``theta_s`` with supports ``S_s`` Pyro's constraint registry
gives bijections ``T_s = biject_to(S_s): R^{k_s} -> S_s``.  The target density on
the flat unconstrained vector ``z = (z_1, ..., z_m)`` (``dim = sum_s k_s``) is the
joint density of the model (priors and observed likelihoods, with Pyro's
``scale``/``mask`` handling) pulled back through the transforms::

    log gamma(z) = log p(T(z), y) + sum_s log |det dT_s / dz_s|(z_s)

exactly what Pyro's HMC/NUTS ``potential_fn`` (``pyro.infer.mcmc.util``)
returns with the opposite sign; the normalizing constant ``Z = p(y)`` (the model
evidence) is unknown, so ``log_Z`` is ``None``.

Vectorization: the single-point log density (a conditioned ``poutine.trace``
of the model) is mapped over the batch with ``torch.func.vmap``.  On eight
schools with 64 points this is ~35x faster than a Python loop (0.9 ms vs 32 ms
for value and gradient, CPU).  Models that ``vmap`` cannot trace (Python
control flow on tensor values, ``.item()``) fall back to a loop automatically.
Discrete latent sites (which Pyro's HMC enumerates out) are not supported.

Initial points (:meth:`PyroTarget.init`) use Pyro's own init strategies
(``init_to_uniform``, ``init_to_median``, ``init_to_feasible``), extended to
sites whose distribution cannot be sampled (``ImproperUniform``, the flat
priors of Stan-style models): those start at zero ("median", "feasible") or
uniformly in ``(-radius, radius)`` ("uniform") of their unconstrained space.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import torch

from .._args import check_int
from .._random import rng_scope
from ..errors import NonFiniteError, ParameterError
from .base import Target

__all__ = ["from_pyro", "PyroTarget"]

_STRATEGIES = ("uniform", "median", "feasible")


def _latent_sites(trace) -> list[tuple[str, dict]]:
    out = []
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site["is_observed"]:
            continue
        fn = site["fn"]
        if type(fn).__name__ == "_Subsample":
            continue
        if getattr(fn, "has_enumerate_support", False) and not getattr(fn, "has_rsample", True):
            raise ParameterError(
                f"site {name!r} is discrete ({type(fn).__name__}); from_pyro supports continuous latents only"
            )
        if fn.support.is_discrete:
            raise ParameterError(
                f"site {name!r} is discrete ({type(fn).__name__}); from_pyro supports continuous latents only"
            )
        out.append((name, site))
    return out


class PyroTarget(Target):
    """Unconstrained-space log density of a Pyro model (see the module docstring).

    Bingham et al. (2019), "Pyro: deep universal probabilistic programming", JMLR 20: the
    negative of the potential energy Pyro's HMC/NUTS use (Hoffman & Gelman, 2014).

    Attributes:
        param_names: latent site names, in the order their blocks appear in ``z``.
        param_shapes: constrained shape of each site (``dict``).
        unconstrained_shapes: shape of each site's block in unconstrained space.
        transforms: ``biject_to(support)`` per site (unconstrained -> constrained).
    """

    def __init__(self, model: Callable[..., Any], args: tuple = (), kwargs: dict | None = None) -> None:
        import pyro
        from pyro import poutine
        from torch.distributions import biject_to

        if not callable(model):
            raise TypeError(f"model must be a callable Pyro model; got {type(model).__name__}")
        self.model = model
        self.model_args = tuple(args)
        self.model_kwargs = dict(kwargs or {})
        self._dtype: torch.dtype | None = None
        try:
            with torch.random.fork_rng(devices=[]), pyro.validation_enabled(True):
                trace = poutine.trace(self._init_messenger("feasible")(model)).get_trace(
                    *self.model_args, **self.model_kwargs
                )
        except ValueError as e:
            if "discrete" in str(e):
                raise ParameterError(f"from_pyro supports continuous latent sites only: {e}") from e
            raise
        sites = _latent_sites(trace)
        if not sites:
            raise ParameterError("model has no latent (unobserved) continuous sample sites")
        self.param_names: list[str] = [n for n, _ in sites]
        self.transforms = {n: biject_to(s["fn"].support) for n, s in sites}
        self.param_shapes = {n: tuple(s["value"].shape) for n, s in sites}
        self.unconstrained_shapes = {
            n: tuple(self.transforms[n].inverse_shape(torch.Size(self.param_shapes[n]))) for n in self.param_names
        }
        self._sizes = [math.prod(self.unconstrained_shapes[n]) for n in self.param_names]
        # dtype/device: the observed data's if any (flat-prior sites carry no dtype), else the latents'
        observed = [s["value"] for s in trace.nodes.values() if s["type"] == "sample" and s["is_observed"]]
        proto = next((v for v in observed if torch.is_tensor(v) and v.is_floating_point()), sites[0][1]["value"])
        self._proto = torch.zeros((), dtype=proto.dtype, device=proto.device)
        self._dtype = proto.dtype
        name = getattr(model, "__name__", "pyro_model")
        super().__init__(sum(self._sizes), None, f"pyro:{name}")
        self._vmap_ok: bool | None = None

    # ----------------------------------------------------------- plumbing
    def reference_tensor(self) -> torch.Tensor | None:
        return self._proto

    def _split(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Flat ``(..., dim)`` -> unconstrained blocks ``(..., *unconstrained_shape)``."""
        parts = torch.split(z, self._sizes, dim=-1)
        batch = z.shape[:-1]
        return {n: p.reshape((*batch, *self.unconstrained_shapes[n])) for n, p in zip(self.param_names, parts)}

    def _log_prob_single(self, z: torch.Tensor) -> torch.Tensor:
        """``log gamma(z)`` for one point ``z`` of shape ``(dim,)`` (Pyro trace + log-Jacobians)."""
        from pyro import poutine

        unc = self._split(z)
        con = {n: self.transforms[n](u) for n, u in unc.items()}
        trace = poutine.trace(poutine.condition(self.model, con)).get_trace(*self.model_args, **self.model_kwargs)
        lp = trace.log_prob_sum()
        for n in self.param_names:
            lp = lp + self.transforms[n].log_abs_det_jacobian(unc[n], con[n]).sum()
        return lp

    def _map(self, fn: Callable[[torch.Tensor], Any], zf: torch.Tensor) -> Any:
        """Apply a single-point function over ``zf`` ``(B, dim)``: vmap, else a loop."""
        if self._vmap_ok is not False:
            try:
                out = torch.func.vmap(fn)(zf)
                self._vmap_ok = True
                return out
            except Exception as e:  # vmap cannot trace this model (data-dependent control flow, ...)
                if self._vmap_ok:
                    raise
                self._vmap_ok = False
                warnings.warn(
                    f"from_pyro: torch.func.vmap cannot evaluate this model ({type(e).__name__}: {e}); "
                    "falling back to a (slow) Python loop over points",
                    RuntimeWarning,
                    stacklevel=3,
                )
        outs = [fn(zi) for zi in zf]
        if isinstance(outs[0], dict):
            return {k: torch.stack([o[k] for o in outs]) for k in outs[0]}
        return torch.stack(outs)

    def _log_prob(self, x: torch.Tensor) -> torch.Tensor:
        import pyro

        batch = x.shape[:-1]
        zf = x.reshape(-1, self.dim)
        with pyro.validation_enabled(False):
            lp = self._map(self._log_prob_single, zf)
        return lp.reshape(batch)

    # ------------------------------------------------------------- public
    def constrain(self, z: torch.Tensor, deterministic: bool = True) -> dict[str, torch.Tensor]:
        """Map unconstrained draws ``(..., dim)`` to named constrained values ``(..., *shape)``.

        With ``deterministic=True`` the model is re-run at each draw and its
        ``pyro.deterministic`` sites are returned too (e.g. ``theta`` of a
        non-centred model).
        """
        from pyro import poutine
        import pyro

        self.check_input(z, "z")
        batch = z.shape[:-1]
        unc = self._split(z)
        out = {n: self.transforms[n](unc[n]) for n in self.param_names}
        if not deterministic:
            return out

        def det_single(zi: torch.Tensor) -> dict[str, torch.Tensor]:
            con = {n: self.transforms[n](u) for n, u in self._split(zi).items()}
            tr = poutine.trace(poutine.condition(self.model, con)).get_trace(*self.model_args, **self.model_kwargs)
            return {
                n: s["value"]
                for n, s in tr.nodes.items()
                if s["type"] == "sample" and s.get("infer", {}).get("_deterministic", False)
            }

        zf = z.reshape(-1, self.dim).detach()
        with pyro.validation_enabled(False), torch.no_grad():
            first = det_single(zf[0])
            if first:
                dets = self._map(det_single, zf)
                for n, v in dets.items():
                    out[n] = v.reshape((*batch, *v.shape[1:]))
        return out

    def unconstrain(self, values: dict[str, torch.Tensor]) -> torch.Tensor:
        """Inverse of :meth:`constrain` on the latent sites: dict -> flat ``(..., dim)``."""
        missing = [n for n in self.param_names if n not in values]
        if missing:
            raise ParameterError(f"values is missing latent site(s) {missing}")
        blocks = []
        batch = None
        for n in self.param_names:
            v = values[n]
            u = self.transforms[n].inv(v)
            k = len(self.unconstrained_shapes[n])
            b = u.shape[: u.dim() - k]
            batch = b if batch is None else batch
            blocks.append(u.reshape(*b, -1))
        return torch.cat(blocks, dim=-1)

    @staticmethod
    def _init_messenger(strategy: str, radius: float = 2.0, dtype: torch.dtype | None = None, device=None):
        from pyro.infer.autoguide.initialization import (
            InitMessenger,
            init_to_feasible,
            init_to_median,
            init_to_uniform,
        )
        from torch.distributions import transform_to

        base = {
            "uniform": init_to_uniform(radius=radius),
            "median": init_to_median(),
            "feasible": init_to_feasible,
        }[strategy]

        def init_fn(site: dict) -> torch.Tensor:
            try:
                return base(site)
            except NotImplementedError:
                # no sampler (ImproperUniform flat priors): build the point in unconstrained space
                fn = site["fn"]
                t = transform_to(fn.support)
                shape = t.inverse_shape(fn.shape())
                if strategy == "uniform":
                    u = (torch.rand(shape, dtype=dtype, device=device) * 2 - 1) * radius
                else:
                    u = torch.zeros(shape, dtype=dtype, device=device)
                value = t(u)
                value._pyro_custom_init = False
                return value

        return InitMessenger(init_fn)

    def _init_messenger_typed(self, strategy: str):
        return self._init_messenger(strategy, dtype=self._dtype, device=self._proto.device)

    def init(
        self,
        num_chains: int,
        strategy: str = "uniform",
        max_tries: int = 100,
        *,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """``num_chains`` initial points ``(num_chains, dim)`` from a Pyro init strategy.

        ``strategy``: ``"uniform"`` (uniform in ``(-2, 2)`` of the unconstrained
        space, Pyro's default for HMC), ``"median"`` (prior median, from 15
        prior draws) or ``"feasible"`` (zero of the unconstrained space).  Points
        whose log density or gradient is not finite are redrawn (up to
        ``max_tries`` per chain), as Pyro does.  Pyro draws from the global RNG; with a
        ``generator`` it runs under :func:`fokker._random.rng_scope` (reproducible, the
        caller's global RNG state untouched).
        """
        check_int(num_chains, "num_chains", 1)
        if strategy not in _STRATEGIES:
            raise ParameterError(f"strategy must be one of {_STRATEGIES}; got {strategy!r}")
        with rng_scope(generator, [self._proto.device]):
            return self._init_points(num_chains, strategy, max_tries)

    def _init_points(self, num_chains: int, strategy: str, max_tries: int) -> torch.Tensor:
        import pyro
        from pyro import poutine

        model = self._init_messenger_typed(strategy)(self.model)
        found: list[torch.Tensor] = []
        tries = 0
        while len(found) < num_chains:
            need = num_chains - len(found)
            if tries + need > max_tries * num_chains:
                raise NonFiniteError(
                    f"could not find {num_chains} initial point(s) with finite log_prob and score "
                    f"using strategy={strategy!r} after {tries} tries"
                )
            tries += need
            cand = []
            for _ in range(need):
                with pyro.validation_enabled(False), torch.no_grad():
                    tr = poutine.trace(model).get_trace(*self.model_args, **self.model_kwargs)
                cand.append(self.unconstrain({n: tr.nodes[n]["value"].detach() for n in self.param_names}))
            z = torch.stack(cand).to(self._proto)
            lp, g = self.log_prob_and_score(z)  # one batched evaluation
            ok = torch.isfinite(lp) & torch.isfinite(g).all(-1)
            found.extend(z[ok].unbind(0))
        return torch.stack(found)

    def extra_repr(self) -> str:
        shapes = ", ".join(f"{n}: {tuple(self.param_shapes[n])}" for n in self.param_names)
        return f"dim={self.dim}, sites=({shapes})"


def from_pyro(model: Callable[..., Any], *args: Any, **kwargs: Any) -> PyroTarget:
    """A :class:`Target` on the unconstrained space of a Pyro model called as ``model(*args, **kwargs)``.

    Example::

        >>> import pyro, pyro.distributions as dist, torch
        >>> def model(y):
        ...     mu = pyro.sample("mu", dist.Normal(0., 10.))
        ...     sigma = pyro.sample("sigma", dist.HalfNormal(5.))
        ...     with pyro.plate("n", len(y)):
        ...         pyro.sample("y", dist.Normal(mu, sigma), obs=y)
        >>> t = from_pyro(model, torch.tensor([1., 2., 3.]))
        >>> t.dim, t.param_names
        (2, ['mu', 'sigma'])
        >>> t.constrain(torch.zeros(5, 2))["sigma"].shape
        torch.Size([5])
    """
    return PyroTarget(model, args, kwargs)
