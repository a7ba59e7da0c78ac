"""The validation registry and runner: table, report.md, exit status, skipped data."""

from __future__ import annotations

from pathlib import Path

import pytest

from fokker import validate
from fokker.errors import DataNotFoundError
from fokker.validate import CheckResult
from fokker.validate.runner import format_table, run_checks


@pytest.fixture
def fake_registry(monkeypatch: pytest.MonkeyPatch) -> dict:
    reg: dict = {}
    monkeypatch.setattr(validate, "_REGISTRY", reg)
    monkeypatch.setattr(validate, "discover", lambda: None)
    return reg


def test_compare_and_bound() -> None:
    assert CheckResult.compare("a", 1.05, 1.0, tol=0.1).passed
    assert not CheckResult.compare("a", 1.2, 1.0, tol=0.1).passed
    assert not CheckResult.compare("a", float("nan"), 1.0, tol=0.1).passed
    assert CheckResult.compare("a", 105.0, 100.0, tol=0.1, relative=True).passed
    assert CheckResult.bound("b", 0.5, 1.0).passed and not CheckResult.bound("b", 0.5, 1.0, upper=False).passed


def test_runner_table_report_and_status(fake_registry: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    @validate.register("demo.good", group="demo")
    def good(ctx):
        assert ctx.quick
        return [CheckResult.compare("value", 2.0, 2.0, tol=1e-9), CheckResult.compare("wrong", 3.0, 2.0, tol=1e-9, control=True)]

    @validate.register("demo.data", group="demo", needs_data=True)
    def needs(ctx):
        raise DataNotFoundError("no data here")

    rows, ok = run_checks(quick=True, out=tmp_path, progress=False, jobs=1)
    assert ok and [r.status for r in rows] == ["skipped: data not found", "pass", "rejected"]
    report = (tmp_path / "report.md").read_text()
    assert "demo.good: value" in report and "skipped: data not found" in report
    # the header counts judged rows: the skipped one is neither a pass nor a row of the total
    assert "1 of 1 rows pass (1 skipped); 1 of 1 negative controls reject" in report
    assert "2 passed, 0 failed, 1 skipped" in capsys.readouterr().out

    @validate.register("demo.bad", group="demo")
    def bad(ctx):
        raise RuntimeError("boom")

    rows, ok = run_checks(quick=True, only="demo.b*", out=tmp_path, progress=False, jobs=1)
    assert not ok and len(rows) == 1 and rows[0].status == "FAIL" and "boom" in rows[0].details


def test_duplicate_names_rejected(fake_registry: dict) -> None:
    validate.register("x")(lambda ctx: None)
    with pytest.raises(ValueError, match="already registered"):
        validate.register("x")(lambda ctx: 1)


def test_format_table_aligns() -> None:
    t = format_table([CheckResult("a", 1.0, 2.0, "0.1", False, "FAIL")]).splitlines()
    assert len({len(line) for line in t}) == 1


def test_controls_pass_only_when_the_metric_rejects() -> None:
    assert CheckResult.compare("c", 3.0, 2.0, tol=0.1, control=True).passed  # rejected: good control
    assert not CheckResult.compare("c", 2.05, 2.0, tol=0.1, control=True).passed  # accepted the wrong model
    assert not CheckResult.compare("c", float("nan"), 2.0, tol=0.1, control=True).passed  # NaN proves nothing
    assert CheckResult.bound("c", 2.0, 1.0, control=True).passed
    assert not CheckResult.bound("c", 0.5, 1.0, control=True).passed


def test_a_family_without_control_fails(fake_registry: dict, tmp_path: Path) -> None:
    @validate.register("demo.lonely", group="demo")
    def lonely(ctx):
        return CheckResult.compare("value", 1.0, 1.0, tol=0.1)

    rows, ok = run_checks(quick=True, out=tmp_path, progress=False, jobs=1)
    assert not ok
    assert rows[-1].name == "demo.lonely: negative control" and rows[-1].status == "FAIL"


def test_report_summary_figures_and_list(fake_registry: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    @validate.register("pkg.fig", group="pkg")
    def fig(ctx):
        path = ctx.figure("pkg_demo.png", "a picture of the demo, with its metric")
        path.write_bytes(b"\x89PNG\r\n")
        return [CheckResult.bound("metric", 0.1, 0.5), CheckResult.bound("metric of a wrong model", 0.9, 0.5, control=True),
                CheckResult.bound("a failing control", 0.1, 0.5, control=True)]

    rows, ok = run_checks(quick=True, out=tmp_path, progress=False, jobs=1)
    assert not ok and rows[-1].status.startswith("FAIL (accepted")
    report = (tmp_path / "report.md").read_text()
    summary = report.index("## Summary")
    assert summary < report.index("## Rows") < report.index("## Figures")
    assert "| pkg     | 1/1         | 1/2" in report
    assert "![pkg_demo](pkg_demo.png)" in report and "*a picture of the demo, with its metric*" in report
    from fokker.cli import main

    assert main(["validate", "--list"]) == 0
    assert "pkg.fig" in capsys.readouterr().out


def test_runner_leaves_the_global_rng_alone(fake_registry: dict, tmp_path: Path) -> None:
    import torch

    @validate.register("demo.rng", group="demo")
    def draw(ctx):
        v = float(torch.rand(()))
        return [CheckResult.bound("u", v, 1.0), CheckResult.bound("u wrong", v, -1.0, control=True)]

    torch.manual_seed(123)
    before = torch.get_rng_state()
    rows1, _ = run_checks(quick=True, out=tmp_path, progress=False, jobs=1)
    assert torch.equal(before, torch.get_rng_state())
    rows2, _ = run_checks(quick=True, out=tmp_path, progress=False, jobs=1)
    assert rows1[0].measured == rows2[0].measured  # each check starts from the same seed


def test_worker_processes_give_the_rows_of_one_process(tmp_path: Path) -> None:
    # two real checks: each starts from the same seed on a forked RNG, so the rows (measured values
    # included) and the figures do not depend on how many processes run them
    rows1, ok1 = run_checks(quick=True, only="targets.m*", out=tmp_path / "one", progress=False, jobs=1)
    rows2, ok2 = run_checks(quick=True, only="targets.m*", out=tmp_path / "two", progress=False, jobs=2)
    assert len(rows1) >= 4 and ok1 and ok2
    assert [(r.name, r.measured, r.status) for r in rows1] == [(r.name, r.measured, r.status) for r in rows2]
    assert "2 worker processes" in (tmp_path / "two" / "report.md").read_text()


@pytest.mark.parametrize("jobs", [0, -1, 1.5])
def test_jobs_must_be_a_positive_integer(tmp_path: Path, jobs) -> None:
    from fokker.errors import ParameterError

    with pytest.raises(ParameterError, match="jobs"):
        run_checks(quick=True, only="no-such-check", out=tmp_path, progress=False, jobs=jobs)
