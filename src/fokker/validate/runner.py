"""Run registered checks, print the table and write ``report.md``.

The report opens with a summary per package (rows passed, negative controls that rejected
their wrong model, time), then the table, then the figures with their captions.  A check
family (one registered check) whose rows contain no negative control is itself reported as a
failed row: a row that cannot fail teaches users to trust the table for nothing.
"""

from __future__ import annotations

import contextlib
import fnmatch
import math
import os
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .._progress import progress_bar
from .._random import rng_scope
from .._args import check_int
from ..errors import DataNotFoundError
from . import CheckResult, Context, Figure, import_errors, registry

__all__ = ["run_checks", "default_jobs", "format_table", "select", "Summary"]


def _fmt(v: float | str) -> str:
    if isinstance(v, str):
        return v
    if v == 0 or (1e-3 <= abs(v) < 1e5):
        return f"{v:.4f}"
    return f"{v:.3e}" if math.isfinite(v) else str(v)


def select(only: str | None = None) -> list:
    """The registered checks whose name matches ``only`` (a glob, or a substring), in name order."""
    checks = list(registry().values())
    if only:
        pat = only if any(c in only for c in "*?[") else f"*{only}*"
        checks = [c for c in checks if fnmatch.fnmatch(c.name, pat)]
    return checks


@dataclass
class Summary:
    """Counts of one package's rows."""

    package: str
    rows: int = 0
    rows_passed: int = 0
    controls: int = 0
    controls_passed: int = 0
    skipped: int = 0
    seconds: float = 0.0


def _status(r: CheckResult) -> str:
    if r.control:
        return "rejected" if r.passed else "FAIL (accepted a wrong model)"
    return "pass" if r.passed else "FAIL"


