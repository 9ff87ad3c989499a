"""The conversation and feedback store: every answer and vote with provenance, PII redacted.

The bot writes, the retrain reads. `Store` is the one facade over one database - a SQLite file under
CSBOT_HOME (the default) or PostgreSQL (`database_url`; store/backends.py); its methods live with
their tables:

* store/answers.py: answers, votes (feedback) and claimed event ids;
* store/monitoring.py: monitored messages, spike alerts, sentiment corrections;
* store/runs.py: training runs and the feedback watermark;
* store/privacy.py: purge, forget a user, export, counts;
* store/inbox.py: the Slack inbox and reply ledger (`Store.inbox`);
* store/events.py: claiming an event id (the one owner; every claim runs in its caller's transaction);
* store/insights.py: each answer of a period with its votes (content gaps, the weekly view);
* core/clock.py: the time format and the one time parser; store/tables.py: the schema, once for both
  databases; store/migrate.py and store/migrations/: its one migration path (Alembic); store/schema.py:
  the SQLite file's checks and pragmas.

This module holds the connection: every write is one transaction committed durably before the method
returns (`_write`: SQLite's `BEGIN IMMEDIATE` with synchronous=FULL, or a PostgreSQL transaction); reads
go through `_read`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.settings import StoreSettings
from store import schema
from store.answers import DEFAULT_DAILY_VOTE_CAP, Answers
from store.insights import Insights
from store.monitoring import Monitoring
from store.privacy import Privacy
from store.redact import KINDS, Redactor
from store.backends import open_db
from store.runs import Runs
from store.schema import StoreError

if TYPE_CHECKING:
    from core.settings import Settings
    from store.inbox import Inbox

SALT_FILE = "salt"
SALT_META_KEY = "user_hash_salt"  # its key in store_meta (PostgreSQL: shared by every replica)


def _existing_salt(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


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
    """Answers, votes, sentiment log, training runs and the Slack inbox in one SQLite file, or in one
    PostgreSQL database when `path` is a `postgresql://` URL (see docs/store.md).

    Thread-safe. SQLite: one connection guarded by a lock; other processes may open the same file at
    the same time (WAL mode): readers never block the writer and vice versa. PostgreSQL: a pool of
    connections shared by the process's threads; any number of processes on any hosts.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        salt: str | None,
        salt_seed: str | None = None,
        daily_vote_cap: int | None = DEFAULT_DAILY_VOTE_CAP,
        redact: bool | Iterable[str] = True,
        store_message_text: bool = StoreSettings.store_message_text,
        busy_timeout: float = schema.DEFAULT_BUSY_TIMEOUT,
        cap_exempt_origins: Iterable[str] = ("import",),
    ):
        if salt is not None and not str(salt).strip():
            raise ValueError("Store needs a non-empty salt for hashing user ids")
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
        self._inbox: Inbox | None = None
        self._db = open_db(path, busy_timeout=busy_timeout)
        self.path = self._db.path  # the SQLite file, or the PostgreSQL URL without its password
        self.dialect = self._db.dialect  # "sqlite" | "postgresql"
        self._lock = self._db.lock
        if salt is None and self.dialect == "sqlite":
            self._db.close()
            raise ValueError("Store needs a salt for hashing user ids (only PostgreSQL keeps a shared one)")
        self._salt = str(salt if salt is not None else self.shared_salt(salt_seed)).encode("utf-8")

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> "Store":
        """Build the store from the settings: the database and salt under `settings.home`, the vote
        cap, redaction and message-text choices; `overrides` are Store's keyword arguments."""
        home = Path(settings.home)
        url = (getattr(settings, "database_url", None) or "").strip()
        if home.is_dir() and not os.access(home, os.W_OK) and not url:
            # Say so plainly: SQLite would fail to open the WAL files and the error reads as corruption.
            raise StoreError(f"the csbot home {home} is read-only (the database needs to write there); "
                             "make it writable or point CSBOT_HOME at a writable folder")
        # On PostgreSQL the salt lives in the database, shared by every replica and the retrain host (a home
        # that moved there seeds it with its own salt file, so its old hashes still match); on SQLite in
        # $CSBOT_HOME/salt. An explicit user_hash_salt wins on both.
        salt = settings.user_hash_salt or (None if url else load_or_create_salt(home / SALT_FILE))
        cap = settings.vote_daily_cap
        kwargs: dict[str, Any] = {
            "salt": salt,
            "daily_vote_cap": DEFAULT_DAILY_VOTE_CAP if cap is None else cap,
            "redact": settings.redact_pii,
            "store_message_text": settings.store_message_text,
        }
        kwargs.update(overrides)
        seed = _existing_salt(home / SALT_FILE) if url and salt is None else None
        store = cls(url or settings.db_path, salt_seed=seed, **kwargs)
        if seed and "salt" not in overrides and store._salt != seed.encode("utf-8"):
            store.close()
            raise StoreError(f"{home / SALT_FILE} holds another user-hash salt than the database's: votes "
                             "hashed here would not match the other replicas'; delete that file (the "
                             "database's salt is used) or set user_hash_salt")
        return store

    def shared_salt(self, seed: str | None = None) -> str:
        """The user-hash salt every process of this database shares (table store_meta): the first one to
        ask stores `seed` (or a new random one), and every replica, the retrain host and `csbot forget`
        then hash one Slack user to one hash, whatever their homes hold."""
        with self._db.write() as conn:
            conn.execute("INSERT INTO store_meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
                         (SALT_META_KEY, seed or secrets.token_hex(32)))
        return self._db.read("SELECT value FROM store_meta WHERE key = ?", (SALT_META_KEY,))[0]["value"]

    # -- plumbing ------------------------------------------------------------------------------

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    @property
    def _conn(self):
        """The SQLite connection (SQLite-only tests and benchmarks reach for it)."""
        return self._db.conn

    @property
    def inbox(self) -> Inbox:
        """The Slack inbox, reply ledger and revoked workspaces in this database (store/inbox.py)."""
        if self._inbox is None:
            from store.inbox import Inbox

            self._inbox = Inbox(self)
        return self._inbox

    def _write(self, serial: bool = True) -> AbstractContextManager:
        """One durable write transaction; the commit happens before the caller returns. `serial`: one
        such writer at a time (SQLite always; PostgreSQL through an advisory lock), which the
        read-then-write calls rely on; the inbox's claims pass False and lock rows instead."""
        return self._db.write(serial)

    def _read(self, sql: str, params: Iterable[Any] | dict = ()) -> list[dict]:
        return self._db.read(sql, params)

    def _file_errors(self) -> AbstractContextManager:
        """Raise a StoreError naming the database and what to do for an error about the database itself
        (damaged, full disk, read-only, locked, unreachable); any other error (a bug in a statement) as is."""
        return self._db.errors()

    def checkpoint(self, *, wait: float | None = None) -> bool:
        """SQLite: copy the WAL into the database file and truncate the WAL to 0 bytes
        (`PRAGMA wal_checkpoint(TRUNCATE)`): secure_delete zeroes deleted rows in the database file,
        but the WAL keeps every page version written since the last checkpoint, deleted rows too.
        PostgreSQL: nothing to do (True).

        Best effort: True when it completed. Another process's reader or writer can hold it up;
        it waits for them at most `wait` seconds (default: the busy timeout), then gives up."""
        return self._db.checkpoint(wait=wait)

    def hash_user(self, user: str | None) -> str | None:
        """The salted hash stored in place of a Slack (or CLI) user id."""
        if user is None or str(user).strip() == "":
            return None
        return hmac.new(self._salt, str(user).strip().encode("utf-8"), hashlib.sha256).hexdigest()[:32]

    def redact(self, text: str | None) -> str | None:
        return self.redactor(text)

    def schema_version(self) -> int:
        return self._db.schema_version()

    def database_status(self) -> dict:
        """What /healthz reports of the database: {"ok", "dialect", "database" (no password), "schema"}.
        A round trip to the database: raises StoreError (one line) when it cannot be reached."""
        return {"ok": True, "dialect": self.dialect, "database": str(self.path),
                "schema": f"{self.schema_version():04d}"}

    def inserted_id(self, conn: Any, sql: str, params: Iterable[Any]) -> int:
        """Run an INSERT into a table with an integer `id` and return the new row's id."""
        if self.dialect == "sqlite":
            return int(conn.execute(sql, params).lastrowid)
        return int(conn.execute(sql + " RETURNING id", params).fetchone()[0])

