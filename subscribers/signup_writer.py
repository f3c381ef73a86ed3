"""Signups written in groups: one transaction, and one hop to a thread, for every few signups.

Under load, handing each signup to a thread pool and committing it alone costs more CPU than the
signup's own statements (a thread wake-up, a context switch and a commit each). The writer keeps
one thread that takes every signup waiting when it wakes, records them all in one transaction
(each with its outbox row, as ``signup_and_request_confirmation`` does alone) and commits once.
Nobody is answered before the commit that holds their signup, so a 202 means what it meant.

If the group's transaction fails, each signup of it is tried again in a transaction of its
own, so one bad signup fails alone and the others are kept. At low load a group is one signup.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from dataclasses import dataclass

from newsletter.db import Database
from subscribers.events import SubscriberEvents
from subscribers.signup import SignupOutcome, SignupRequest, signup_and_request_confirmation

log = logging.getLogger("subscribers.signup_writer")

# Enough to amortise a commit; small enough that one group's transaction stays short.
MAX_GROUP = 64

Result = SignupOutcome | BaseException


@dataclass
class _Waiting:
    request: SignupRequest
    future: asyncio.Future[SignupOutcome]
    loop: asyncio.AbstractEventLoop


class SignupWriter:
    """Records signups for coroutines, in groups, on a thread of its own."""

    def __init__(self, database: Database, events: SubscriberEvents) -> None:
        self.database = database
        self.events = events
        self._queue: queue.SimpleQueue[_Waiting | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="signup-writer", daemon=True)
        self._thread.start()

    async def signup(self, request: SignupRequest) -> SignupOutcome:
        """Record ``request``; returns once it is committed (raises what recording raised)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[SignupOutcome] = loop.create_future()
        self._queue.put(_Waiting(request, future, loop))
        return await future

    def close(self) -> None:
        """Finish the signups already handed over, then stop the thread."""
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            group = [first]
            stopping = False
            while len(group) < MAX_GROUP:
                try:
                    waiting = self._queue.get_nowait()
                except queue.Empty:
                    break
                if waiting is None:
                    stopping = True
                    break
                group.append(waiting)
            _answer(group, self._write(group))
            if stopping:
                return

    def _write(self, group: list[_Waiting]) -> list[Result]:
        try:
            with self.database.session() as session:
                return [
                    signup_and_request_confirmation(session, waiting.request, self.events)
                    for waiting in group
                ]
        except Exception as error:
            if len(group) == 1:
                log.exception("event=signup_failed")
                return [error]
            log.warning("event=signup_group_failed size=%d: retrying one by one", len(group))
        return [self._write_one(waiting) for waiting in group]

    def _write_one(self, waiting: _Waiting) -> Result:
        try:
            with self.database.session() as session:
                return signup_and_request_confirmation(session, waiting.request, self.events)
        except Exception as error:
            log.exception("event=signup_failed")
            return error


def _answer(group: list[_Waiting], results: list[Result]) -> None:
    """Settle each coroutine's future on its own event loop, one wake-up per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Waiting, Result]]] = {}
    for waiting, result in zip(group, results, strict=True):
        by_loop.setdefault(waiting.loop, []).append((waiting, result))
    for loop, settled in by_loop.items():
        # A closed loop raises RuntimeError: nobody is waiting there any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_settle, settled)


def _settle(settled: list[tuple[_Waiting, Result]]) -> None:
    for waiting, result in settled:
        if waiting.future.done():  # the request was cancelled (the client went away)
            continue
        if isinstance(result, BaseException):
            waiting.future.set_exception(result)
        else:
            waiting.future.set_result(result)
