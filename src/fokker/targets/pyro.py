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

Evaluation (``log_prob_and_score``, what every MCMC kernel calls).  The
single-point density (a conditioned ``poutine.trace`` of the model) is mapped
over the batch with ``torch.func.vmap`` and differentiated with
``torch.func.grad_and_value``.  When one batch shape has been evaluated twice,
that function is traced once into a straight-line graph of tensor operations
(:mod:`fokker.targets._tracing`: ``make_fx`` on fake tensors, then constant
folding, identity removal, common subexpressions, dead code) and the graph is
used from then on: Pyro's Python machinery runs once per batch shape instead
of once per gradient.  ``compile=`` chooses how far this goes:

* ``"auto"`` (default): the traced graph; on CUDA it is also recorded as a CUDA
  graph (one launch per evaluation);
* ``"trace"``: the traced graph on every device;
* ``"inductor"`` (or ``True``): ``torch.compile`` of the traced graph (fused
  kernels; the compilation takes seconds to a minute and pays off on long runs);
* ``"none"`` (or ``False``): ``vmap`` of the Pyro trace at every call.

Every traced or compiled graph is compared with the ``vmap`` result at the
point where it was built and dropped (with a ``RuntimeWarning``) if they differ;
models that cannot be traced (Python control flow on tensor values) stay on the
``vmap`` path, and models ``vmap`` cannot batch fall back to a loop over points
(``RuntimeWarning``).  :attr:`PyroTarget.evaluation` says which path the last
call took.  Distributions whose ``log_prob`` ``vmap`` cannot batch are evaluated
with a batched version while fokker evaluates the model (``Multinomial``: torch
writes into a boolean-masked index, see :func:`multinomial_log_prob`;
``OrderedLogistic``: Pyro writes into a pre-allocated tensor).  Tracing records
the model with real tensors: a model that turns a tensor into a Python number
(``int(y.sum())``) cannot be traced and stays on the ``vmap`` path (compute such
numbers outside the model and pass them as arguments).

