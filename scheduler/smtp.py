"""One SMTP connection, kept open and reused, that sends one message to one reader at a time.

smtplib opens the connection (plain, STARTTLS or TLS, then AUTH); the transactions are written
here. When the server offers PIPELINING (RFC 2920), ``exchange`` writes a message together with
the next message's ``MAIL``, ``RCPT`` and ``DATA`` (the RFC lets message content open a group)
and reads all four replies at once: one round trip a message instead of four, which is what lets
Python keep up with a C sink. Every failure is a ``DeliveryError`` saying what the worker must do.
"""

from __future__ import annotations

import re
import smtplib
import socket
import ssl
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from newsletter.errors import DeliveryError
from templates.message import CrlfMessage, SmtpReady


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

    Any bytes are accepted. ``SmtpReady`` bytes (vouched for by their renderer: CRLF line ends
    only, no line that starts with a dot, a CRLF at the end) cost nothing, where a scan of every
    byte costs about 20 µs for 20 KB. A ``CrlfMessage`` (what ``templates.render`` returns when it
    can vouch for its line endings but not for dots) costs one replace (``b"\r\n."``, three
    bytes, is found faster than ``b"\n."``); other bytes cost two counts more, and a rewrite if
    they hold a bare LF or CR.
    """
    if isinstance(message, SmtpReady):
        return message + b".\r\n"
    if not isinstance(message, CrlfMessage) and message.count(b"\n") != message.count(b"\r\n"):
        message = _LINE_ENDINGS.sub(b"\r\n", message)  # bare LF (or CR): the slow path
    message = message.replace(b"\r\n.", b"\r\n..")
    if message.startswith(b"."):
        message = b"." + message
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    return message + b".\r\n"


@dataclass(frozen=True)
class Envelope:
    """Who a message is from and to, and whether its body needs ``BODY=8BITMIME``."""

    sender: str
    recipient: str
    eight_bit: bool = False  # the body has bytes above 127

    @classmethod
    def of(cls, sender: str, recipient: str, data: bytes) -> Envelope:
        return cls(sender, recipient, not data.isascii())

    def commands(self, server_takes_8bit: bool) -> list[bytes]:
        """``MAIL``, ``RCPT`` and ``DATA``, each a line ready to write."""
        body = " BODY=8BITMIME" if self.eight_bit and server_takes_8bit else ""
        return [
            f"MAIL FROM:<{self.sender}>{body}\r\n".encode(),
            f"RCPT TO:<{self.recipient}>\r\n".encode(),
            b"DATA\r\n",
        ]


# What became of an exchange: of the message it finished, and of the envelope it began.
Exchanged = tuple[DeliveryError | None, DeliveryError | None]

_ENVELOPE_STAGES = ("MAIL", "RCPT", "DATA")

# The replies that accept a pipelined exchange (the message and the next envelope), or the
# message alone, as their lines begin: "250 " (not "250-": a reply of one line).
_ACCEPTED = {
    ("message", *_ENVELOPE_STAGES): (b"250 ", b"250 ", b"250 ", b"354 "),
    (*_ENVELOPE_STAGES,): (b"250 ", b"250 ", b"354 "),
    ("message",): (b"250 ",),
}


@dataclass
class _Flight:
    """The exchange under way: what was written, which replies are still to come."""

    has_envelope: bool = False
    awaiting: list[str] = field(default_factory=list)  # stages written, reply not yet read
    unwritten: list[tuple[str, bytes]] = field(default_factory=list)  # without PIPELINING
    replies: list[tuple[int, bytes]] = field(default_factory=list)  # MAIL, RCPT, DATA
    finished: DeliveryError | None = None  # the message's outcome, once its reply is in
    message_unanswered: bool = False  # (part of) the message went out, its reply is not in


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
        self._in_data = False
        self._buffer = b""  # reply bytes received and not yet read
        self._flight = _Flight()
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
        self._in_data = False
        self._buffer = b""
        self.pipelining = smtp.has_extn("pipelining")
        self.eight_bit = smtp.has_extn("8bitmime")

    def close(self) -> None:
        """Say QUIT when the connection still works, and forget it."""
        if self._in_data:  # a QUIT now would be taken as the message: drop it instead
            self.close_quietly()
            return
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
        _, refused = self.exchange(None, Envelope.of(sender, recipient, data))
        if refused is not None:
            raise refused
        failed, _ = self.exchange(data, None)
        if failed is not None:
            raise failed

    def exchange(self, message: bytes | None, envelope: Envelope | None) -> Exchanged:
        """Finish the open transaction with ``message`` and begin the next with ``envelope``.

        With PIPELINING (RFC 2920 lets the message be the first "command" of a group) both go
        out in one write and their replies come back in one read: one round trip a message.
        Returns what went wrong with each, ``None`` for success: the message was taken (250),
        or the envelope was (the transaction is then open until the next call sends its
        message). Drops are reported, never raised: ``ConnectionDropped`` says whether the
        message was all sent (its outcome unknown); the connection is closed and the next call
        on a closed connection opens it again (``ConnectFailed`` is then raised).
        """
        outcome = self.start(message, envelope)
        while outcome is None:
            outcome = self.poll()
        return outcome

    def start(self, message: bytes | None, envelope: Envelope | None) -> Exchanged | None:
        """Write what ``exchange`` writes and return at once: ``poll`` (when the socket is
        readable) reads the replies. Returns the outcome already when the write failed."""
        if message is not None and not self._in_data:
            raise ValueError("no transaction is waiting for a message")
        if message is None and self._in_data:
            raise ValueError("the open transaction's message must be sent first")
        if self._smtp is None:
            self.open()
        items: list[tuple[str, bytes]] = []
        if message is not None:
            self._in_data = False
            items.append(("message", message))
        if envelope is not None:
            items.extend(zip(_ENVELOPE_STAGES, envelope.commands(self.eight_bit), strict=True))
        self._flight = _Flight(has_envelope=envelope is not None)
        # Without PIPELINING each command waits for the reply to the one before it.
        batch, self._flight.unwritten = (items, []) if self.pipelining else (items[:1], items[1:])
        return self._write(batch)

    def fileno(self) -> int:
        """The socket to wait on for the replies of a started exchange."""
        assert self._smtp is not None and self._smtp.sock is not None
        return self._smtp.sock.fileno()

    def poll(self) -> Exchanged | None:
        """Read what the server sent (blocking until it sends something) and act on each
        complete reply; the exchange's outcome once the last awaited reply is in, else None."""
        assert self._smtp is not None and self._smtp.sock is not None
        sock = self._smtp.sock
        try:
            chunk = sock.recv(65536)
            while isinstance(sock, ssl.SSLSocket) and sock.pending():
                chunk += sock.recv(65536)  # decrypted bytes select() cannot see
            if not chunk:
                raise smtplib.SMTPServerDisconnected("connection closed by the server")
            self._buffer += chunk
            if self._all_accepted():
                # The message's reply may have come in an earlier read: its outcome stands.
                return self._flight.finished, None
            while (reply := self._take_reply()) is not None:
                outcome = self._on_reply(*reply)
                if outcome is not None:
                    return outcome
        except (OSError, smtplib.SMTPServerDisconnected) as error:
            return self.abandon(error)
        return None

    def _all_accepted(self) -> bool:
        """The common case in one step: the buffer holds exactly the replies still awaited, one
        line each, each the code that accepts its stage. Then the exchange is over: the message
        (if awaited) taken, the envelope (if any) too, its transaction open for the next
        message. Otherwise False, and the replies are read one at a time."""
        flight = self._flight
        expected = _ACCEPTED.get(tuple(flight.awaiting))
        lines = self._buffer.split(b"\r\n")
        if expected is None or flight.unwritten or len(lines) != len(expected) + 1 or lines[-1]:
            return False
        if not all(map(bytes.startswith, lines, expected)):
            return False
        if flight.awaiting[0] == "message":
            self.messages_sent += 1
        self._in_data = flight.has_envelope
        self._buffer = b""
        flight.awaiting.clear()
        flight.message_unanswered = False
        return True

    def abandon(self, error: BaseException) -> Exchanged:
        """Give up on the started exchange (the server went away or stayed silent too long)."""
        flight = self._flight
        self.close_quietly()
        before = self._dropped(error, before=True) if flight.has_envelope else None
        if flight.message_unanswered:
            return self._dropped(error, before=False), before
        return flight.finished, before

    def _write(self, items: list[tuple[str, bytes]]) -> Exchanged | None:
        assert self._smtp is not None and self._smtp.sock is not None
        flight = self._flight
        flight.awaiting.extend(stage for stage, _ in items)
        # Should the write break off in the commands, the message may be complete.
        flight.message_unanswered = flight.message_unanswered or "message" in flight.awaiting
        try:
            self._smtp.sock.sendall(b"".join(data for _, data in items))
        except OSError as error:
            return self.abandon(error)
        return None

    def _on_reply(self, code: int, text: bytes) -> Exchanged | None:
        """Record one reply; the outcome once the exchange is over."""
        flight = self._flight
        stage = flight.awaiting.pop(0)
        if stage == "message":
            flight.message_unanswered = False
            flight.finished = self._outcome("message", code, text)
            if flight.finished is None:
                self.messages_sent += 1
            elif self._smtp is None:  # 421: the server is closing
                dropped = self._dropped(None, before=True) if flight.has_envelope else None
                return flight.finished, dropped
            if not flight.has_envelope:
                return flight.finished, None
        else:
            flight.replies.append((code, text))
            if code >= 400 and not self.pipelining:
                flight.unwritten = []  # one command at a time stops at the first refusal
        if flight.awaiting:
            return None
        if flight.unwritten:
            following, flight.unwritten = flight.unwritten[0], flight.unwritten[1:]
            return self._write([following])
        return flight.finished, self._check_envelope(flight.replies)

    def _dropped(self, error: BaseException | None, *, before: bool) -> ConnectionDropped:
        state = "before the message was sent" if before else "after the message"
        cause = f": {error}" if error is not None else ": the server closed it"
        return ConnectionDropped(f"connection dropped {state}{cause}", outcome_unknown=not before)

    def _take_reply(self) -> tuple[int, bytes] | None:
        """The first complete reply in the buffer, taken out of it; None until one is whole.

        smtplib's ``getreply`` reads line by line through a buffered file: fine for a greeting,
        a third of the sender's time at thousands of messages a second. Between transactions
        the server says nothing, so no byte is left over for smtplib's own reads (RSET, QUIT).
        """
        buffer = self._buffer
        text: list[bytes] = []
        start = 0
        while True:
            end = buffer.find(b"\r\n", start)
            if end < 0:
                return None
            line = buffer[start:end]
            start = end + 2
            text.append(line[4:])
            if line[3:4] != b"-":
                break
        self._buffer = buffer[start:]
        try:
            code = int(line[:3])
        except ValueError:
            code = -1
        return code, b"\n".join(text)

    def _check_envelope(self, replies: list[tuple[int, bytes]]) -> DeliveryError | None:
        """None when MAIL, RCPT and DATA were taken (the transaction is open), else the error."""
        for stage, (code, text) in zip(_ENVELOPE_STAGES, replies, strict=False):
            expected = 354 if stage == "DATA" else 250
            if code == expected:
                continue
            if any(reply[0] == 421 for reply in replies) or replies[-1][0] == 354:
                # The server is closing, or it refused the envelope yet took DATA: either way
                # this connection is unusable.
                self.close_quietly()
            else:
                self._reset()
            return self._outcome(stage, code, text) or TemporaryFailure(
                f"{stage}: unexpected reply {code}", code=code
            )
        self._in_data = True
        return None

    def _outcome(self, stage: str, code: int, text: bytes) -> DeliveryError | None:
        """None for 250, else the error that says what to do about the reply."""
        if code == 250:
            return None
        reply = f"{stage}: {code} {redact(text.decode('utf-8', 'replace'))}"
        if code == 421:
            self.close_quietly()
        if 400 <= code < 500 or code == -1:
            return TemporaryFailure(reply, code=code)
        if stage == "RCPT" and code >= 500:
            return RecipientRefused(reply, permanent=True, code=code)
        if code >= 500:
            return MessageRefused(reply, permanent=True, code=code)
        return TemporaryFailure(reply, code=code)

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
        self._in_data = False
        self._buffer = b""
        if smtp is not None:
            smtp.close()
