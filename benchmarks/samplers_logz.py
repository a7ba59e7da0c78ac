"""Longer runs of the sampler validation table (more training steps / discretization steps).

``fokker validate --only samplers`` runs a CPU-sized version (K = 128, 600 DDS training
steps).  This script runs the same rows with the budget given on the command
line, e.g. closer to the papers' settings on an accelerator::

    python benchmarks/samplers_logz.py --target funnel --num-steps 128 --train-steps 5000 \\
        --batch-size 300 --device cuda

and prints the table (log Z bias / spread, ESS, MMD and energy distance to exact samples).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace


from fokker.validate import Context
from fokker.validate.checks_samplers import RunConfig, _cfg, _table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", default="funnel", choices=["funnel", "mog40", "manywell", "ionosphere", "sonar"])
    p.add_argument("--methods", default=None, help="comma separated subset of DDS,PIS,DIS,AIS,SMC")
    p.add_argument("--num-steps", type=int, default=None)
    p.add_argument("--train-steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--loss", default=None, choices=["kl", "lv"])
    p.add_argument("--num-eval-samples", type=int, default=None)
    p.add_argument("--eval-seeds", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()

    from fokker import targets

    make = {
        "funnel": lambda: targets.Funnel(10, 3.0),
        "mog40": targets.mog40,
        "manywell": lambda: targets.ManyWell(32),
        "ionosphere": targets.ionosphere,
        "sonar": targets.sonar,
    }[a.target]
    target = make().to(a.device)
    cfg: RunConfig = _cfg(a.target, quick=False)
    for field, val in (("num_steps", a.num_steps), ("num_eval_samples", a.num_eval_samples), ("eval_seeds", a.eval_seeds)):
        if val is not None:
            setattr(cfg, field, val)
    for kind in ("DDS", "PIS", "DIS"):  # methods the table would not train get the DDS settings
        tc = cfg.train.get(kind, cfg.train["DDS"])
        cfg.train[kind] = replace(
            tc,
            steps=a.train_steps if a.train_steps is not None else tc.steps,
            batch_size=a.batch_size if a.batch_size is not None else tc.batch_size,
            loss=a.loss if a.loss is not None else tc.loss,
        )
    if a.methods:
        cfg.methods = tuple(m.strip() for m in a.methods.split(","))
    t0 = time.perf_counter()
    rows = _table(a.target, target, cfg, Context(quick=False, seed=a.seed), log_z_tol=1.0)
    for r in rows:
        fmt = lambda v: f"{v:.6g}" if isinstance(v, float) else str(v)  # noqa: E731
        print(f"{r.name:40s} {fmt(r.measured):>12} ref {fmt(r.reference):>10} tol {fmt(r.tolerance):>8} "
              f"{'pass' if r.passed else 'FAIL'}  {r.details}")
    print(f"total {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
