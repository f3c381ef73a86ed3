"""One SMTP connection for the shell's single messages (the preview's "send test")."""

from __future__ import annotations

import smtplib
from urllib.parse import unquote, urlsplit

from newsletter.settings import Settings


def open_smtp(settings: Settings, timeout: float = 30) -> smtplib.SMTP:
    """A connection to ``NEWSLETTER_SMTP_URL``, or to the capture inbox when none is set."""
    if settings.smtp_url is None:
        return smtplib.SMTP("127.0.0.1", settings.capture_port, timeout=timeout)
    url = urlsplit(settings.smtp_url)
    host = url.hostname or "localhost"
    if url.scheme == "smtps":
        connection: smtplib.SMTP = smtplib.SMTP_SSL(host, url.port or 465, timeout=timeout)
    else:
        connection = smtplib.SMTP(host, url.port or 25, timeout=timeout)
        if url.scheme == "smtp+starttls":
            connection.starttls()
    if url.username:
        connection.login(unquote(url.username), unquote(url.password or ""))
    return connection
