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
        return CheckResult.compare("value", 2.0, 2.0, tol=1e-9)

    @validate.register("demo.data", group="demo", needs_data=True)
    def needs(ctx):
        raise DataNotFoundError("no data here")

    rows, ok = run_checks(quick=True, out=tmp_path, progress=False)
    assert ok and [r.status for r in rows] == ["skipped: data not found", "pass"]
    report = (tmp_path / "report.md").read_text()
    assert "demo.good: value" in report and "skipped: data not found" in report
    assert "| check" in capsys.readouterr().out

    @validate.register("demo.bad", group="demo")
    def bad(ctx):
        raise RuntimeError("boom")

    rows, ok = run_checks(quick=True, only="demo.b*", out=tmp_path, progress=False)
    assert not ok and len(rows) == 1 and rows[0].status == "FAIL" and "boom" in rows[0].details


def test_duplicate_names_rejected(fake_registry: dict) -> None:
    validate.register("x")(lambda ctx: None)
    with pytest.raises(ValueError, match="already registered"):
        validate.register("x")(lambda ctx: 1)


def test_format_table_aligns() -> None:
    t = format_table([CheckResult("a", 1.0, 2.0, "0.1", False, "FAIL")]).splitlines()
    assert len({len(line) for line in t}) == 1
