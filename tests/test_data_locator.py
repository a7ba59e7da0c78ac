"""fokker.data finds shared/validation via FOKKER_DATA or the parent folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from fokker import data
from fokker.errors import DataNotFoundError


def test_env_var_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "targets").mkdir()
    (tmp_path / "targets" / "a.csv").write_text("1,2\n")
    monkeypatch.setenv("FOKKER_DATA", str(tmp_path))
    assert data.data_dir() == tmp_path
    assert data.data_file("targets", "a.csv") == tmp_path / "targets" / "a.csv"


def test_missing_file_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOKKER_DATA", str(tmp_path))
    with pytest.raises(DataNotFoundError, match="nope.csv"):
        data.data_file("targets", "nope.csv")
    with pytest.raises(DataNotFoundError, match="explicit.csv"):
        data.data_file(path=tmp_path / "explicit.csv")


def test_parent_search_finds_shared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "shared" / "validation").mkdir(parents=True)
    (tmp_path / "repo" / "sub").mkdir(parents=True)
    monkeypatch.delenv("FOKKER_DATA", raising=False)
    monkeypatch.chdir(tmp_path / "repo" / "sub")
    assert data.data_dir() == tmp_path / "shared" / "validation"
