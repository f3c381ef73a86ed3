"""Campaigns as files: Markdown with YAML front matter under ``campaigns/content/``.

``vitamin-k2-bone-health.md`` is the campaign named ``vitamin-k2-bone-health``. The system emails
live in ``content/system/`` and reusable blocks (the free-report offer) in ``content/blocks/``;
neither is listed as a campaign.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from newsletter.errors import ContentError, NotFoundError
from newsletter.settings import parse_duration
from templates import Button, Content, Offer

CONTENT_DIR = Path(__file__).parent / "content"
SYSTEM_KINDS = ("confirmation", "welcome", "unsubscribed")
CAMPAIGN_FIELDS = frozenset(
    {
        "subject",
        "preheader",
        "from",
        "web_url",
        "tags",
        "sources",
        "corrections",
        "offer",
        "layout",
        "button",
        "cadence_min_gap",
        "cadence_quiet",
    }
)
BLOCK_FIELDS = frozenset({"title", "button"})


@dataclass(frozen=True)
class Correction:
    """An editor's fix to the source text, kept so that the publisher sees it."""

    was: str
    now: str
    why: str = ""


@dataclass(frozen=True)
class Campaign:
    """A campaign file: its name, the ``Content`` the renderer takes, and its front matter."""

    name: str
    path: Path
    content: Content
    front_matter: dict[str, Any] = field(hash=False, compare=False)
    tags: tuple[str, ...] = ()
    sources: tuple[dict[str, Any], ...] = field(default=(), hash=False, compare=False)
    corrections: tuple[Correction, ...] = ()
    # Cadence caps in place of the settings' (seconds); None leaves the setting in force.
    cadence_min_gap: float | None = None
    cadence_quiet: dict[str, float] | None = field(default=None, hash=False, compare=False)

    @property
    def subject(self) -> str:
        return self.content.subject

    @property
    def web_url(self) -> str | None:
        return self.content.web_url


def split_front_matter(text: str, where: str) -> tuple[dict[str, Any], str, int]:
    """The front matter (a mapping), the body, and the line the body starts on."""
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].strip() != "---":
        raise ContentError(f"{where}:1: expected front matter between '---' lines")
    for index in range(1, len(lines)):
        if lines[index].strip() == "---":
            try:
                data = yaml.safe_load("".join(lines[1:index])) or {}
            except yaml.YAMLError as error:
                mark = getattr(error, "problem_mark", None)
                line = 2 + mark.line if mark is not None else 1
                raise ContentError(f"{where}:{line}: front matter is not valid YAML") from None
            if not isinstance(data, dict):
                raise ContentError(f"{where}:2: front matter must be a mapping of fields")
            return data, "".join(lines[index + 1 :]), index + 2
    raise ContentError(f"{where}:1: front matter is not closed by a '---' line")


def _string(data: dict[str, Any], key: str, where: str, *, required: bool = False) -> str | None:
    value = data.get(key)
    if value is None:
        if required:
            raise ContentError(f"{where}: front matter: '{key}' is required")
        return None
    if not isinstance(value, str | int | float):
        raise ContentError(f"{where}: front matter: '{key}' must be text")
    return str(value)


