"""fokker flows vs zuko: train-step and sampling time, same architecture, one run.

Rows: MAF and NSF (autoregressive spline, zuko's default NSF; plus the coupling NSF),
5 transforms, hidden (128, 128), d = 8 and 32, batch 4096.  ``--kinds NAF UNAF SOSPF`` adds the
neural autoregressive flows (same MADE; the univariate maps differ: fokker's NAF is Huang et al.'s
deep sigmoid map, zuko's a monotonic MLP; both UNAFs integrate a 16-signal (64, 64) network, fokker
with 16 Gauss-Legendre nodes, zuko with 32; sampling: fokker safeguarded Newton, zuko bisection).

* train step: ``log_prob(x).mean()`` + ``backward`` (+ zeroing grads), minimum over
  ``--repeat`` interleaved rounds;
* sampling: ``sample((4096,))`` without gradient.

Prints a markdown table with milliseconds and the ratio fokker / zuko (<= 1 means
fokker is at least as fast).  Usage::

    python benchmarks/flows_vs_zuko.py [--threads N] [--repeat R] [--device cpu|cuda] [--pyro]
"""

from __future__ import annotations

import argparse
import time

import torch
import zuko

from fokker import flows

HIDDEN = (128, 128)
T = 5


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timeit_pair(fa, fb, device: torch.device, repeat: int, warmup: int = 2) -> tuple[float, float]:
    """Interleaved timing of two callables; the minimum over ``repeat`` rounds (ms).

    Interleaving and the minimum make the ratio robust to load from other processes
    on a shared machine.
    """
    for _ in range(warmup):
        fa(), fb()
    ta, tb = [], []
    for _ in range(repeat):
        for f, acc in ((fa, ta), (fb, tb)):
            _sync(device)
            t0 = time.perf_counter()
            f()
            _sync(device)
            acc.append(time.perf_counter() - t0)
    return min(ta) * 1e3, min(tb) * 1e3


def pair(kind: str, d: int):
    if kind == "MAF":
        return flows.maf(d, T, HIDDEN), zuko.flows.MAF(d, transforms=T, hidden_features=HIDDEN)
    if kind == "NSF-AR":
        return (
            flows.nsf(d, T, HIDDEN, kind="autoregressive"),
            zuko.flows.NSF(d, transforms=T, hidden_features=HIDDEN),
        )
    if kind == "NAF":
        return flows.naf(d, T, HIDDEN), zuko.flows.NAF(d, transforms=T, hidden_features=HIDDEN)
    if kind == "UNAF":
        return (
            flows.unaf(d, T, HIDDEN, num_nodes=16),
            zuko.flows.UNAF(d, transforms=T, hidden_features=HIDDEN),
        )
    if kind == "SOSPF":
        return flows.sospf(d, T, HIDDEN), zuko.flows.SOSPF(d, transforms=T, hidden_features=HIDDEN)
    if kind == "NSF-coupling":
        return (
            flows.nsf(d, T, HIDDEN, kind="coupling"),
            zuko.flows.NSF(d, transforms=T, hidden_features=HIDDEN, passes=2),
        )
    raise ValueError(kind)


def pyro_flow(kind: str, d: int):
    """Pyro's own layers of the same size (``--pyro``): why fokker does not re-export them."""
    import pyro.distributions as pdist
    import pyro.distributions.transforms as T_

    make = T_.affine_autoregressive if kind == "MAF" else T_.spline_autoregressive
    layers = [make(d, hidden_dims=list(HIDDEN)) for _ in range(T)]
    modules = torch.nn.ModuleList(layers)
    base = pdist.Normal(torch.zeros(d), torch.ones(d)).to_event(1)
    return modules, lambda: pdist.TransformedDistribution(base, layers)


def bench_pyro(kind: str, d: int, batch: int, repeat: int) -> tuple[float, float]:
    modules, dist = pyro_flow(kind, d)
    ours = flows.maf(d, T, HIDDEN) if kind == "MAF" else flows.nsf(d, T, HIDDEN, kind="autoregressive")
    x = torch.randn(batch, d)

    def train_pyro() -> None:
        # a fresh tensor each step: Pyro's layers cache (x, y) by identity and reusing the
        # same data tensor raises "backward through the graph a second time"
        modules.zero_grad(set_to_none=True)
        (-dist().log_prob(x.clone()).mean()).backward()

    def train_ours() -> None:
        ours.zero_grad(set_to_none=True)
        (-ours.log_prob(x).mean()).backward()

    return timeit_pair(train_ours, train_pyro, torch.device("cpu"), repeat, warmup=1)


def bench(kind: str, d: int, batch: int, repeat: int, device: torch.device) -> dict[str, float]:
    ours, theirs = pair(kind, d)
    ours, theirs = ours.to(device), theirs.to(device)
    x = torch.randn(batch, d, device=device)

    def train_ours() -> None:
        ours.zero_grad(set_to_none=True)
        (-ours.log_prob(x).mean()).backward()

    def train_zuko() -> None:
        theirs.zero_grad(set_to_none=True)
        (-theirs().log_prob(x).mean()).backward()

    def sample_ours() -> None:
        ours.sample((batch,))

    def sample_zuko() -> None:
        with torch.no_grad():
            theirs().sample((batch,))

    out = {}
    out["train_fokker"], out["train_zuko"] = timeit_pair(train_ours, train_zuko, device, repeat)
    out["sample_fokker"], out["sample_zuko"] = timeit_pair(sample_ours, sample_zuko, device, repeat)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dims", type=int, nargs="+", default=[8, 32])
    p.add_argument("--kinds", nargs="+", default=["MAF", "NSF-AR", "NSF-coupling"])
    p.add_argument("--pyro", action="store_true", help="also time Pyro's autoregressive layers (train step, CPU)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    print(f"device={device} threads={torch.get_num_threads()} batch={args.batch} transforms={T} hidden={HIDDEN}")
    print("| flow | d | train fokker (ms) | train zuko (ms) | ratio | sample fokker (ms) | sample zuko (ms) | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for kind in args.kinds:
        for d in args.dims:
            r = bench(kind, d, args.batch, args.repeat, device)
            print(
                f"| {kind} | {d} | {r['train_fokker']:.1f} | {r['train_zuko']:.1f} | "
                f"{r['train_fokker'] / r['train_zuko']:.2f} | {r['sample_fokker']:.1f} | "
                f"{r['sample_zuko']:.1f} | {r['sample_fokker'] / r['sample_zuko']:.2f} |",
                flush=True,
            )
    if args.pyro:
        print("\n| Pyro layer (train step) | d | fokker (ms) | Pyro (ms) | Pyro / fokker |")
        print("|---|---|---|---|---|")
        for kind in ("MAF", "NSF-AR"):
            for d in args.dims:
                ours_ms, pyro_ms = bench_pyro(kind, d, args.batch, max(2, args.repeat // 2))
                print(f"| {kind} | {d} | {ours_ms:.1f} | {pyro_ms:.1f} | {pyro_ms / ours_ms:.1f} |", flush=True)


if __name__ == "__main__":
    main()
