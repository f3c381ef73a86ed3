"""Every email the product can send, found in the content and sequence folders, each rendered by
the one ``render`` that sending uses and checked by the preflight.

An email is named by a key: ``system/KIND``, ``sequence/NAME/STEP`` or ``campaign/NAME``. A file
that does not load becomes an entry with its error, so that one broken file never hides the rest.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import parseaddr
from html.parser import HTMLParser
from pathlib import Path

from campaigns.content import CONTENT_DIR, SYSTEM_KINDS, load_campaign, system_email
from campaigns.preflight import CheckReport, check, sample_links
from campaigns.sequence import SEQUENCES_DIR, Step, parse_sequence
from newsletter.errors import NewsletterError, NotFoundError
from newsletter.settings import Settings
from templates import Content, Reader, render
from templates.compile import MJML_DIR
from templates.model import LAYOUTS

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass
class Entry:
    """One email of the index: where it comes from, and its preflight at a glance."""

    key: str
    title: str
    detail: str = ""
    subject: str = ""
    error: str | None = None
    report: CheckReport | None = None

    @property
    def status(self) -> str:
        """ "error", "problems", "warnings" or "ok"."""
        if self.error is not None:
            return "error"
        if self.report is None:
            return "ok"
        if self.report.problems:
            return "problems"
        return "warnings" if self.report.warnings else "ok"


@dataclass
class Section:
    """A heading of the index and its emails."""

    title: str
    entries: list[Entry] = field(default_factory=list)
    error: str | None = None


@dataclass(frozen=True)
class Rendered:
    """One reader's copy of an email, as bytes and as an inbox would show it."""

    raw: bytes
    subject: str
    sender: str
    sender_name: str
    to: str
    preheader: str
    html: str | None
    text: str | None
    headers: list[tuple[str, str]]


class Catalog:
    """The emails under a content folder and a sequences folder (default: the shipped ones)."""

    def __init__(
        self,
        settings: Settings,
        content_root: Path | None = None,
        sequences_root: Path | None = None,
    ) -> None:
        self.settings = settings
        self.content_root = content_root or CONTENT_DIR
        self.sequences_root = sequences_root or SEQUENCES_DIR
        self._glances: dict[Content, CheckReport] = {}
        self._full: dict[Content, CheckReport] = {}
        self._lock = threading.Lock()

    def forget(self) -> None:
        """Drop the cached preflight results (after any file changed)."""
        with self._lock:
            self._glances.clear()
            self._full.clear()

    # ------------------------------------------------------------ listing

    def sections(self) -> list[Section]:
        """System emails, then each sequence's steps, then the campaigns."""
        sections = [self._section("System emails", [f"system/{k}" for k in SYSTEM_KINDS])]
        for path in sorted(self.sequences_root.glob("*.yaml")):
            try:
                sequence = parse_sequence(path, self.content_root)
            except NewsletterError as error:
                sections.append(Section(f"Sequence {path.stem}", error=error.message))
                continue
            section = self._section(
                f"Sequence {sequence.name}",
                [f"sequence/{sequence.name}/{step.id}" for step in sequence.steps],
            )
            for entry, step in zip(section.entries, sequence.steps, strict=True):
                entry.detail = _describe(step)
            sections.append(section)
        names = [f"campaign/{path.stem}" for path in sorted(self.content_root.glob("*.md"))]
        sections.append(self._section("Campaigns", names))
        return sections

    def _section(self, title: str, keys: list[str]) -> Section:
        section = Section(title)
        for key in keys:
            entry = Entry(key=key, title=key.rsplit("/", 1)[-1])
            try:
                content = self.content(key)
                entry.subject = content.subject
                entry.report = self.glance(content)
            except NewsletterError as error:
                entry.error = error.message
            section.entries.append(entry)
        return section

    # ------------------------------------------------------------ one email

    def content(self, key: str) -> Content:
        """The content ``key`` names; ``NotFoundError``, ``ContentError`` or ``TemplateError``."""
        parts = key.split("/")
        if not all(NAME.match(part) for part in parts):
            raise NotFoundError(f"email {key!r}: not an email of this preview")
        if parts[0] == "system" and len(parts) == 2:
            return system_email(parts[1], self.content_root)
        if parts[0] == "campaign" and len(parts) == 2:
            return load_campaign(parts[1], self.content_root).content
        if parts[0] == "sequence" and len(parts) == 3:
            path = self.sequences_root / f"{parts[1]}.yaml"
            if not path.is_file():
                raise NotFoundError(f"sequence {parts[1]!r}: no file {path}")
            return parse_sequence(path, self.content_root).step(parts[2]).content(self.content_root)
        raise NotFoundError(f"email {key!r}: not an email of this preview")

    def layout_file(self, key: str) -> str | None:
        """The MJML layout file ``key`` renders with, to name it beside a template error."""
        try:
            layout = self.content(key).layout
        except NewsletterError:
            return None
        if layout in LAYOUTS:
            return str(MJML_DIR / "layouts" / f"{layout}.mjml")
        return layout

    def exists(self, key: str) -> bool:
        """Whether ``key`` names an email here (even one whose file is broken)."""
        try:
            self.content(key)
        except NotFoundError:
            return False
        except NewsletterError:
            return True
        return True

    def glance(self, content: Content) -> CheckReport:
        """The preflight without the spam score (which takes a second): the index's view."""
        with self._lock:
            found = self._glances.get(content)
        if found is None:
            found = check(content, self.settings, spamassassin=None)
            found.warnings = [w for w in found.warnings if w.where != "spamassassin"]
            with self._lock:
                self._glances[content] = found
        return found

    def full_check(self, content: Content, spamassassin: str | None) -> CheckReport:
        """The whole preflight, spam score included when ``spamassassin`` is given."""
        if spamassassin is None:
            return self.glance(content)
        with self._lock:
            found = self._full.get(content)
        if found is None:  # SpamAssassin takes a second: once per version of the files
            found = check(content, self.settings, spamassassin=spamassassin)
            with self._lock:
                self._full[content] = found
        return found

    def render(self, content: Content, reader: Reader, key: str) -> Rendered:
        """``reader``'s copy of ``content`` with sample links (never a real reader's tokens)."""
        domain = self.settings.sender_address.rpartition("@")[2] or "localhost"
        raw = render(
            content,
            reader,
            sample_links(self.settings),
            message_id=f"<preview.{re.sub(r'[^A-Za-z0-9.-]', '-', key)}@{domain}>",
            settings=self.settings,
            now=datetime.now(UTC).replace(microsecond=0),
        )
        return parse_rendered(raw)


