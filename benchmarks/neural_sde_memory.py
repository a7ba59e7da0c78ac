"""Peak memory of one LatentSDE gradient step: stochastic adjoint vs backpropagation through the solver.

For 100 / 1000 / 10000 solver steps over the same observation grid (11 times on ``[0, 1]``), each
configuration runs in a fresh subprocess that builds a :class:`fokker.neural_sde.LatentSDE`
(data dim 2, latent dim 4, hidden 32, batch 16, float32), takes one warm-up gradient step with 10
solver steps, records the process's peak resident set size (``ru_maxrss``), takes one gradient
step of the negative ELBO with ``adjoint=True`` (``torchsde.sdeint_adjoint``, reversible Heun) or
``adjoint=False`` (``torchsde.sdeint``, autograd through every step), and reports the growth of the
peak RSS during that step.  Backpropagation stores every step's activations (memory linear in the
number of steps); the adjoint stores only the states at the observation times and re-solves
backwards (memory flat in the number of steps).  Also printed: the wall time of the step and the
largest difference between the two gradients (reversible Heun's adjoint is exact up to rounding).

    python benchmarks/neural_sde_memory.py [--steps 100 1000 10000] [--batch 16]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def child(adjoint: bool, num_steps: int, batch: int) -> None:
    import torch

    from fokker.neural_sde import LatentSDE

    torch.set_num_threads(1)
    torch.manual_seed(0)
    times = torch.linspace(0, 1, 11)
    paths = torch.randn(batch, 11, 2).cumsum(1) * 0.3
    model = LatentSDE(2, 4, hidden=32, context_dim=16, adjoint=adjoint, dt=0.1)

    def step(dt: float) -> torch.Tensor:
        model.dt = dt
        model.zero_grad()
        (-model.elbo(times, paths, generator=torch.Generator().manual_seed(1)).mean()).backward()
        return torch.cat([p.grad.reshape(-1) for p in model.parameters()])

    step(0.1)  # warm-up: allocator, autograd and torchsde code paths
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    grad = step(1.0 / num_steps)
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    torch.save(grad, f"/tmp/neural_sde_memory_grad_{int(adjoint)}_{num_steps}.pt")
    print(json.dumps({"peak_mib": (after - before) / 1024, "seconds": seconds}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--child", nargs=2, metavar=("ADJOINT", "STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0] == "1", int(args.child[1]), args.batch)
        return
    import torch

    rows = []
    for num_steps in args.steps:
        res = {}
        for adjoint in (True, False):
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(int(adjoint)), str(num_steps), "--batch", str(args.batch)],
                check=True, capture_output=True, text=True,
            )
            res[adjoint] = json.loads(out.stdout.strip().splitlines()[-1])
        g_adj = torch.load(f"/tmp/neural_sde_memory_grad_1_{num_steps}.pt")
        g_bp = torch.load(f"/tmp/neural_sde_memory_grad_0_{num_steps}.pt")
        diff = float((g_adj - g_bp).abs().max() / g_bp.abs().max())
        rows.append((num_steps, res[True], res[False], diff))
    print(f"{'solver steps':>12} | {'adjoint MiB':>11} | {'backprop MiB':>12} | {'backprop/adjoint':>16} | "
          f"{'adjoint s':>9} | {'backprop s':>10} | {'rel. grad diff':>14}")
    print("-" * 104)
    for num_steps, adj, bp, diff in rows:
        ratio = bp["peak_mib"] / max(adj["peak_mib"], 1e-9)
        print(f"{num_steps:>12} | {adj['peak_mib']:>11.1f} | {bp['peak_mib']:>12.1f} | {ratio:>16.1f} | "
              f"{adj['seconds']:>9.2f} | {bp['seconds']:>10.2f} | {diff:>14.2e}")
    first, last = rows[0], rows[-1]
    print(f"\ngrowth from {first[0]} to {last[0]} steps: adjoint {last[1]['peak_mib'] - first[1]['peak_mib']:+.1f} MiB, "
          f"backprop {last[2]['peak_mib'] - first[2]['peak_mib']:+.1f} MiB")


if __name__ == "__main__":
    main()
