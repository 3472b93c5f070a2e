"""The repository's Markdown stands alone: what it links to and names is in the repository.

Every relative link of a tracked Markdown file resolves to a file or folder of
the checkout, and every project document it names in capitals (``DESIGN.md``,
``CHANGELOG.md``, ...) is a tracked file, so no README points at notes that
live somewhere else.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# [text](target) and [text](target "title"); the target up to a space or ")".
LINK = re.compile(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
# A project document by its conventional capitalised name: README.md, PERFORMANCE.md.
DOCUMENT = re.compile(r"\b([A-Z][A-Z0-9_-]+\.md)\b")


def tracked(pattern: str) -> list[str]:
    """The tracked files matching a git pathspec, relative to the repository root."""
    out = subprocess.run(
        ["git", "ls-files", "--", pattern], cwd=REPO, capture_output=True, text=True, check=True
    )
    return out.stdout.split()


MARKDOWN = tracked("*.md")


@pytest.mark.parametrize("doc", MARKDOWN)
def test_relative_links_resolve(doc: str) -> None:
    """Every relative link of a Markdown file names a file or folder of the checkout."""
    base = (REPO / doc).parent
    broken = []
    for target in LINK.findall((REPO / doc).read_text(encoding="utf-8")):
        if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL or an anchor in the same page
        if not (base / target.split("#", 1)[0]).exists():
            broken.append(target)
    assert not broken, f"{doc} links to paths that are not in the repository: {broken}"


@pytest.mark.parametrize("doc", MARKDOWN)
def test_named_documents_are_in_the_repository(doc: str) -> None:
    """Every capitalised document a Markdown file names (FOO.md) is tracked in the repository."""
    names = {Path(path).name for path in tracked("*.md")}
    missing = sorted(set(DOCUMENT.findall((REPO / doc).read_text(encoding="utf-8"))) - names)
    assert not missing, f"{doc} names documents the repository does not hold: {missing}"
