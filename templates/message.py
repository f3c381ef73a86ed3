"""The MIME work, made cheap: every line that is the same for all readers of a compiled email is
encoded once (``Envelope``); each reader's copy splices its own headers and parts between them.

Parts travel as 7bit wherever they can: the HTML part is ASCII by construction (non-ASCII text is
written as character references, in the template once and in a reader's values as they are
spliced), and the text part is 7bit when it is ASCII; otherwise, or when a line would pass SMTP's
998 octets, the part is quoted-printable. A header value holding anything but plain printable ASCII
is folded and encoded by the standard library's SMTP policy, so a CR or LF in a name or a subject
can never start a header of its own.
"""

from __future__ import annotations

import binascii
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.utils import format_datetime, formataddr

from newsletter.errors import TemplateError
from templates.compile import Compiled, Parts
from templates.model import Links, Reader

MAX_LINE = 998
MAX_NAME = 200  # a display name is cut to this in the To header (the store keeps 200)
_SAFE_URL = re.compile(r"[!-~]+")  # printable ASCII, no spaces
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


class CrlfMessage(bytes):
    """Message bytes whose every line ends in CRLF, the last one included, with no CR or LF
    elsewhere: what ``render`` returns when it can vouch for that, so that a sender only has to
    double the dots that start lines, without scanning for line endings first."""


class SmtpReady(CrlfMessage):
    """A ``CrlfMessage`` in which no line starts with a dot either: SMTP's ``DATA`` carries it
    as it is, followed by the final dot."""


def crlf_only(data: bytes) -> bool:
    """True when every LF in ``data`` ends a CRLF and every CR starts one."""
    crlf = data.count(b"\r\n")
    return data.count(b"\n") == crlf and data.count(b"\r") == crlf


def one_line(value: str) -> str:
    """``value`` with every control character (CR and LF among them) turned into a space."""
    return _CONTROL.sub(" ", value).strip() if not value.isprintable() else value


def header(name: str, value: str) -> bytes:
    """``Name: value`` CRLF, folded and RFC 2047-encoded when it needs to be."""
    value = one_line(value)
    if value.isascii() and len(name) + len(value) <= 76:
        return f"{name}: {value}\r\n".encode("ascii")
    return policy.SMTP.header_factory(name, value).fold(policy=policy.SMTP).encode("ascii")


def fits(data: bytes) -> bool:
    """True when no line of ``data`` is longer than SMTP allows."""
    if len(data) <= MAX_LINE:
        return True
    start = 0
    find = data.find
    while True:
        end = find(b"\n", start)  # one byte: found with memchr, unlike b"\r\n"
        if end < 0:
            return len(data) - start <= MAX_LINE
        if end - start > MAX_LINE + 1:
            return False
        start = end + 1


def address_of(email: str) -> str:
    """The reader's address, refused if it could break the header it goes into."""
    if (
        not email
        or not email.isprintable()
        or any(c in email for c in ' <>,;"')
        or "@" not in email
    ):
        raise TemplateError(f"reader address {email!r}: not a usable email address")
    return email


def message_id(value: str) -> str:
    """``<id@host>`` from the caller's Message-ID, with or without its angle brackets."""
    value = value.strip()
    if not value.startswith("<"):
        value = f"<{value}>"
    if not _SAFE_URL.fullmatch(value) or "@" not in value or value.count("<") != 1:
        raise TemplateError(f"Message-ID {value!r}: expected <unique@domain> in printable ASCII")
    return value


def _url(kind: str, value: str) -> str:
    if not _SAFE_URL.fullmatch(value) or "<" in value or ">" in value:
        raise TemplateError(f"{kind} link {value!r}: not a URL that can go in a header")
    return value


@dataclass(frozen=True)
class Envelope:
    """The encoded lines of a compiled email that every reader's copy shares."""

    from_line: bytes
    list_id: bytes
    tail: bytes  # List-Unsubscribe-Post, MIME-Version, Content-Type, blank line, first boundary
    boundary: bytes
    mailto: str  # default mailto half of List-Unsubscribe
    text_7bit: bytes
    text_qp: bytes
    html_7bit: bytes
    html_qp: bytes
    close: bytes

    @classmethod
    def build(cls, compiled: Compiled) -> Envelope:
        sender = compiled.sender
        # "=_" never occurs in quoted-printable, and "'" never in an HTML-escaped value.
        boundary = f"=_'nl{compiled.source_hash[:24]}"
        if boundary in compiled.html_source:
            raise TemplateError(f"{compiled.content.source}: holds its own MIME boundary")
        list_name = sender.name.replace('"', "'")
        list_host = f"{compiled.content.name or 'newsletter'}.{sender.domain}"
        list_host = re.sub(r"[^A-Za-z0-9.-]", "-", list_host)
        part = (
            'Content-Type: text/{kind}; charset="utf-8"\r\nContent-Transfer-Encoding: {cte}\r\n\r\n'
        )
        return cls(
            from_line=header("From", sender.header),
            list_id=header("List-Id", f'"{list_name}" <{list_host}>'),
            tail=(
                "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
                "MIME-Version: 1.0\r\n"
                f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n'
                "\r\n"
                f"--{boundary}\r\n"
            ).encode("ascii"),
            boundary=boundary.encode("ascii"),
            mailto=f"mailto:{sender.address}?subject=unsubscribe",
            text_7bit=part.format(kind="plain", cte="7bit").encode("ascii"),
            text_qp=part.format(kind="plain", cte="quoted-printable").encode("ascii"),
            html_7bit=(f"\r\n--{boundary}\r\n" + part.format(kind="html", cte="7bit")).encode(),
            html_qp=(
                f"\r\n--{boundary}\r\n" + part.format(kind="html", cte="quoted-printable")
            ).encode(),
            close=f"\r\n--{boundary}--\r\n".encode("ascii"),
        )


