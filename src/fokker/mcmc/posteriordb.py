"""posteriordb posteriors written as Pyro models, and their reference summaries.

The reference draws and data live in ``shared/validation/posteriordb/``
(Magnusson, Buerkner & Vehtari, "posteriordb"; Stan NUTS, 10 x 1000 draws);
they are read through :func:`fokker.data.data_file` and never copied here.
Each model follows the Stan program of the same name (``~`` statements keep
their constants here, which changes nothing for MCMC):

* ``eight_schools_noncentered`` / ``_centered``: mu ~ N(0, 5), tau ~ HalfCauchy(5),
  theta_j ~ N(mu, tau) (non-centred: theta = mu + tau * theta_trans,
  theta_trans ~ N(0, 1)), y_j ~ N(theta_j, sigma_j);
* ``arK``: AR(K) with alpha, beta_k ~ N(0, 10), sigma ~ HalfCauchy(2.5),
  y_t ~ N(alpha + sum_k beta_k y_{t-k}, sigma), t = K+1..T;
* ``blr`` (sblrc): y ~ N(X beta, sigma), beta ~ N(0, 10), sigma ~ HalfNormal(10);
* ``low_dim_gauss_mix``: ordered mu (a Stan ``ordered[2]``: an ``ImproperUniform``
  on ordered vectors plus a ``pyro.factor`` for its N(0, 2) prior),
  sigma_k ~ HalfNormal(2), theta ~ Beta(5, 5),
  y_n ~ theta N(mu_1, sigma_1) + (1 - theta) N(mu_2, sigma_2);
* ``gp_pois_regr``: rho ~ Gamma(25, 4), alpha ~ HalfNormal(2), f_tilde ~ N(0, I),
  K = alpha^2 exp(-(x - x')^2 / (2 rho^2)) + 1e-10 I, f = chol(K) f_tilde,
  k_n ~ Poisson(exp(f_n)).

Parameter names of the references are Stan's 1-based ``name[i]``;
:func:`reference_names` maps our 0-based names to them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..data import data_file

__all__ = ["Posterior", "POSTERIORS", "load", "stan_name"]


def _t(v: Any, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.as_tensor(v, dtype=dtype)


def eight_schools(y: torch.Tensor, sigma: torch.Tensor, centered: bool = False) -> None:
    import pyro
    import pyro.distributions as dist

    mu = pyro.sample("mu", dist.Normal(_t(0.0), 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(_t(5.0)))
    with pyro.plate("J", y.shape[-1]):
        if centered:
            theta = pyro.sample("theta", dist.Normal(mu, tau))
        else:
            tt = pyro.sample("theta_trans", dist.Normal(_t(0.0), 1.0))
            theta = pyro.deterministic("theta", mu + tau * tt)
        pyro.sample("y", dist.Normal(theta, sigma), obs=y)


def ark(y: torch.Tensor, K: int) -> None:
    import pyro
    import pyro.distributions as dist

    T = y.shape[-1]
    alpha = pyro.sample("alpha", dist.Normal(_t(0.0), 10.0))
    beta = pyro.sample("beta", dist.Normal(_t(0.0), 10.0).expand([K]).to_event(1))
    sigma = pyro.sample("sigma", dist.HalfCauchy(_t(2.5)))
    # lagged design: column k holds y_{t-k-1} for t = K..T-1 (0-based)
    lags = torch.stack([y[K - k - 1 : T - k - 1] for k in range(K)], -1)
    mean = alpha + lags @ beta
    with pyro.plate("T", T - K):
        pyro.sample("y", dist.Normal(mean, sigma), obs=y[K:])


def blr(X: torch.Tensor, y: torch.Tensor) -> None:
    import pyro
    import pyro.distributions as dist

    beta = pyro.sample("beta", dist.Normal(_t(0.0), 10.0).expand([X.shape[-1]]).to_event(1))
    sigma = pyro.sample("sigma", dist.HalfNormal(_t(10.0)))
    with pyro.plate("N", X.shape[0]):
        pyro.sample("y", dist.Normal(X @ beta, sigma), obs=y)


def low_dim_gauss_mix(y: torch.Tensor) -> None:
    import pyro
    import pyro.distributions as dist
    from pyro.distributions import constraints

    mu = pyro.sample("mu", dist.ImproperUniform(constraints.ordered_vector, (), (2,)))
    pyro.factor("mu_prior", dist.Normal(_t(0.0), 2.0).log_prob(mu).sum(-1))
    sigma = pyro.sample("sigma", dist.HalfNormal(_t(2.0)).expand([2]).to_event(1))
    theta = pyro.sample("theta", dist.Beta(_t(5.0), _t(5.0)))
    mix = dist.MixtureSameFamily(
        dist.Categorical(probs=torch.stack([theta, 1 - theta], -1)), dist.Normal(mu, sigma)
    )
    with pyro.plate("N", y.shape[-1]):
        pyro.sample("y", mix, obs=y)


def gp_pois_regr(x: torch.Tensor, k: torch.Tensor) -> None:
    import pyro
    import pyro.distributions as dist

    n = x.shape[-1]
    rho = pyro.sample("rho", dist.Gamma(_t(25.0), _t(4.0)))
    alpha = pyro.sample("alpha", dist.HalfNormal(_t(2.0)))
    f_tilde = pyro.sample("f_tilde", dist.Normal(_t(0.0), 1.0).expand([n]).to_event(1))
    d2 = (x[:, None] - x[None, :]) ** 2
    cov = alpha**2 * torch.exp(-d2 / (2 * rho**2)) + 1e-10 * torch.eye(n, dtype=x.dtype)
    # a failed factorization (K numerically singular) gives NaN, i.e. a rejected proposal, as in Stan
    chol, info = torch.linalg.cholesky_ex(cov)
    chol = torch.where(info == 0, chol, torch.full_like(chol, float("nan")))
    f = pyro.deterministic("f", chol @ f_tilde)
    with pyro.plate("N", n):
        pyro.sample("k", dist.Poisson(torch.exp(f)), obs=k)


@dataclass
class Posterior:
    """A posteriordb posterior (Magnusson, Buerkner & Vehtari 2023, "posteriordb"): folder, Pyro model and
    how to build its arguments from ``data.json``."""

    name: str
    folder: str
    model: Callable[..., None]
    args: Callable[[dict], tuple]
    kwargs: dict


POSTERIORS: dict[str, Posterior] = {
    "eight_schools_noncentered": Posterior(
        "eight_schools_noncentered", "eight_schools-eight_schools_noncentered", eight_schools,
        lambda d: (_t(d["y"]), _t(d["sigma"])), {"centered": False},
    ),
    "eight_schools_centered": Posterior(
        "eight_schools_centered", "eight_schools-eight_schools_centered", eight_schools,
        lambda d: (_t(d["y"]), _t(d["sigma"])), {"centered": True},
    ),
    "arK": Posterior("arK", "arK-arK", ark, lambda d: (_t(d["y"]), int(d["K"])), {}),
    "sblrc_blr": Posterior("sblrc_blr", "sblrc-blr", blr, lambda d: (_t(d["X"]), _t(d["y"])), {}),
    "low_dim_gauss_mix": Posterior(
        "low_dim_gauss_mix", "low_dim_gauss_mix-low_dim_gauss_mix", low_dim_gauss_mix, lambda d: (_t(d["y"]),), {}
    ),
    "gp_pois_regr": Posterior(
        "gp_pois_regr", "gp_pois_regr-gp_pois_regr", gp_pois_regr, lambda d: (_t(d["x"]), _t(d["k"])), {}
    ),
}


def load(name: str, path: str | Path | None = None, *, reparam: Any = "auto") -> tuple[Any, dict]:
    """``(from_pyro target, reference summary dict)`` of posterior ``name`` (raises DataNotFoundError);
    ``reparam`` goes to :func:`~fokker.targets.from_pyro` (its default: VIP on hierarchical sites)."""
    from ..targets.pyro import from_pyro

    post = POSTERIORS[name]
    base = None if path is None else Path(path) / post.folder
    data_p = data_file("posteriordb", post.folder, "data.json", path=None if base is None else base / "data.json")
    summ_p = data_file("posteriordb", post.folder, "summary.json", path=None if base is None else base / "summary.json")
    data = json.loads(Path(data_p).read_text())
    summary = json.loads(Path(summ_p).read_text())["parameters"]
    target = from_pyro(post.model, *post.args(data), reparam=reparam, **post.kwargs)
    return target, summary


def stan_name(name: str) -> str:
    """``theta[0]`` -> ``theta[1]`` (Stan's 1-based indices); scalars unchanged."""
    if "[" not in name:
        return name
    base, idx = name[:-1].split("[")
    return f"{base}[{','.join(str(int(i) + 1) for i in idx.split(','))}]"
