"""Segment expressions: which readers a campaign (or a sequence step's ``when``) goes to.

The language, small on purpose::

    expression := term ("or" term)*
    term       := factor ("and" factor)*
    factor     := "not" factor | "(" expression ")" | test
    test       := tag:NAME | attr:KEY=VALUE | status:STATUS | zone:ZONE

``tag:vip and not (attr:plan=free or zone:Europe/Berlin)``. Names and values are runs of letters,
digits and ``_ - . / @ + :``, or double-quoted strings (``attr:city="New York"``, with ``\\"`` for a
quote). Keywords are case-insensitive. ``parse_segment`` turns the text into a SQLAlchemy
where-clause over ``subscribers`` in which every name and value is a bound parameter: nothing a
marketer types ever becomes SQL. A malformed expression raises ``ValidationError`` naming the
token and its position (1-based column).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, not_, or_, select

from newsletter.errors import ValidationError
from subscribers.models import Status, Subscriber, SubscriberTag

MAX_LENGTH = 2000
MAX_DEPTH = 30
_TOKEN = re.compile(
    r"""\s*(?:
        (?P<lparen>\() | (?P<rparen>\)) |
        (?P<test>(?:tag|attr|status|zone):(?:"(?:[^"\\]|\\.)*"|[^\s()"=]+)
            (?:=(?:"(?:[^"\\]|\\.)*"|[^\s()"]*))?) |
        (?P<word>[^\s()]+)
    )""",
    re.X | re.I,
)
_BARE = re.compile(r"^[\w\-./@+:]+$")


@dataclass(frozen=True)
class _Token:
    kind: str  # "(", ")", "and", "or", "not", "test"
    text: str
    column: int  # 1-based


def _error(message: str) -> ValidationError:
    return ValidationError({"segment": message})


def _tokens(text: str) -> list[_Token]:
    found: list[_Token] = []
    position = 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _TOKEN.match(text, position)
        if match is None:  # pragma: no cover -- the word group takes anything else
            raise _error(f"unexpected character at column {position + 1}")
        column = match.start(match.lastgroup or 0) + 1
        value = match.group(match.lastgroup or 0)
        if match.lastgroup == "lparen":
            found.append(_Token("(", value, column))
        elif match.lastgroup == "rparen":
            found.append(_Token(")", value, column))
        elif match.lastgroup == "test":
            found.append(_Token("test", value, column))
        elif value.lower() in ("and", "or", "not"):
            found.append(_Token(value.lower(), value, column))
        else:
            raise _error(
                f"unexpected {value!r} at column {column}: expected tag:NAME, attr:KEY=VALUE, "
                "status:STATUS, zone:ZONE, and, or, not, or parentheses"
            )
        position = match.end()
    return found


def _unquote(value: str, token: _Token) -> str:
    if value.startswith('"'):
        if len(value) < 2 or not value.endswith('"'):
            raise _error(f"unclosed quote in {token.text!r} at column {token.column}")
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    if not value or not _BARE.match(value):
        raise _error(f"{token.text!r} at column {token.column}: empty or unquoted odd characters")
    return value


def _split_value(body: str, token: _Token) -> tuple[str, str]:
    """``KEY=VALUE`` with either side possibly quoted."""
    match = re.match(r'^("(?:[^"\\]|\\.)*"|[^"=]+)=(.*)$', body, re.S)
    if match is None:
        raise _error(f"{token.text!r} at column {token.column}: expected attr:KEY=VALUE")
    return _unquote(match.group(1), token), _unquote(match.group(2), token)


def _test(token: _Token) -> ColumnElement[bool]:
    kind, _, body = token.text.partition(":")
    kind = kind.lower()
    if kind == "attr":
        key, value = _split_value(body, token)
        return _attribute_equals(key, value)
    if "=" in body and not body.startswith('"'):
        raise _error(f"{token.text!r} at column {token.column}: only attr: takes KEY=VALUE")
    name = _unquote(body, token)
    if kind == "tag":
        return Subscriber.id.in_(
            select(SubscriberTag.subscriber_id).where(SubscriberTag.tag == name)
        )
    if kind == "status":
        try:
            status = Status(name.lower())
        except ValueError:
            names = ", ".join(member.value for member in Status)
            raise _error(
                f"{token.text!r} at column {token.column}: not a status; use one of {names}"
            ) from None
        return Subscriber.status == status.value
    # zone: a reader whose zone is unknown is in no zone segment.
    return Subscriber.timezone == name


def _attribute_equals(key: str, value: str) -> ColumnElement[bool]:
    """The reader's attribute ``key`` (a top-level JSON key) equals ``value`` as text."""
    # JSON path access through SQLAlchemy's JSON type: a bound path on both databases.
    return Subscriber.attributes[key].as_string() == value


class _Parser:
    def __init__(self, tokens: list[_Token], text: str) -> None:
        self.tokens = tokens
        self.text = text
        self.index = 0
        self.depth = 0

    def peek(self) -> _Token | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def take(self) -> _Token:
        token = self.peek()
        if token is None:
            raise _error(f"the expression ends too early (column {len(self.text) + 1})")
        self.index += 1
        return token

    def expression(self) -> ColumnElement[bool]:
        parts = [self.term()]
        while (token := self.peek()) is not None and token.kind == "or":
            self.take()
            parts.append(self.term())
        return parts[0] if len(parts) == 1 else or_(*parts)

    def term(self) -> ColumnElement[bool]:
        parts = [self.factor()]
        while (token := self.peek()) is not None and token.kind == "and":
            self.take()
            parts.append(self.factor())
        return parts[0] if len(parts) == 1 else and_(*parts)

    def factor(self) -> ColumnElement[bool]:
        token = self.take()
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _error(f"nested too deeply at column {token.column}")
        try:
            if token.kind == "not":
                return not_(self.factor())
            if token.kind == "(":
                inner = self.expression()
                closing = self.peek()
                if closing is None or closing.kind != ")":
                    where = closing.column if closing else len(self.text) + 1
                    raise _error(
                        f"missing ')' for the '(' at column {token.column} (at column {where})"
                    )
                self.take()
                return inner
            if token.kind == "test":
                return _test(token)
            raise _error(f"unexpected {token.text!r} at column {token.column}")
        finally:
            self.depth -= 1


def parse_segment(text: str) -> ColumnElement[bool]:
    """The where-clause on ``Subscriber`` for a segment expression; ``ValidationError`` if bad."""
    if len(text) > MAX_LENGTH:
        raise _error(f"the expression is longer than {MAX_LENGTH} characters")
    tokens = _tokens(text)
    if not tokens:
        raise _error("the expression is empty")
    parser = _Parser(tokens, text)
    condition = parser.expression()
    extra = parser.peek()
    if extra is not None:
        raise _error(f"unexpected {extra.text!r} at column {extra.column}")
    return condition


def validate_segment(text: str) -> str:
    """``text`` stripped, once it parses; raises ``ValidationError`` naming the bad token."""
    parse_segment(text)
    return text.strip()
