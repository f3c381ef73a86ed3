"""Segment expressions: the readers each one selects, its errors, and that nothing typed in one
ever becomes SQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import func, insert, select

from newsletter.db import Database, utcnow
from newsletter.errors import ValidationError
from subscribers.models import Status, Subscriber, SubscriberTag
from subscribers.segments import parse_segment

READERS = [
    # email, status, tags, attributes, zone
    ("ann@example.com", Status.CONFIRMED, ["vip"], {"plan": "free", "city": "New York"}, "UTC"),
    ("bob@example.com", Status.CONFIRMED, ["vip", "gut"], {"plan": "paid"}, "Europe/Berlin"),
    ("cat@example.com", Status.CONFIRMED, ["gut"], {"plan": "free"}, None),
    ("dan@example.com", Status.UNSUBSCRIBED, ["vip"], {}, "Europe/Berlin"),
]


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    db = Database(database_url)
    db.upgrade()
    now = utcnow()
    with db.session() as session:
        for n, (email, status, tags, attributes, zone) in enumerate(READERS):
            session.execute(
                insert(Subscriber).values(
                    email=email,
                    key=f"key{n}",
                    status=status,
                    attributes=attributes,
                    timezone=zone,
                    created_at=now,
                    status_changed_at=now,
                )
            )
            reader = session.scalar(select(Subscriber.id).where(Subscriber.email == email))
            for tag in tags:
                session.execute(insert(SubscriberTag).values(subscriber_id=reader, tag=tag))
    yield db
    db.dispose()


def matching(database: Database, expression: str) -> list[str]:
    with database.session() as session:
        return list(
            session.scalars(
                select(Subscriber.email).where(parse_segment(expression)).order_by(Subscriber.email)
            )
        )


SELECTIONS = [
    ("tag:vip", ["ann", "bob", "dan"]),
    ("tag:vip and tag:gut", ["bob"]),
    ("tag:vip or tag:gut", ["ann", "bob", "cat", "dan"]),
    ("not tag:vip", ["cat"]),
    ("attr:plan=free", ["ann", "cat"]),
    ('attr:city="New York"', ["ann"]),
    ("tag:gut and not attr:plan=paid", ["cat"]),
    ("status:confirmed and (tag:vip or zone:Europe/Berlin)", ["ann", "bob"]),
    ("zone:Europe/Berlin", ["bob", "dan"]),
    ("TAG:vip AND NOT status:UNSUBSCRIBED", ["ann", "bob"]),
    ("not (tag:vip or tag:gut)", []),
    ("tag:nobody", []),
]
INJECTIONS = [
    "tag:\"x' OR '1'='1\"",
    'attr:plan="free\' OR 1=1; DROP TABLE subscribers; --"',
    'attr:"plan\') OR 1=1 --"=free',
    'zone:"UTC\'); DELETE FROM subscribers; --"',
    'tag:"vip\\" or tag:gut"',
]


def test_an_expression_selects_exactly_its_readers(database: Database) -> None:
    for expression, expected in SELECTIONS:
        assert matching(database, expression) == [f"{name}@example.com" for name in expected], (
            expression
        )


def test_sql_in_an_expression_is_a_value_that_matches_nobody(database: Database) -> None:
    for expression in INJECTIONS:
        assert matching(database, expression) == [], expression
    with database.session() as session:
        assert session.scalar(select(func.count()).select_from(Subscriber)) == len(READERS)


@pytest.mark.parametrize(
    ("expression", "named"),
    [
        ("tag:vip and", "ends too early"),
        ("tag:vip or or tag:gut", "'or' at column 12"),
        ("(tag:vip", "missing ')' for the '(' at column 1"),
        ("tag:vip)", "')' at column 8"),
        ("tag:vip; DROP TABLE subscribers", "'DROP' at column 10"),
        ("tag:vip ' or 1=1", '"\'" at column 9'),
        ("status:gone", "'status:gone' at column 1: not a status"),
        ("attr:plan", "expected attr:KEY=VALUE"),
        ("tag:a=b", "only attr: takes KEY=VALUE"),
        ("", "empty"),
        ("(" * 40 + "tag:a" + ")" * 40, "nested too deeply"),
    ],
)
def test_a_bad_expression_is_refused_naming_the_token_and_its_column(
    expression: str, named: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_segment(expression)
    assert named in caught.value.message
    assert caught.value.errors.keys() == {"segment"}