Reparameterization: ``reparam=`` applies Pyro's ``poutine.reparam`` before
anything else.  The default ``"auto"`` is VIP (:mod:`fokker.targets.vip`; Gorinova,
Moore & Hoffman 2020): hierarchical location-scale sites get the centredness their
data support (eight schools: nearly non-centred; well-identified groups: left as
written), and models without such sites are untouched; ``None`` keeps the model as
written.  Otherwise a ``{site: Reparam}`` dict, a Pyro reparam strategy (any callable
``site -> Reparam | None``), or ``"noncentered"`` for Pyro's
``AutoReparam(centered=0.0)`` (``LocScaleReparam(centered=0)`` on every latent
location-scale site: ``theta ~ N(mu, tau)`` becomes ``theta_decentered ~ N(0, 1)``
and the deterministic ``theta = mu + tau * theta_decentered``; Papaspiliopoulos,
Roberts & Skold 2007, "A general framework for the parametrization of hierarchical
models", Statistical Science 22(1)).  The posterior of the original sites is the
same; :meth:`PyroTarget.constrain` returns them as deterministic sites.

Initial points (:meth:`PyroTarget.init`) use Pyro's own init strategies
(``init_to_uniform``, ``init_to_median``, ``init_to_feasible``), extended to
sites whose distribution cannot be sampled (``ImproperUniform``, the flat
priors of Stan-style models): those start at zero ("median", "feasible") or
uniformly in ``(-radius, radius)`` ("uniform") of their unconstrained space.

Not supported (each a :class:`~fokker.errors.ParameterError`): discrete latent
sites (Pyro's HMC enumerates them out) and supports without a bijection onto
``R^k`` (``Wishart``'s positive-definite matrices: use ``LKJCholesky`` and scales).
A model that raises while fokker runs it gives a :class:`~fokker.errors.ModelError`.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch

from .._args import check_int
from .._random import rng_scope
from ..errors import ModelError, NonFiniteError, ParameterError
from ..tolerances import tolerance
from .base import Target

__all__ = ["from_pyro", "PyroTarget", "multinomial_log_prob"]

_STRATEGIES = ("uniform", "median", "feasible")
_COMPILE = ("auto", "trace", "inductor", "none")
#: evaluations of one batch shape on the eager path before its graph is traced
TRACE_AFTER = 2
#: batch shapes whose potential is kept (least recently created dropped first)
_MAX_SHAPES = 16


def multinomial_log_prob(self: Any, value: torch.Tensor) -> torch.Tensor:
    """``Multinomial.log_prob`` written so that ``torch.func.vmap`` can batch it.

    ``log n! - sum_k log x_k! + sum_k x_k log p_k`` with ``0 log 0 = 0``: the same value as
    torch's, which zeroes ``-inf`` logits at zero counts through a boolean-masked index
    assignment (a data-dependent shape ``vmap`` refuses); here ``torch.where`` does it.
    """
    if self._validate_args:
        self._validate_sample(value)
    logits, value = torch.distributions.utils.broadcast_all(self.logits, value)
    logits = torch.where((value == 0) & (logits == -math.inf), torch.zeros_like(logits), logits)
    return torch.lgamma(value.sum(-1) + 1) - torch.lgamma(value + 1).sum(-1) + (logits * value).sum(-1)


def _ordered_logistic_init(self: Any, predictor: torch.Tensor, cutpoints: torch.Tensor, validate_args: Any = None) -> None:
    """``OrderedLogistic.__init__`` without writes into a pre-allocated tensor (which ``vmap`` refuses).

    Category probabilities ``(q_0, q_1 - q_0, ..., 1 - q_{K-1})`` with ``q = sigmoid(cutpoints - predictor)``,
    the same as Pyro's, built with one ``torch.cat``.
    """
    from pyro.distributions import OrderedLogistic

    q = torch.sigmoid(cutpoints - predictor.unsqueeze(-1))
    self.predictor = predictor.expand(q.shape[:-1])
    self.cutpoints = cutpoints.expand(q.shape)
    p = torch.cat([q[..., :1], q[..., 1:] - q[..., :-1], 1 - q[..., -1:]], dim=-1)
    super(OrderedLogistic, self).__init__(p, validate_args=validate_args)


def _batchable_replacements() -> list[tuple[type, str, Callable]]:
    from pyro.distributions import OrderedLogistic

    return [
        (torch.distributions.Multinomial, "log_prob", multinomial_log_prob),
        (OrderedLogistic, "__init__", _ordered_logistic_init),
    ]


@contextlib.contextmanager
def _batchable_distributions() -> Iterator[None]:
    """Swap in batchable versions of the distribution methods ``vmap`` cannot batch, for the duration.

    The replacements compute the same values (tests compare them with the originals).
    """
    saved = [(cls, attr, cls.__dict__[attr]) for cls, attr, _ in _batchable_replacements()]
    for cls, attr, new in _batchable_replacements():
        setattr(cls, attr, new)
    try:
        yield
    finally:
        for cls, attr, old in saved:
            setattr(cls, attr, old)


@contextlib.contextmanager
def _evaluating() -> Iterator[None]:
    import pyro

    with pyro.validation_enabled(False), _batchable_distributions():
        yield


def _latent_sites(trace) -> list[tuple[str, dict]]:
    out = []
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site["is_observed"]:
            continue
        fn = site["fn"]
        if type(fn).__name__ == "_Subsample":
            continue
        discrete = fn.support.is_discrete or (
            getattr(fn, "has_enumerate_support", False) and not getattr(fn, "has_rsample", True)
        )
        if discrete:
            raise ParameterError(
                f"site {name!r} is discrete ({type(fn).__name__}); from_pyro supports continuous latents only "
                "(sum it out by hand, e.g. with a mixture distribution or pyro.factor)"
            )
        out.append((name, site))
    return out


def _is_factor(site: dict) -> bool:
    return type(site["fn"]).__name__ == "Unit"


def _is_deterministic(site: dict) -> bool:
    return bool(site.get("infer", {}).get("_deterministic", False))


def _reparameterized(model: Callable[..., Any], reparam: Any) -> Callable[..., Any]:
    """``model`` under ``poutine.reparam`` per ``reparam`` (see the module docstring)."""
    if reparam is None:
        return model
    from pyro import poutine

    if isinstance(reparam, str):
        if reparam != "noncentered":
            raise ParameterError(
                f"reparam must be 'auto', 'noncentered', a {{site: Reparam}} dict or a Pyro strategy; got {reparam!r}"
            )
        from pyro.infer.reparam.strategies import AutoReparam

        reparam = AutoReparam(centered=0.0)
    elif not (isinstance(reparam, dict) or callable(reparam)):
        raise ParameterError(
            f"reparam must be 'auto', 'noncentered', a {{site: Reparam}} dict or a Pyro strategy; "
            f"got {type(reparam).__name__}"
        )
    return poutine.reparam(model, config=reparam)


class _Potential:
    """Value and gradient for one batch shape: eager until traced (see the module docstring)."""

    def __init__(self) -> None:
        self.calls = 0
        self.fn: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None
        self.mode = "vmap"
        self.failed = False


def _agree(a: torch.Tensor, b: torch.Tensor) -> bool:
    """``a`` and ``b`` equal to a long computation's rounding (NaN where NaN, same infinities)."""
    fb = b[torch.isfinite(b)]
    scale = max(1.0, float(fb.abs().max())) if fb.numel() else 1.0
    tol = tolerance(b.dtype, loose=True, scale=scale)
    return bool(torch.allclose(a, b, rtol=tol.rtol, atol=tol.atol, equal_nan=True))


class PyroTarget(Target):
    """Unconstrained-space log density of a Pyro model (see the module docstring).

    Bingham et al. (2019), "Pyro: deep universal probabilistic programming", JMLR 20: the
    negative of the potential energy Pyro's HMC/NUTS use (Hoffman & Gelman, 2014).

    Attributes:
        param_names: latent site names, in the order their blocks appear in ``z``.
        param_shapes: constrained shape of each site (``dict``).
        unconstrained_shapes: shape of each site's block in unconstrained space.
        transforms: ``biject_to(support)`` per site (unconstrained -> constrained).
        observed: the observed sites' values (``pyro.factor`` terms excluded).
        evaluation: how the last :meth:`log_prob_and_score` call was computed: ``"loop"``,
            ``"vmap"``, ``"traced"``, ``"compiled"`` or ``"cuda_graph"``.
    """

    def __init__(
        self,
        model: Callable[..., Any],
        args: tuple = (),
        kwargs: dict | None = None,
        *,
        reparam: Any = "auto",
        compile: str | bool = "auto",
    ) -> None:
        from torch.distributions import biject_to

        if not callable(model):
            raise TypeError(f"model must be a callable Pyro model; got {type(model).__name__}")
        if isinstance(compile, bool):
            compile = "inductor" if compile else "none"
        if compile not in _COMPILE:
            raise ParameterError(f"compile must be one of {_COMPILE} or a bool; got {compile!r}")
        self.model = model
        self.model_args = tuple(args)
        self.model_kwargs = dict(kwargs or {})
        self.compile = compile
        #: VIP's learned centredness per rewritten site (``reparam="auto"``; empty otherwise)
        self.centeredness: dict[str, torch.Tensor] = {}
        written = None  # the model as written, traced once
        if isinstance(reparam, str) and reparam == "auto":
            from .vip import vip_reparam

            written = self._first_trace(model)
            _latent_sites(written)  # a model that raises or has discrete sites: its error first
            reparam = vip_reparam(model, self.model_args, self.model_kwargs) or None
            self.centeredness = {s: r.centered for s, r in (reparam or {}).items()}
        self._model = _reparameterized(model, reparam)
        self._dtype: torch.dtype | None = None
        if written is not None and reparam is None:  # "auto" left the model as written: its trace is this one
            trace = written
        else:
            trace = self._first_trace(self._model)
        original = trace if reparam is None else (written if written is not None else self._first_trace(model))
        sites = _latent_sites(trace)
        if not sites:
            raise ParameterError("model has no latent (unobserved) continuous sample sites")
        self.param_names: list[str] = [n for n, _ in sites]
        self.transforms = {}
        for n, site in sites:
            try:
                self.transforms[n] = biject_to(site["fn"].support)
            except NotImplementedError as e:
                raise ParameterError(
                    f"site {n!r} ({type(site['fn']).__name__}) has support {site['fn'].support}, which has no "
                    "bijection onto R^k (torch.distributions.biject_to); write the model with a supported "
                    "parameterization (e.g. LKJCholesky and scales instead of a Wishart matrix)"
                ) from e
        self.param_shapes = {n: tuple(s["value"].shape) for n, s in sites}
        self.unconstrained_shapes = {
            n: tuple(self.transforms[n].inverse_shape(torch.Size(self.param_shapes[n]))) for n in self.param_names
        }
        self._sizes = [math.prod(self.unconstrained_shapes[n]) for n in self.param_names]
        self.observed = {
            n: s["value"]
            for n, s in original.nodes.items()
            if s["type"] == "sample" and s["is_observed"] and not _is_factor(s) and not _is_deterministic(s)
            and torch.is_tensor(s["value"])
        }
        # sites of the model as written that reparam= turned into functions of the new latents
        self._derived = {
            n for n, s in original.nodes.items()
            if s["type"] == "sample" and not s["is_observed"] and n not in self.param_names
            and type(s["fn"]).__name__ != "_Subsample"
        }
        # dtype/device: the observed data's if any (flat-prior sites carry no dtype), else the latents'
        proto = next((v for v in self.observed.values() if v.is_floating_point()), sites[0][1]["value"])
        self._proto = torch.zeros((), dtype=proto.dtype, device=proto.device)
        self._dtype = proto.dtype
        name = getattr(model, "__name__", "pyro_model")
        super().__init__(sum(self._sizes), None, f"pyro:{name}")
        self._vmap_ok: bool | None = None
        self._potentials: dict[tuple, _Potential] = {}
        self.evaluation = "vmap"

    def _first_trace(self, model: Callable[..., Any]) -> Any:
        """One run of ``model`` at a feasible point (Pyro's ``init_to_feasible``), errors named."""
        from pyro import poutine

        try:
            with torch.random.fork_rng(devices=[]), _evaluating():
                return poutine.trace(self._init_messenger("feasible")(model)).get_trace(
                    *self.model_args, **self.model_kwargs
                )
        except (ParameterError, NotImplementedError):
            raise
        except Exception as e:
            if "discrete" in str(e):
                raise ParameterError(f"from_pyro supports continuous latent sites only: {e}") from e
            name = getattr(self.model, "__name__", self.model)
            raise ModelError(
                f"the model {name!r} raised {type(e).__name__} when run once to find its sites: {e}"
            ) from e

    # ----------------------------------------------------------- plumbing
    def reference_tensor(self) -> torch.Tensor | None:
        return self._proto

    def _split(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Flat ``(..., dim)`` -> unconstrained blocks ``(..., *unconstrained_shape)``."""
        parts = torch.split(z, self._sizes, dim=-1)
        batch = z.shape[:-1]
        return {n: p.reshape((*batch, *self.unconstrained_shapes[n])) for n, p in zip(self.param_names, parts)}

    def _conditioned_trace(self, z: torch.Tensor) -> tuple[Any, dict, dict]:
        from pyro import poutine

        unc = self._split(z)
        con = {n: self.transforms[n](u) for n, u in unc.items()}
        trace = poutine.trace(poutine.condition(self._model, con)).get_trace(*self.model_args, **self.model_kwargs)
        return trace, unc, con

    def _log_prob_single(self, z: torch.Tensor) -> torch.Tensor:
        """``log gamma(z)`` for one point ``z`` of shape ``(dim,)`` (Pyro trace + log-Jacobians)."""
        trace, unc, con = self._conditioned_trace(z)
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
            except Exception as e:  # vmap cannot batch this model (data-dependent control flow, ...)
                if self._vmap_ok:
                    raise ModelError(f"the model raised {type(e).__name__} at a batch of {zf.shape[0]} points: {e}") from e
                self._vmap_ok = False
                warnings.warn(
                    f"from_pyro: torch.func.vmap cannot evaluate this model ({type(e).__name__}: {e}); "
                    "falling back to a (slow) Python loop over points",
                    RuntimeWarning,
                    stacklevel=4,
                )
        try:
            outs = [fn(zi) for zi in zf]
        except Exception as e:
            raise ModelError(f"the model raised {type(e).__name__}: {e}") from e
        if isinstance(outs[0], dict):
            return {k: torch.stack([o[k] for o in outs]) for k in outs[0]}
        if isinstance(outs[0], tuple):
            return tuple(torch.stack(col) for col in zip(*outs))
        return torch.stack(outs)

    def _log_prob(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[:-1]
        with _evaluating():
            lp = self._map(self._log_prob_single, x.reshape(-1, self.dim))
        return lp.reshape(batch)

    def _batched_value_and_grad(self, zf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        grad, value = torch.func.vmap(torch.func.grad_and_value(self._log_prob_single))(zf)
        return value, grad

    def _eager_value_and_grad(self, zf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with _evaluating():
            grad, value = self._map(torch.func.grad_and_value(self._log_prob_single), zf)
        return value.detach(), grad.detach()

    def _build(self, pot: _Potential, zf: torch.Tensor, lp: torch.Tensor, grad: torch.Tensor) -> None:
        """Trace (and compile) the value-and-gradient graph of ``zf``'s shape; keep it if it reproduces ``(lp, grad)``."""
        from . import _tracing

        pot.failed = True  # until proven otherwise: one attempt per shape
        try:
            with _evaluating():
                fn: Callable = _tracing.trace(self._batched_value_and_grad, zf)
        except Exception as e:  # data-dependent control flow and the like: stay on the eager path
            warnings.warn(
                f"from_pyro: the model could not be traced into a graph ({type(e).__name__}: {str(e)[:200]}); "
                "evaluating it with vmap at every call (correct, slower)",
                RuntimeWarning,
                stacklevel=4,
            )
            return
        mode = "traced"
        try:
            if self.compile == "inductor":
                fn, mode = _tracing.inductor(fn, zf), "compiled"
            elif self.compile == "auto" and zf.is_cuda:
                fn, mode = _tracing.cuda_graphed(fn, zf), "cuda_graph"
        except Exception as e:
            warnings.warn(f"from_pyro: compiling the traced graph failed ({type(e).__name__}: {str(e)[:200]}); "
                          "using the traced graph", RuntimeWarning, stacklevel=4)
            fn = _tracing.trace(self._batched_value_and_grad, zf) if mode != "traced" else fn
            mode = "traced"
        lp2, grad2 = fn(zf)
        if not (_agree(lp2, lp) and _agree(grad2, grad)):
            warnings.warn(
                "from_pyro: the traced graph of the model does not reproduce its log density at the tracing point "
                "(a model whose result depends on more than its inputs?); evaluating it with vmap at every call",
                RuntimeWarning,
                stacklevel=4,
            )
            return
        pot.fn, pot.mode, pot.failed = fn, mode, False
        self.evaluation = mode

    def log_prob_and_score(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log gamma(x), grad log gamma(x))``, unchecked and detached; the traced graph once the shape is hot."""
        flat = x.dim() == 2
        zf = x.detach() if flat else x.detach().reshape(-1, self.dim)
        pot = self._potentials.get((zf.shape[0], zf.dtype, zf.device))
        if pot is not None and pot.fn is not None:  # the hot path
            lp, grad = pot.fn(zf)
        else:
            lp, grad = self._eager(zf, pot)
        if flat:
            return lp, grad
        return lp.reshape(x.shape[:-1]), grad.reshape(x.shape)

    def _eager(self, zf: torch.Tensor, pot: _Potential | None) -> tuple[torch.Tensor, torch.Tensor]:
        if pot is None:
            if len(self._potentials) >= _MAX_SHAPES:
                self._potentials.pop(next(iter(self._potentials)))
            pot = self._potentials[(zf.shape[0], zf.dtype, zf.device)] = _Potential()
        lp, grad = self._eager_value_and_grad(zf)
        pot.calls += 1
        if self._vmap_ok is False:
            pot.mode, pot.failed = "loop", True
        elif self.compile != "none" and not pot.failed and pot.calls >= TRACE_AFTER:
            self._build(pot, zf, lp, grad)
        self.evaluation = pot.mode
        return lp, grad

    # ------------------------------------------------------------- public
    def constrain(self, z: torch.Tensor, deterministic: bool = True) -> dict[str, torch.Tensor]:
        """Map unconstrained draws ``(..., dim)`` to named constrained values ``(..., *shape)``.

        With ``deterministic=True`` the model is re-run at each draw and its
        ``pyro.deterministic`` sites are returned too (e.g. ``theta`` of a
        non-centred model, or every site a ``reparam=`` rewrote).
        """
        self.check_input(z, "z")
        batch = z.shape[:-1]
        unc = self._split(z)
        out = {n: self.transforms[n](unc[n]) for n in self.param_names}
        if not deterministic:
            return out

        def det_single(zi: torch.Tensor) -> dict[str, torch.Tensor]:
            tr, _, _ = self._conditioned_trace(zi)
            return {
                n: s["value"]
                for n, s in tr.nodes.items()
                if s["type"] == "sample" and (_is_deterministic(s) or n in self._derived)
            }

        zf = z.reshape(-1, self.dim).detach()
        with _evaluating(), torch.no_grad():
            first = det_single(zf[0])
            if first:
                dets = self._map(det_single, zf)
                for n, v in dets.items():
                    out[n] = v.reshape((*batch, *v.shape[1:]))
        return out

    def log_likelihood(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Pointwise log-likelihood of every observed site at unconstrained draws ``z`` ``(..., dim)``.

        ``{site: (..., *site_batch_shape)}``: ``log p(y_i | theta)`` per observation (Pyro's
        ``scale``/``mask`` applied; ``pyro.factor`` terms are not observations and are left
        out).  What :meth:`fokker.mcmc.MCMCResult.to_arviz` puts in the ``log_likelihood``
        group for ``az.loo`` / ``az.waic``.
        """
        from pyro.distributions.util import scale_and_mask

        self.check_input(z, "z")
        batch = z.shape[:-1]

        def single(zi: torch.Tensor) -> dict[str, torch.Tensor]:
            tr, _, _ = self._conditioned_trace(zi)
            out = {}
            for n, site in tr.nodes.items():
                if n in self.observed:
                    lp = site["fn"].log_prob(site["value"], *site["args"], **site["kwargs"])
                    out[n] = scale_and_mask(lp, site["scale"], site["mask"]).expand(site["fn"].batch_shape)
            return out

        zf = z.reshape(-1, self.dim).detach()
        with _evaluating(), torch.no_grad():
            ll = self._map(single, zf)
        return {n: v.reshape((*batch, *v.shape[1:])) for n, v in ll.items()}

    @property
    def unconstrained_names(self) -> list[str]:
        """A name per coordinate of ``z``: ``site`` or ``site[i, j]`` (0-based) in the unconstrained space."""
        out = []
        for n in self.param_names:
            shape = self.unconstrained_shapes[n]
            if not shape:
                out.append(n)
                continue
            for k in range(math.prod(shape)):
                idx = torch.unravel_index(torch.tensor(k), shape)
                out.append(f"{n}[{','.join(str(int(i)) for i in idx)}]")
        return out

    def unconstrain(self, values: dict[str, torch.Tensor]) -> torch.Tensor:
        """Inverse of :meth:`constrain` on the latent sites: dict -> flat ``(..., dim)``."""
        missing = [n for n in self.param_names if n not in values]
        if missing:
            raise ParameterError(f"values is missing latent site(s) {missing}")
        blocks = []
        for n in self.param_names:
            u = self.transforms[n].inv(values[n])
            k = len(self.unconstrained_shapes[n])
            blocks.append(u.reshape(*u.shape[: u.dim() - k], -1))
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

        model = self._init_messenger_typed(strategy)(self._model)
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
                try:
                    with pyro.validation_enabled(False), torch.no_grad():
                        tr = poutine.trace(model).get_trace(*self.model_args, **self.model_kwargs)
                except Exception as e:
                    raise ModelError(f"the model raised {type(e).__name__} while drawing initial points "
                                     f"(strategy={strategy!r}): {e}") from e
                cand.append(self.unconstrain({n: tr.nodes[n]["value"].detach() for n in self.param_names}))
            z = torch.stack(cand).to(self._proto)
            lp, g = self.log_prob_and_score(z)  # one batched evaluation
            ok = torch.isfinite(lp) & torch.isfinite(g).all(-1)
            found.extend(z[ok].unbind(0))
        return torch.stack(found)

    def extra_repr(self) -> str:
        shapes = ", ".join(f"{n}: {tuple(self.param_shapes[n])}" for n in self.param_names)
        return f"dim={self.dim}, sites=({shapes})"


def from_pyro(
    model: Callable[..., Any], *args: Any, reparam: Any = "auto", compile: str | bool = "auto", **kwargs: Any
) -> PyroTarget:
    """A :class:`Target` on the unconstrained space of a Pyro model called as ``model(*args, **kwargs)``.

    ``reparam`` (``"auto"``: VIP on hierarchical location-scale sites; ``None``: the model as written;
    ``"noncentered"``, a ``{site: Reparam}`` dict or a Pyro strategy) and ``compile``
    (``"auto"``, ``"trace"``, ``"inductor"``, ``"none"``) are described in the module docstring;
    they are taken by ``from_pyro`` itself (a model keyword of the same name goes through
    ``PyroTarget(model, args, kwargs)``).

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
    return PyroTarget(model, args, kwargs, reparam=reparam, compile=compile)
