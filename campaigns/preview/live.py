"""Live reload: watch the content, sequences, templates and readers files, and tell every open
page when something changed (the web side turns this into server-sent events).

``ChangeFeed.run()`` runs in the web app's event loop; ``close()`` may be called from any thread
and ends the watcher and every waiting stream, so that the server can stop at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from pathlib import Path

from watchfiles import awatch

log = logging.getLogger("campaigns.preview")


class ChangeFeed:
    """A version number that goes up each time a watched file changes."""

    def __init__(self, paths: Iterable[Path], on_change: Callable[[set[str]], None]) -> None:
        self.paths = [path for path in dict.fromkeys(paths) if path.exists()]
        self.on_change = on_change
        self.version = 0
        self.closed = False
        self._changed = asyncio.Event()
        self._stop = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def run(self) -> None:
        """Watch until closed; each batch of changes calls ``on_change`` and bumps the version."""
        self._loop = asyncio.get_running_loop()
        if not self.paths or self.closed:
            return
        try:
            async for changes in awatch(
                *self.paths, stop_event=self._stop, debounce=400, step=30, recursive=True
            ):
                changed = {path for _, path in changes}
                self.changed(changed)
        except Exception:  # the preview keeps serving, without live reload
            log.exception("file watcher stopped")

    def changed(self, paths: set[str]) -> None:
        """Record a change (the watcher calls this; tests may too)."""
        self.on_change(paths)
        self.version += 1
        log.info("changed: %s", ", ".join(sorted(Path(p).name for p in paths)))
        self._wake()

    def _wake(self) -> None:
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    async def wait(self, seen: int, timeout: float) -> int:
        """The version once it is past ``seen``, or after ``timeout`` seconds, or on close."""
        if self.version > seen or self.closed:
            return self.version
        event = self._changed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
        return self.version

    def close(self) -> None:
        """Stop watching and end every stream; safe from any thread."""
        self.closed = True
        loop = self._loop
        if loop is None or loop.is_closed():
            return

        def stop() -> None:
            self._stop.set()
            self._wake()

        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            stop()
        else:
            loop.call_soon_threadsafe(stop)
