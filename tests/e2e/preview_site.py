"""The preview server on a real port, on copies of the shipped content and sequences, with its
capture inbox: what the preview tests drive."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from campaigns.content import CONTENT_DIR
from campaigns.sequence import SEQUENCES_DIR
from newsletter.db import Database, open_database
from newsletter.preview import create_preview_app
from newsletter.settings import Settings
from scheduler import capture
from scheduler.capture import CaptureInbox
from templates import clear_caches
from tests.conftest import LiveServer, free_port, start_live_server, stop_live_server

ARTICLE = "vitamin-k2-bone-health"


@dataclass
class PreviewSite:
    url: str
    settings: Settings
    database: Database
    content: Path
    sequences: Path
    inbox: CaptureInbox
    live: LiveServer
    feed: object

    @property
    def article(self) -> Path:
        return self.content / f"{ARTICLE}.md"

    def edit(self, path: Path, old: str, new: str) -> None:
        text = path.read_text(encoding="utf-8")
        assert old in text, old
        path.write_text(text.replace(old, new, 1), encoding="utf-8")

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)

    def captured(self) -> list[capture.CapturedMessage]:
        return capture.list_messages(self.database)


def start_preview(
    make_settings: Callable[..., Settings], tmp_path: Path, *, watch: bool = True
) -> PreviewSite:
    clear_caches()
    content = tmp_path / "content"
    sequences = tmp_path / "sequences"
    shutil.copytree(CONTENT_DIR, content)
    shutil.copytree(SEQUENCES_DIR, sequences)
    settings = make_settings(capture_port=free_port())
    database = open_database(settings)
    inbox = CaptureInbox(database, port=settings.capture_port)
    inbox.start()
    app = create_preview_app(
        settings, database, content_root=content, sequences_root=sequences, watch=watch
    )
    live = start_live_server(app)
    return PreviewSite(
        live.url, settings, database, content, sequences, inbox, live, app.state.feed
    )


def stop_preview(site: PreviewSite) -> None:
    site.feed.close()  # type: ignore[attr-defined]  # ends the event streams, so uvicorn can stop
    stop_live_server(site.live)
    site.inbox.stop()
    site.database.dispose()
    clear_caches()
