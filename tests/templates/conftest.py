"""Readers, links and content shared by the template tests."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from newsletter.settings import Settings
from templates import Content, Links, Reader, clear_caches

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
BASE = "https://news.example.org"


@pytest.fixture(autouse=True)
def fresh_templates() -> None:
    clear_caches()


@pytest.fixture
def reader() -> Reader:
    return Reader(email="ann.reader@example.net", name="Ann Reader", tags=("bone-health",))


@pytest.fixture
def links() -> Links:
    return Links(
        unsubscribe=f"{BASE}/unsubscribe/tok-ann",
        preferences=f"{BASE}/preferences/tok-ann",
        report=f"{BASE}/report/tok-ann",
        confirm=f"{BASE}/confirm/tok-ann",
    )


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(base_url=BASE, postal_address="Gut Health Letter, 1 Sample Street")


@pytest.fixture
def make_content() -> Callable[..., Content]:
    """Content for a test: a short body written in ``test.md`` from line 5."""

    def build(body: str = "Hello {{ reader.name }}.\n", **fields: Any) -> Content:
        values: dict[str, Any] = {
            "subject": "A subject",
            "preheader": "A preheader",
            "body": body,
            "source": "test.md",
            "body_line": 5,
        }
        values.update(fields)
        return Content(**values)

    return build
