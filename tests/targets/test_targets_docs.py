"""The examples in docs/targets.md and docs/datasets.md run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.mark.parametrize("page", ["targets.md", "datasets.md"])
def test_doc_examples_run(page, capsys):
    text = (DOCS / page).read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks
    for code in blocks:
        exec(compile(code, f"{page}", "exec"), {})
    out = capsys.readouterr().out
    if page == "targets.md":
        assert "164.6956" in out and "x must have shape (..., 32)" in out