def _cuda_devices() -> list:
    import torch

    return [torch.device("cuda", i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


def _run_one(check, ctx: Context) -> list[CheckResult]:
    try:
        # every check starts from the same seed, on a forked RNG (the caller's state is untouched)
        with rng_scope(devices=_cuda_devices(), seed=ctx.seed):
            res = check.fn(ctx)
        res = res if isinstance(res, list) else [res]
        for r in res:
            r.status = r.status or _status(r)
            r.name = r.name if r.name.startswith(check.name) else f"{check.name}: {r.name}"
        if not any(r.control for r in res) and not any(r.status.startswith("skipped") for r in res):
            res.append(
                CheckResult(
                    f"{check.name}: negative control", "none", "-", "-", False, "FAIL",
                    "this check reports no control row: nothing shows its metric can reject a wrong model",
                    control=True,
                )
            )
        return res
    except DataNotFoundError as e:
        return [CheckResult(check.name, "-", "-", "-", True, "skipped: data not found", str(e))]
    except Exception as e:  # a crashing check is a failed check, with its traceback in the report
        tb = traceback.format_exc(limit=3)
        return [CheckResult(check.name, "error", "-", "-", False, "FAIL", f"{e!r}\n{tb}")]


def _run_named(
    name: str, quick: bool, out: Path, threads: int | None = None
) -> tuple[list[CheckResult], list[Figure], float]:
    """Run the check ``name`` (in this process, or in a worker with ``threads`` torch threads): rows,
    figures announced, seconds."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    ctx = Context(quick=quick, out=out)
    t0 = time.perf_counter()
    rows = _run_one(registry()[name], ctx)
    return rows, ctx.figures, time.perf_counter() - t0


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_jobs() -> int:
    """Worker processes for ``run_checks``: one per core the process may use, at most 4."""
    return max(1, min(4, _cores()))


def run_checks(
    quick: bool = True,
    only: str | None = None,
    out: str | Path = "fokker-report",
    progress: bool | None = None,
    jobs: int | None = None,
) -> tuple[list[CheckResult], bool]:
    """Run the checks whose name matches ``only`` (a glob or substring); return rows and overall pass.

    ``jobs`` worker processes (default :func:`default_jobs`) run checks side by side, each with
    ``cores // jobs`` torch threads; every check starts from the same seed on a forked RNG, so the
    rows do not depend on ``jobs``.  ``jobs=1`` runs in this process.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    checks = select(only)
    jobs = default_jobs() if jobs is None else check_int(jobs, "jobs", minimum=1)
    rows: list[CheckResult] = [
        CheckResult(f"import {mod}", "error", "-", "-", False, "FAIL", err) for mod, err in import_errors().items()
    ]
    timings: dict[str, float] = {}
    figures: list[Figure] = []
    wall0 = time.perf_counter()
    bar = progress_bar(total=len(checks), progress=progress, desc="fokker validate")
    with contextlib.ExitStack() as stack:
        if jobs == 1 or len(checks) <= 1:
            results = (_run_named(c.name, quick, out) for c in checks)  # lazily, one after the other
        else:
            import multiprocessing

            # spawn, not fork: a forked copy of a process that already runs torch's thread pools can hang
            pool = stack.enter_context(ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")))
            threads = max(1, _cores() // jobs)
            results = (f.result() for f in [pool.submit(_run_named, c.name, quick, out, threads) for c in checks])
        for check, (res, figs, seconds) in zip(checks, results):  # rows in name order
            rows.extend(res)
            figures.extend(figs)
            timings[check.name] = seconds
            bar.update()
    bar.close()
    wall = time.perf_counter() - wall0
    ok = all(r.passed for r in rows)
    summaries = summarize(rows, timings)
    table = format_table(rows)
    print(table)
    print()
    print(format_summary(summaries))
    tot = total(summaries)
    passed = tot.rows_passed + tot.controls_passed
    print(
        f"\n{passed} passed, {tot.rows + tot.controls - passed} failed, {tot.skipped} skipped "
        f"({tot.controls_passed} of {tot.controls} negative controls reject their wrong model) "
        f"in {wall:.0f} s wall-clock, {jobs} worker{'s' if jobs > 1 else ''}"
    )
    _write_report(out, rows, table, summaries, quick, figures, wall, jobs)
    return rows, ok


def _package_of(name: str) -> str:
    return name.split(":")[0].split(".")[0].split(" ")[-1]


def summarize(rows: list[CheckResult], timings: dict[str, float]) -> list[Summary]:
    """Per-package counts of rows, controls and time (in the order packages first appear)."""
    out: dict[str, Summary] = {}
    for r in rows:
        s = out.setdefault(_package_of(r.name), Summary(_package_of(r.name)))
        if r.status.startswith("skipped"):
            s.skipped += 1
        elif r.control:
            s.controls += 1
            s.controls_passed += int(r.passed)
        else:
            s.rows += 1
            s.rows_passed += int(r.passed)
    for name, sec in timings.items():
        out.setdefault(_package_of(name), Summary(_package_of(name))).seconds += sec
    return list(out.values())


def total(summaries: list[Summary]) -> Summary:
    """The counts of all packages together."""
    tot = Summary("total")
    for s in summaries:
        tot.rows += s.rows
        tot.rows_passed += s.rows_passed
        tot.controls += s.controls
        tot.controls_passed += s.controls_passed
        tot.skipped += s.skipped
        tot.seconds += s.seconds
    return tot


def format_summary(summaries: list[Summary]) -> str:
    """The summary table: per package and in total."""
    head = ("package", "rows passed", "controls rejecting", "skipped", "time (s)")
    body = [(s.package, f"{s.rows_passed}/{s.rows}", f"{s.controls_passed}/{s.controls}", str(s.skipped),
             f"{s.seconds:.1f}") for s in [*summaries, total(summaries)]]
    return _table(head, body)


def _table(head: tuple[str, ...], body: list[tuple[str, ...]]) -> str:
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(head), sep, *(line(b) for b in body)])


def format_table(rows: list[CheckResult]) -> str:
    """The rows as a Markdown table; control rows are marked ``(control)``."""
    head = ("check", "measured", "reference", "tolerance", "result")
    body = [
        (r.name + (" (control)" if r.control and "control" not in r.name else ""), _fmt(r.measured), _fmt(r.reference),
         str(r.tolerance), r.status)
        for r in rows
    ]
    return _table(head, body)


def _write_report(
    out: Path,
    rows: list[CheckResult],
    table: str,
    summaries: list[Summary],
    quick: bool,
    figures: list[Figure],
    wall: float,
    jobs: int,
) -> None:
    from .. import __version__

    tot = total(summaries)
    lines = [
        f"# fokker {__version__} validation report",
        "",
        f"Mode: {'quick' if quick else 'full'}. {tot.rows_passed} of {tot.rows} rows pass "
        f"({tot.skipped} skipped); {tot.controls_passed} of {tot.controls} negative controls reject their "
        f"deliberately wrong model. Wall-clock {wall:.0f} s with {jobs} worker process{'es' if jobs > 1 else ''} "
        "(the time column sums each check's own time).",
        "",
        "## Summary",
        "",
        format_summary(summaries),
        "",
        "## Rows",
        "",
        "A *control* runs the same metric on a deliberately wrong model and passes only when the metric "
        "rejects it.",
        "",
        table,
    ]
    details = [r for r in rows if r.details]
    shown = set()
    if figures:
        lines += ["", "## Figures", ""]
        for f in figures:
            if f.path.exists():
                shown.add(f.path.name)
                lines += [f"![{f.path.stem}]({f.path.name})", "", f"*{f.caption}*", ""]
    rest = [p for p in sorted(out.glob("*.png")) if p.name not in shown]
    if rest:
        lines += ["", "## Other pictures", ""] + [f"![{p.stem}]({p.name})\n\n*{p.stem}*\n" for p in rest]
    if details:
        lines += ["", "## Details", ""]
        for r in details:
            lines += [f"### {r.name}", "", "```", r.details.strip(), "```", ""]
    (out / "report.md").write_text("\n".join(lines) + "\n")
