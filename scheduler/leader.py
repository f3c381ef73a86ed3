"""Leadership: exactly one process of the fleet runs the clock at a time.

Every ``newsletter worker`` sends, but only one of them may turn due sequence steps and campaigns
into deliveries (the APScheduler clock). ``Leadership`` elects it:

- **PostgreSQL**: a session-level advisory lock (``pg_try_advisory_lock``) held on a connection of
  its own, outside any pool. PostgreSQL releases the lock when that connection ends, so when the
  leader process dies (SIGKILL, OOM, a machine powered off once TCP keepalives notice) another
  worker's next ``acquire()`` gets it: within ``check_interval`` seconds of the connection closing.
- **SQLite**: the database is a file on one machine, so an exclusive ``fcntl.flock`` on a file next
  to it (``newsletter.db.clock.lock``) does the same: the kernel drops it when the process dies.

``acquire()`` never blocks. ``start()`` runs a thread that, every ``check_interval`` seconds,
checks that a held lock is still held (the connection still answers and the lock is still
granted) and otherwise tries to take it. ``is_leader()`` is what the clock asks before each run;
it turns False as soon as a check fails, and also when no check succeeded for
``3 × check_interval`` (a leader cut off from the database stops acting before PostgreSQL gives
the lock away, which takes its TCP keepalive time: about 25 s with the settings below)::

    leadership = Leadership(database, name="clock")
    leadership.start()
    start_clock(..., should_run=leadership.is_leader)
    ...
    leadership.release()  # at shut-down: another worker takes over at its next check
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
import zlib
from pathlib import Path
from typing import IO, Any

from sqlalchemy import create_engine, make_url
from sqlalchemy.pool import NullPool

from newsletter.db import Database

log = logging.getLogger("scheduler.leader")

# The first half of every leadership lock's key; the second is derived from the name. Any constant
# works as long as every process uses the same one (the migration lock is 7_315_001).
LOCK_NAMESPACE = 7_315_002
# The server drops a dead peer's connection, and so its lock, after about idle + interval × count.
KEEPALIVE_OPTIONS = (
    "-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=3"
)


def lock_key(name: str) -> tuple[int, int]:
    """The two 32-bit keys of ``name``'s advisory lock (both positive, as ``pg_locks`` shows)."""
    return LOCK_NAMESPACE, zlib.crc32(name.encode()) & 0x7FFFFFFF


class Leadership:
    """Whether this process leads the fleet for ``name``; see the module docstring."""

    def __init__(self, database: Database, name: str = "clock", *, check_interval: float = 2.0):
        self.database = database
        self.name = name
        self.check_interval = check_interval
        self._lock = threading.RLock()
        self._held = False
        self._confirmed_at = 0.0  # time.monotonic() of the last successful check
        self._connection: Any = None  # PostgreSQL: the raw psycopg connection holding the lock
        self._file: IO[bytes] | None = None  # SQLite: the flocked file
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._postgres = database.engine.dialect.name == "postgresql"
        self._engine = None
        if self._postgres:
            self._engine = create_engine(
                database.url,
                poolclass=NullPool,
                connect_args={
                    "autocommit": True,
                    "connect_timeout": 5,
                    "application_name": f"newsletter-leader-{name}",
                    "keepalives": 1,
                    "keepalives_idle": 10,
                    "keepalives_interval": 5,
                    "keepalives_count": 3,
                    "options": KEEPALIVE_OPTIONS,
                },
            )

    # ------------------------------------------------------------ the public surface

    def acquire(self) -> bool:
        """Try to become the leader without waiting; True if this process leads now."""
        with self._lock:
            if self._held:
                return self.check()
            try:
                taken = self._try_postgres() if self._postgres else self._try_file()
            except Exception as error:  # the database is away: not the leader, try again later
                log.warning("event=leadership_error %s error=%r", self._fields(), str(error)[:200])
                self._drop()
                return False
            if taken:
                self._held = True
                self._confirmed_at = time.monotonic()
                log.info("event=leadership_taken %s", self._fields())
            return taken

    def is_leader(self) -> bool:
        """True while this process holds the lock and a check confirmed it recently."""
        if not self._held:
            return False
        return time.monotonic() - self._confirmed_at < 3 * self.check_interval

    def check(self) -> bool:
        """Confirm that a held lock is still held; drop leadership if not. True if leader."""
        with self._lock:
            if not self._held:
                return False
            try:
                still = self._check_postgres() if self._postgres else self._file is not None
            except Exception as error:
                log.warning("event=leadership_error %s error=%r", self._fields(), str(error)[:200])
                still = False
            if still:
                self._confirmed_at = time.monotonic()
                return True
            log.warning("event=leadership_lost %s", self._fields())
            self._drop()
            return False

    def start(self) -> Leadership:
        """Keep trying to lead (and checking while leading) in a background thread."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, name=f"leadership-{self.name}", daemon=True
            )
            self._thread.start()
        return self

    def release(self) -> None:
        """Stop the thread and give the lock up: another process takes over at its next try."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        self._thread = None
        with self._lock:
            if self._held:
                log.info("event=leadership_released %s", self._fields())
            if self._postgres and self._connection is not None and self._held:
                try:
                    cursor = self._connection.cursor()
                    cursor.execute("SELECT pg_advisory_unlock(%s, %s)", lock_key(self.name))
                    cursor.close()
                except Exception:  # closing the connection below releases it anyway
                    pass
            self._drop()
        if self._engine is not None:
            self._engine.dispose()

    def __enter__(self) -> Leadership:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.release()

    # ------------------------------------------------------------ PostgreSQL

    def _try_postgres(self) -> bool:
        if self._connection is None:
            assert self._engine is not None
            self._connection = self._engine.raw_connection()
        cursor = self._connection.cursor()
        try:
            cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", lock_key(self.name))
            row = cursor.fetchone()
        finally:
            cursor.close()
        return bool(row and row[0])

    def _check_postgres(self) -> bool:
        if self._connection is None:
            return False
        classid, objid = lock_key(self.name)
        cursor = self._connection.cursor()
        try:
            cursor.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND pid = pg_backend_pid() AND classid = %s AND objid = %s AND objsubid = 2",
                (classid, objid),
            )
            row = cursor.fetchone()
        finally:
            cursor.close()
        return bool(row and row[0])

    # ------------------------------------------------------------ SQLite

    def lock_path(self) -> Path | None:
        """SQLite: the file whose flock is the leadership (None for an in-memory database)."""
        database = make_url(self.database.url).database
        if not database or database == ":memory:":
            return None
        return Path(database).resolve().with_name(f"{Path(database).name}.{self.name}.lock")

    def _try_file(self) -> bool:
        path = self.lock_path()
        if path is None:  # one process by definition: it leads
            self._file = open(os.devnull, "rb")  # noqa: SIM115 - held for as long as we lead
            return True
        handle = open(path, "ab")  # noqa: SIM115 - held for as long as we lead
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._file = handle
        return True

    # ------------------------------------------------------------ both

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._held:
                self.check()
            if not self._held:
                self.acquire()
            self._stop.wait(self.check_interval)

    def _drop(self) -> None:
        """Forget the lock: closing its connection or file releases it wherever it still exists."""
        self._held = False
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.close()
            self._connection = None
        if self._file is not None:
            self._file.close()
            self._file = None

    def _fields(self) -> str:
        return f"leadership={self.name} pid={os.getpid()}"
