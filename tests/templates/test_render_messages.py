"""render(): every email, parsed back with the standard library, says what it must."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import dkim
import pytest
from dkim import dknewkey

from campaigns import load_campaign, system_email
from newsletter.errors import TemplateError
from newsletter.settings import Settings
from templates import Content, Links, Reader, render
from templates.message import CrlfMessage, crlf_only

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def parse(raw: bytes) -> EmailMessage:
    message = message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def parts(message: EmailMessage) -> tuple[str, str]:
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None
    return text.get_content().replace("\r\n", "\n"), html.get_content().replace("\r\n", "\n")


def flat(html: str) -> str:
    """HTML with its whitespace runs made single spaces (the renderer wraps long lines)."""
    return " ".join(html.split())


ALL_EMAILS = ["article", "confirmation", "welcome", "unsubscribed"]


def email_content(kind: str) -> Content:
    if kind == "article":
        return load_campaign("vitamin-k2-bone-health").content
    return system_email(kind)


@pytest.mark.parametrize("kind", ALL_EMAILS)
def test_every_email_parses_back_as_multipart_alternative_with_all_its_headers(
    kind: str, reader: Reader, links: Links, settings: Settings
) -> None:
    raw = render(
        email_content(kind),
        reader,
        links,
        message_id="<m1@example.org>",
        settings=settings,
        now=NOW,
    )
    message = parse(raw)
    assert message.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in message.iter_parts()] == ["text/plain", "text/html"]
    assert message["From"] == "Gut Health Letter <news@example.org>"
    assert message["To"] == "Ann Reader <ann.reader@example.net>"
    assert message["Subject"] == email_content(kind).subject
    assert message["Date"] == "Sat, 28 Nov 2026 12:00:00 +0000"
    assert message["Message-ID"] == "<m1@example.org>"
    assert message["List-Unsubscribe"] == (
        "<https://news.example.org/unsubscribe/tok-ann>, "
        "<mailto:news@example.org?subject=unsubscribe>"
    )
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["List-Id"].endswith(".example.org>")
    assert message["MIME-Version"] == "1.0"
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    text, html = parts(message)
    for part in (text, html):
        assert "https://news.example.org/unsubscribe/tok-ann" in part
        assert "https://news.example.org/preferences/tok-ann" in part
        assert "1 Sample Street" in flat(part)  # HTML lines may wrap at any space
    assert "Hi Ann," in text
    assert '<html lang="en"' in html
    assert "fonts.googleapis" not in html


def test_the_article_carries_the_edited_text_and_a_link_to_the_full_article(
    reader: Reader, links: Links, settings: Settings
) -> None:
    message = parse(
        render(email_content("article"), reader, links, message_id="<a@x>", settings=settings)
    )
    text, html = parts(message)
    for part in (text, html):
        assert "Osteocalcin" in part and "MK-7" in part
        assert "alcitonin" not in part and "K2-7" not in part
        assert "Lorem" not in part and "Related Articles" not in part and "(1; 2; 3)" not in part
        assert "https://www.example.com/articles/vitamin-k2-bone-health" in part
    assert "The Importance of Vitamin K2 for Bone Health\n=====" in text
    assert "preheader" in html and "Why vitamin K2 matters for bone health" in html


def test_the_free_report_offer_shows_only_to_readers_who_have_not_got_it(
    reader: Reader, links: Links, settings: Settings
) -> None:
    article = email_content("article")
    title = "The 7 Core Strategies to Heal the Gut Lining and Manage Leaky Gut"
    without = parse(render(article, reader, links, message_id="<a@x>", settings=settings))
    text, html = parts(without)
    assert title in text and title in flat(html)
    assert html.count('href="https://news.example.org/report/tok-ann"') == 1  # one clear button
    assert "Get the free report:\nhttps://news.example.org/report/tok-ann" in text
    got_it = Reader(email=reader.email, name=reader.name, has_report=True)
    text, html = parts(parse(render(article, got_it, links, message_id="<a@x>", settings=settings)))
    assert title not in text and title not in flat(html)
    assert "/report/" not in text + html


def test_system_emails_carry_their_one_button(
    reader: Reader, links: Links, settings: Settings
) -> None:
    confirm = parts(
        parse(
            render(
                system_email("confirmation"), reader, links, message_id="<c@x>", settings=settings
            )
        )
    )
    assert 'href="https://news.example.org/confirm/tok-ann"' in confirm[1]
    assert "Confirm my subscription:\nhttps://news.example.org/confirm/tok-ann" in confirm[0]
    welcome = parts(
        parse(render(system_email("welcome"), reader, links, message_id="<w@x>", settings=settings))
    )
    assert 'href="https://news.example.org/report/tok-ann"' in welcome[1]
    assert "Download your free report" in welcome[0]
    gone = parts(
        parse(
            render(
                system_email("unsubscribed"), reader, links, message_id="<u@x>", settings=settings
            )
        )
    )
    assert "you will not get any more newsletters" in gone[0]


def test_the_same_inputs_give_the_same_bytes(
    reader: Reader, links: Links, settings: Settings
) -> None:
    article = email_content("article")
    first = render(article, reader, links, message_id="<s@x>", settings=settings, now=NOW)
    again = render(
        load_campaign("vitamin-k2-bone-health").content,
        reader,
        links,
        message_id="<s@x>",
        settings=settings,
        now=NOW,
    )
    assert first == again


@pytest.mark.parametrize(
    "name",
    [
        "Eve\r\nBcc: victim@example.com",
        "Eve\nBcc: victim@example.com",
        "Eve\rBcc: victim@example.com",
    ],
)
def test_a_line_break_in_a_name_or_subject_never_adds_a_header(
    name: str, links: Links, settings: Settings, make_content: Callable[..., Content]
) -> None:
    sneaky = Reader(email="eve@example.net", name=name)
    article = make_content(subject="Hello {{ reader.name }}\r\nX-Injected: yes")
    message = parse(render(article, sneaky, links, message_id="<i@x>", settings=settings))
    assert message["Bcc"] is None and message["X-Injected"] is None
    assert "\n" not in message["To"] and "\n" not in message["Subject"]
    assert "Bcc: victim@example.com" in message["Subject"]
    text, _ = parts(message)
    assert "Hello Eve Bcc: victim@example.com." in text


def test_a_name_in_any_language_is_encoded_and_the_html_stays_7bit(
    links: Links, settings: Settings, make_content: Callable[..., Content]
) -> None:
    reader = Reader(email="jose@example.net", name="José Müller 李")
    raw = render(
        make_content(subject="Für {{ reader.first_name }}"),
        reader,
        links,
        message_id="<u@x>",
        settings=settings,
    )
    assert raw.isascii()
    message = parse(raw)
    assert message["To"] == "José Müller 李 <jose@example.net>"
    assert message["Subject"] == "Für José"
    text, html = parts(message)
    assert "Hello José Müller 李." in text
    assert "Hello Jos&#233; M&#252;ller &#26446;." in html


def test_a_very_long_value_falls_back_to_quoted_printable_within_smtp_line_limits(
    links: Links, settings: Settings, make_content: Callable[..., Content]
) -> None:
    reader = Reader(email="long@example.net", name="x" * 3000)
    raw = render(make_content(), reader, links, message_id="<l@x>", settings=settings)
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    text, html = parts(parse(raw))
    assert "x" * 3000 in text and "x" * 3000 in html


def test_a_reader_address_that_could_break_the_header_is_refused(
    links: Links, settings: Settings, make_content: Callable[..., Content]
) -> None:
    with pytest.raises(TemplateError, match="not a usable email address"):
        render(
            make_content(),
            Reader(email="a@b.org>\r\nBcc: c@d.org"),
            links,
            message_id="<x@y>",
            settings=settings,
        )


def test_a_dkim_signed_message_verifies_with_dkimpy(
    tmp_path: Path, reader: Reader, links: Links, make_settings: Callable[..., Settings]
) -> None:
    key = tmp_path / "dkim.key"
    dknewkey.GenRSAKeys(str(key), verbose=False)
    dknewkey.ExtractRSADnsPublicKey(str(key), str(tmp_path / "dkim.dns"), verbose=False)
    record = (tmp_path / "dkim.dns").read_bytes().strip()
    settings = make_settings(dkim_key=key, dkim_selector="mail2026")
    raw = render(email_content("article"), reader, links, message_id="<d@x>", settings=settings)
    assert raw.startswith(b"DKIM-Signature:")
    assert isinstance(raw, CrlfMessage) and crlf_only(raw)  # the signature's lines checked too
    signature = parse(raw)["DKIM-Signature"]
    assert "d=example.org" in signature and "s=mail2026" in signature
    signed = signature.replace(" ", "").split("h=")[1].split(";")[0].lower().split(":")
    for name in (
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "list-unsubscribe",
        "list-unsubscribe-post",
    ):
        assert name in signed

    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"mail2026._domainkey.example.org."
        return record

    assert dkim.verify(raw, dnsfunc=dns)
    assert not dkim.verify(raw.replace(b"Subject: ", b"Subject: Re: "), dnsfunc=dns)


def test_the_web_version_link_appears_only_when_the_caller_gives_one(
    reader: Reader, settings: Settings, make_content: Callable[..., Content]
) -> None:
    with_web = Links(
        "https://x.example/u", "https://x.example/p", web_version="https://x.example/w"
    )
    text, html = parts(
        parse(render(make_content(), reader, with_web, message_id="<w@x>", settings=settings))
    )
    assert 'href="https://x.example/w"' in html and "In your browser: https://x.example/w" in text
    plain = Links("https://x.example/u", "https://x.example/p")
    text, html = parts(
        parse(render(make_content(), reader, plain, message_id="<w@x>", settings=settings))
    )
    assert "View this email in your browser" not in html and "In your browser" not in text


def test_without_a_report_link_the_offer_is_left_out(reader: Reader, settings: Settings) -> None:
    no_report = Links("https://x.example/u", "https://x.example/p")
    text, html = parts(
        parse(
            render(
                email_content("article"), reader, no_report, message_id="<o@x>", settings=settings
            )
        )
    )
    assert "FREE REPORT" not in text and "FREE REPORT" not in html


def test_a_content_sender_overrides_the_setting_and_signs_for_its_domain(
    reader: Reader, links: Links, settings: Settings, make_content: Callable[..., Content]
) -> None:
    content = make_content(sender="Editor <editor@letters.example.com>")
    message = parse(render(content, reader, links, message_id="<f@x>", settings=settings))
    assert message["From"] == "Editor <editor@letters.example.com>"
    assert message["List-Unsubscribe"].endswith(
        "<mailto:editor@letters.example.com?subject=unsubscribe>"
    )


def test_a_naive_now_or_a_malformed_message_id_is_refused(
    reader: Reader, links: Links, settings: Settings, make_content: Callable[..., Content]
) -> None:
    with pytest.raises(TemplateError, match="timezone-aware"):
        render(
            make_content(),
            reader,
            links,
            message_id="<n@x>",
            settings=settings,
            now=datetime(2026, 1, 1),
        )
    with pytest.raises(TemplateError, match="Message-ID"):
        render(make_content(), reader, links, message_id="<a b@x>\r\nBcc: x@y", settings=settings)
    raw = render(make_content(), reader, links, message_id="bare.1@example.org", settings=settings)
    assert parse(raw)["Message-ID"] == "<bare.1@example.org>"
