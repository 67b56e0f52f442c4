"""The documentation builds and its links hold: ``mkdocs build --strict`` (a broken link or
anchor fails it), every README link into docs/ names a page, and every page is in the nav."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"


def nav_pages(entries) -> set[str]:
    pages = set()
    for entry in entries:
        for value in (entry.values() if isinstance(entry, dict) else [entry]):
            pages |= nav_pages(value) if isinstance(value, list) else {value}
    return pages


def test_the_site_builds_strictly(tmp_path):
    pytest.importorskip("mkdocs")
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "site" / "commands" / "train" / "index.html").exists()


def test_a_broken_link_fails_the_strict_build(tmp_path):
    """The check above can fail: the same build of a copy with one link broken does."""
    pytest.importorskip("mkdocs")
    copy = tmp_path / "repo"
    (copy / "docs").mkdir(parents=True)
    for page in DOCS.rglob("*.md"):
        target = copy / "docs" / page.relative_to(DOCS)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(page.read_text())
    (copy / "mkdocs.yml").write_text((REPO / "mkdocs.yml").read_text())
    index = copy / "docs" / "index.md"
    index.write_text(index.read_text().replace("(commands/train.md)", "(commands/no-such-page.md)", 1))
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                            cwd=copy, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "no-such-page.md" in result.stderr


def test_the_readme_links_name_pages_that_exist():
    readme = (REPO / "README.md").read_text()
    links = re.findall(r"\]\((docs/[^)#]+)", readme)
    assert len(links) >= 10
    missing = [link for link in links if not (REPO / link).is_file()]
    assert not missing


def test_every_page_is_in_the_nav():
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    listed = nav_pages(config["nav"])
    pages = {str(page.relative_to(DOCS)) for page in DOCS.rglob("*.md")}
    assert pages == listed, f"not in the nav: {sorted(pages - listed)}; missing files: {sorted(listed - pages)}"
