"""Sequences as files: ``campaigns/sequences/NAME.yaml``, a list of steps a confirmed reader
receives one after another.

A step names its content (a campaign file, or a system email), a delay after the previous step
(after confirmation for the first, or ``from: confirmation`` for any), an optional send window in
the reader's time zone, and an optional condition (a segment expression). Steps are keyed by
their ``id``, never by position, so that editing the file never resends a step.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import time, timedelta
from pathlib import Path
from typing import Any

import yaml

from campaigns.content import SYSTEM_KINDS, load_campaign, system_email
from newsletter.errors import ContentError, NotFoundError
from templates import Content

SEQUENCES_DIR = Path(__file__).parent / "sequences"
STEP_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
DELAY = re.compile(r"^\s*(\d+)\s*([mhdw])\s*$")
DELAY_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
STEP_FIELDS = frozenset({"id", "content", "system", "delay", "from", "window", "when"})


@dataclass(frozen=True)
class SendWindow:
    """Hours and weekdays, in the reader's zone, during which a step may be sent."""

    days: tuple[int, ...]  # 0 = Monday, as datetime.weekday()
    start: time
    end: time


@dataclass(frozen=True)
class Step:
    """One email of a sequence."""

    id: str
    content_name: str  # a campaign name, or "system:KIND"
    delay: timedelta
    after_confirmation: bool
    window: SendWindow | None = None
    when: str | None = None  # a segment expression the reader must match

    def content(self, root: Path | None = None) -> Content:
        """What this step sends, from the content folder ``root`` (default the shipped one)."""
        if self.content_name.startswith("system:"):
            return system_email(self.content_name.removeprefix("system:"), root)
        return load_campaign(self.content_name, root).content


@dataclass(frozen=True)
class Sequence:
    """A named list of steps, as loaded from its file."""

    name: str
    path: Path
    description: str
    steps: tuple[Step, ...]

    def message_key(self, step: Step) -> str:
        """The delivery key of a step: a reader gets each key at most once."""
        return f"sequence:{self.name}:{step.id}"

    def step(self, step_id: str) -> Step:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise NotFoundError(f"sequence {self.name!r} has no step {step_id!r}")


def load_sequence(
    name: str, root: Path | None = None, content_root: Path | None = None
) -> Sequence:
    """The sequence ``NAME`` (the file ``NAME.yaml`` under ``root``, default the shipped ones),
    its steps checked against the content folder ``content_root`` (default the shipped one)."""
    directory = root or SEQUENCES_DIR
    if not name or not STEP_ID.match(name):
        raise NotFoundError(f"sequence {name!r}: not a sequence name")
    path = directory / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(p.stem for p in sorted(directory.glob("*.yaml"))) or "none"
        raise NotFoundError(f"sequence {name!r}: no file {path} (sequences: {known})")
    return parse_sequence(path, content_root)


def list_sequences(root: Path | None = None, content_root: Path | None = None) -> list[Sequence]:
    """Every sequence under ``root``, by name."""
    directory = root or SEQUENCES_DIR
    return [parse_sequence(path, content_root) for path in sorted(directory.glob("*.yaml"))]


def parse_sequence(path: Path, content_root: Path | None = None) -> Sequence:
    """Read and validate one sequence file; ``ContentError`` names the file and the step."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = 1 + mark.line if mark is not None else 1
        raise ContentError(f"{path}:{line}: not valid YAML") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ContentError(f"{path}: cannot be read ({error})") from None
    if not isinstance(data, dict) or not isinstance(data.get("steps"), list) or not data["steps"]:
        raise ContentError(f"{path}: expected a mapping with a non-empty list of steps")
    steps = tuple(
        _parse_step(path, index, raw, content_root) for index, raw in enumerate(data["steps"], 1)
    )
    ids = [step.id for step in steps]
    duplicates = sorted({step_id for step_id in ids if ids.count(step_id) > 1})
    if duplicates:
        raise ContentError(f"{path}: step ids must be unique; repeated: {', '.join(duplicates)}")
    return Sequence(
        name=path.stem,
        path=path,
        description=str(data.get("description") or ""),
        steps=steps,
    )


def _parse_step(path: Path, index: int, raw: Any, content_root: Path | None) -> Step:
    where = f"{path}: step {index}"
    if not isinstance(raw, dict):
        raise ContentError(f"{where}: expected a mapping with id, content (or system) and delay")
    unknown = sorted(set(raw) - STEP_FIELDS)
    if unknown:
        raise ContentError(f"{where}: unknown field {', '.join(unknown)}")
    step_id = str(raw.get("id") or "")
    if not STEP_ID.match(step_id):
        raise ContentError(f"{where}: id {step_id!r} must be lower-case letters, digits, dashes")
    where = f"{path}: step {step_id!r}"
    return Step(
        id=step_id,
        content_name=_content_name(where, raw, content_root),
        delay=_delay(where, raw.get("delay", "0m")),
        after_confirmation=_anchor(where, raw.get("from", "previous")) or index == 1,
        window=_window(where, raw.get("window")),
        when=str(raw["when"]) if raw.get("when") else None,
    )


def _content_name(where: str, raw: dict[str, Any], content_root: Path | None) -> str:
    if ("content" in raw) == ("system" in raw):
        raise ContentError(f"{where}: give exactly one of content (a campaign) or system")
    if "system" in raw:
        kind = str(raw["system"])
        if kind not in SYSTEM_KINDS:
            raise ContentError(f"{where}: system must be one of {', '.join(SYSTEM_KINDS)}")
        return f"system:{kind}"
    name = str(raw["content"])
    try:
        load_campaign(name, content_root)
    except NotFoundError as error:
        raise ContentError(f"{where}: {error.message}") from None
    return name


def _delay(where: str, value: Any) -> timedelta:
    match = DELAY.match(str(value))
    if not match:
        raise ContentError(f"{where}: delay {value!r} must be a number and m, h, d or w (2d)")
    return timedelta(**{DELAY_UNITS[match.group(2)]: int(match.group(1))})


def _anchor(where: str, value: Any) -> bool:
    if value not in ("previous", "confirmation"):
        raise ContentError(f"{where}: from must be 'previous' or 'confirmation'")
    return value == "confirmation"


def _window(where: str, raw: Any) -> SendWindow | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ContentError(f"{where}: window must have days, start and end")
    days_raw = raw.get("days", list(WEEKDAYS))
    if days_raw == "weekdays":
        days_raw = list(WEEKDAYS[:5])
    if not isinstance(days_raw, list) or not days_raw:
        raise ContentError(f"{where}: window days must be a list such as [mon, tue]")
    days = []
    for day in days_raw:
        if str(day).lower()[:3] not in WEEKDAYS:
            raise ContentError(f"{where}: window day {day!r} is not a weekday name")
        days.append(WEEKDAYS.index(str(day).lower()[:3]))
    start, end = _clock(where, raw.get("start", "00:00")), _clock(where, raw.get("end", "23:59"))
    if end <= start:
        raise ContentError(f"{where}: window end {end:%H:%M} must be after start {start:%H:%M}")
    return SendWindow(days=tuple(sorted(set(days))), start=start, end=end)


def _clock(where: str, value: Any) -> time:
    try:
        return time.fromisoformat(str(value))
    except ValueError:
        raise ContentError(f"{where}: {value!r} is not a time such as 08:00") from None
