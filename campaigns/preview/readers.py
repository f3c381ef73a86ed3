"""Who a preview is rendered for: the preflight's sample reader, the sample readers of a YAML file,
or a real subscriber picked from the store by address.

A choice travels in the page's URL as ``sample``, ``sample:ID`` or ``subscriber:ADDRESS``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import select

from campaigns.preflight import sample_reader
from newsletter.db import Database
from newsletter.errors import ContentError, NotFoundError, ValidationError
from subscribers.addresses import normalise_address
from subscribers.models import Subscriber
from templates import Content, Reader

READERS_FILE = Path(__file__).parent / "readers.yaml"
READER_FIELDS = frozenset(
    {"id", "label", "email", "name", "tags", "attributes", "timezone", "has_report"}
)
DEFAULT_CHOICE = "sample"


@dataclass(frozen=True)
class SampleReader:
    """One reader of the samples file."""

    id: str
    label: str
    reader: Reader


@dataclass(frozen=True)
class ReaderChoice:
    """The reader a preview was rendered for, and how the page names it."""

    key: str  # as it travels in the URL
    label: str
    reader: Reader
    real: bool  # a subscriber from the store


def load_sample_readers(path: Path | None = None) -> list[SampleReader]:
    """The sample readers of ``path`` (default: the shipped ``readers.yaml``)."""
    path = path or READERS_FILE
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = 1 + mark.line if mark is not None else 1
        raise ContentError(f"{path}:{line}: not valid YAML") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ContentError(f"{path}: cannot be read ({error})") from None
    items = data.get("readers") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise ContentError(f"{path}: expected a mapping with a list of readers")
    return [_sample(path, index, item) for index, item in enumerate(items, 1)]


def _sample(path: Path, index: int, item: Any) -> SampleReader:
    where = f"{path}: reader {index}"
    if not isinstance(item, dict) or not item.get("id") or not item.get("email"):
        raise ContentError(f"{where}: each reader needs at least an id and an email")
    unknown = sorted(set(item) - READER_FIELDS)
    if unknown:
        raise ContentError(f"{where}: unknown field(s) {', '.join(unknown)}")
    attributes = item.get("attributes") or {}
    tags = item.get("tags") or []
    if not isinstance(attributes, dict) or not isinstance(tags, list):
        raise ContentError(f"{where}: attributes must be a mapping and tags a list")
    reader = Reader(
        email=str(item["email"]),
        name=str(item["name"]) if item.get("name") else None,
        attributes=attributes,
        tags=tuple(str(tag) for tag in tags),
        timezone=str(item["timezone"]) if item.get("timezone") else None,
        has_report=bool(item.get("has_report", False)),
    )
    return SampleReader(str(item["id"]), str(item.get("label") or item["id"]), reader)


def choose_reader(
    key: str,
    content: Content,
    samples: list[SampleReader],
    database: Database | None,
) -> ReaderChoice:
    """The reader ``key`` names; ``NotFoundError`` or ``ValidationError`` when it names none."""
    key = (key or DEFAULT_CHOICE).strip()
    if key == DEFAULT_CHOICE:
        reader = sample_reader(content)
        return ReaderChoice(key, f"{reader.name} (the preflight's sample reader)", reader, False)
    kind, _, value = key.partition(":")
    if kind == "sample":
        for sample in samples:
            if sample.id == value:
                return ReaderChoice(key, sample.label, sample.reader, False)
        raise NotFoundError(f"sample reader {value!r}: not in the readers file")
    if kind == "subscriber":
        if database is None:
            raise NotFoundError("no subscriber store is open")
        address = normalise_address(value)
        with database.session() as session:
            found = session.scalar(select(Subscriber).where(Subscriber.email == address))
            if found is None:
                raise NotFoundError(f"no subscriber {address} in the store")
            reader = Reader(
                email=found.email,
                name=found.name,
                attributes=dict(found.attributes or {}),
                tags=tuple(found.tag_names),
                timezone=found.timezone,
            )
            label = f"{found.name or found.email} (subscriber, {found.status})"
        return ReaderChoice(f"subscriber:{address}", label, reader, True)
    raise ValidationError({"reader": "expected sample, sample:ID or subscriber:ADDRESS"})
