"""Run registered checks, print the table and write ``report.md``."""

from __future__ import annotations

import fnmatch
import math
import time
import traceback
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..errors import DataNotFoundError
from . import CheckResult, Context, import_errors, registry


def _fmt(v: float | str) -> str:
    if isinstance(v, str):
        return v
    if v == 0 or (1e-3 <= abs(v) < 1e5):
        return f"{v:.4f}"
    return f"{v:.3e}" if math.isfinite(v) else str(v)


def run_checks(
    quick: bool = True, only: str | None = None, out: str | Path = "fokker-report", progress: bool = True
) -> tuple[list[CheckResult], bool]:
    """Run the checks whose name matches ``only`` (a glob or substring); return rows and overall pass."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    checks = list(registry().values())
    if only:
        pat = only if any(c in only for c in "*?[") else f"*{only}*"
        checks = [c for c in checks if fnmatch.fnmatch(c.name, pat)]
    rows: list[CheckResult] = [
        CheckResult(f"import {mod}", "error", "-", "-", False, "FAIL", err) for mod, err in import_errors().items()
    ]
    timings: dict[str, float] = {}
    ctx = Context(quick=quick, out=out)
    bar = tqdm(checks, desc="fokker validate", disable=not progress, leave=False)
    for check in bar:
        bar.set_postfix_str(check.name)
        torch.manual_seed(ctx.seed)
        t0 = time.perf_counter()
        try:
            res = check.fn(ctx)
            res = res if isinstance(res, list) else [res]
            for r in res:
                r.status = r.status or ("pass" if r.passed else "FAIL")
                r.name = r.name if r.name.startswith(check.name) else f"{check.name}: {r.name}"
            rows.extend(res)
        except DataNotFoundError as e:
            rows.append(CheckResult(check.name, "-", "-", "-", True, "skipped: data not found", str(e)))
        except Exception as e:  # a crashing check is a failed check, with its traceback in the report
            tb = traceback.format_exc(limit=3)
            rows.append(CheckResult(check.name, "error", "-", "-", False, "FAIL", f"{e!r}\n{tb}"))
        timings[check.name] = time.perf_counter() - t0
    ok = all(r.passed for r in rows)
    table = format_table(rows)
    print(table)
    print(f"\n{sum(r.passed for r in rows)} passed, {sum(not r.passed for r in rows)} failed")
    _write_report(out, rows, table, quick, timings)
    return rows, ok


def format_table(rows: list[CheckResult]) -> str:
    head = ("check", "measured", "reference", "tolerance", "result")
    body = [(r.name, _fmt(r.measured), _fmt(r.reference), str(r.tolerance), r.status) for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(head), sep, *(line(b) for b in body)])


def _write_report(out: Path, rows: list[CheckResult], table: str, quick: bool, timings: dict[str, float]) -> None:
    from .. import __version__

    lines = [
        f"# fokker {__version__} validation report",
        "",
        f"mode: {'quick' if quick else 'full'}; {sum(r.passed for r in rows)} passed, "
        f"{sum(not r.passed for r in rows)} failed",
        "",
        table,
        "",
        "## Timings (s)",
        "",
        *(f"- {k}: {v:.1f}" for k, v in timings.items()),
    ]
    details = [r for r in rows if r.details]
    if details:
        lines += ["", "## Details", ""]
        for r in details:
            lines += [f"### {r.name}", "", "```", r.details.strip(), "```", ""]
    pngs = sorted(out.glob("*.png"))
    if pngs:
        lines += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in pngs]
    (out / "report.md").write_text("\n".join(lines) + "\n")
