"""Erasure (GDPR article 17): a reader's personal data goes, a hash of the address stays.

``erase_subscriber()`` deletes the reader with their tags, status history and consent records, and
keeps only the SHA-256 of the normalised address in ``suppressions``, so that an import or a signup
never adds the address again by accident. All of it happens in the caller's transaction.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from newsletter.db import utcnow
from newsletter.errors import NotFoundError
from subscribers.addresses import address_hash, normalise_address
from subscribers.models import Consent, StatusChange, Subscriber, SubscriberTag, Suppression

ERASED = "erased"


@dataclass(frozen=True)
class Erasure:
    """What an erasure did: the address it was asked for, and whether it was already erased."""

    address: str
    already_erased: bool = False


def erase_subscriber(session: Session, email: str) -> Erasure:
    """Erase the reader with this address; asking again for an erased address is harmless.

    Raises ``ValidationError`` for something that is not an address and ``NotFoundError`` when
    no reader has it and it was never erased (nothing is stored then).
    """
    address = normalise_address(email)
    digest = address_hash(address)
    reader_id = session.scalar(select(Subscriber.id).where(Subscriber.email == address))
    suppressed = session.get(Suppression, digest) is not None
    if reader_id is None:
        if suppressed:
            return Erasure(address, already_erased=True)
        raise NotFoundError(f"no reader has the address {address}; nothing was erased")
    # Explicit deletes rather than relying on ON DELETE CASCADE being enforced (SQLite needs a
    # pragma for it): the personal data goes whatever the connection's settings.
    for model in (SubscriberTag, StatusChange, Consent):
        session.execute(delete(model).where(model.subscriber_id == reader_id))
    session.execute(delete(Subscriber).where(Subscriber.id == reader_id))
    if not suppressed:
        session.add(Suppression(address_hash=digest, reason=ERASED, at=utcnow()))
    session.flush()
    return Erasure(address)
