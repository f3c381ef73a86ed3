"""The store's events as rows of the deliveries outbox: system emails that survive any crash.

``OutboxEvents`` is the shell's implementation of ``subscribers.events.SubscriberEvents``. The
store calls it inside the transaction of the change, so the confirmation email is a delivery
row committed with the signup (or not at all), and the confirmed reader's place in the
sequences is committed with the confirmation. Nothing waits in memory: a process killed after
the commit loses nothing; the worker (``run_worker``) sends the rows, with a Message-ID derived
from each row, and suppression checked at send time.

Message keys written here:

- ``system:confirmation:N``: the reader's N-th confirmation email. The store allows one per
  reader every ten minutes (``signup.CONFIRMATION_INTERVAL``), and each gets its own key, since
  a delivery is unique per (message, reader). Pending readers may receive these, and only these.
- ``sequence:NAME:STEP_ID``: written by ``scheduler.sequences`` (the welcome email with the
  free report is the first step of the shipped ``welcome`` sequence).

``message_render`` renders both kinds with ``templates.render``: a minimal renderer for these
keys only, until the full one (campaigns too) is wired in its place.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import cast

from sqlalchemy import Table, func, select
from sqlalchemy.orm import Session

from campaigns.content import system_email
from campaigns.sequence import load_sequence
from newsletter.db import utcnow
from newsletter.driver_sql import DriverStatement
from newsletter.errors import NotFoundError
from newsletter.settings import Settings
from scheduler import sequences
from scheduler.deliveries import ClaimedDelivery, Delivery, Recipient, State, _insert
from scheduler.worker import Render
from subscribers.tokens import Purpose, signed_url
from templates import Content, Links, Reader, render

log = logging.getLogger("scheduler.system_mail")

CONFIRMATION = "system:confirmation"
deliveries = cast(Table, Delivery.__table__)


def confirmation_key(number: int) -> str:
    """The message key of a reader's ``number``-th confirmation email (from 1)."""
    return f"{CONFIRMATION}:{number}"


def _confirmations_so_far(session: Session, subscriber_ids: Sequence[int]) -> dict[int, int]:
    rows = session.execute(
        select(deliveries.c.subscriber_id, func.count())
        .where(
            deliveries.c.subscriber_id.in_(list(subscriber_ids)),
            deliveries.c.message.startswith(f"{CONFIRMATION}:"),
        )
        .group_by(deliveries.c.subscriber_id)
    )
    return {int(reader): int(count) for reader, count in rows}


# One statement per signup (it runs in every signup's transaction): the reader's next
# confirmation number is counted and its delivery queued together.
QUEUE_NEXT_CONFIRMATION = DriverStatement(
    """INSERT INTO deliveries
         (message, subscriber_id, state, attempts, uncertain_count, next_attempt_at, created_at)
       SELECT CAST(:prefix AS VARCHAR(200)) || CAST(COUNT(*) + 1 AS VARCHAR(20)),
              :subscriber_id, :queued, 0, 0, :now, :now
       FROM deliveries
       WHERE subscriber_id = :subscriber_id AND message LIKE :pattern
       ON CONFLICT DO NOTHING""",
    times=("now",),
)


def request_confirmation(session: Session, subscriber_id: int) -> None:
    """Queue a confirmation email for a pending reader, in the caller's transaction."""
    QUEUE_NEXT_CONFIRMATION.run(
        session,
        {
            "prefix": f"{CONFIRMATION}:",
            "pattern": f"{CONFIRMATION}:%",
            "subscriber_id": subscriber_id,
            "queued": State.QUEUED.value,
            "now": utcnow(),
        },
    )


def request_confirmations(
    session: Session, subscriber_ids: Sequence[int], *, batch_size: int = 500
) -> int:
    """Queue one confirmation email each for many pending readers (an import); how many."""
    queued = 0
    for start in range(0, len(subscriber_ids), batch_size):
        batch = list(subscriber_ids[start : start + batch_size])
        so_far = _confirmations_so_far(session, batch)
        now = utcnow()
        rows = [
            {
                "message": confirmation_key(so_far.get(reader, 0) + 1),
                "subscriber_id": reader,
                "state": State.QUEUED.value,
                "attempts": 0,
                "uncertain_count": 0,
                "next_attempt_at": now,
                "created_at": now,
            }
            for reader in batch
        ]
        session.execute(
            _insert(session)(deliveries).on_conflict_do_nothing(
                index_elements=["message", "subscriber_id"]
            ),
            rows,
        )
        queued += len(rows)
    return queued


class OutboxEvents:
    """Implements ``SubscriberEvents`` by writing to the outbox in the caller's transaction.

    ``default_zone`` (the publisher's ``NEWSLETTER_TIMEZONE``) places send windows for readers
    whose zone is unknown; ``sequences_root`` is where the sequence files are (default: shipped).
    """

    def __init__(
        self, settings: Settings | None = None, *, sequences_root: Path | None = None
    ) -> None:
        self.default_zone = settings.timezone if settings is not None else None
        self.sequences_root = sequences_root

    def confirmation_requested(self, session: Session, subscriber_id: int) -> None:
        request_confirmation(session, subscriber_id)

    def confirmations_requested(self, session: Session, subscriber_ids: Sequence[int]) -> None:
        request_confirmations(session, subscriber_ids)

    def confirmed(self, session: Session, subscriber_id: int) -> None:
        sequences.enrol(
            session, subscriber_id, root=self.sequences_root, default_zone=self.default_zone
        )

    def unsubscribed(self, session: Session, subscriber_id: int) -> None:
        sequences.leave(session, subscriber_id, root=self.sequences_root)

    def close(self) -> None:
        """Nothing to flush: every event is already a committed row."""


# ---------------------------------------------------------------- rendering


def message_content(message: str, *, sequences_root: Path | None = None) -> Content:
    """What a ``system:KIND[:SUFFIX]`` or ``sequence:NAME:STEP_ID`` message sends."""
    kind, _, rest = message.partition(":")
    if kind == "system":
        return system_email(rest.partition(":")[0])
    if kind == "sequence":
        name, _, step_id = rest.partition(":")
        return load_sequence(name, sequences_root).step(step_id).content()
    raise NotFoundError(f"message {message!r}: this renderer knows system and sequence messages")


def message_render(
    settings: Settings, secret_key: str, *, sequences_root: Path | None = None
) -> Render:
    """A ``Render`` for system and sequence messages, with each reader's signed links."""

    def render_one(delivery: ClaimedDelivery, recipient: Recipient) -> bytes:
        def link(purpose: Purpose) -> str:
            return signed_url(settings.base_url, secret_key, purpose, recipient.key)

        content = message_content(delivery.message, sequences_root=sequences_root)
        reader = Reader(
            email=recipient.email,
            name=recipient.name,
            attributes=recipient.attributes,
            tags=recipient.tags,
            timezone=recipient.timezone,
        )
        links = Links(
            unsubscribe=link(Purpose.UNSUBSCRIBE),
            preferences=link(Purpose.PREFERENCES),
            report=link(Purpose.REPORT),
            confirm=link(Purpose.CONFIRM),
        )
        return render(content, reader, links, message_id=delivery.message_id, settings=settings)

    return render_one
