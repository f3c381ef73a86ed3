"""Signup with double opt-in, confirmation, unsubscribe and preferences: the reader's side.

Each function works inside the caller's transaction and returns what the caller must do after
the commit (send a confirmation email, say); none of them sends anything itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.db import utcnow
from newsletter.driver_sql import DriverStatement
from newsletter.errors import NotFoundError, TokenError, ValidationError
from subscribers.addresses import address_hash, normalise_address
from subscribers.events import SubscriberEvents
from subscribers.models import (
    Consent,
    Status,
    StatusChange,
    Subscriber,
    SubscriberTag,
    new_subscriber_key,
)

CONSENT_TEXT = (
    "Yes, send me the free report “The 7 Core Strategies to Heal the Gut Lining and Manage "
    "Leaky Gut” and the Gut Health Letter by email. I can unsubscribe at any time with one click."
)
CONFIRMATION_TEXT = (
    "Confirmed the subscription on the page that the link in the confirmation email opened."
)
# One address gets at most one confirmation email in this window, however often it signs up.
CONFIRMATION_INTERVAL = timedelta(minutes=10)
MAX_NAME_LENGTH = 100
MAX_FIELD_LENGTH = 320
FORM_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
TOPICS = {
    "gut-health": "Gut health",
    "bone-health": "Bone health",
    "nutrition": "Nutrition and supplements",
}


@dataclass(frozen=True)
class SignupRequest:
    """A validated signup, with the evidence of consent that goes with it."""

    email: str
    name: str | None = None
    form: str | None = None
    timezone: str | None = None
    ip: str | None = None
    user_agent: str | None = None
    consent_text: str = CONSENT_TEXT


@dataclass(frozen=True)
class SignupOutcome:
    """What the caller does after commit: send a confirmation to ``subscriber_id`` or nothing."""

    subscriber_id: int | None
    send_confirmation: bool


def parse_signup(
    fields: Mapping[str, Any], *, ip: str | None, user_agent: str | None, check_deliverability: bool
) -> SignupRequest:
    """Validate the fields of a signup form or JSON body; ``ValidationError`` names each bad one."""
    errors: dict[str, str] = {}
    text = {
        name: _text_field(fields, name, errors) for name in ("email", "name", "form", "timezone")
    }
    email = ""
    if "email" not in errors:
        try:
            email = normalise_address(
                text["email"] or "", check_deliverability=check_deliverability
            )
        except ValidationError as error:
            errors.update(error.errors)
    name = (text["name"] or "").strip() or None
    if name and len(name) > MAX_NAME_LENGTH:
        errors["name"] = f"Keep your name under {MAX_NAME_LENGTH} characters."
    form = (text["form"] or "").strip() or None
    if form and not FORM_ID.match(form):
        errors["form"] = "A form id is up to 64 letters, digits, dots, dashes or underscores."
    # The zone comes from the browser; one we do not know falls back to the publisher's.
    timezone = _valid_zone((text["timezone"] or "").strip(), {})
    if errors:
        raise ValidationError(errors)
    return SignupRequest(
        email=email,
        name=name,
        form=form,
        timezone=timezone,
        ip=ip,
        user_agent=(user_agent or "")[:512] or None,
    )


def _text_field(fields: Mapping[str, Any], name: str, errors: dict[str, str]) -> str | None:
    value = fields.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        errors[name] = "This field must be text."
        return None
    if len(value) > MAX_FIELD_LENGTH:
        errors[name] = f"This field takes at most {MAX_FIELD_LENGTH} characters."
        return None
    if any(char in value for char in "\r\n\0") or any(ord(c) < 32 and c != "\t" for c in value):
        errors[name] = "Line breaks and control characters are not allowed here."
        return None
    return value


def _valid_zone(zone: str, errors: dict[str, str]) -> str | None:
    if not zone:
        return None
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        errors["timezone"] = "Unknown time zone."
        return None
    return zone


# The hot path of every signup: named, parameterised statements compiled once and run on the
# driver's cursor (see ``newsletter.driver_sql``). A new reader costs three INSERTs: the reader
# (unless erased; with the confirmation slot taken at once), the status change and the consent.
INSERT_PENDING = DriverStatement(
    """INSERT INTO subscribers
         (email, "key", name, status, attributes, timezone, form, created_at, status_changed_at,
          confirmation_sent_at)
       SELECT :email, :key, :name, 'pending', '{}', :timezone, :form, :now, :now, :now
       WHERE NOT EXISTS (SELECT 1 FROM suppressions WHERE address_hash = :hash)
       ON CONFLICT (email) DO NOTHING
       RETURNING id""",
    times=("now",),
)
INSERT_SIGNUP_CHANGE = DriverStatement(
    """INSERT INTO status_changes (subscriber_id, old_status, new_status, source, at)
       VALUES (:subscriber_id, NULL, 'pending', :source, :now)""",
    times=("now",),
)
INSERT_SIGNUP_CONSENT = DriverStatement(
    """INSERT INTO consents (subscriber_id, kind, at, form, ip, user_agent, consent_text)
       VALUES (:subscriber_id, 'signup', :now, :form, :ip, :user_agent, :consent_text)""",
    times=("now",),
)
SUPPRESSED = DriverStatement("SELECT 1 FROM suppressions WHERE address_hash = :hash")
CLAIM_CONFIRMATION_SLOT = DriverStatement(
    """UPDATE subscribers SET confirmation_sent_at = :now
       WHERE id = :subscriber_id AND status = 'pending'
         AND (confirmation_sent_at IS NULL OR confirmation_sent_at <= :cutoff)""",
    times=("now", "cutoff"),
)


def signup(
    session: Session, request: SignupRequest, *, now: datetime | None = None
) -> SignupOutcome:
    """Record a signup as pending and say whether a confirmation email is due.

    Signing up again is harmless: an existing reader is left as is (an unsubscribed one may
    subscribe again, through confirmation). An erased address is never added back.
    """
    now = now or utcnow()
    digest = address_hash(request.email)
    subscriber_id = _insert_pending(session, request, digest, now)
    if subscriber_id is not None:
        # A new reader: their first confirmation slot was taken by the INSERT itself.
        return SignupOutcome(subscriber_id, True)
    if SUPPRESSED.first_value(session, {"hash": digest}) is not None:
        return SignupOutcome(None, False)
    existing = session.scalars(
        select(Subscriber).where(Subscriber.email == request.email).with_for_update()
    ).one()
    subscriber_id = existing.id
    if existing.status == Status.UNSUBSCRIBED:
        change_status(session, existing, Status.PENDING, "signup:resubscribe", now)
        session.add(
            Consent(subscriber_id=subscriber_id, kind="signup", at=now, **_evidence(request))
        )
        session.flush()
    elif existing.status != Status.PENDING:
        return SignupOutcome(subscriber_id, False)
    return SignupOutcome(subscriber_id, _claim_confirmation_slot(session, subscriber_id, now))


def signup_and_request_confirmation(
    session: Session, request: SignupRequest, events: SubscriberEvents
) -> SignupOutcome:
    """``signup``, and in the same transaction the confirmation email when one is due."""
    outcome = signup(session, request)
    if outcome.send_confirmation and outcome.subscriber_id is not None:
        events.confirmation_requested(session, outcome.subscriber_id)
    return outcome


def _insert_pending(
    session: Session, request: SignupRequest, digest: str, now: datetime
) -> int | None:
    """Insert the reader unless the address exists or was erased; its id when inserted."""
    subscriber_id = INSERT_PENDING.first_value(
        session,
        {
            "email": request.email,
            "key": new_subscriber_key(),
            "name": request.name,
            "timezone": request.timezone,
            "form": request.form,
            "now": now,
            "hash": digest,
        },
    )
    if subscriber_id is None:
        return None
    source = f"signup:{request.form or 'default'}"
    INSERT_SIGNUP_CHANGE.run(
        session, {"subscriber_id": subscriber_id, "source": source, "now": now}
    )
    INSERT_SIGNUP_CONSENT.run(
        session, {"subscriber_id": subscriber_id, "now": now, **_evidence(request)}
    )
    return int(subscriber_id)


def _evidence(request: SignupRequest) -> dict[str, Any]:
    return {
        "form": request.form,
        "ip": request.ip,
        "user_agent": request.user_agent,
        "consent_text": request.consent_text,
    }


def _claim_confirmation_slot(session: Session, subscriber_id: int, now: datetime) -> bool:
    """Atomically take the right to send a confirmation now; at most one per interval."""
    changed = CLAIM_CONFIRMATION_SLOT.run(
        session,
        {"subscriber_id": subscriber_id, "now": now, "cutoff": now - CONFIRMATION_INTERVAL},
    )
    return changed == 1


def change_status(
    session: Session, subscriber: Subscriber, status: Status, source: str, now: datetime
) -> None:
    """Move a reader to ``status``, keeping the time and source of the change."""
    session.add(
        StatusChange(
            subscriber_id=subscriber.id,
            old_status=subscriber.status,
            new_status=status.value,
            source=source,
            at=now,
        )
    )
    subscriber.status = status.value
    subscriber.status_changed_at = now


def subscriber_by_key(session: Session, key: str, *, for_update: bool = False) -> Subscriber:
    """The reader a signed link names; ``NotFoundError`` when erased since."""
    query = select(Subscriber).where(Subscriber.key == key)
    if for_update:
        query = query.with_for_update()
    subscriber = session.scalars(query).one_or_none()
    if subscriber is None:
        raise NotFoundError("This link belongs to a subscription that no longer exists.")
    return subscriber


def confirm(
    session: Session,
    key: str,
    *,
    ip: str | None = None,
    user_agent: str | None = None,
    now: datetime | None = None,
) -> tuple[Subscriber, bool]:
    """Confirm a pending reader; returns the reader and whether this call confirmed them.

    Confirming twice is harmless. A reader who has unsubscribed since cannot be re-subscribed by
    an old confirmation link.
    """
    now = now or utcnow()
    subscriber = subscriber_by_key(session, key, for_update=True)
    if subscriber.status == Status.CONFIRMED:
        return subscriber, False
    if subscriber.status != Status.PENDING:
        raise TokenError("This confirmation link is no longer valid. Subscribe again to rejoin.")
    change_status(session, subscriber, Status.CONFIRMED, "confirm", now)
    subscriber.confirmed_at = now
    sent = subscriber.confirmation_sent_at
    session.add(
        Consent(
            subscriber_id=subscriber.id,
            kind="confirmation",
            at=now,
            form=subscriber.form,
            ip=ip,
            user_agent=(user_agent or "")[:512] or None,
            consent_text=CONFIRMATION_TEXT,
            seconds_after_email=None if sent is None else (now - sent).total_seconds(),
        )
    )
    return subscriber, True


def unsubscribe(
    session: Session, key: str, *, source: str, now: datetime | None = None
) -> tuple[Subscriber, bool]:
    """Unsubscribe a reader at once; returns the reader and whether this call changed anything."""
    now = now or utcnow()
    subscriber = subscriber_by_key(session, key, for_update=True)
    if subscriber.status not in (Status.PENDING, Status.CONFIRMED):
        return subscriber, False
    change_status(session, subscriber, Status.UNSUBSCRIBED, source, now)
    return subscriber, True


def update_preferences(
    session: Session, key: str, fields: Mapping[str, Any], topics: list[str]
) -> Subscriber:
    """Change a reader's name, time zone and topics; ``ValidationError`` names a bad field."""
    errors: dict[str, str] = {}
    name = (_text_field(fields, "name", errors) or "").strip() or None
    if name and len(name) > MAX_NAME_LENGTH:
        errors["name"] = f"Keep your name under {MAX_NAME_LENGTH} characters."
    zone_text = (_text_field(fields, "timezone", errors) or "").strip()
    timezone = _valid_zone(zone_text, errors)
    unknown = sorted(set(topics) - set(TOPICS))
    if unknown:
        errors["topics"] = "Unknown topic: " + ", ".join(unknown)
    if errors:
        raise ValidationError(errors)
    subscriber = subscriber_by_key(session, key, for_update=True)
    subscriber.name = name
    subscriber.timezone = timezone
    kept = [tag for tag in subscriber.tags if tag.tag not in TOPICS]
    subscriber.tags = kept + [SubscriberTag(tag=topic) for topic in sorted(set(topics))]
    return subscriber
