"""``newsletter serve``: the web app, the capture inbox when no relay is set, in one process."""

from __future__ import annotations

import logging

import uvicorn

from newsletter.app import create_app
from newsletter.db import open_database
from newsletter.settings import Settings
from scheduler.capture import CaptureInbox

log = logging.getLogger("newsletter.server")


def serve(settings: Settings, *, host: str, port: int) -> None:
    """Run until interrupted."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
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
    try:
        # No access log: it would write every reader's IP address at info level.
        uvicorn.run(app, host=host, port=port, log_level="info", access_log=False)
    finally:
        if inbox is not None:
            inbox.stop()
        database.dispose()
