"""The documentation builds with warnings as errors, and a broken link or anchor fails it (as CI
builds it: ``mkdocs build --strict``)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _build(root: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                           str(site)], cwd=root, capture_output=True, text=True, timeout=300,
                          check=False)


@pytest.mark.parametrize("broken", ["[a page](no-such-page.md)", "[a section](guide.md#nowhere)"])
def test_a_broken_link_fails_the_docs_build(tmp_path, broken) -> None:
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "docs", copy / "docs")
    shutil.copy(ROOT / "mkdocs.yml", copy / "mkdocs.yml")
    shutil.copytree(ROOT / "jfbgym", copy / "jfbgym")  # the API reference reads the package
    assert _build(copy, tmp_path / "site").returncode == 0
    page = copy / "docs" / "tutorial.md"
    page.write_text(page.read_text() + f"\nSee {broken}.\n")
    failed = _build(copy, tmp_path / "site2")
    assert failed.returncode != 0
    assert "no-such-page.md" in failed.stderr or "nowhere" in failed.stderr
