"""``newsletter serve``: the web app, the clock and the sender, and the capture inbox when no relay
is set, in one process (the clock and the sender in threads, stopped when the web app stops)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

import uvicorn

from newsletter.app import create_app
from newsletter.db import Database, open_database
from newsletter.settings import Settings
from scheduler.capture import CaptureInbox
from scheduler.clock import DueWork, start_clock
from scheduler.rendering import Renderer
from scheduler.worker import run_worker

log = logging.getLogger("newsletter.server")


def serve(
    settings: Settings,
    *,
    host: str,
    port: int,
    due_work: Sequence[DueWork] = (),
    should_run: Callable[[], bool] = lambda: True,
    with_worker: bool = True,
) -> None:
    """Run until interrupted (uvicorn handles Ctrl-C and SIGTERM; the threads stop after it).

    ``with_worker=False`` serves the web app alone: the clock and the sender then run in a
    ``newsletter worker`` process of their own (on another core, or another machine), which is
    how a busy site runs it, so that sending never takes CPU from readers' requests.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # aiosmtpd logs every envelope address at info level; addresses stay out of the logs.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    database = open_database(settings)
    inbox = None
    if settings.uses_capture_inbox:
        inbox = CaptureInbox(database, port=settings.capture_port)
        inbox.start()
        log.info(
            "no NEWSLETTER_SMTP_URL: mail goes to the capture inbox, SMTP 127.0.0.1:%s, "
            "read it at http://%s:%s/inbox",
            settings.capture_port,
            host,
            port,
        )
    app = create_app(settings, database)
    background = _ClockAndSender(settings, database, due_work, should_run) if with_worker else None
    try:
        # No access log: it would write every reader's IP address at info level.
        uvicorn.run(app, host=host, port=port, log_level="info", access_log=False)
    finally:
        if background is not None:
            background.stop()
        if inbox is not None:
            inbox.stop()
        database.dispose()


class _ClockAndSender:
    """The clock and the sender thread of an all-in-one ``serve``."""

    def __init__(
        self,
        settings: Settings,
        database: Database,
        due_work: Sequence[DueWork],
        should_run: Callable[[], bool],
    ) -> None:
        self.clock = start_clock(settings, database, due_work=due_work, should_run=should_run)
        self.render = Renderer(settings, database)
        self.stop_event = threading.Event()
        self.sender = threading.Thread(
            target=run_worker,
            args=(settings, database, self.render),
            kwargs={"stop_event": self.stop_event},
            name="worker",
            daemon=True,
        )
        self.sender.start()

    def stop(self) -> None:
        # The sender first: its last commits and its farewell need the database, and stopping
        # the clock disposes of the engine it shares (APScheduler's job store closes it); a
        # sender still at work while that happened could wait on the pool for two minutes.
        self.stop_event.set()
        self.sender.join(timeout=60)
        self.clock.stop()
