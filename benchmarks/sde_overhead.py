"""Overhead of ``fokker.sde.solve`` (Euler-Maruyama, reverse VP-SDE) vs bare score-network calls.

For each size (d, batch) it times, in one run:

* ``bare``: 500 evaluations of a 2x128 MLP score network ``s(x, t)`` (SiLU; input ``[x, t]``);
* ``floor``: the physical floor of an Euler-Maruyama solve: the same 500 evaluations plus drawing the
  500 Gaussian increments ``(batch, d)`` (what no solver can avoid);
* ``fokker``: ``fokker.sde.solve`` of the reverse VP-SDE with that score, 500 EM steps;
* ``torchsde``: ``torchsde.sdeint(reverse_sde, x, [0, T], method="euler", dt=T/500)``;

and prints ``time / bare`` for both solvers and ``fokker / floor`` (target: <= 1.05).  Everything runs under
``torch.no_grad()`` on the default device (``--device cuda`` if available), float32.  Times are
the best of ``--repeats`` interleaved runs (robust to other load on a shared machine).

Denormals: the score net is random, so the reverse SDE drifts far out (``|x|`` ~ 800 at the end)
and the MLP's SiLU produces subnormal floats there, which make CPU matmuls ~20% slower than at
``x ~ N(0, I)`` where ``bare`` is timed -- a property of the net's inputs, not of the solver.
On CPU the script therefore flushes denormals to zero (``torch.set_flush_denormal(True)``) for
all three timings; ``--keep-denormals`` turns that off.

    python benchmarks/sde_overhead.py [--device cpu|cuda] [--repeats 5] [--threads N]
"""

from __future__ import annotations

import argparse
import time

import torch
import torchsde
from torch import nn

from fokker import sde

STEPS = 500


class ScoreMLP(nn.Module):
    """2 hidden layers of 128 units; input ``cat([x, t])``."""

    def __init__(self, d: int, width: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d + 1, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, d))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        tt = t.expand(x.shape[0], 1) if t.dim() == 0 else t.reshape(-1, 1)
        return self.net(torch.cat([x, tt], -1))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time_all(fns: list, device: torch.device, repeats: int) -> list[float]:
    """Best-of-``repeats`` wall time of each function, interleaved so load drift hits all alike."""
    for fn in fns:  # warm-up
        fn()
    _sync(device)
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            _sync(device)
            best[i] = min(best[i], time.perf_counter() - t0)
    return best


def run(d: int, batch: int, device: torch.device, repeats: int) -> tuple[float, float, float, float]:
    torch.manual_seed(0)
    net = ScoreMLP(d).to(device)
    vp = sde.VPSDE()
    rev = vp.reverse(net)
    x = torch.randn(batch, d, device=device)
    t_fixed = torch.tensor(0.5, device=device)
    ts = torch.linspace(0.0, rev.T, STEPS + 1, dtype=torch.float64)
    ts_sde = torch.tensor([0.0, rev.T], device=device)

    def bare() -> None:
        for _ in range(STEPS):
            net(x, t_fixed)

    def floor() -> None:
        for _ in range(STEPS):
            net(x, t_fixed)
            torch.randn(batch, d, device=device)

    def ours() -> None:
        sde.solve(rev, x, ts)

    def theirs() -> None:
        torchsde.sdeint(rev, x, ts_sde, method="euler", dt=rev.T / STEPS)

    with torch.no_grad():
        tb, tf, to, tt = _time_all([bare, floor, ours, theirs], device, repeats)
    return tb, tf, to, tt


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--keep-denormals", action="store_true", help="do not flush denormals on CPU")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    flushed = device.type == "cpu" and not args.keep_denormals and torch.set_flush_denormal(True)
    print(
        f"device={device}, threads={torch.get_num_threads()}, torch {torch.__version__}, {STEPS} EM steps, "
        f"float32, flush_denormal={bool(flushed)}"
    )
    print(f"{'d':>4} {'batch':>6} {'bare [s]':>9} {'floor [s]':>10} {'fokker [s]':>11} {'torchsde [s]':>13} "
          f"{'fokker/bare':>12} {'torchsde/bare':>14} {'fokker/floor':>13}")
    for d, batch in ((2, 256), (2, 4096), (64, 4096)):
        tb, tf, to, tt = run(d, batch, device, args.repeats)
        print(f"{d:>4} {batch:>6} {tb:>9.4f} {tf:>10.4f} {to:>11.4f} {tt:>13.4f} {to / tb:>12.3f} {tt / tb:>14.3f} "
              f"{to / tf:>13.3f}")


if __name__ == "__main__":
    main()
