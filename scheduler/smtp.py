"""One SMTP connection, kept open and reused, that sends one message to one reader at a time.

smtplib opens the connection (plain, STARTTLS or TLS, then AUTH); the transaction itself is
written here so that, when the server offers PIPELINING (RFC 2920), ``MAIL``, ``RCPT`` and
``DATA`` go out in one write: two round trips a message instead of four, which is what lets
Python keep up with a C sink. Every failure is a ``DeliveryError`` saying what the worker must do.
"""

from __future__ import annotations

import re
import smtplib
import socket
import ssl
from urllib.parse import unquote, urlsplit

from newsletter.errors import DeliveryError


class TemporaryFailure(DeliveryError):
    """A 4xx reply: try this delivery again later."""


class RecipientRefused(DeliveryError):
    """A 5xx reply to ``RCPT``: this reader's address does not take mail (a hard bounce)."""


class MessageRefused(DeliveryError):
    """A 5xx reply to ``MAIL`` or to the message itself: not the address's fault, not retried."""


class ConnectionDropped(DeliveryError):
    """The connection failed mid-transaction; ``outcome_unknown`` if the message was all sent.

    When the whole message went out and the server's answer never came, it may have been
    delivered: a resend (same Message-ID) is counted as uncertain.
    """

    def __init__(self, message: str, *, outcome_unknown: bool) -> None:
        super().__init__(message)
        self.outcome_unknown = outcome_unknown


class ConnectFailed(DeliveryError):
    """The server could not be reached or refused the session (greeting, TLS or AUTH)."""


_LINE_ENDINGS = re.compile(rb"\r\n|\n|\r(?!\n)")
_ADDRESS = re.compile(r"[^\s<>\"'@]+@[^\s<>\"';,]+")


def redact(text: str) -> str:
    """``text`` (a server's reply) without the addresses it quotes: safe to log and to keep."""
    return _ADDRESS.sub("<address>", text)


def prepare_data(message: bytes) -> bytes:
    """The ``DATA`` payload: CRLF line endings, leading dots doubled, the final dot added.

    A message already in CRLF form (what the renderer makes) costs two counts and a search.
    """
    if message.count(b"\n") != message.count(b"\r\n"):
        message = _LINE_ENDINGS.sub(b"\r\n", message)  # bare LF (or CR): the slow path
    if message.startswith(b"."):
        message = b"." + message
    if b"\n." in message:
        message = message.replace(b"\r\n.", b"\r\n..")
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    return message + b".\r\n"


