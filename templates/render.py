"""``render``: one reader's copy of an email as the bytes an SMTP server takes.

Preview, sending and tests all call this one function, and the same inputs (``now`` included)
give the same bytes. The MJML is compiled once per template version, Jinja runs per reader, and
the MIME lines every reader shares are encoded once (``message.Envelope``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime

from newsletter.settings import Settings
from templates.compile import Compiled, compile_content, render_parts
from templates.message import CrlfMessage, Envelope, SmtpReady, assemble, crlf_only, header
from templates.model import Content, Links, Reader
from templates.signing import load_key, sign


@dataclass(frozen=True)
class Prepared:
    """A compiled email with its shared MIME lines."""

    compiled: Compiled
    envelope: Envelope
    subject_line: bytes | None  # the encoded Subject when it is the same for every reader


_prepared: dict[tuple[Content, str, str, str], Prepared] = {}
_last: tuple[tuple[Content, str, str, str], Prepared] | None = None
_lock = threading.Lock()
MAX_PREPARED = 64


def prepare(content: Content, settings: Settings) -> Prepared:
    """The compiled email for ``content`` under ``settings`` (sender, postal address and medical
    disclaimer)."""
    key = (
        content,
        content.sender or settings.sender,
        settings.postal_address,
        settings.medical_disclaimer,
    )
    last = _last
    # The same content object as the last call's (the loaders keep one a file version): no hash.
    if last is not None and last[0][0] is content and last[0][1:] == key[1:]:
        return last[1]
    found = _prepared.get(key)
    if found is not None:
        _remember(key, found)
        return found
    compiled = compile_content(content, key[1], key[2], key[3])
    subject_line = None if compiled.personal_subject else header("Subject", compiled.subject_text)
    found = Prepared(compiled, Envelope.build(compiled), subject_line)
    with _lock:
        if len(_prepared) >= MAX_PREPARED:
            _prepared.clear()
        _prepared[key] = found
    _remember(key, found)
    return found


def _remember(key: tuple[Content, str, str, str], prepared: Prepared) -> None:
    global _last
    _last = (key, prepared)


def render(
    content: Content,
    reader: Reader,
    links: Links,
    *,
    message_id: str,
    settings: Settings,
    now: datetime | None = None,
) -> bytes:
    """The complete RFC 5322 message of ``content`` for ``reader``: multipart/alternative with a
    plain-text part written from the same source, ``From``, ``To``, ``Subject``, ``Date`` (``now``,
    default the current time), the given ``Message-ID``, ``List-Id``, ``List-Unsubscribe`` (https
    URL and mailto) with ``List-Unsubscribe-Post: List-Unsubscribe=One-Click``; DKIM-signed when
    ``settings.dkim_key`` is set. Raises ``TemplateError`` naming the content and the problem.

    The result is a ``CrlfMessage`` (a ``bytes``) when every line of it is known to end in CRLF,
    which is the case for templates without output-transforming statements (see
    ``Compiled.crlf_only``), and ``SmtpReady`` when no line can start with a dot either."""
    prepared = prepare(content, settings)
    compiled = prepared.compiled
    parts = render_parts(
        compiled, {"reader": reader, "campaign": compiled.campaign, "links": links}
    )
    message = assemble(
        prepared.envelope,
        reader=reader,
        links=links,
        parts=parts,
        subject_line=prepared.subject_line,
        text_bound=compiled.text_bound,
        html_bound=compiled.html_bound,
        message_id_value=message_id,
        now=now,
        crlf=compiled.crlf_only,
        dot_free=not compiled.static_dots,
    )
    if settings.dkim_key is not None:
        signed = sign(
            message,
            key=load_key(settings.dkim_key),
            selector=settings.dkim_selector,
            domain=compiled.sender.domain,
        )
        # The signature header is dkimpy's: its few hundred bytes are checked rather than trusted.
        header_lines = signed[: len(signed) - len(message)]
        if not isinstance(message, CrlfMessage) or not crlf_only(header_lines):
            return signed
        if isinstance(message, SmtpReady) and b"\n." not in header_lines:
            return SmtpReady(signed)
        return CrlfMessage(signed)
    return message


def clear_caches() -> None:
    """Forget every compiled email (after a template file changes)."""
    from templates import compile as compile_module

    global _last
    with _lock:
        _prepared.clear()
        _last = None
    compile_module.clear_caches()
