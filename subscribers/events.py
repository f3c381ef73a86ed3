"""The hook through which the store asks for later work, such as sending a confirmation email.

The store cannot import the folders after it (templates, campaigns, scheduler); the shell wires an
implementation of ``SubscriberEvents`` that renders and sends. Callers invoke it after the change
is committed, so that a rolled-back signup sends nothing.
"""

from __future__ import annotations

from typing import Protocol


class SubscriberEvents(Protocol):
    """What happened to a reader that someone downstream must act on."""

    def confirmation_requested(self, subscriber_id: int) -> None:
        """A pending reader needs a confirmation email (already rate-limited by the store)."""

    def confirmed(self, subscriber_id: int) -> None:
        """A reader confirmed: the welcome email with the free report follows."""

    def unsubscribed(self, subscriber_id: int) -> None:
        """A reader unsubscribed: nothing more is sent, and a confirmation of it may be."""


class RecordedEvents:
    """Keeps the events it is told of; for commands that run where nothing sends."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []

    def confirmation_requested(self, subscriber_id: int) -> None:
        self.events.append(("confirmation_requested", subscriber_id))

    def confirmed(self, subscriber_id: int) -> None:
        self.events.append(("confirmed", subscriber_id))

    def unsubscribed(self, subscriber_id: int) -> None:
        self.events.append(("unsubscribed", subscriber_id))
