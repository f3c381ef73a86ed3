"""The preflight check: a campaign read as a careful editor would, before anything is sent.

``check()`` returns a ``CheckReport`` whose ``problems`` block sending and whose ``warnings`` do
not; each names where it is (file and line, front matter field, a setting, or the rendered HTML).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from html import unescape
from html.parser import HTMLParser

import jinja2
from jinja2 import meta

from campaigns import compliance
from campaigns.content import Campaign
from newsletter.errors import TemplateError
from newsletter.settings import Settings
from templates import Content, Links, Reader, render
from templates.sandbox import CONTEXT_NAMES, TEXT_ENV, describe, template_line

GMAIL_CLIP_BYTES = 102 * 1024
MAX_SUBJECT = 78
SPAM_LIMIT = 2.0
SPAMASSASSIN = "/usr/bin/spamassassin"
PLACEHOLDERS = re.compile(
    r"lorem ipsum|dolor sit amet|\bTODO\b|\bTBD\b|\bFIXME\b|\bXXX+\b"
    r"|\*\|[A-Z_]+\|\*|%%\w+%%|\[\[\w+\]\]",  # other tools' merge tags: *|FNAME|*, %%name%%
    re.I,
)
UNRESOLVED = re.compile(r"\{\{.{0,60}?\}\}|\{%.{0,60}?%\}", re.S)
PLACEHOLDER_DOMAINS = re.compile(r"^https?://([\w-]+\.)*example\.(com|org|net)(/|$)", re.I)


@dataclass(frozen=True)
class Finding:
    """One thing the check found, and where."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass
class CheckReport:
    """What the check found: ``problems`` block sending, ``warnings`` do not."""

    name: str
    problems: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)
    spam_score: float | None = None
    spam_rules: list[str] = field(default_factory=list)
    claims: list[compliance.Claim] = field(default_factory=list)  # health claims, also warnings
    html_bytes: int | None = None
    message: bytes | None = None  # the sample reader's copy that was checked

    @property
    def ok(self) -> bool:
        return not self.problems

    def problem(self, where: str, message: str) -> None:
        self.problems.append(Finding(where, message))

    def warn(self, where: str, message: str) -> None:
        self.warnings.append(Finding(where, message))


def sample_reader(
    content: Content, *, has_report: bool = False, name: str | None = "Sam Sample"
) -> Reader:
    """The reader a campaign is checked and previewed for."""
    return Reader(
        email="sam.sample@example.org",
        name=name,
        tags=tuple(content.tags),
        timezone="UTC",
        has_report=has_report,
    )


def sample_links(settings: Settings, token: str = "SAMPLE-TOKEN") -> Links:
    """Links shaped like the real ones (``NEWSLETTER_BASE_URL`` and the web routes)."""
    base = settings.base_url
    return Links(
        unsubscribe=f"{base}/unsubscribe/{token}",
        preferences=f"{base}/preferences/{token}",
        report=f"{base}/report/{token}",
        confirm=f"{base}/confirm/{token}",
    )


