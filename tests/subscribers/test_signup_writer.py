"""Signups written in groups: each is committed before it is answered, and fails alone."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.db import Database, open_database
from newsletter.settings import Settings
from scheduler.system_mail import OutboxEvents
from subscribers import signup as flow
from subscribers.models import Consent, StatusChange, Subscriber
from subscribers.signup_writer import SignupWriter


class RefusingEvents(OutboxEvents):
    """The real outbox, except that one reader's confirmation cannot be queued."""

    def __init__(self, database: Database, refused: str) -> None:
        super().__init__()
        self.database = database
        self.refused = refused

    def confirmation_requested(self, session: Session, subscriber_id: int) -> None:
        email = session.scalar(select(Subscriber.email).where(Subscriber.id == subscriber_id))
        if email == self.refused:
            raise RuntimeError("the outbox refuses this reader")
        super().confirmation_requested(session, subscriber_id)

    def confirmations_requested(self, session: Session, subscriber_ids: Sequence[int]) -> None:
        for subscriber_id in subscriber_ids:
            self.confirmation_requested(session, subscriber_id)


@pytest.fixture
def database(make_settings: Callable[..., Settings], database_url: str) -> Iterator[Database]:
    opened = open_database(make_settings(database_url=database_url))
    yield opened
    opened.dispose()


def request(email: str) -> flow.SignupRequest:
    return flow.SignupRequest(email=email, name="Ada", ip="192.0.2.1", user_agent="test")


def sign_up_together(writer: SignupWriter, emails: list[str]) -> list[object]:
    """Hand all the signups over at once from an event loop, as concurrent requests do.

    The loop runs in a thread of its own: another test's sync Playwright may have left one
    running in this thread, where ``asyncio.run`` refuses to start.
    """

    async def together() -> list[object]:
        return await asyncio.gather(
            *(writer.signup(request(email)) for email in emails), return_exceptions=True
        )

    results: list[list[object]] = []
    thread = threading.Thread(target=lambda: results.append(asyncio.run(together())))
    thread.start()
    thread.join(timeout=60)
    assert results, "the signups did not finish within 60 s"
    return results[0]


def test_signups_handed_over_together_are_each_committed_with_their_outbox_row(
    database: Database,
) -> None:
    writer = SignupWriter(database, OutboxEvents())
    emails = [f"reader{n}@example.org" for n in range(40)]
    try:
        outcomes = sign_up_together(writer, emails)
    finally:
        writer.close()

    assert all(isinstance(o, flow.SignupOutcome) and o.send_confirmation for o in outcomes)
    with database.session() as session:
        stored = set(session.scalars(select(Subscriber.email)))
        assert stored == set(emails)
        assert len(session.scalars(select(Consent)).all()) == 40
        assert len(session.scalars(select(StatusChange)).all()) == 40
        queued = session.execute(
            select(Subscriber.email).where(Subscriber.confirmation_sent_at.is_not(None))
        ).all()
        assert len(queued) == 40


def test_a_signup_that_fails_fails_alone_and_the_others_of_its_group_are_kept(
    database: Database,
) -> None:
    writer = SignupWriter(database, RefusingEvents(database, refused="reader7@example.org"))
    emails = [f"reader{n}@example.org" for n in range(20)]
    try:
        outcomes = sign_up_together(writer, emails)
    finally:
        writer.close()

    failed = [email for email, o in zip(emails, outcomes, strict=True) if isinstance(o, Exception)]
    assert failed == ["reader7@example.org"]
    with database.session() as session:
        stored = set(session.scalars(select(Subscriber.email)))
    assert stored == set(emails) - {"reader7@example.org"}


def test_the_same_address_in_one_group_makes_one_reader_and_one_confirmation(
    database: Database,
) -> None:
    writer = SignupWriter(database, OutboxEvents())
    try:
        outcomes = sign_up_together(writer, ["same@example.org"] * 30)
    finally:
        writer.close()

    sends = [o for o in outcomes if isinstance(o, flow.SignupOutcome) and o.send_confirmation]
    assert len(sends) == 1
    with database.session() as session:
        assert session.scalars(select(Subscriber.email)).all() == ["same@example.org"]


def test_driver_statements_store_times_as_the_orm_reads_them(database: Database) -> None:
    at = datetime(2026, 3, 1, 12, 30, 0, tzinfo=UTC)  # whole seconds: no microseconds to print
    with database.session() as session:
        outcome = flow.signup(session, request("timely@example.org"), now=at)
    with database.session() as session:
        reader = session.get(Subscriber, outcome.subscriber_id)
        assert reader is not None
        assert reader.created_at == at
        assert reader.confirmation_sent_at == at
        consent = session.scalars(select(Consent)).one()
        assert consent.at == at
        change = session.scalars(select(StatusChange)).one()
        assert change.at == at
