"""Training speed of the learned samplers against the FLOP floor of the same run.

One training iteration of ``DDS(Funnel(10))`` with its defaults (K = 128 steps, batch 300,
PIS-grad network of width 64 with 2 layers, reverse-KL loss, Adam) is timed against a bare
loop of the matmuls that iteration must do: per step, the three layers of the state network
``NN_1`` forward (``(B, d) x (d, w)``, ``(B, w) x (w, w)``, ``(B, w) x (w, d)``) and their two
backward products each (input and weight gradients), with preallocated tensors.  The ratio
``time per iteration / floor`` is what is left of Python, kernel-launch and element-wise
overhead.  Iterations and floor loops are interleaved and the minimum of each is kept, so a
loaded machine distorts the ratio less than the absolute times.

Run (one thread, as the issue measures it)::

    OMP_NUM_THREADS=1 python benchmarks/samplers_speed.py [--sampler DDS] [--target funnel]
        [--repeats 7] [--pyro]

``--pyro`` adds the Pyro rows: the same sampler on the breast-cancer logistic regression as
a hand-written :class:`fokker.targets.LogisticRegression` and as the same model written in
Pyro (``fokker.targets.from_pyro``), and the ratio between the two.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def floor_loop(num_steps: int, batch: int, dim: int, width: int, num_layers: int) -> callable:
    shapes = [(dim, width)] + [(width, width)] * (num_layers - 1) + [(width, dim)]
    mats = [(torch.randn(o, i), torch.randn(batch, i), torch.randn(batch, o)) for i, o in shapes]

    def run() -> None:
        for _ in range(num_steps):
            for w, x, g in mats:
                torch.mm(x, w.T)
                torch.mm(g, w)
                torch.mm(g.T, x)

    flops = num_steps * sum(3 * 2 * batch * i * o for i, o in shapes)
    return run, flops


def iteration(sampler, batch: int) -> callable:
    opt = torch.optim.Adam(sampler.parameters(), lr=5e-3)
    sampler.check_target()

    def run() -> None:
        opt.zero_grad(set_to_none=True)
        loss = sampler.loss(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(sampler.parameters(), 1.0)
        opt.step()

    return run


def best_of(fns: dict[str, callable], repeats: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():  # warm-up
        fn()
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return times


def make_sampler(kind: str, target, num_steps: int):
    from fokker import samplers

    cls = getattr(samplers, kind)
    return cls(target, num_steps=num_steps)


def breast_cancer_pyro_model():
    import pyro
    import pyro.distributions as dist

    from fokker import targets

    ref = targets.breast_cancer()
    X, y = ref.X, ref.y

    def model(X, y):
        w = pyro.sample("w", dist.Normal(torch.zeros(X.shape[1]), 1.0).to_event(1))
        with pyro.plate("data", X.shape[0]):
            pyro.sample("y", dist.Bernoulli(logits=X @ w), obs=y)

    return ref, targets.from_pyro(model, X, y)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sampler", default="DDS")
    p.add_argument("--num-steps", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=300)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--pyro", action="store_true")
    a = p.parse_args()

    from fokker import targets

    torch.manual_seed(0)
    target = targets.Funnel(10, 3.0)
    s = make_sampler(a.sampler, target, a.num_steps)
    floor, flops = floor_loop(a.num_steps, a.batch_size, target.dim, 64, 2)
    t = best_of({"iteration": iteration(s, a.batch_size), "floor": floor}, a.repeats)
    it, fl = min(t["iteration"]), min(t["floor"])
    print(f"{a.sampler}(Funnel(10)), K = {a.num_steps}, batch {a.batch_size}, threads {torch.get_num_threads()}")
    print(f"  time per iteration   {it * 1e3:8.1f} ms (median {statistics.median(t['iteration']) * 1e3:.1f})")
    print(f"  matmul floor         {fl * 1e3:8.1f} ms ({flops / 1e9:.2f} GFLOP, {flops / fl / 1e9:.1f} GFLOP/s)")
    print(f"  ratio                {it / fl:8.2f} x the floor")
    print(f"  2000 iterations      {it * 2000 / 60:8.1f} min")
    if a.pyro:
        ref, pyro_target = breast_cancer_pyro_model()
        rows = {}
        for name, tg in (("hand-written LogisticRegression", ref), ("Pyro model (from_pyro)", pyro_target)):
            sp = make_sampler(a.sampler, tg, a.num_steps)
            rows[name] = min(best_of({"it": iteration(sp, a.batch_size)}, max(2, a.repeats // 2))["it"])
            print(f"  breast cancer, {name:32s} {rows[name] * 1e3:8.1f} ms per iteration")
        vals = list(rows.values())
        print(f"  Pyro / hand-written  {vals[1] / vals[0]:8.2f} x")


if __name__ == "__main__":
    main()
