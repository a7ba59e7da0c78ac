"""The fokker command: validate (reproduce closed-form and published numbers), targets (list the
benchmark targets), --version."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _cmd_validate(args: argparse.Namespace) -> int:
    from .validate.runner import run_checks, select

    if args.list:
        checks = select(args.only)
        w = max((len(c.name) for c in checks), default=5)
        for c in checks:
            print(f"{c.name.ljust(w)}  {'needs shared/validation data' if c.needs_data else ''}".rstrip())
        return 0
    _, ok = run_checks(
        quick=args.quick, only=args.only, out=args.out, progress=False if args.no_progress else None, jobs=args.jobs
    )
    print(f"report written to {args.out}/report.md")
    return 0 if ok else 1


def _cmd_targets(args: argparse.Namespace) -> int:
    from . import targets

    rows = []
    for name, factory in targets.catalogue().items():
        try:
            t = factory()
            lz = "unknown" if t.log_Z is None else f"{t.log_Z:.6f}"
            exact = "yes" if t.has_exact_samples else "no"
            rows.append((name, str(t.dim), lz, exact))
        except Exception as e:  # e.g. data not found
            rows.append((name, "-", f"unavailable ({type(e).__name__})", "-"))
    head = ("target", "dim", "log Z", "exact samples")
    w = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    for r in (head, *rows):
        print("  ".join(c.ljust(x) for c, x in zip(r, w)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from . import __version__

    p = argparse.ArgumentParser(
        prog="fokker",
        description="fokker: densities and the SDEs that move them. Run `fokker validate --quick` for the "
        "reduced validation table (the README's main job), `fokker validate --list` for the check names.",
    )
    p.add_argument("--version", action="version", version=f"fokker {__version__}")
    sub = p.add_subparsers(dest="cmd")
    v = sub.add_parser("validate", help="run the registered validation checks and write a report")
    v.add_argument("--quick", action="store_true", help="reduced version of every check")
    v.add_argument("--only", default=None, help="glob or substring of check names to run")
    v.add_argument("--out", default="fokker-report", help="folder for report.md and plots")
    v.add_argument("--no-progress", action="store_true", help="no progress bar")
    v.add_argument("--jobs", type=int, default=None,
                   help="worker processes running checks side by side (default: one per core, at most 4)")
    v.add_argument("--list", action="store_true", help="list the check names (for --only) and exit")
    v.set_defaults(func=_cmd_validate)
    t = sub.add_parser("targets", help="list the benchmark targets with dim and log Z")
    t.set_defaults(func=_cmd_targets)
    args = p.parse_args(argv)
    if args.cmd is None:
        p.print_help()
        return 0
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
