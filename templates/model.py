"""What the renderer takes: who a copy is for (``Reader``), the links in it (``Links``) and what
it says (``Content``, with its optional ``Button`` and ``Offer`` blocks)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from templates.sandbox import allow_fields

LAYOUTS = ("article", "system")


def _frozen_mapping(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return value if isinstance(value, MappingProxyType) else MappingProxyType(dict(value))


@dataclass(frozen=True)
class Reader:
    """The reader a copy is rendered for; templates see it as ``reader``."""

    email: str
    name: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    timezone: str | None = None
    has_report: bool = False  # got the free report already

    def __post_init__(self) -> None:
        # Templates may read the attributes but never change them.
        object.__setattr__(self, "attributes", _frozen_mapping(self.attributes))
        object.__setattr__(self, "tags", tuple(self.tags))

    @property
    def first_name(self) -> str | None:
        """The first word of the name, or None: ``Hi {{ reader.first_name or "there" }}``."""
        parts = (self.name or "").split()
        return parts[0] if parts else None


@dataclass(frozen=True)
class Links:
    """Absolute URLs for one reader, built by the caller from NEWSLETTER_BASE_URL and signed
    tokens; templates see them as ``links``. ``unsubscribe_mailto`` is the mailto half of the
    ``List-Unsubscribe`` header (default: the sender's address with subject "unsubscribe")."""

    unsubscribe: str
    preferences: str
    report: str | None = None
    confirm: str | None = None
    web_version: str | None = None
    unsubscribe_mailto: str | None = None


@dataclass(frozen=True)
class Button:
    """One call-to-action button; ``url`` is a Jinja expression such as ``links.confirm``."""

    label: str
    url: str


@dataclass(frozen=True)
class Offer:
    """The free-report offer block, shown to readers who have not got the report yet
    (``not reader.has_report``) when the copy carries a report link."""

    title: str
    body: str  # Markdown
    button_label: str


@dataclass(frozen=True)
class Content:
    """What to render. ``subject``, ``preheader`` and ``body`` (Markdown) may hold Jinja that
    reads ``reader``, ``campaign`` and ``links``; ``source`` and ``body_line`` say where the text
    came from so that errors name the file and line."""

    subject: str
    body: str
    preheader: str = ""
    layout: str = "article"  # "article", "system", or a path to an .mjml layout of one's own
    name: str = ""
    sender: str | None = None  # overrides NEWSLETTER_FROM
    web_url: str | None = None
    tags: tuple[str, ...] = ()
    button: Button | None = None
    offer: Offer | None = None
    source: str = "<content>"
    body_line: int = 1

    def campaign_view(self) -> Mapping[str, Any]:
        """What templates see as ``campaign``: read-only facts about the campaign."""
        return MappingProxyType(
            {
                "name": self.name,
                "subject": self.subject,
                "preheader": self.preheader,
                "web_url": self.web_url,
                "tags": tuple(self.tags),
            }
        )


allow_fields(Reader, frozenset({f for f in Reader.__dataclass_fields__} | {"first_name"}))
allow_fields(Links, frozenset(Links.__dataclass_fields__))