_last_date: tuple[datetime, bytes] | None = None


_current_date: tuple[int, bytes] = (-1, b"")


def current_date_line() -> bytes:
    """``Date:`` for the current time, formatted once a second (the header shows whole seconds)."""
    global _current_date
    second = int(time.time())
    cached = _current_date
    if cached[0] != second:
        cached = (second, date_line(datetime.fromtimestamp(second, UTC)))
        _current_date = cached
    return cached[1]


def date_line(now: datetime) -> bytes:
    """``Date:`` for ``now`` (an aware datetime), remembered for the next reader."""
    global _last_date
    cached = _last_date
    if cached is not None and cached[0] == now:
        return cached[1]
    if now.tzinfo is None:
        raise TemplateError("render(now=…) needs a timezone-aware datetime")
    line = f"Date: {format_datetime(now)}\r\n".encode("ascii")
    _last_date = (now, line)
    return line


def assemble(
    envelope: Envelope,
    *,
    reader: Reader,
    links: Links,
    parts: Parts,
    subject_line: bytes | None,
    text_bound: int | None,
    html_bound: int | None,
    message_id_value: str,
    now: datetime | None,
    crlf: bool = False,
    dot_free: bool = False,
) -> bytes:
    """One reader's complete message: headers, then the text and HTML parts.

    With ``crlf`` (the caller's word that ``parts`` break lines with CRLF only), the result is a
    ``CrlfMessage``: the headers and MIME lines written here break lines with CRLF only, and a
    part is checked when quoted-printable encoding has rewritten its lines. With ``dot_free``
    too (the caller's word that only printed values could start a line of ``parts`` with a
    dot) and no printed value starting with one, it is ``SmtpReady``: no header line written
    here starts with a dot, and quoted-printable parts are not vouched for."""
    email = address_of(reader.email)
    name = one_line(reader.name)[:MAX_NAME] if reader.name else ""
    to_line = header("To", formataddr((name, email)) if name else email)
    if subject_line is None:
        subject_line = header("Subject", parts.subject)
    mailto = _url("mailto", links.unsubscribe_mailto or envelope.mailto)
    unsubscribe = (
        b"List-Unsubscribe: <"
        + _url("unsubscribe", links.unsubscribe).encode("ascii")
        + b">,\r\n <"
        + mailto.encode("ascii")
        + b">\r\n"
    )
    boundary = envelope.boundary
    text = parts.text
    text_bytes = text.encode("utf-8")
    short = text_bound is not None and text_bound + parts.text_printed <= MAX_LINE
    if text.isascii() and (short or fits(text_bytes)) and boundary not in text_bytes:
        text_head = envelope.text_7bit
    else:
        text_head = envelope.text_qp
        text_bytes = binascii.b2a_qp(text_bytes, istext=True)
        # b2a_qp breaks lines with CRLF only if the text's first line break is one.
        crlf = crlf and crlf_only(text_bytes)
        dot_free = False
    html_bytes = parts.html.encode("ascii", "xmlcharrefreplace")
    # The boundary holds a ' which escaped values never do, and the template was checked for it.
    short = html_bound is not None and html_bound + parts.html_printed <= MAX_LINE
    if short or fits(html_bytes):
        html_head = envelope.html_7bit
    else:
        html_head = envelope.html_qp
        html_bytes = binascii.b2a_qp(html_bytes, istext=True)
        crlf = crlf and crlf_only(html_bytes)
        dot_free = False
    message = b"".join(
        (
            envelope.from_line,
            to_line,
            subject_line,
            current_date_line() if now is None else date_line(now),
            b"Message-ID: " + message_id(message_id_value).encode("ascii") + b"\r\n",
            envelope.list_id,
            unsubscribe,
            envelope.tail,
            text_head,
            text_bytes,
            html_head,
            html_bytes,
            envelope.close,
        )
    )
    if not crlf:
        return message
    if dot_free and not parts.dotted_values:
        return SmtpReady(message)
    return CrlfMessage(message)
