"""Markdown content to the two parts of an email: HTML for the MJML layout and plain text written
from the same tokens (headings underlined, links spelt out, lists kept), not a dump of the HTML.

The Jinja in the Markdown is set aside first (each construct becomes an inert token) so that
neither markdown-it nor MRML can mangle it: a ``{{ links.x }}`` link target would otherwise be
percent-encoded, and a ``<`` inside ``{% if %}`` breaks MRML. ``Protected.restore`` puts it back
once both have run.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field

from markdown_it import MarkdownIt
from markdown_it.token import Token

from templates.sandbox import JINJA_PATTERN

WIDTH = 72
_TOKEN = re.compile(r"JJX(\d+)XJJ")
_MARKDOWN = MarkdownIt("commonmark", {"html": False, "typographer": False})

# Typographic punctuation spelt in ASCII for the plain-text part, so that an English text part is
# 7-bit and travels without any transfer encoding.
ASCII_PUNCTUATION = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u2013": "-",
        "\u2014": "--",
        "\u2026": "...",
        "\u00a0": " ",
        "\u2022": "*",
        "\u2192": "->",
    }
)

LINK_STYLE = "color:#0b6e4f;text-decoration:underline;"
HTML_STYLES = {
    "<a href=": f'<a style="{LINK_STYLE}" href=',
    "<h1>": '<h1 style="font-size:26px;line-height:1.25;margin:0 0 16px;">',
    "<h2>": '<h2 style="font-size:20px;line-height:1.3;margin:24px 0 8px;">',
    "<h3>": '<h3 style="font-size:17px;line-height:1.3;margin:20px 0 6px;">',
    "<p>": '<p style="margin:0 0 16px;">',
    "<ul>": '<ul style="margin:0 0 16px;padding-left:22px;">',
    "<ol>": '<ol style="margin:0 0 16px;padding-left:22px;">',
    "<blockquote>": '<blockquote style="margin:0 0 16px;padding-left:12px;'
    'border-left:3px solid #9bbfb2;">',
}


@dataclass
class Protected:
    """Text with its Jinja constructs replaced by tokens, and the constructs to put back."""

    text: str
    constructs: list[str] = field(default_factory=list)

    def restore(self, text: str) -> str:
        return _TOKEN.sub(lambda match: self.constructs[int(match.group(1))], text)

    def is_statement(self, text: str) -> bool:
        """True when ``text`` is exactly one ``{% … %}`` or ``{# … #}`` token."""
        match = _TOKEN.fullmatch(text.strip())
        return match is not None and not self.constructs[int(match.group(1))].startswith("{{")


def protect(text: str, into: Protected | None = None) -> Protected:
    """Replace each Jinja construct in ``text`` by a token (appending to ``into`` if given)."""
    protected = into if into is not None else Protected("")

    def token(match: re.Match[str]) -> str:
        protected.constructs.append(match.group(0))
        return f"JJX{len(protected.constructs) - 1}XJJ"

    protected.text = JINJA_PATTERN.sub(token, text)
    return protected


def to_html(markdown: str, protected: Protected) -> str:
    """HTML for ``markdown`` (already protected); tokens stay in place for ``restore``."""
    html = _MARKDOWN.render(markdown)
    # A paragraph holding only {% if %}/{% endif %} would leave empty paragraphs behind.
    html = re.sub(
        r"<p>(JJX\d+XJJ)</p>\n",
        lambda m: m.group(1) + "\n" if protected.is_statement(m.group(1)) else m.group(0),
        html,
    )
    for plain, styled in HTML_STYLES.items():
        html = html.replace(plain, styled)
    return html


def to_text(markdown: str, protected: Protected) -> str:
    """Plain text for ``markdown`` (already protected), wrapped at 72 columns."""
    tokens = _MARKDOWN.parse(markdown)
    blocks: list[str] = []
    _blocks(tokens, 0, len(tokens), blocks, protected, prefix="")
    out = []
    for block in blocks:
        # A statement alone in its paragraph ({% if %}, {% endif %}) takes no line of its own, so
        # the text reads the same whichever way it goes.
        out.append(block if protected.is_statement(block) else block + "\n\n")
    return "".join(out).translate(ASCII_PUNCTUATION)


def _inline(token: Token) -> str:
    parts: list[str] = []
    link_stack: list[tuple[str, int]] = []
    for child in token.children or []:
        kind = child.type
        if kind in ("text", "code_inline"):
            parts.append(child.content)
        elif kind == "softbreak":
            parts.append(" ")
        elif kind == "hardbreak":
            parts.append("\n")
        elif kind == "link_open":
            link_stack.append((str(child.attrs.get("href", "")), len(parts)))
        elif kind == "link_close" and link_stack:
            href, start = link_stack.pop()
            label = "".join(parts[start:])
            if href and href != label and href != f"mailto:{label}":
                parts.append(f" ({href})")
        elif kind == "image":
            alt = child.content or str(child.attrs.get("alt", ""))
            parts.append(f"[{alt}]" if alt else "")
    return "".join(parts)


def _wrap(text: str, first: str, rest: str) -> str:
    lines = []
    for index, piece in enumerate(text.split("\n")):
        lines.append(
            textwrap.fill(
                piece,
                width=WIDTH,
                initial_indent=first if index == 0 else rest,
                subsequent_indent=rest,
                break_long_words=False,
                break_on_hyphens=False,
            )
            or (first if index == 0 else rest).rstrip()
        )
    return "\n".join(lines)


def _blocks(
    tokens: Sequence[Token],
    start: int,
    end: int,
    out: list[str],
    protected: Protected,
    prefix: str,
) -> None:
    index = start
    while index < end:
        token = tokens[index]
        kind = token.type
        if kind == "heading_open":
            text = _inline(tokens[index + 1])
            if token.tag in ("h1", "h2"):
                rule = ("=" if token.tag == "h1" else "-") * min(len(text), WIDTH)
                out.append(f"{prefix}{text}\n{prefix}{rule}")
            else:
                out.append(f"{prefix}{text}")
            index += 3
        elif kind == "paragraph_open":
            text = _inline(tokens[index + 1])
            out.append(text if protected.is_statement(text) else _wrap(text, prefix, prefix))
            index += 3
        elif kind in ("bullet_list_open", "ordered_list_open"):
            close = _matching(tokens, index)
            number = int(token.attrs.get("start", 1) or 1)
            items: list[str] = []
            cursor = index + 1
            while cursor < close:
                if tokens[cursor].type == "list_item_open":
                    item_close = _matching(tokens, cursor)
                    marker = "- " if kind == "bullet_list_open" else f"{number}. "
                    number += 1
                    inner: list[str] = []
                    _blocks(tokens, cursor + 1, item_close, inner, protected, prefix="")
                    body = "\n".join(inner)
                    items.append(_wrap(body, prefix + marker, prefix + " " * len(marker)))
                    cursor = item_close + 1
                else:
                    cursor += 1
            out.append("\n".join(items))
            index = close + 1
        elif kind == "blockquote_open":
            close = _matching(tokens, index)
            inner = []
            _blocks(tokens, index + 1, close, inner, protected, prefix=prefix + "> ")
            out.append(f"\n{prefix}>\n".join(inner))
            index = close + 1
        elif kind in ("fence", "code_block"):
            out.append("\n".join(prefix + "    " + line for line in token.content.splitlines()))
            index += 1
        elif kind == "hr":
            out.append(prefix + "-" * 20)
            index += 1
        else:
            index += 1


def _matching(tokens: Sequence[Token], index: int) -> int:
    depth = 0
    for cursor in range(index, len(tokens)):
        depth += tokens[cursor].nesting
        if depth == 0:
            return cursor
    return len(tokens) - 1