def check(
    campaign_or_content: Campaign | Content,
    settings: Settings,
    *,
    spamassassin: str | None = SPAMASSASSIN,
) -> CheckReport:
    """Check a campaign (or bare content) against everything that must hold before sending."""
    campaign: Campaign | None = None
    if isinstance(campaign_or_content, Campaign):
        campaign = campaign_or_content
        content = campaign.content
        name = campaign.name
    else:
        content = campaign_or_content
        name = content.name or content.source
    report = CheckReport(name=name)
    where = content.source
    _check_placeholders(content, report)
    _check_health(content, campaign, settings, report)
    templates_ok = _check_variables(content, report)
    _check_settings(content, settings, report)
    if not content.subject.strip():
        report.problem(f"{where}: subject", "the subject is empty")
    if not content.preheader.strip():
        report.problem(
            f"{where}: preheader", "the preheader is empty (inboxes show it next to the subject)"
        )
    if content.web_url and PLACEHOLDER_DOMAINS.match(content.web_url):
        report.warn(f"{where}: web_url", f"{content.web_url} is on a placeholder domain")
    if not templates_ok:
        return report
    links = sample_links(settings)
    try:
        message = render(
            content,
            sample_reader(content),
            links,
            message_id=f"<preflight.{re.sub(r'[^A-Za-z0-9.-]', '-', name)}@"
            f"{settings.sender_address.rpartition('@')[2]}>",
            settings=settings,
            now=datetime.now(UTC).replace(microsecond=0),
        )
        render(
            content,
            sample_reader(content, has_report=True, name=None),
            links,
            message_id="<preflight.2@localhost>",
            settings=settings,
        )
    except TemplateError as error:
        report.problem(where, error.message)
        return report
    report.message = message
    parsed = message_from_bytes(message, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    subject = str(parsed["Subject"])
    if len(subject) > MAX_SUBJECT:
        report.problem(
            f"{where}: subject",
            f"the subject is {len(subject)} characters; keep it to {MAX_SUBJECT} or fewer",
        )
    html_part = parsed.get_body(("html",))
    text_part = parsed.get_body(("plain",))
    html = html_part.get_content() if html_part is not None else ""
    text = text_part.get_content() if text_part is not None else ""
    report.html_bytes = len(html.encode("utf-8"))
    _check_html(content, html, text, links, settings, report)
    _check_disclaimer(content, html, text, settings, report)
    _check_spam(message, report, spamassassin)
    return report


def check_system_emails(
    settings: Settings, *, spamassassin: str | None = None
) -> dict[str, CheckReport]:
    """The check of each system email (confirmation, welcome, unsubscribed), which are sent
    without a campaign check: the welcome email names the free report, a health claim, so it
    is blocked like a campaign when ``NEWSLETTER_MEDICAL_DISCLAIMER`` is empty."""
    from campaigns.content import SYSTEM_KINDS, system_email

    return {
        kind: check(system_email(kind), settings, spamassassin=spamassassin)
        for kind in SYSTEM_KINDS
    }


def _lines(content: Content) -> list[tuple[str, str]]:
    """(where, text) for every line a marketer wrote."""
    out = [(f"{content.source}: subject", content.subject)]
    out.append((f"{content.source}: preheader", content.preheader))
    for number, line in enumerate(content.body.splitlines(), start=content.body_line):
        out.append((f"{content.source}:{number}", line))
    if content.offer is not None:
        out.append((f"{content.source}: offer title", content.offer.title))
        out.extend((f"{content.source}: offer", line) for line in content.offer.body.splitlines())
    return out


def _check_placeholders(content: Content, report: CheckReport) -> None:
    for where, line in _lines(content):
        match = PLACEHOLDERS.search(line)
        if match:
            report.problem(where, f"placeholder text {match.group(0)!r}")


def _pieces(content: Content) -> list[tuple[str, str, int | None]]:
    """(where, Jinja source, first line) for every piece of content that renders per reader."""
    pieces: list[tuple[str, str, int | None]] = [
        (f"{content.source}: subject", content.subject, None),
        (f"{content.source}: preheader", content.preheader, None),
        (content.source, content.body, content.body_line),
    ]
    if content.button is not None:
        pieces.append((f"{content.source}: button", "{{ " + content.button.url + " }}", None))
    if content.offer is not None:
        pieces.append((f"{content.source}: offer", content.offer.body, None))
    return pieces


def _at(where: str, first: int | None, line: int | None) -> str:
    return f"{where}:{first + line - 1}" if first is not None and line else where


def _check_variables(content: Content, report: CheckReport) -> bool:
    """Syntax, unknown names, and a render of each piece for two sample readers."""
    ok = True
    readers = [sample_reader(content), sample_reader(content, has_report=True, name=None)]
    for where, source, first in _pieces(content):
        try:
            tree = TEXT_ENV.parse(source)
        except jinja2.TemplateSyntaxError as error:
            report.problem(_at(where, first, error.lineno), describe(error))
            ok = False
            continue
        unknown = sorted(meta.find_undeclared_variables(tree) - CONTEXT_NAMES)
        for name in unknown:
            line = _line_of(source, name)
            report.problem(
                _at(where, first, line),
                f"unknown variable {name!r} (templates know reader, campaign and links)",
            )
            ok = False
        if unknown:
            continue
        template = TEXT_ENV.from_string(source)
        for reader in readers:
            context = {
                "reader": reader,
                "campaign": content.campaign_view(),
                "links": Links(
                    "https://x.invalid/u",
                    "https://x.invalid/p",
                    "https://x.invalid/r",
                    "https://x.invalid/c",
                ),
            }
            try:
                template.render(context)
            except Exception as error:
                report.problem(_at(where, first, template_line(error)), describe(error))
                ok = False
                break
    return ok


def _line_of(source: str, name: str) -> int | None:
    pattern = re.compile(r"\b" + re.escape(name) + r"\b")
    for number, line in enumerate(source.splitlines(), start=1):
        if pattern.search(line) and "{" in line:
            return number
    return None


def _check_settings(content: Content, settings: Settings, report: CheckReport) -> None:
    relay = settings.smtp_url is not None
    if settings.report is None:
        message = (
            "NEWSLETTER_REPORT is unset, so the shipped SAMPLE report would be sent; "
            "set it to the real report (a file path or an https URL)"
        )
        if relay:
            report.problem("NEWSLETTER_REPORT", message + " before sending over a real relay")
        else:
            report.warn("NEWSLETTER_REPORT", message + " (fine for the capture inbox)")
    if not settings.postal_address.strip():
        report.problem("NEWSLETTER_POSTAL_ADDRESS", "no postal address for the footer")
    if settings.base_url.startswith("http://"):
        message = f"NEWSLETTER_BASE_URL is {settings.base_url}: unsubscribe links must be https"
        if relay:
            report.problem("NEWSLETTER_BASE_URL", message)
        else:
            report.warn("NEWSLETTER_BASE_URL", message + " (fine for the capture inbox)")


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []
        self.images: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "a" and "href" in values:
            self.links.append(values["href"] or "")
        elif tag == "img":
            self.images.append(values)


def _source_line(content: Content, needle: str) -> str:
    for where, line in _lines(content):
        if needle and needle in line:
            return where
    return f"{content.source} (layout)"


def _check_html(
    content: Content, html: str, text: str, links: Links, settings: Settings, report: CheckReport
) -> None:
    assert report.html_bytes is not None
    if report.html_bytes > GMAIL_CLIP_BYTES:
        report.problem(
            f"{content.source} (rendered HTML)",
            f"the HTML is {report.html_bytes / 1024:.0f} KB; Gmail clips emails over 102 KB",
        )
    collector = _Collector()
    collector.feed(html)
    for image in collector.images:
        src = image.get("src") or "?"
        if image.get("alt") is None or not (image.get("alt") or "").strip():
            report.problem(_source_line(content, src), f"image {src} has no alt text")
    for href in collector.links:
        if href.startswith(settings.base_url):
            continue  # NEWSLETTER_BASE_URL is checked once, as a setting
        if href.startswith("mailto:"):
            continue
        if not href.startswith("https://"):
            report.problem(
                _source_line(content, href), f"link {href!r} is not an absolute https URL"
            )
    if links.unsubscribe not in collector.links or links.unsubscribe not in text:
        report.problem(
            f"{content.source} (layout)", "no unsubscribe link in the HTML and text parts"
        )
    for part, body in (("HTML", html), ("text", text)):
        leftover = UNRESOLVED.search(body)
        if leftover:
            report.problem(
                _source_line(content, leftover.group(0)),
                f"unresolved placeholder {leftover.group(0)!r} in the {part} part",
            )
    address = " ".join(settings.postal_address.split())
    if address and (
        address not in " ".join(unescape(html).split()) or address not in " ".join(text.split())
    ):
        report.problem(
            f"{content.source} (layout)", "the postal address is missing from the footer"
        )


def _check_health(
    content: Content, campaign: Campaign | None, settings: Settings, report: CheckReport
) -> None:
    """Disease-treatment wording (warnings), no medical disclaimer for it (a problem), and an
    article without sources (a warning)."""
    report.claims = compliance.campaign_claims(content, settings.health_terms, campaign)
    for claim in report.claims:
        report.warn(claim.where, claim.message)
    if report.claims and not settings.medical_disclaimer:
        report.problem(
            "NEWSLETTER_MEDICAL_DISCLAIMER", compliance.missing_disclaimer_message(report.claims)
        )
    if campaign is not None:
        sources = compliance.check_sources(campaign)
        if sources is not None:
            report.warn(*sources)


def _check_disclaimer(
    content: Content, html: str, text: str, settings: Settings, report: CheckReport
) -> None:
    """An email with claims must carry the disclaimer that is set in both parts' footer (a
    layout of one's own may have left ``@@footer@@`` out)."""
    if not report.claims or not settings.medical_disclaimer:
        return
    missing = compliance.disclaimer_in(settings.medical_disclaimer, unescape(html), text)
    if missing:
        report.problem(
            f"{content.source} (layout)",
            "the email makes health claims but the medical disclaimer "
            f"(NEWSLETTER_MEDICAL_DISCLAIMER) is missing from the footer of the "
            f"{' and '.join(missing)} part{'s' if len(missing) > 1 else ''}",
        )


def _check_spam(message: bytes, report: CheckReport, command: str | None) -> None:
    executable = shutil.which(command) if command else None
    if executable is None:
        report.warn(
            "spamassassin",
            "not installed, so no spam score was taken (apt-get install spamassassin)",
        )
        return
    with tempfile.TemporaryDirectory(prefix="newsletter-sa-") as home:
        try:
            result = subprocess.run(
                [executable, "-L", "-t", "-x", "--cf=use_bayes 0", "--cf=report_safe 0"],
                input=message,
                capture_output=True,
                timeout=120,
                env={**os.environ, "HOME": home},
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            report.warn("spamassassin", f"could not run ({error})")
            return
    output = result.stdout.decode("utf-8", "replace")
    match = re.search(r"Content analysis details:\s+\((-?[\d.]+) points", output)
    if match is None:
        report.warn("spamassassin", "gave no score")
        return
    report.spam_score = float(match.group(1))
    rules = output[match.end() :].split("\n---- ", 1)[-1].splitlines()[1:]
    report.spam_rules = [
        line.strip() for line in rules if re.match(r"^\s*-?\d+\.\d+ [A-Z0-9_]+", line)
    ]
    if report.spam_score > SPAM_LIMIT:
        hits = [rule.split() for rule in report.spam_rules if not rule.startswith(("-", "0.0"))]
        report.problem(
            "spamassassin",
            f"score {report.spam_score} is over {SPAM_LIMIT}: "
            + ", ".join(f"{hit[1]} ({hit[0]})" for hit in hits),
        )


__all__ = [
    "CheckReport",
    "Finding",
    "check",
    "check_system_emails",
    "sample_links",
    "sample_reader",
]
