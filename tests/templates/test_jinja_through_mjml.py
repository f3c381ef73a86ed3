"""What happens to Jinja placeholders when MRML compiles the MJML around them: the measurements
behind templates/README.md, kept as tests so that an mjml-python upgrade that changes them fails
here first."""

from __future__ import annotations

import pytest
from mjml import mjml2html

from templates.compile import line_bound, wrap_html


def compile_body(body: str, head: str = "") -> str:
    return mjml2html(
        f'<mjml lang="en"><mj-head>{head}</mj-head><mj-body>{body}</mj-body></mjml>', fonts={}
    )


def column(inner: str) -> str:
    return f"<mj-section><mj-column>{inner}</mj-column></mj-section>"


@pytest.mark.parametrize(
    ("mjml", "survivor"),
    [
        (column("<mj-text>Hi {{ reader.name }}</mj-text>"), "Hi {{ reader.name }}"),
        (
            column('<mj-text><a href="{{ links.web_version }}">web</a></mj-text>'),
            'href="{{ links.web_version }}"',
        ),
        (
            column('<mj-button href="{{ links.report }}">Get it</mj-button>'),
            'href="{{ links.report }}"',
        ),
        (
            column('<mj-image src="{{ campaign.image }}" alt="{{ campaign.alt }}" />'),
            'alt="{{ campaign.alt }}"',
        ),
        (
            column("<mj-text>{% if reader.has_report %}yes{% else %}no{% endif %}</mj-text>"),
            "{% if reader.has_report %}yes{% else %}no{% endif %}",
        ),
        (
            "{% if not reader.has_report %}" + column("<mj-text>offer</mj-text>") + "{% endif %}",
            "{% if not reader.has_report %}",
        ),
        (column("<mj-text>{# a note #}x</mj-text>"), "{# a note #}"),
        (
            column('<mj-text color="{{ campaign.colour }}">x</mj-text>'),
            "color:{{ campaign.colour }}",
        ),
    ],
)
def test_placeholders_in_text_attributes_and_around_sections_survive_verbatim(
    mjml: str, survivor: str
) -> None:
    assert survivor in compile_body(mjml)


def test_placeholders_in_the_title_survive() -> None:
    assert "<title>{{ campaign.subject }}</title>" in compile_body(
        column("<mj-text>x</mj-text>"), head="<mj-title>{{ campaign.subject }}</mj-title>"
    )


def test_a_placeholder_in_a_numeric_layout_attribute_is_silently_dropped() -> None:
    html = compile_body(
        column('<mj-image width="{{ w }}px" src="https://x.example/a.png" alt="a" />')
    )
    assert "{{ w }}" not in html


def test_a_less_than_sign_inside_a_jinja_tag_breaks_mrml() -> None:
    with pytest.raises(ValueError):
        compile_body(column("<mj-text>{% if 3 < 4 %}x{% endif %}</mj-text>"))


def test_long_lines_wrap_only_where_a_break_means_a_space() -> None:
    line = (
        '<p style="a: b; c: d">' + "word " * 200 + '<a href="{{ links.x }}" title="t t">x</a></p>'
    )
    wrapped = wrap_html(line, width=80)
    assert all(len(piece) <= 80 for piece in wrapped.split("\n")[:-1])
    assert " ".join(wrapped.split()) == " ".join(line.split())
    assert 'style="a: b; c: d"' in wrapped and '"{{ links.x }}"' in wrapped


@pytest.mark.parametrize(
    ("source", "bound"),
    [
        ("abc", 3),
        ("ab\ncdef\ng", 4),
        ("ab{% if x %}cd\nef{% endif %}gh", 4),
        ("aaaa{% if x %}\nb\n{% endif %}cccc", 8),
        ("a{{ x }}b\nc", 2),
        ("x{% if a %}1{% elif b %}22\n{% else %}333{% endif %}y", 5),
        ("{% for x in y %}a{% endfor %}", None),
        ("a{%- if x %}b{% endif %}", None),
        ("{% raw %}{{ not a placeholder }}{% endraw %}", 23),
    ],
)
def test_the_longest_line_a_template_can_produce_is_bounded_from_its_source(
    source: str, bound: int | None
) -> None:
    assert line_bound(source) == bound
