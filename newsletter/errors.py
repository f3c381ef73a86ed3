"""The one exception hierarchy of the product.

Every error a user can cause is a ``NewsletterError`` carrying a message a marketer can act on.
The web app turns them into HTTP responses and the CLI into one-line messages with exit status 1;
nothing below the edge formats them.

    NewsletterError
    ├── SettingsError          a setting has a value the product cannot use
    ├── ValidationError        input from a reader or a marketer is malformed
    │   └── ImportRowError     one row of a CSV import is malformed
    ├── NotFoundError          a named subscriber, campaign, sequence or message does not exist
    ├── TokenError             a signed link is forged, for another purpose, or expired
    ├── RateLimitedError       too many requests from one client or for one address
    ├── TemplateError          a template or content file fails to compile or render
    ├── ContentError           a campaign or sequence file is malformed
    ├── PreflightError         a campaign fails its preflight check and may not be sent
    ├── SchedulingError        a schedule, pause, resume or cancel request cannot be carried out
    └── DeliveryError          an SMTP server refused or dropped a message
"""

from __future__ import annotations


class NewsletterError(Exception):
    """Base class: an error whose message is meant for the person who caused it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SettingsError(NewsletterError):
    """A setting (environment variable or ``newsletter.toml`` key) has an unusable value."""


class ValidationError(NewsletterError):
    """Input is malformed; ``errors`` maps each field to its message."""

    def __init__(self, errors: dict[str, str]) -> None:
        summary = "; ".join(f"{field}: {message}" for field, message in errors.items())
        super().__init__(summary)
        self.errors = errors


class ImportRowError(ValidationError):
    """One row of a CSV import is malformed; the rest of the file is still imported."""

    def __init__(self, line: int, errors: dict[str, str]) -> None:
        super().__init__(errors)
        self.line = line
        self.message = f"line {line}: {self.message}"


class NotFoundError(NewsletterError):
    """A named subscriber, campaign, sequence or message does not exist."""


class TokenError(NewsletterError):
    """A signed link is forged, meant for another purpose, or has expired."""


class RateLimitedError(NewsletterError):
    """Too many requests from one client address, or for one email address."""


class TemplateError(NewsletterError):
    """A template or content file fails to compile or render; names the file and line."""


class ContentError(NewsletterError):
    """A campaign or sequence file is malformed (front matter, YAML, a missing field)."""


class PreflightError(NewsletterError):
    """A campaign fails its preflight check; ``problems`` lists what blocks it."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


class SchedulingError(NewsletterError):
    """A schedule, pause, resume or cancel request cannot be carried out as asked."""


class DeliveryError(NewsletterError):
    """An SMTP server refused or dropped a message; ``permanent`` tells a 5xx from a 4xx."""

    def __init__(self, message: str, *, permanent: bool = False, code: int | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.code = code