def _strings(data: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = data.get(key) or []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ContentError(f"{where}: front matter: '{key}' must be a list of text")
    return tuple(value)


def _unknown(data: dict[str, Any], allowed: frozenset[str], where: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ContentError(
            f"{where}: front matter: unknown field(s) {', '.join(unknown)}; "
            f"expected some of {', '.join(sorted(allowed))}"
        )


def load_block(name: str, root: Path | None = None) -> Offer:
    """The reusable offer block ``content/blocks/NAME.md``."""
    path = (root or CONTENT_DIR) / "blocks" / f"{name}.md"
    if not path.is_file():
        path = CONTENT_DIR / "blocks" / f"{name}.md"
    if not path.is_file():
        raise ContentError(f"offer block {name!r}: no file blocks/{name}.md")
    where = shown(path)
    data, body, _ = split_front_matter(path.read_text(encoding="utf-8"), where)
    _unknown(data, BLOCK_FIELDS, where)
    title = _string(data, "title", where, required=True) or ""
    button = _string(data, "button", where, required=True) or ""
    return Offer(title=title, body=body.strip() + "\n", button_label=button)


def shown(path: Path) -> str:
    """``path`` as messages show it: relative to the working directory when it is inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def parse_campaign(path: Path, name: str | None = None, root: Path | None = None) -> Campaign:
    """Read one content file into a ``Campaign``; ``ContentError`` names the file and the field."""
    where = shown(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ContentError(f"{where}: cannot be read ({error})") from None
    data, body, body_line = split_front_matter(text, where)
    _unknown(data, CAMPAIGN_FIELDS, where)
    name = name or path.stem
    button = None
    if data.get("button") is not None:
        spec = data["button"]
        if not isinstance(spec, dict) or not {"label", "url"} <= set(spec):
            raise ContentError(f"{where}: front matter: 'button' needs 'label' and 'url'")
        button = Button(label=str(spec["label"]), url=str(spec["url"]))
    offer_name = data.get("offer")
    offer = None
    if offer_name:
        if not isinstance(offer_name, str):
            raise ContentError(f"{where}: front matter: 'offer' must name a block")
        try:
            offer = load_block(offer_name, root or path.parent)
        except ContentError as error:
            raise ContentError(f"{where}: front matter: 'offer': {error.message}") from None
    layout = _string(data, "layout", where) or "article"
    if layout.endswith(".mjml"):
        layout = str((path.parent / layout).resolve())
    corrections = []
    for item in data.get("corrections") or []:
        if not isinstance(item, dict) or not {"was", "now"} <= set(item):
            raise ContentError(f"{where}: front matter: each correction needs 'was' and 'now'")
        corrections.append(Correction(str(item["was"]), str(item["now"]), str(item.get("why", ""))))
    sources = data.get("sources") or []
    if not isinstance(sources, list):
        raise ContentError(f"{where}: front matter: 'sources' must be a list")
    tags = _strings(data, "tags", where)
    content = Content(
        subject=_string(data, "subject", where, required=True) or "",
        preheader=_string(data, "preheader", where) or "",
        body=body,
        layout=layout,
        name=name,
        sender=_string(data, "from", where),
        web_url=_string(data, "web_url", where),
        tags=tags,
        button=button,
        offer=offer,
        source=where,
        body_line=body_line,
    )
    return Campaign(
        name=name,
        path=path,
        content=content,
        front_matter=data,
        tags=tags,
        sources=tuple(item if isinstance(item, dict) else {"title": str(item)} for item in sources),
        corrections=tuple(corrections),
        cadence_min_gap=_duration(data, "cadence_min_gap", where),
        cadence_quiet=_quiet(data, where),
    )


def _duration(data: dict[str, Any], key: str, where: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    try:
        return parse_duration(str(value))
    except ValueError:
        raise ContentError(
            f"{where}: front matter: '{key}' must be a duration such as 20h, 90m or 0"
        ) from None


def _quiet(data: dict[str, Any], where: str) -> dict[str, float] | None:
    """``cadence_quiet``: a mapping of sequence name to duration (``{welcome: 3d}``)."""
    value = data.get("cadence_quiet")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ContentError(
            f"{where}: front matter: 'cadence_quiet' must map sequences to durations "
            "({welcome: 3d})"
        )
    return {str(k): _duration(value, k, where) or 0.0 for k in value}


_campaign_cache: dict[Path, tuple[tuple[int, ...], Campaign]] = {}


def _stamp(path: Path, directory: Path) -> tuple[int, ...]:
    """What changes when the campaign file or a block it may use changes."""
    blocks = directory / "blocks"
    stamps = [path.stat().st_mtime_ns]
    if blocks.is_dir():
        stamps.extend(block.stat().st_mtime_ns for block in sorted(blocks.glob("*.md")))
    return tuple(stamps)


def load_campaign(name: str, root: Path | None = None) -> Campaign:
    """The campaign ``NAME`` (the file ``NAME.md`` under ``root``, default the shipped content).

    Read once per version of its file (and of the blocks), so that a sender may call this for
    every reader."""
    directory = root or CONTENT_DIR
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise NotFoundError(f"campaign {name!r}: not a campaign name")
    path = directory / f"{name}.md"
    if not path.is_file():
        known = ", ".join(campaign.name for campaign in list_campaigns(directory)) or "none"
        raise NotFoundError(f"campaign {name!r}: no file {path} (campaigns: {known})")
    stamp = _stamp(path, directory)
    cached = _campaign_cache.get(path)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    campaign = parse_campaign(path, name, directory)
    _campaign_cache[path] = (stamp, campaign)
    return campaign


def list_campaigns(root: Path | None = None) -> list[Campaign]:
    """Every campaign under ``root``, by name."""
    directory = root or CONTENT_DIR
    return [parse_campaign(path, None, directory) for path in sorted(directory.glob("*.md"))]


_system_cache: dict[tuple[str, str], tuple[int, Content]] = {}


def system_email(kind: str, root: Path | None = None) -> Content:
    """The system email ``kind``: "confirmation" (with the ``links.confirm`` button), "welcome"
    (with the free report, ``links.report``) or "unsubscribed". Read once per version of the file,
    so that a mailer may call this for every reader."""
    if kind not in SYSTEM_KINDS:
        raise NotFoundError(f"system email {kind!r}: expected one of {', '.join(SYSTEM_KINDS)}")
    path = (root or CONTENT_DIR) / "system" / f"{kind}.md"
    try:
        stamp = path.stat().st_mtime_ns
    except OSError:
        raise ContentError(f"system email {kind!r}: no file {path}") from None
    cached = _system_cache.get((kind, str(path)))
    if cached is not None and cached[0] == stamp:
        return cached[1]
    content = parse_campaign(path, kind, root).content
    _system_cache[(kind, str(path))] = (stamp, content)
    return content
