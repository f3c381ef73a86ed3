"""The hook through which the store asks for later work, such as sending a confirmation email.

The store cannot import the folders after it (templates, campaigns, scheduler); the shell wires an
implementation of ``SubscriberEvents`` (``scheduler.system_mail.OutboxEvents``). Callers invoke
it INSIDE the transaction that made the change, with its session: what the hook writes (a row of
the deliveries outbox, a reader's place in a sequence) is committed together with the signup,
confirmation or unsubscribe, or not at all. Nothing is held in memory, so a process killed after
the commit loses nothing; a rolled-back signup asks for nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sqlalchemy.orm import Session


class SubscriberEvents(Protocol):
    """What happened to a reader that someone downstream must act on, in the same transaction."""

    def confirmation_requested(self, session: Session, subscriber_id: int) -> None:
        """A pending reader needs a confirmation email (already rate-limited by the store)."""

    def confirmations_requested(self, session: Session, subscriber_ids: Sequence[int]) -> None:
        """Many pending readers need a confirmation email each (a pending import)."""

    def confirmed(self, session: Session, subscriber_id: int) -> None:
        """A reader confirmed: they enter the sequences (the welcome email with the report)."""

    def unsubscribed(self, session: Session, subscriber_id: int) -> None:
        """A reader unsubscribed: they leave every sequence; nothing more is sent."""


class RecordedEvents:
    """Keeps the events it is told of; for tests and commands that run where nothing sends."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []

    def confirmation_requested(self, session: Session, subscriber_id: int) -> None:
        self.events.append(("confirmation_requested", subscriber_id))

    def confirmations_requested(self, session: Session, subscriber_ids: Sequence[int]) -> None:
        for subscriber_id in subscriber_ids:
            self.confirmation_requested(session, subscriber_id)

    def confirmed(self, session: Session, subscriber_id: int) -> None:
        self.events.append(("confirmed", subscriber_id))

    def unsubscribed(self, session: Session, subscriber_id: int) -> None:
        self.events.append(("unsubscribed", subscriber_id))
