"""The fokker command line (run in-process and as the installed console script)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

import fokker
from fokker.cli import main


def test_version(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"fokker {fokker.__version__}"


def test_targets_lists_catalogue(capsys: pytest.CaptureFixture) -> None:
    assert main(["targets"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:2] == ["target", "dim"]


def test_console_script_installed() -> None:
    exe = shutil.which("fokker")
    if exe is None:  # tests run from the venv created by `make test`; the script sits beside python
        import sys
        from pathlib import Path

        exe = str(Path(sys.executable).with_name("fokker"))
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True).stdout
    assert fokker.__version__ in out


def test_validate_only_pattern_with_no_match(tmp_path, capsys: pytest.CaptureFixture) -> None:
    assert main(["validate", "--quick", "--only", "no-such-check-*", "--out", str(tmp_path), "--no-progress"]) == 0
    assert (tmp_path / "report.md").is_file()
    assert "0 passed, 0 failed" in capsys.readouterr().out
