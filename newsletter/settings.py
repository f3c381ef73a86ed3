"""Settings: read once from ``NEWSLETTER_*`` variables and an optional ``newsletter.toml``.

Environment variables win over the file; the file uses the same keys in lower case without the
prefix (``database_url = "sqlite:///newsletter.db"``). No other module reads ``os.environ``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from email.utils import parseaddr
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pydantic
from limits import parse_many
from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from newsletter.errors import SettingsError

SMTP_SCHEMES = ("smtp", "smtp+starttls", "smtps")

# What each setting expects, quoted in the error for a bad value.
EXPECTATIONS = {
    "database_url": "a SQLAlchemy database URL such as sqlite:///newsletter.db "
    "or postgresql+psycopg://user@127.0.0.1:5432/newsletter",
    "smtp_url": "smtp://user:pass@host:port, smtp+starttls://… or smtps://…",
    "base_url": "an http(s) URL such as https://news.example.com",
    "sender": 'an address such as "Gut Health Letter <news@example.com>"',
    "send_rate": "a positive number of messages per second",
    "send_concurrency": "a whole number of SMTP connections, 1 or more",
    "signup_limit": "a rate in the limits library's notation, such as 10/minute;200/day",
    "timezone": "an IANA time zone such as UTC or America/New_York",
    "trusted_proxies": "a comma-separated list of IP addresses",
    "capture_port": "a TCP port number",
    "medical_disclaimer": "one paragraph of plain text for the footer (empty turns it off)",
    "health_terms": "a comma-separated list of words or phrases, such as detox, boost immunity",
    "campaign_grace": "a duration such as 3600 (seconds), 90m, 1h or 2d",
    "cadence_min_gap": "a duration such as 20h (0 turns the cap off)",
    "cadence_quiet": "SEQUENCE:DURATION pairs, comma-separated, such as welcome:3d",
}
GRACE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
GRACE_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}

# Shown in the footer of every email unless NEWSLETTER_MEDICAL_DISCLAIMER says otherwise.
DEFAULT_MEDICAL_DISCLAIMER = (
    "This newsletter is for information only and is not medical advice. Talk to your doctor "
    "before changing your diet, supplements or medication."
)
_TERM = re.compile(r"[^\W\d_]+(?:['\u2019-][^\W\d_]+)*(?: [^\W\d_]+(?:['\u2019-][^\W\d_]+)*)*")


def parse_duration(text: str) -> float:
    """Seconds in ``text``: a number of seconds, or with a unit (``90m``, ``1h``, ``2d``)."""
    match = GRACE.match(text.lower())
    if match is None:
        raise ValueError("not a duration")
    return float(match.group(1)) * GRACE_UNITS[match.group(2)]


class Settings(BaseSettings):
    """Every setting of the product; build one with ``load_settings()`` or directly in tests."""

    model_config = SettingsConfigDict(
        env_prefix="NEWSLETTER_",
        extra="ignore",
        populate_by_name=True,
        frozen=True,
    )

    database_url: str = "sqlite:///newsletter.db"
    smtp_url: str | None = None
    base_url: str = "http://127.0.0.1:8000"
    secret_key: str | None = None
    sender: str = Field(
        default="Gut Health Letter <newsletter@localhost>",
        validation_alias=AliasChoices("NEWSLETTER_FROM", "from", "sender"),
    )
    postal_address: str = "Gut Health Letter, 1 Sample Street, Springfield, USA"
    send_rate: float = Field(default=50.0, gt=0)
    send_concurrency: int = Field(default=4, ge=1, le=64)
    report: str | None = None
    dkim_key: Path | None = None
    dkim_selector: str = "newsletter"
    signup_limit: str = "10/minute;200/day"
    trusted_proxies: Annotated[list[str], NoDecode] = []
    timezone: str = "UTC"
    check_deliverability: bool = False
    capture_port: int = Field(default=1025, ge=1, le=65535)
    medical_disclaimer: str = DEFAULT_MEDICAL_DISCLAIMER
    health_terms: Annotated[list[str], NoDecode] = []
    # Seconds a campaign may be late (its process was down at its time) and still go out on its
    # own; a later one is held for the marketer's ``newsletter campaign resume``.
    campaign_grace: float = Field(default=3600.0, ge=0)
    # Cadence caps (``scheduler/cadence.py``), both off by default: the least time between two
    # emails (sequence steps and campaigns) to one reader, in seconds; and, per sequence, how
    # long after entering it a reader gets no campaign. A capped email is deferred, never dropped.
    cadence_min_gap: float = Field(default=0.0, ge=0)
    cadence_quiet: Annotated[dict[str, float], NoDecode] = {}

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # load_settings() gathers the environment and the file itself, so that a Settings built
        # in a test sees only what the test passes.
        return (init_settings,)

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        try:
            url = make_url(value)
        except ArgumentError as error:
            raise ValueError("not a database URL") from error
        # psycopg 3 is the driver we ship; a plain postgresql:// URL would ask for psycopg2.
        if url.drivername in ("postgresql", "postgres"):
            url = url.set(drivername="postgresql+psycopg")
        return url.render_as_string(hide_password=False)

    @field_validator("smtp_url")
    @classmethod
    def _smtp_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        parts = urlsplit(value)
        if parts.scheme not in SMTP_SCHEMES or not parts.hostname:
            raise ValueError("not an SMTP URL")
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number
        return value

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("not an http(s) URL")
        return value.rstrip("/")

    @field_validator("sender")
    @classmethod
    def _sender(cls, value: str) -> str:
        _, address = parseaddr(value)
        if "@" not in address or any(c in value for c in "\r\n\0"):
            raise ValueError("not an email address")
        return value

    @field_validator("signup_limit")
    @classmethod
    def _signup_limit(cls, value: str) -> str:
        parse_many(value)
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as error:
            raise ValueError("unknown time zone") from error
        return value

    @field_validator("campaign_grace", mode="before")
    @classmethod
    def _campaign_grace(cls, value: Any) -> Any:
        return parse_duration(value) if isinstance(value, str) else value

    @field_validator("cadence_min_gap", mode="before")
    @classmethod
    def _cadence_min_gap(cls, value: Any) -> Any:
        return parse_duration(value) if isinstance(value, str) else value

    @field_validator("cadence_quiet", mode="before")
    @classmethod
    def _cadence_quiet(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        quiet: dict[str, float] = {}
        for item in value.split(","):
            if not item.strip():
                continue
            sequence, colon, duration = item.partition(":")
            if not colon or not sequence.strip():
                raise ValueError("expected SEQUENCE:DURATION")
            quiet[sequence.strip()] = parse_duration(duration)
        return quiet

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _trusted_proxies(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("medical_disclaimer")
    @classmethod
    def _medical_disclaimer(cls, value: str) -> str:
        # One paragraph: line breaks and runs of spaces (from a TOML multi-line string) are one
        # space, and control characters are refused rather than carried into the email.
        if any((ord(char) < 32 and char not in "\t\r\n") or ord(char) == 127 for char in value):
            raise ValueError("holds a control character")
        return " ".join(value.split())

    @field_validator("health_terms", mode="before")
    @classmethod
    def _health_terms(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.split(",")
        if not isinstance(value, list):
            return value
        terms = [" ".join(str(item).split()).lower() for item in value]
        terms = [term for term in terms if term]
        if not all(_TERM.fullmatch(term) for term in terms):
            raise ValueError("not a list of words")
        return terms

    @property
    def uses_capture_inbox(self) -> bool:
        """True when no SMTP relay is configured, so mail goes to the built-in capture inbox."""
        return self.smtp_url is None

    @property
    def sender_address(self) -> str:
        """The bare address of ``NEWSLETTER_FROM``, for the SMTP envelope."""
        return parseaddr(self.sender)[1]


def load_settings(
    environ: Mapping[str, str] | None = None, toml_file: Path | None = None
) -> Settings:
    """Read the settings from the environment (or ``environ``) and ``newsletter.toml``.

    Raises ``SettingsError`` naming the first bad setting and what it expects.
    """
    environ = os.environ if environ is None else environ
    values = {
        key[len("NEWSLETTER_") :].lower(): value
        for key, value in environ.items()
        if key.upper().startswith("NEWSLETTER_") and not key.upper().startswith("NEWSLETTER_TEST")
    }
    if "from" in values:
        values["sender"] = values.pop("from")
    file_values = _read_toml(toml_file or Path("newsletter.toml"))
    try:
        return Settings(**{**file_values, **values})
    except pydantic.ValidationError as error:
        raise _settings_error(error) from None


def _read_toml(path: Path) -> dict[str, Any]:
    import tomllib

    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise SettingsError(f"{path}: not valid TOML ({error})") from None
    if "from" in data:
        data["sender"] = data.pop("from")
    return data


def _settings_error(error: pydantic.ValidationError) -> SettingsError:
    first = error.errors()[0]
    field = str(first["loc"][0]) if first["loc"] else "?"
    env_name = "NEWSLETTER_FROM" if field == "sender" else f"NEWSLETTER_{field.upper()}"
    expected = EXPECTATIONS.get(field, first["msg"])
    given = first.get("input")
    shown = f"; got {given!r}" if isinstance(given, str | int | float) else ""
    return SettingsError(f"{env_name}: expected {expected}{shown}")
