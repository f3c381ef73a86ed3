"""Campaign content renders in a sandbox: strict about names, closed to Python internals."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from newsletter.errors import TemplateError
from newsletter.settings import Settings
from templates import Content, Links, Reader, render


def attempt(
    body: str,
    make_content: Callable[..., Content],
    reader: Reader,
    links: Links,
    settings: Settings,
) -> bytes:
    return render(make_content(body), reader, links, message_id="<s@x>", settings=settings)


@pytest.mark.parametrize(
    "body",
    [
        "{{ reader.__class__ }}",
        "{{ reader.__init__.__globals__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ links.__dict__ }}",
        "{{ campaign.__class__ }}",
        "{{ reader.attributes.__class__.__base__ }}",
        "{{ '{0.__class__}'.format(reader) }}",
        "{{ reader.email.__class__.__mro__ }}",
        "{{ (reader|attr('__class__')) }}",
    ],
)
def test_reaching_python_internals_is_refused_with_a_clear_error(
    body: str,
    make_content: Callable[..., Content],
    reader: Reader,
    links: Links,
    settings: Settings,
) -> None:
    with pytest.raises(TemplateError, match=r"test\.md") as caught:
        attempt(body, make_content, reader, links, settings)
    assert "not allowed" in caught.value.message or "unknown" in caught.value.message


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("{{ cycler.__init__.__globals__.os }}", "not allowed|unknown variable"),
        ("{{ lipsum.__globals__ }}", "unknown variable"),
        ("{{ range(10) }}", "unknown variable"),
        ("{{ settings.secret_key }}", "unknown variable"),
        ("{{ environ }}", "unknown variable"),
        ("{% include 'secrets.txt' %}", "cannot include"),
        ("{% set _ = reader.attributes.update({'x': 1}) %}", "no attribute 'update'"),
        ("{{ reader.tags.append('x') }}", "no attribute 'append'"),
        ("{{ links.unsubscribe.__len__() }}", "not allowed"),
        ("{% import 'os' as os %}", "cannot include"),
        ("{{ 'x' * 100000000 }}", "not allowed"),
        ("{{ 9 ** 99999999 }}", "not allowed"),
    ],
)
def test_the_context_holds_only_reader_campaign_and_links(
    body: str,
    message: str,
    make_content: Callable[..., Content],
    reader: Reader,
    links: Links,
    settings: Settings,
) -> None:
    with pytest.raises(TemplateError, match=message):
        attempt(body, make_content, reader, links, settings)


def test_a_misspelt_attribute_fails_naming_the_file(
    make_content: Callable[..., Content], reader: Reader, links: Links, settings: Settings
) -> None:
    with pytest.raises(TemplateError, match=r"test\.md.*unknown variable or attribute.*nmae"):
        attempt("Hello\n\n{{ reader.nmae }}\n", make_content, reader, links, settings)


def test_a_syntax_error_names_the_file_and_line(
    make_content: Callable[..., Content], reader: Reader, links: Links, settings: Settings
) -> None:
    with pytest.raises(TemplateError, match=r"test\.md:7: template syntax error"):
        attempt("One\n\n{% if reader.name %}\n", make_content, reader, links, settings)


def test_reader_fields_campaign_facts_and_filters_work_inside_the_sandbox(
    make_content: Callable[..., Content], links: Links, settings: Settings
) -> None:
    reader = Reader(
        email="r@example.org",
        name="Rae Reader",
        attributes={"city": "Oslo"},
        tags=("a", "b"),
    )
    body = (
        "{{ reader.first_name|upper }} from {{ reader.attributes.city }}, "
        "{{ reader.attributes.get('zip', 'no zip') }}, {{ reader.tags|join('+') }}, "
        "{{ campaign.name }}, {{ reader.nickname|default('friend') if false else 'ok' }}, "
        "{% if 3 < 4 %}less{% endif %} {{ '<b>' }}\n"
    )
    raw = attempt(body, lambda b: make_content(b, name="camp"), reader, links, settings)
    html = " ".join(raw.decode().split())
    assert "RAE from Oslo, no zip, a+b, camp, ok, less &lt;b&gt;" in html
    assert "RAE from Oslo, no zip, a+b, camp, ok, less <b>" in html  # the text part


def test_a_printed_value_is_escaped_once_in_the_html_and_never_in_the_text(
    make_content: Callable[..., Content], links: Links, settings: Settings
) -> None:
    reader = Reader(email="r@example.org", name="Tom & <Jerry>", attributes={"badge": "<i>K2</i>"})
    body = (
        "Hi {{ reader.name }}, {{ reader.attributes.badge|safe }}, {{ reader.attributes.badge }}\n"
    )
    text, html = attempt(body, make_content, reader, links, settings).decode().split("<html", 1)
    assert "Hi Tom &amp; &lt;Jerry&gt;, <i>K2</i>, &lt;i&gt;K2&lt;/i&gt;" in " ".join(html.split())
    assert "Hi Tom & <Jerry>, <i>K2</i>, <i>K2</i>" in text
