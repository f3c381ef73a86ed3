"""Properties of render() over arbitrary names and subjects (hypothesis)."""

from __future__ import annotations

from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from newsletter.settings import Settings
from templates import Content, Links, Reader, render
from templates.compile import may_start_a_line_with_a_dot
from templates.message import CrlfMessage, SmtpReady, crlf_only

SETTINGS = Settings(sender="Gut Health Letter <news@example.org>", base_url="https://n.example.org")
LINKS = Links("https://n.example.org/unsubscribe/t", "https://n.example.org/preferences/t")
EXPECTED_HEADERS = {
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "list-id",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "mime-version",
    "content-type",
}
names = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=80
) | st.sampled_from(["a\r\nBcc: x@y.org", "\n\n", "=?utf-8?q?x?=", '"quoted" <a@b>', "é\u2028z"])


@settings(
    max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(name=names, subject=names)
def test_no_name_or_subject_adds_a_header_and_every_copy_parses_back(
    name: str, subject: str
) -> None:
    content = Content(
        subject="{{ reader.name }} " + subject.replace("{", "(").replace("}", ")"),
        preheader="p",
        body="Hello {{ reader.name }}.\n",
    )
    raw = render(
        content, Reader("r@example.org", name or None), LINKS, message_id="<p@x>", settings=SETTINGS
    )
    assert raw.isascii()
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    # The renderer vouches for its line endings (the sender then skips its scan): rightly.
    assert isinstance(raw, CrlfMessage) and crlf_only(raw)
    assert vouched_rightly(raw)
    message = message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    assert {key.lower() for key in message} == EXPECTED_HEADERS
    assert not message.defects
    assert message["To"].addresses[0].addr_spec == "r@example.org"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    again = render(
        content,
        Reader("r@example.org", name or None),
        LINKS,
        message_id="<p@x>",
        settings=SETTINGS,
        now=None,
    )
    assert again.split(b"Date:")[0] == raw.split(b"Date:")[0]


def vouched_rightly(raw: bytes) -> bool:
    """What the class of ``render``'s result says about its lines is true."""
    if isinstance(raw, SmtpReady) and (raw.startswith(b".") or b"\n." in raw):
        return False
    return not isinstance(raw, CrlfMessage) or crlf_only(raw)


bodies = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",), exclude_characters="{}"),
    max_size=300,
) | st.sampled_from([".dot\n", "a\n.b\n\n.c", "```\n.gitignore\n```", "    .indented code"])


@settings(
    max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(body=bodies)
def test_any_markdown_body_compiles_and_both_parts_carry_its_words(body: str) -> None:
    content = Content(subject="s", preheader="p", body=body + "\n\nEND-OF-BODY\n")
    raw = render(content, Reader("r@example.org"), LINKS, message_id="<b@x>", settings=SETTINGS)
    assert vouched_rightly(raw)
    message = message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    text, html = (message.get_body((kind,)) for kind in ("plain", "html"))
    assert text is not None and html is not None
    assert "END-OF-BODY" in text.get_content() and "END-OF-BODY" in html.get_content()


@pytest.mark.parametrize(
    ("source", "may"),
    [
        ("Hello {{ reader.name }}.", False),  # static text always stands before the value
        ("a.b\nc.d", False),
        ("a {# note #}.", False),
        (".starts", True),
        ("a\n.b", True),
        ("a\r.b", True),  # the lexer writes a lone CR as CRLF
        ("a\n{{ reader.name }}.", True),  # the name may be empty
        ("a\n{# note #}.", True),
        ("x{% endif %}.", True),  # a statement may skip what stood before it
        ("x{% endif %}{{ reader.name }}.", True),
        ("{% raw %}.x{% endraw %}", True),
        ('{{ "}}"[:0] }}.', True),  # Jinja's own tokens, not a pattern, find the constructs
    ],
)
def test_a_template_says_whether_its_own_text_can_start_a_line_with_a_dot(
    source: str, may: bool
) -> None:
    assert may_start_a_line_with_a_dot(source) is may
