"""Dashboard accounts: argon2 password hashes, a session version, and the sign-in lockout.

An account's ``session_version`` goes up whenever its password changes; a session cookie
carries the version it was issued under, so every other session of the account ends at once.

Failed sign-ins are kept per address (whether or not an account has it), and after
``LOCKOUT_FAILURES`` of them within ``LOCKOUT_WINDOW`` the address is refused until the oldest
of them ages out: the same answer for an address with an account and one without, so the lockout
tells an attacker nothing about which addresses exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import Index, Integer, String, delete, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from newsletter.db import Base, utcnow
from newsletter.errors import NotFoundError, RateLimitedError, ValidationError
from subscribers.addresses import normalise_address

LOCKOUT_FAILURES = 5
LOCKOUT_WINDOW = timedelta(minutes=15)
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024  # argon2 takes any length; this only bounds the work per request


class Passwords:
    """argon2id hashing (argon2-cffi's recommended parameters unless a test passes cheaper ones),
    and a hash to verify when no account has the address, so that a wrong address costs as
    long as a wrong password and the answer's timing does not tell them apart."""

    def __init__(self, hasher: PasswordHasher | None = None) -> None:
        self.hasher = hasher or PasswordHasher()
        self._dummy: str | None = None

    def hash(self, password: str) -> str:
        return self.hasher.hash(password)

    def verify(self, stored_hash: str, password: str) -> bool:
        if len(password) > MAX_PASSWORD_LENGTH:
            return False
        try:
            return self.hasher.verify(stored_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def verify_nobody(self, password: str) -> None:
        if self._dummy is None:
            self._dummy = self.hash("no account has this address")
        self.verify(self._dummy, password)

    def needs_rehash(self, stored_hash: str) -> bool:
        return self.hasher.check_needs_rehash(stored_hash)


PASSWORDS = Passwords()


class Account(Base):
    """A marketer who may sign in to the dashboard."""

    __tablename__ = "admin_accounts"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    session_version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    password_changed_at: Mapped[datetime] = mapped_column(default=utcnow)


class FailedSignIn(Base):
    """One failed sign-in for an address, kept for the lockout window."""

    __tablename__ = "admin_failed_sign_ins"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_admin_failed_sign_ins_email_at", "email", "at"),)


@dataclass(frozen=True)
class SignedInAccount:
    """The account a session belongs to, detached from any database session."""

    id: int
    email: str
    session_version: int


def _signed_in(account: Account) -> SignedInAccount:
    return SignedInAccount(account.id, account.email, account.session_version)


def check_password_rules(password: str) -> None:
    """Raises ``ValidationError`` on the field ``password`` for a password too short or long."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationError(
            {"password": f"use at least {MIN_PASSWORD_LENGTH} characters (a few words will do)"}
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise ValidationError({"password": f"use at most {MAX_PASSWORD_LENGTH} characters"})


def create_account(session: Session, email: str, password: str) -> SignedInAccount:
    """Add an account; ``ValidationError`` for a bad address or password, or one taken."""
    address = normalise_address(email)
    check_password_rules(password)
    if session.scalar(select(Account.id).where(Account.email == address)) is not None:
        raise ValidationError(
            {"email": f"{address} has an account already; use `newsletter admin set-password`"}
        )
    now = utcnow()
    account = Account(
        email=address,
        password_hash=PASSWORDS.hash(password),
        session_version=1,
        created_at=now,
        password_changed_at=now,
    )
    session.add(account)
    session.flush()
    return _signed_in(account)


def set_password(session: Session, email: str, password: str) -> SignedInAccount:
    """Change an account's password, ending every session issued before (the caller re-issues
    the current one). ``NotFoundError`` when no account has the address."""
    check_password_rules(password)
    account = _account(session, email)
    account.password_hash = PASSWORDS.hash(password)
    account.session_version += 1
    account.password_changed_at = utcnow()
    session.flush()
    return _signed_in(account)


def _account(session: Session, email: str) -> Account:
    address = normalise_address(email)
    account = session.scalar(select(Account).where(Account.email == address))
    if account is None:
        raise NotFoundError(
            f"no dashboard account has the address {address}; "
            "`newsletter admin create-user` adds one"
        )
    return account


def account_by_id(session: Session, account_id: int) -> SignedInAccount | None:
    """The account a session names, or None once it is gone."""
    account = session.get(Account, account_id)
    return None if account is None else _signed_in(account)


class SignInRefused(RateLimitedError):
    """The address had too many failed sign-ins lately; says when to try again."""


def locked_out_message() -> str:
    minutes = int(LOCKOUT_WINDOW.total_seconds() // 60)
    return (
        f"Too many failed sign-ins for this address. Wait {minutes} minutes and try again, "
        "or ask another marketer to reset your password with `newsletter admin set-password`."
    )


WRONG_CREDENTIALS = "The address or the password is wrong."


def authenticate(
    session: Session, email: str, password: str, *, now: datetime | None = None
) -> SignedInAccount:
    """The account for this address and password.

    Raises ``SignInRefused`` while the address is locked out (even with the right password),
    and ``ValidationError`` with one message for a wrong address or a wrong password alike;
    each failure counts towards the lockout.
    """
    now = now or utcnow()
    try:
        address = normalise_address(email)
    except ValidationError:
        raise ValidationError({"email": WRONG_CREDENTIALS}) from None
    if recent_failures(session, address, now) >= LOCKOUT_FAILURES:
        raise SignInRefused(locked_out_message())
    account = session.scalar(select(Account).where(Account.email == address))
    if account is None or not PASSWORDS.verify(account.password_hash, password):
        if account is None:
            PASSWORDS.verify_nobody(password)
        # Failures older than the window count for nothing: drop them, whoever they were for,
        # so that guessing at many addresses cannot grow the table without end.
        session.execute(delete(FailedSignIn).where(FailedSignIn.at <= now - LOCKOUT_WINDOW))
        session.add(FailedSignIn(email=address, at=now))
        session.flush()
        raise ValidationError({"email": WRONG_CREDENTIALS})
    if PASSWORDS.needs_rehash(account.password_hash):
        account.password_hash = PASSWORDS.hash(password)
    session.execute(delete(FailedSignIn).where(FailedSignIn.email == address))
    return _signed_in(account)


def recent_failures(session: Session, address: str, now: datetime) -> int:
    """Failed sign-ins for ``address`` within the lockout window before ``now``."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(FailedSignIn)
            .where(FailedSignIn.email == address, FailedSignIn.at > now - LOCKOUT_WINDOW)
        )
        or 0
    )


def verify_password(session: Session, account_id: int, password: str) -> bool:
    """Whether ``password`` is the account's current one (to confirm a password change)."""
    account = session.get(Account, account_id)
    return account is not None and PASSWORDS.verify(account.password_hash, password)
