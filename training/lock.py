"""Exclusive `fcntl` locks on files under CSBOT_HOME: one retrain at a time (`retrain.lock`) and one
writer of the model store at a time (`models.lock`).

The kernel releases an fcntl lock when its process dies, however it dies (SIGKILL included), so a
crashed run never leaves a stale lock behind: the file may still exist, but nobody holds it and the
next run takes it at once. The file's content (what holds it, pid, host, start time) is only
informational, for the "another … is running" messages; it is never trusted to decide anything.

    with RetrainLock(settings.home) as lock:      # raises LockBusy if another run holds it
        ...
    with hold_writer(settings, "ingest"):         # waits up to writer_wait_seconds, then LockBusy
        ...

With the store in PostgreSQL (`database_url`), replicas on several hosts share it, so the same locks are
PostgreSQL session-level advisory locks instead (`pg_try_advisory_lock`, keyed by the lock's name): the
server releases one when its holder's connection ends, a killed process included, like the kernel does
an fcntl lock. The holder's details are then its connection's `application_name`, read back from
`pg_stat_activity` for the messages.

The writer lock serialises everything that reads the champion to build on it and then moves the
champion pointer or deletes versions: ingest (parse, merge with the champion's articles, build,
promote), the retrain's build-and-promote step (it trains without it), `csbot forget`'s rebuild and
`csbot models promote/rollback/prune`. Without it two writers starting from the same champion would
each promote a version built on it, and the last to finish would drop the other's change. A
process must not take the same lock twice (a second `flock` on a new descriptor waits on the first).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
import zlib
from pathlib import Path

from core.errors import CsbotError

LOCK_FILE = "retrain.lock"
WRITER_LOCK_FILE = "models.lock"
POLL_SECONDS = 0.2


class LockBusy(CsbotError):
    """Another process holds the lock (after `waited` seconds of waiting, when it waited)."""

    def __init__(self, path: Path, holder: dict | None, what: str = "retrain", waited: float | None = None):
        self.path = path
        self.holder = holder or {}
        self.waited = waited
        what = self.holder.get("what") or what
        who = f"pid {self.holder.get('pid', '?')}"
        if self.holder.get("started"):
            who += f", started {self.holder['started']}"
        if waited is None:
            super().__init__(f"another {what} is running ({who}; lock {path})")
        else:
            super().__init__(f"another {what} ({who}) still holds {path} after {waited:g}s of waiting; try again "
                             f"when it has finished (the writer_wait_seconds setting says how long to wait)")


def waiting_line(holder: dict | None) -> str:
    """The one line a process prints when it has to wait for the writer lock."""
    holder = holder or {}
    return (f"waiting for another {holder.get('what') or 'writer'} (pid {holder.get('pid', '?')}, "
            f"started {holder.get('started', '?')}) to finish…")


class HomeLock:
    """An exclusive lock on the file `name` under `home`; `what` names the holder in messages. With a
    PostgreSQL `database_url`, an advisory lock on that database named by `name` instead."""

    def __init__(self, home: str | os.PathLike, name: str, *, what: str, database_url: str | None = None):
        self.path = Path(home) / name
        self.what = what
        self._fd: int | None = None
        self.database_url = (database_url or "").strip() or None
        self._conn = None  # the advisory lock's own connection (PostgreSQL)
        self.key = zlib.crc32(f"csbot:lock:{name}".encode())
        if self.database_url:
            from store.migrate import shown_url

            self.path = f"the advisory lock {name} in {shown_url(self.database_url)}"  # what messages name

    @property
    def held(self) -> bool:
        return self._fd is not None or self._conn is not None

    def holder(self) -> dict | None:
        """What the holder wrote into the file (informational), or None."""
        if self.database_url:
            return _advisory_holder(self)
        try:
            return json.loads(self.path.read_text() or "null")
        except (OSError, ValueError):
            return None

    def acquire(self, *, wait: bool = False, timeout: float | None = None, on_wait=None) -> "HomeLock":
        """Take the lock; `wait=False` raises LockBusy at once when it is held elsewhere. With `wait`,
        polls until `timeout` seconds have passed (None: forever), then raises LockBusy; `on_wait(holder)`
        is called once, when it first has to wait (holder: what the other process wrote, or {})."""
        if self.held:
            return self
        if self.database_url:
            return _acquire_advisory(self, wait=wait, timeout=timeout, on_wait=on_wait)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        started = time.monotonic()
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = time.monotonic() - started
                if not wait or (timeout is not None and waited >= timeout):
                    os.close(fd)
                    raise LockBusy(self.path, self.holder(), self.what, waited=timeout if wait else None) from None
                holder = self.holder()
                # The holder writes its details just after it locks: give it a moment before telling.
                if on_wait is not None and not told and (holder or waited >= 1.0):
                    on_wait(holder or {})
                    told = True
                time.sleep(POLL_SECONDS if timeout is None else max(0.0, min(POLL_SECONDS, timeout - waited)))
        os.ftruncate(fd, 0)
        info = {"what": self.what, "pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        os.write(fd, json.dumps(info).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
            finally:
                conn.close()  # ending the session releases it in any case
            return
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "HomeLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _acquire_advisory(lock: HomeLock, *, wait: bool, timeout: float | None, on_wait) -> HomeLock:
    import psycopg

    from store.migrate import libpq_url, shown_url

    name = f"csbot|{lock.what}|{os.getpid()}|{socket.gethostname()}"[:63]  # PostgreSQL keeps 63 bytes
    try:
        conn = psycopg.connect(libpq_url(lock.database_url), autocommit=True, connect_timeout=10,
                               application_name=name)
    except psycopg.OperationalError as exc:
        raise CsbotError(f"cannot take the {lock.what} lock: cannot reach the csbot database "
                         f"{shown_url(lock.database_url)} ({str(exc).strip().splitlines()[0]})") from None
    started = time.monotonic()
    told = False
    while not conn.execute("SELECT pg_try_advisory_lock(%s)", (lock.key,)).fetchone()[0]:
        waited = time.monotonic() - started
        if not wait or (timeout is not None and waited >= timeout):
            holder = _advisory_holder(lock, conn)
            conn.close()
            raise LockBusy(lock.path, holder, lock.what, waited=timeout if wait else None)
        if on_wait is not None and not told:
            on_wait(_advisory_holder(lock, conn) or {})
            told = True
        time.sleep(POLL_SECONDS if timeout is None else max(0.0, min(POLL_SECONDS, timeout - waited)))
    lock._conn = conn
    return lock


def _advisory_holder(lock: HomeLock, conn=None) -> dict | None:
    """The holder's details from its connection's application_name (None if nobody holds it)."""
    own = conn is None
    try:
        if own:
            import psycopg

            from store.migrate import libpq_url

            conn = psycopg.connect(libpq_url(lock.database_url), autocommit=True, connect_timeout=10)
        row = conn.execute(
            "SELECT a.application_name, to_char(a.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
            " FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.granted AND l.database = (SELECT oid FROM pg_database"
            " WHERE datname = current_database()) AND ((l.classid::bigint << 32) | l.objid::bigint) = %s LIMIT 1",
            (lock.key,)).fetchone()
    except Exception:  # noqa: BLE001 - informational only
        return None
    finally:
        if own and conn is not None:
            conn.close()
    if row is None:
        return None
    parts = row[0].split("|")
    if len(parts) < 4 or parts[0] != "csbot":
        return {"what": row[0], "started": row[1]}
    return {"what": parts[1], "pid": int(parts[2]) if parts[2].isdigit() else parts[2], "host": parts[3],
            "started": row[1]}


class RetrainLock(HomeLock):
    """One retrain at a time: `CSBOT_HOME/retrain.lock` (or an advisory lock in PostgreSQL)."""

    def __init__(self, home: str | os.PathLike, name: str = LOCK_FILE, *, database_url: str | None = None):
        super().__init__(home, name, what="retrain", database_url=database_url)


class WriterLock(HomeLock):
    """One writer of the model store at a time: `CSBOT_HOME/models.lock` (or an advisory lock in
    PostgreSQL); `what` (ingest, retrain, forget, models promote …) is what a waiting process is told it
    waits for."""

    def __init__(self, home: str | os.PathLike, what: str, *, database_url: str | None = None):
        super().__init__(home, WRITER_LOCK_FILE, what=what, database_url=database_url)


def say_waiting(holder: dict) -> None:
    print(waiting_line(holder), file=sys.stderr, flush=True)


def hold_writer(settings, what: str, *, on_wait=None) -> WriterLock:
    """Take the writer lock on `settings.home`, waiting up to `settings.writer_wait_seconds`; tells
    `on_wait(holder)` (default: the waiting line on stderr) once if it has to wait. Raises LockBusy
    (one line; the CLI exits 2) when the wait runs out. Use as `with hold_writer(...):`."""
    return WriterLock(settings.home, what, database_url=getattr(settings, "database_url", None)).acquire(
        wait=True, timeout=settings.writer_wait_seconds, on_wait=on_wait or say_waiting)
