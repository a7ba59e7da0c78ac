"""fokker flows vs zuko: train-step and sampling time, same architecture, one run.

Rows: MAF and NSF (autoregressive spline, zuko's default NSF; plus the coupling NSF),
5 transforms, hidden (128, 128), d = 8 and 32, batch 4096.

* train step: ``log_prob(x).mean()`` + ``backward`` (+ zeroing grads), minimum over
  ``--repeat`` interleaved rounds;
* sampling: ``sample((4096,))`` without gradient.

Prints a markdown table with milliseconds and the ratio fokker / zuko (<= 1 means
fokker is at least as fast).  Usage::

    python benchmarks/flows_vs_zuko.py [--threads N] [--repeat R] [--device cpu|cuda]
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
    if kind == "NSF-coupling":
        return (
            flows.nsf(d, T, HIDDEN, kind="coupling"),
            zuko.flows.NSF(d, transforms=T, hidden_features=HIDDEN, passes=2),
        )
    raise ValueError(kind)


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


if __name__ == "__main__":
    main()
