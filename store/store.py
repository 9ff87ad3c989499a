"""The conversation and feedback store: every answer and vote with provenance, PII redacted.

The bot writes, the retrain reads. `Store` is the one facade over one SQLite file; its methods
live with their tables:

* store/answers.py: answers, votes (feedback) and claimed event ids;
* store/monitoring.py: monitored messages, spike alerts, sentiment corrections;
* store/runs.py: training runs and the feedback watermark;
* store/privacy.py: purge, forget a user, export, counts;
* store/inbox.py: the Slack inbox and reply ledger (`Store.inbox`);
* store/events.py: claiming an event id (the one owner; every claim runs in its caller's transaction);
* store/insights.py: each answer of a period with its votes (content gaps, the weekly view);
* core/clock.py: the time format and the one time parser; store/schema.py: the file and migrations.

This module holds the connection: every write is one `BEGIN IMMEDIATE` transaction committed with
synchronous=FULL before the method returns (`_write`); reads share the same connection (`_read`).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.settings import StoreSettings
from store import schema
from store.answers import DEFAULT_DAILY_VOTE_CAP, Answers
from store.insights import Insights
from store.monitoring import Monitoring
from store.privacy import Privacy
from store.redact import KINDS, Redactor
from store.rows import dicts
from store.runs import Runs
from store.schema import StoreError

if TYPE_CHECKING:
    from core.settings import Settings
    from store.inbox import Inbox

SALT_FILE = "salt"


def load_or_create_salt(path: Path) -> str:
    """Read the user-hash salt from `path`, creating it (random, mode 0600) the first time.

    Creation is atomic (write a temporary file, then hard-link it into place), so concurrent
    first runs agree on one salt. Losing this file makes stored user hashes unlinkable:
    `forget --user` can then no longer find a user's rows.
    """
    path = Path(path)
    try:
        salt = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        salt = ""
    except OSError as exc:
        raise StoreError(f"cannot read the salt file {path}: {exc.strerror or exc}") from exc
    if salt:
        return salt
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(secrets.token_hex(32) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)
    salt = path.read_text(encoding="utf-8").strip()
    if not salt:
        raise StoreError(f"the salt file {path} is empty; delete it to generate a new one")
    return salt


# --- the store --------------------------------------------------------------------------------


class Store(Answers, Monitoring, Runs, Privacy, Insights):
    """Answers, votes, sentiment log and training runs in one SQLite file (see docs/store.md).

    Thread-safe: one connection guarded by a lock. Other processes may open the same file at
    the same time (WAL mode): readers never block the writer and vice versa.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        salt: str,
        daily_vote_cap: int | None = DEFAULT_DAILY_VOTE_CAP,
        redact: bool | Iterable[str] = True,
        store_message_text: bool = StoreSettings.store_message_text,
        busy_timeout: float = schema.DEFAULT_BUSY_TIMEOUT,
        cap_exempt_origins: Iterable[str] = ("import",),
    ):
        if not salt or not str(salt).strip():
            raise ValueError("Store needs a non-empty salt for hashing user ids")
        self.path = Path(path)
        self._salt = str(salt).encode("utf-8")
        self.daily_vote_cap = int(daily_vote_cap) if daily_vote_cap else None
        if redact is True or redact is None:  # None: not configured, so the safe default
            self.redactor = Redactor(KINDS)
        elif redact is False:
            self.redactor = Redactor(())
        else:
            self.redactor = Redactor(redact)
        self.store_message_text = bool(store_message_text)
        self.cap_exempt_origins = frozenset(cap_exempt_origins)
        self.busy_timeout = busy_timeout
        self._lock = threading.RLock()
        self._inbox: Inbox | None = None
        self._conn = schema.open_database(self.path, busy_timeout=busy_timeout)

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> "Store":
        """Build the store from the settings: the database and salt under `settings.home`, the vote
        cap, redaction and message-text choices; `overrides` are Store's keyword arguments."""
        home = Path(settings.home)
        if home.is_dir() and not os.access(home, os.W_OK):
            # Say so plainly: SQLite would fail to open the WAL files and the error reads as corruption.
            raise StoreError(f"the csbot home {home} is read-only (the database needs to write there); "
                             "make it writable or point CSBOT_HOME at a writable folder")
        salt = settings.user_hash_salt or load_or_create_salt(home / SALT_FILE)
        cap = settings.vote_daily_cap
        kwargs: dict[str, Any] = {
            "salt": salt,
            "daily_vote_cap": DEFAULT_DAILY_VOTE_CAP if cap is None else cap,
            "redact": settings.redact_pii,
            "store_message_text": settings.store_message_text,
        }
        kwargs.update(overrides)
        return cls(settings.db_path, **kwargs)

    # -- plumbing ------------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            try:
                self._conn.close()
            except sqlite3.Error:
                pass

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    @property
    def inbox(self) -> Inbox:
        """The Slack inbox, reply ledger and revoked workspaces in this database (store/inbox.py)."""
        if self._inbox is None:
            from store.inbox import Inbox

            self._inbox = Inbox(self)
        return self._inbox

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One durable write transaction; the commit happens before the caller returns."""
        with self._lock:
            conn = self._conn
            with self._file_errors():
                conn.execute("BEGIN IMMEDIATE")
            with self._file_errors():
                try:
                    yield conn
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        # On a full or damaged disk the rollback may fail too; the first error says why.
                        with suppress(sqlite3.Error):
                            conn.execute("ROLLBACK")
                    raise

    def _read(self, sql: str, params: Iterable[Any] = ()) -> list[dict]:
        with self._lock, self._file_errors():
            return dicts(self._conn.execute(sql, tuple(params)))

    @contextmanager
    def _file_errors(self) -> Iterator[None]:
        """Raise a StoreError naming the file and what to do for an SQLite error about the file
        (damaged, full disk, read-only, locked); any other SQLite error (a bug in a statement) as is."""
        try:
            yield
        except sqlite3.Error as exc:
            error = schema.describe_error(self.path, exc, busy_timeout=self.busy_timeout)
            if error is None:
                raise
            raise error from exc

    def checkpoint(self, *, wait: float | None = None) -> bool:
        """Copy the WAL into the database file and truncate the WAL to 0 bytes
        (`PRAGMA wal_checkpoint(TRUNCATE)`): secure_delete zeroes deleted rows in the database file,
        but the WAL keeps every page version written since the last checkpoint, deleted rows too.

        Best effort: True when it completed. Another process's reader or writer can hold it up;
        it waits for them at most `wait` seconds (default: the busy timeout), then gives up."""
        with self._lock:
            conn = self._conn
            try:
                if wait is not None:
                    conn.execute(f"PRAGMA busy_timeout = {int(wait * 1000)}")
                busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                return busy == 0
            except sqlite3.Error:
                return False
            finally:
                if wait is not None:
                    with suppress(sqlite3.Error):
                        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")

    def hash_user(self, user: str | None) -> str | None:
        """The salted hash stored in place of a Slack (or CLI) user id."""
        if user is None or str(user).strip() == "":
            return None
        return hmac.new(self._salt, str(user).strip().encode("utf-8"), hashlib.sha256).hexdigest()[:32]

    def redact(self, text: str | None) -> str | None:
        return self.redactor(text)

    def schema_version(self) -> int:
        with self._lock, self._file_errors():
            return schema.schema_version(self._conn)