def parse_rendered(raw: bytes) -> Rendered:
    """The parts of a message an inbox shows."""
    message = message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    html_part = message.get_body(("html",))
    text_part = message.get_body(("plain",))
    html = str(html_part.get_content()) if html_part is not None else None
    sender = str(message.get("From", ""))
    name, address = parseaddr(sender)
    return Rendered(
        raw=raw,
        subject=str(message.get("Subject", "")),
        sender=sender,
        sender_name=name or address,
        to=str(message.get("To", "")),
        preheader=preheader_of(html or ""),
        html=html,
        text=str(text_part.get_content()) if text_part is not None else None,
        headers=[(name, str(value)) for name, value in message.items()],
    )


class _Preheader(HTMLParser):
    """The text of the first hidden block of the body: the preview text inboxes show."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.depth = 0
        self.done = False
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        style = (dict(attrs).get("style") or "").replace(" ", "").lower()
        if self.depth:
            self.depth += 1
        elif not self.done and "display:none" in style and tag in ("div", "span"):
            self.depth = 1

    def handle_endtag(self, tag: str) -> None:
        if self.depth:
            self.depth -= 1
            if not self.depth:
                self.done = True

    def handle_data(self, data: str) -> None:
        if self.depth:
            self.text.append(data)


def preheader_of(html: str) -> str:
    body = html.partition("<body")[2] or html
    parser = _Preheader()
    parser.feed(body)
    # Senders pad the preheader with invisible characters so that inboxes show nothing after it.
    text = "".join(parser.text).translate(INVISIBLE)
    return " ".join(text.split())


INVISIBLE = dict.fromkeys(map(ord, "\u034f\u200b\u200c\u200d\u2060\ufeff\u00ad"), None)


DARK = re.compile(r"\(\s*prefers-color-scheme\s*:\s*dark\s*\)", re.I)
LIGHT = re.compile(r"\(\s*prefers-color-scheme\s*:\s*light\s*\)", re.I)


def as_dark(html: str) -> str:
    """The HTML as a client in dark mode applies it: its ``prefers-color-scheme: dark`` rules on.

    A sandboxed iframe cannot be told to prefer dark, so the preview turns the media queries."""
    html = DARK.sub("(min-width: 0px)", html)
    return LIGHT.sub("(max-width: 0px)", html)


def _describe(step: Step) -> str:
    hours, rest = divmod(int(step.delay.total_seconds()), 3600)
    delay = f"{hours // 24}d" if hours and not hours % 24 else f"{hours}h{rest // 60:02d}m"
    anchor = "confirmation" if step.after_confirmation else "the previous step"
    text = f"{delay} after {anchor}" if hours or rest else f"right after {anchor}"
    if step.window is not None:
        text += f", {step.window.start:%H:%M}-{step.window.end:%H:%M} reader's time"
    if step.when:
        text += f", when {step.when}"
    return text
