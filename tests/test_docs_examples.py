"""Every ```python block in docs/ runs (blocks of one page share a namespace, in order).

API sketches that are not meant to run are fenced as ```text.  An example whose sampler warns that its
chains have not converged (``ConvergenceWarning``) fails: a user copying it would start from a warning.
Blocks that demonstrate a failure on purpose catch the warning themselves.
"""

from __future__ import annotations

import re
from pathlib import Path

import warnings

import matplotlib
import pytest

from fokker.errors import ConvergenceWarning

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = sorted(p for p in DOCS.glob("*.md") if "```python" in p.read_text())


@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_docs_page_examples_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    ns: dict = {"__name__": "__docs__"}
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        for i, code in enumerate(re.findall(r"```python\n(.*?)```", page.read_text(), re.S)):
            exec(compile(code, f"{page.name} block {i}", "exec"), ns)
