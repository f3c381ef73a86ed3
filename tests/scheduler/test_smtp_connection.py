"""The SMTP connection: a message is counted sent only after the server's 250 for it."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from scheduler.smtp import (
    ConnectionDropped,
    Envelope,
    SmtpConnection,
    TemporaryFailure,
    prepare_data,
)


def _hangs_up_after_354(listener: socket.socket) -> None:
    """Greets, takes an envelope without PIPELINING, says 354 and hangs up on the message."""
    peer, _ = listener.accept()
    with peer, peer.makefile("rb") as lines:
        peer.sendall(b"220 test ESMTP\r\n")
        for line in lines:
            command = line.split(b" ", 1)[0].strip().upper()
            if command == b"EHLO":
                peer.sendall(b"250-test\r\n250 8BITMIME\r\n")
            elif command == b"DATA":
                peer.sendall(b"354 go ahead\r\n")
                peer.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )
                return  # closed with a reset while the message is coming in
            else:
                peer.sendall(b"250 OK\r\n")


@pytest.fixture
def hangs_up_on_the_message() -> Iterator[str]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        server = threading.Thread(target=_hangs_up_after_354, args=(listener,), daemon=True)
        server.start()
        yield f"smtp://127.0.0.1:{listener.getsockname()[1]}"
        server.join(timeout=5)


def test_a_message_whose_write_breaks_off_is_never_taken_for_sent(
    hangs_up_on_the_message: str,
) -> None:
    connection = SmtpConnection(hangs_up_on_the_message, timeout=5)
    message = prepare_data(b"Subject: big\r\n\r\n" + b"x" * 998 + b"\r\n" * 4000)

    with pytest.raises(ConnectionDropped) as dropped:
        connection.send("news@example.org", "reader@example.com", message * 4)

    # Whether or not the server kept any of it, only a resend (same Message-ID) can tell.
    assert dropped.value.outcome_unknown
    assert connection.messages_sent == 0 and not connection.is_open


def _refuses_a_message_then_takes_the_next_envelope(listener: socket.socket) -> None:
    """With PIPELINING: answers a message with 451 at once and the envelope sent with it a
    moment later, in a read of its own; then takes the second message."""
    peer, _ = listener.accept()
    with peer, peer.makefile("rb") as lines:
        peer.sendall(b"220 test ESMTP\r\n")
        lines.readline()  # EHLO
        peer.sendall(b"250-test\r\n250 PIPELINING\r\n")
        # What each write of the client ends with, and the answer to it, in parts.
        script = [
            (b"DATA\r\n", [b"250 OK\r\n250 OK\r\n354 go ahead\r\n"]),  # the first envelope
            (b"DATA\r\n", [b"451 4.3.0 Busy\r\n", b"250 OK\r\n250 OK\r\n354 go ahead\r\n"]),
            (b".\r\n", [b"250 OK\r\n"]),  # the second message
        ]
        for last_line, parts in script:
            while lines.readline() != last_line:
                pass
            for part in parts:
                peer.sendall(part)
                time.sleep(0.05)  # each part comes in a read of its own
        lines.readline()  # QUIT
        peer.sendall(b"221 bye\r\n")


def test_a_refused_message_stays_refused_when_the_next_envelope_is_taken_in_a_later_read() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        server = threading.Thread(
            target=_refuses_a_message_then_takes_the_next_envelope, args=(listener,), daemon=True
        )
        server.start()
        connection = SmtpConnection(f"smtp://127.0.0.1:{listener.getsockname()[1]}", timeout=5)
        first = prepare_data(b"Subject: one\r\n\r\nfirst\r\n")
        second = prepare_data(b"Subject: two\r\n\r\nsecond\r\n")

        assert connection.exchange(None, Envelope("news@example.org", "a@example.com")) == (
            None,
            None,
        )
        refused, taken = connection.exchange(first, Envelope("news@example.org", "b@example.com"))
        assert isinstance(refused, TemporaryFailure) and taken is None
        assert connection.exchange(second, None) == (None, None)
        assert connection.messages_sent == 1
        connection.close()
        server.join(timeout=5)