class SmtpConnection:
    """A lazily opened, reusable connection to the relay named by an ``smtp…://`` URL."""

    def __init__(self, url: str, *, timeout: float = 30.0, local_hostname: str | None = None):
        parts = urlsplit(url)
        self.scheme = parts.scheme
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (465 if self.scheme == "smtps" else 25)
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.timeout = timeout
        self.local_hostname = local_hostname
        self._smtp: smtplib.SMTP | None = None
        self.pipelining = False
        self.eight_bit = False
        self.messages_sent = 0

    @property
    def is_open(self) -> bool:
        return self._smtp is not None

    def open(self) -> None:
        """Connect, greet, upgrade to TLS and log in as the URL says; raises ``ConnectFailed``."""
        self.close()
        try:
            smtp: smtplib.SMTP
            if self.scheme == "smtps":
                smtp = smtplib.SMTP_SSL(
                    self.host,
                    self.port,
                    local_hostname=self.local_hostname,
                    timeout=self.timeout,
                    context=ssl.create_default_context(),
                )
            else:
                smtp = smtplib.SMTP(
                    self.host, self.port, local_hostname=self.local_hostname, timeout=self.timeout
                )
            smtp.ehlo()
            if self.scheme == "smtp+starttls":
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if self.username:
                smtp.login(self.username, self.password or "")
            if smtp.sock is not None:
                smtp.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, smtplib.SMTPException) as error:
            raise ConnectFailed(
                f"cannot open an SMTP session with {self.host}:{self.port}: {redact(str(error))}"
            ) from error
        self._smtp = smtp
        self.pipelining = smtp.has_extn("pipelining")
        self.eight_bit = smtp.has_extn("8bitmime")

    def close(self) -> None:
        """Say QUIT when the connection still works, and forget it."""
        smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        try:
            smtp.quit()
        except (OSError, smtplib.SMTPException):
            smtp.close()

    def send(self, sender: str, recipient: str, data: bytes) -> None:
        """Send one prepared message (see ``prepare_data``) to one recipient; return on 250.

        Raises ``TemporaryFailure``, ``RecipientRefused``, ``MessageRefused`` or
        ``ConnectionDropped`` (the connection is then closed; the next send reopens it), or
        ``ConnectFailed`` when the connection had to be opened and could not be.
        """
        if self._smtp is None:
            self.open()
        smtp = self._smtp
        assert smtp is not None and smtp.sock is not None
        body = " BODY=8BITMIME" if self.eight_bit and not data.isascii() else ""
        mail = f"MAIL FROM:<{sender}>{body}\r\n".encode()
        rcpt = f"RCPT TO:<{recipient}>\r\n".encode()
        data_sent = False
        try:
            if self.pipelining:
                smtp.sock.sendall(mail + rcpt + b"DATA\r\n")
                replies = self._replies(smtp.sock, 3)
            else:
                replies = []
                for command in (mail, rcpt, b"DATA\r\n"):
                    smtp.sock.sendall(command)
                    replies += self._replies(smtp.sock, 1)
                    if replies[-1][0] >= 400:
                        break
            self._check_envelope(replies)
            smtp.sock.sendall(data)
            data_sent = True
            ((code, text),) = self._replies(smtp.sock, 1)
        except (OSError, smtplib.SMTPServerDisconnected) as error:
            self.close_quietly()
            state = "after the message" if data_sent else "before the message was sent"
            raise ConnectionDropped(
                f"connection dropped {state}: {error}", outcome_unknown=data_sent
            ) from error
        self._check("message", code, text)
        self.messages_sent += 1

    def _replies(self, sock: socket.socket, count: int) -> list[tuple[int, bytes]]:
        """Read ``count`` replies; pipelined ones mostly arrive in one ``recv``.

        smtplib's ``getreply`` reads line by line through a buffered file: fine for a greeting,
        a third of the sender's time at thousands of messages a second. Between transactions
        the server says nothing, so no byte is left over for smtplib's own reads (RSET, QUIT).
        """
        replies: list[tuple[int, bytes]] = []
        buffer = b""
        text: list[bytes] = []
        while True:
            end = buffer.find(b"\r\n")
            if end < 0:
                chunk = sock.recv(65536)
                if not chunk:
                    raise smtplib.SMTPServerDisconnected("connection closed by the server")
                buffer += chunk
                continue
            line, buffer = buffer[:end], buffer[end + 2 :]
            text.append(line[4:])
            if line[3:4] == b"-":
                continue
            try:
                code = int(line[:3])
            except ValueError:
                code = -1
            replies.append((code, b"\n".join(text)))
            text = []
            if len(replies) == count:
                return replies

    def _check_envelope(self, replies: list[tuple[int, bytes]]) -> None:
        stages = ("MAIL", "RCPT", "DATA")
        for stage, (code, text) in zip(stages, replies, strict=False):
            expected = 354 if stage == "DATA" else 250
            if code == expected:
                continue
            if any(reply[0] == 421 for reply in replies) or replies[-1][0] == 354:
                # The server is closing, or it refused the envelope yet took DATA: either way
                # this connection is unusable.
                self.close_quietly()
            else:
                self._reset()
            self._check(stage, code, text)
            raise TemporaryFailure(f"{stage}: unexpected reply {code}", code=code)

    def _check(self, stage: str, code: int, text: bytes) -> None:
        if code == 250:
            return
        reply = f"{stage}: {code} {redact(text.decode('utf-8', 'replace'))}"
        if code == 421:
            self.close_quietly()
        if 400 <= code < 500 or code == -1:
            raise TemporaryFailure(reply, code=code)
        if stage == "RCPT" and code >= 500:
            raise RecipientRefused(reply, permanent=True, code=code)
        if code >= 500:
            raise MessageRefused(reply, permanent=True, code=code)
        raise TemporaryFailure(reply, code=code)

    def _reset(self) -> None:
        smtp = self._smtp
        if smtp is None:
            return
        try:
            code, _ = smtp.docmd("RSET")
        except (OSError, smtplib.SMTPException):
            code = -1
        if code != 250:
            self.close_quietly()

    def close_quietly(self) -> None:
        """Drop the connection without a word (it is broken, or the server is closing it)."""
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            smtp.close()
