"""A writable copy of the shipped content, for broken copies of a campaign."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from campaigns import CONTENT_DIR
from templates import clear_caches

ARTICLE = "vitamin-k2-bone-health"


@pytest.fixture(autouse=True)
def fresh_templates() -> None:
    clear_caches()


@pytest.fixture
def content_dir(tmp_path: Path) -> Path:
    """The shipped content folder, copied."""
    target = tmp_path / "content"
    shutil.copytree(CONTENT_DIR, target)
    return target


@pytest.fixture
def broken_copy(content_dir: Path) -> Callable[..., Path]:
    """Write ``broken.md``: the shipped article with text replaced (or front matter lines added)."""

    def write(replace: dict[str, str] | None = None, front: str = "", body_extra: str = "") -> Path:
        text = (content_dir / f"{ARTICLE}.md").read_text(encoding="utf-8")
        for old, new in (replace or {}).items():
            assert old in text, old
            text = text.replace(old, new)
        if front:
            text = text.replace("---\n", "---\n" + front + "\n", 1)
        path = content_dir / "broken.md"
        path.write_text(text + body_extra, encoding="utf-8")
        return path

    return write
