"""Email addresses: validation, the normalised form the store is unique by, and the erasure hash."""

from __future__ import annotations

import hashlib

from email_validator import EmailNotValidError, validate_email

from newsletter.errors import ValidationError

MAX_ADDRESS_LENGTH = 254  # RFC 5321's limit on a forward path, less the angle brackets


def normalise_address(raw: str, *, check_deliverability: bool = False) -> str:
    """The address as the store keeps it: validated, trimmed, lower-cased.

    Raises ``ValidationError`` on the field ``email`` with a message a reader understands.
    """
    candidate = raw.strip()
    if not candidate:
        raise ValidationError({"email": "Enter your email address."})
    if any(char in candidate for char in "\r\n\0"):
        raise ValidationError({"email": "An email address cannot contain line breaks."})
    if len(candidate) > MAX_ADDRESS_LENGTH:
        raise ValidationError({"email": "That address is too long to be an email address."})
    try:
        valid = validate_email(candidate, check_deliverability=check_deliverability)
    except EmailNotValidError as error:
        raise ValidationError({"email": str(error)}) from None
    # Mailbox names are case-insensitive in practice; one reader is one row.
    return valid.normalized.lower()


def address_hash(normalised: str) -> str:
    """The SHA-256 of a normalised address: what an erased reader leaves behind."""
    return hashlib.sha256(normalised.encode("utf-8")).hexdigest()
