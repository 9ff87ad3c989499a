"""The SQLite side of csbot's schema: file checks, connection pragmas, and the legacy steps that bring
a file from before Alembic to the baseline.

The schema itself is defined once, for SQLite and PostgreSQL alike, in store/tables.py; revisions after
the baseline are Alembic's (store/migrations/, run by store/migrate.py). Nothing else in csbot creates
or alters tables in the store's database.

How a database file is identified:
* `PRAGMA application_id` is APPLICATION_ID ("csbt") on every csbot store;
* `PRAGMA user_version` is the number of the schema it holds (the Alembic revision "0006" is 6), and
  the table `csbot_alembic_version` names the revision once the file is on the Alembic path.
Opening a path runs `open_database`, which
1. refuses anything that is not an SQLite file, naming the file (CorruptDatabaseError);
2. refuses an SQLite file that belongs to another application (ForeignDatabaseError) or was
   written by a newer csbot (SchemaTooNewError) - in all three cases without writing a byte;
3. turns on WAL mode, then brings the file to the head (`migrate`): a new file is created from
   store/tables.py; a file at user_version 1-5 runs the legacy steps (LEGACY_STEPS, sqlite-utils, never
   edited) to 6; a file at 6 is stamped with the baseline revision; later revisions run through Alembic.
   Each step is one `BEGIN IMMEDIATE` transaction that re-reads the version inside it, so concurrent
   openers cannot race.
Every connection gets foreign_keys=ON, synchronous=FULL, secure_delete=ON and a busy timeout.
"""

from __future__ import annotations

import os
import shlex
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.request import pathname2url

import store.migrate as migration_path
from core.errors import CsbotError
from store.migrate import SCHEMA_VERSION, VERSION_TABLE, revision_name

if TYPE_CHECKING:  # sqlite-utils is imported only when a migration runs (it is slow to import)
    from sqlite_utils import Database

APPLICATION_ID = 0x63736274  # b"csbt"
SQLITE_HEADER = b"SQLite format 3\x00"
DEFAULT_BUSY_TIMEOUT = 30.0  # seconds


class StoreError(CsbotError):
    """The store's database cannot be used (reported as one line by the CLI)."""


class CorruptDatabaseError(StoreError):
    """The file is not a readable SQLite database."""


class ForeignDatabaseError(StoreError):
    """The file is an SQLite database, but not a csbot store."""


class SchemaTooNewError(StoreError):
    """The database was written by a newer csbot with a schema this code does not know."""


class StoreBusyError(StoreError):
    """Another process held the write lock for longer than the busy timeout."""


class StoreFullError(StoreError):
    """The disk (or quota) holding the database has no room left."""


# SQLite's primary result codes (the low byte of an extended code such as SQLITE_IOERR_SHMSIZE).
_BUSY, _LOCKED, _READONLY, _IOERR, _CORRUPT, _FULL, _CANTOPEN, _NOTADB = 5, 6, 8, 10, 11, 13, 14, 26
_FILE_CODES = frozenset((_BUSY, _LOCKED, _READONLY, _IOERR, _CORRUPT, _FULL, _CANTOPEN, _NOTADB))
_CODE_WORDS = (("malformed", _CORRUPT), ("not a database", _NOTADB), ("disk is full", _FULL),
               ("disk i/o", _IOERR), ("readonly", _READONLY), ("locked", _BUSY), ("unable to open", _CANTOPEN))
# Less free space than this beside the database counts as a full disk: a write needs a few pages, and the
# -shm file needs 32 KiB; SQLite reports some of these failures as "disk I/O error", not "disk is full".
FULL_BELOW_BYTES = 1 << 20


def _primary_code(exc: BaseException) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF
    text = str(exc).lower()
    return next((c for word, c in _CODE_WORDS if word in text), None)


def free_bytes(path: Path) -> int | None:
    """Bytes this process may still write on the file system holding `path` (None if unknown)."""
    folder = Path(os.path.realpath(path)).parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        st = os.statvfs(folder)
    except OSError:
        return None
    return (st.f_bfree if os.geteuid() == 0 else st.f_bavail) * st.f_frsize


def describe_error(path: Path, exc: BaseException, *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> StoreError | None:
    """The one-line StoreError for an SQLite error about the database file itself (damaged, full disk,
    read-only, I/O, locked), naming the file and what to do; None for anything else (e.g. a constraint)."""
    code = _primary_code(exc)
    if code not in _FILE_CODES or not isinstance(exc, sqlite3.Error):
        return None
    check = f"sqlite3 {shlex.quote(str(path))} \"PRAGMA integrity_check\""
    free = free_bytes(path) if code in (_FULL, _IOERR, _CANTOPEN) else None
    if code == _FULL or (free is not None and free < FULL_BELOW_BYTES):
        shown = "" if free is None else f", {free // 1024} KiB free"
        return StoreFullError(f"disk full: no room to write the csbot database {path} or its -wal/-shm files "
                              f"({exc}{shown}); free some space (or `csbot models prune`), then run the command again")
    if code in (_CORRUPT, _NOTADB):
        return CorruptDatabaseError(
            f"the csbot database {path} is damaged ({exc}); restore it from a backup (`sqlite3 FILE .recover` "
            f"salvages what is still readable), and list the damage with: {check}")
    if code == _READONLY:
        return StoreError(f"the csbot database {path} is read-only ({exc}); csbot needs to write the file and its "
                          "folder: make them writable, or point CSBOT_HOME at a writable folder")
    if code == _IOERR:
        return StoreError(f"disk I/O error on the csbot database {path} ({exc}); check the disk (e.g. `dmesg`), "
                          f"then the file with: {check}")
    if code == _CANTOPEN:
        return StoreError(f"cannot open the csbot database {path} ({exc}): is its folder missing or not writable?")
    return StoreBusyError(f"{path} stayed locked by another process for {busy_timeout:g}s ({exc})")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    apply: Callable[[Database], None]


# --- migrations -------------------------------------------------------------------------------


def _m1_initial(db: Database) -> None:
    """Version 1: answers, votes (no corrections yet), processed Slack event ids."""
    from sqlite_utils.db import ForeignKey

    db["answers"].create(
        {
            "answer_id": str,
            "time": str,
            "origin": str,
            "workspace": str,
            "channel": str,
            "thread": str,
            "user_hash": str,
            "question": str,
            "intent": str,
            "confidence": float,
            "sentiment": str,
            "sources": str,  # JSON list of {doc_id, title, url, score}
            "model_version": str,
            "handoff": int,
        },
        pk="answer_id",
        not_null=["time"],
    )
    db["answers"].create_index(["time"])
    db["answers"].create_index(["user_hash"])
    db["feedback"].create(
        {
            "id": int,
            "answer_id": str,
            "user_hash": str,
            "vote": str,  # up | down | retracted
            "origin": str,  # button | reaction | modal | cli | import
            "event_id": str,
            "time": str,
        },
        pk="id",
        not_null=["answer_id", "vote", "origin", "time"],
        foreign_keys=[
            ForeignKey("feedback", "answer_id", "answers", "answer_id", on_delete="CASCADE")
        ],
    )
    db["feedback"].create_index(["answer_id", "user_hash"], unique=True)
    db["feedback"].create_index(["event_id"], unique=True)
    db["feedback"].create_index(["time"])
    db["processed_events"].create({"event_id": str, "time": str}, pk="event_id", not_null=["time"])
    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")


def _m2_corrections_monitoring_training(db: Database) -> None:
    """Version 2: vote corrections and creation time, richer answers, sentiment log, training runs."""
    answers = db["answers"]
    for column, kind in (("answer_text", str), ("doc_id", str), ("sentiment_scores", str), ("used_context", int)):
        answers.add_column(column, kind)
    feedback = db["feedback"]
    for column in ("correct_intent", "correct_doc_id", "correct_answer", "created"):
        feedback.add_column(column, str)
    db.execute("UPDATE feedback SET created = time WHERE created IS NULL")
    feedback.create_index(["user_hash", "created"])
    db["processed_events"].create_index(["time"])
    # Version 1 de-duplicated votes by feedback.event_id alone; from version 2 every vote event
    # is claimed in processed_events as "vote:<id>" - claim the ones already stored.
    db.execute(
        "INSERT OR IGNORE INTO processed_events (event_id, time)"
        " SELECT 'vote:' || event_id, time FROM feedback WHERE event_id IS NOT NULL"
    )
    db["monitored_messages"].create(
        {
            "id": int,
            "time": str,
            "workspace": str,
            "channel": str,
            "ts": str,
            "user_hash": str,
            "sentiment": str,
            "scores": str,  # JSON {negative, neutral, positive}
            "intent": str,
            "confidence": float,
            "text": str,  # NULL unless store_message_text is on; redacted
        },
        pk="id",
        not_null=["time", "channel", "ts"],
    )
    monitored = db["monitored_messages"]
    monitored.create_index(["channel", "ts"], unique=True)
    monitored.create_index(["time"])
    monitored.create_index(["channel", "time"])
    monitored.create_index(["user_hash"])
    db["training_runs"].create(
        {
            "id": int,
            "started_at": str,
            "finished_at": str,
            "status": str,
            "model_version": str,
            "data_until": str,  # newest feedback time the run learned from
            "n_feedback": int,
            "n_messages": int,
            "metrics": str,  # JSON
            "notes": str,
            "extra": str,  # JSON: any other fields the caller passed
        },
        pk="id",
        not_null=["status"],
    )
    db["training_runs"].create_index(["status", "id"])


def _m3_sentiment_corrections_alerts(db: Database) -> None:
    """Version 3: sentiment labels corrected by people (for the retrain), monitoring alerts (cooldown)."""
    db["sentiment_corrections"].create(
        {
            "id": int,
            "time": str,  # of the latest change
            "workspace": str,
            "channel": str,
            "ts": str,  # the corrected message
            "user_hash": str,
            "label": str,  # negative | neutral | positive
            "text": str,  # redacted; kept because the user submitted it for training
            "origin": str,  # modal | cli | import
            "event_id": str,
        },
        pk="id",
        not_null=["time", "channel", "ts", "label"],
    )
    corrections = db["sentiment_corrections"]
    corrections.create_index(["channel", "ts", "user_hash"], unique=True)
    corrections.create_index(["time"])
    corrections.create_index(["user_hash"])
    db["monitoring_alerts"].create(
        {
            "id": int,
            "channel": str,
            "time": str,  # the time the spike was detected at (the triggering message's time)
            "created": str,  # wall-clock time the alert was recorded
            "recent_n": int,
            "recent_negative": int,
            "baseline_n": int,
            "baseline_negative": int,
            "details": str,  # JSON: shares, bound, topics, windows
        },
        pk="id",
        not_null=["channel", "time"],
    )
    db["monitoring_alerts"].create_index(["channel", "time"])


def _m4_slack_inbox(db: Database) -> None:
    """Version 4: the durable Slack intake (docs/slack.md): the inbox of acknowledged requests, the
    ledger of posted replies, revoked workspaces and the serving processes that take inbox work."""
    db["slack_inbox"].create(
        {
            "id": int,
            "received": float,  # unix time the request was acknowledged
            "event_id": str,  # the Events API event id claimed with it (NULL for interactions)
            "team": str,
            "function": str,  # the lazy listener to run (its qualified name)
            "work": str,  # interactive | answer | sentiment (the shedding class)
            "priority": int,  # lower first
            "mode": str,  # http | socket_mode
            "content_type": str,
            "body": str,  # the raw payload; NULL once the item failed for good
            "state": str,  # pending | running | failed
            "late": int,  # 1: queued while the inbox was full (answered with the busy note)
            "owner": str,  # the serving process running it
            "attempts": int,
            "not_before": float,  # unix time of the next try (retries back off)
            "error": str,
        },
        pk="id",
        not_null=["received", "function", "work", "priority", "state"],
        defaults={"attempts": 0, "late": 0, "not_before": 0},
    )
    db["slack_inbox"].create_index(["state", "priority", "id"])
    db["slack_inbox"].create_index(["owner"])
    db["slack_posts"].create(
        {
            "key": str,  # e.g. "answer:<channel>:<question ts>"
            "answer_id": str,
            "channel": str,
            "thread_ts": str,
            "question_ts": str,
            "ts": str,  # the posted message; NULL while the post is under way
            "message": str,  # JSON chat.postMessage arguments of a post still owed (escalations)
            "time": str,
        },
        pk="key",
        not_null=["time"],
    )
    db["slack_posts"].create_index(["channel", "ts"])
    db["slack_posts"].create_index(["channel", "thread_ts"])
    db["slack_posts"].create_index(["time"])
    db["slack_workspaces"].create({"team": str, "state": str, "reason": str, "time": str}, pk="team",
                                  not_null=["state", "time"])
    db["slack_workers"].create({"owner": str, "host": str, "pid": int, "started": float, "heartbeat": float},
                               pk="owner", not_null=["heartbeat"])


def _m5_composed_answers(db: Database) -> None:
    """Version 5: composed answers (serving/compose.py): how an answer was made ("select" or
    "compose") and the composition's report (outcome, guard, timings; JSON). The composed text itself
    is `answer_text`, which the nightly retrain learns from when it got a 👍 or 👎."""
    db["answers"].add_column("answer_mode", str)
    db["answers"].add_column("composition", str)


def _m6_answer_sections(db: Database) -> None:
    """Version 6: the id of the section an answer quoted, so a 👍 teaches that section (the retrain
    files the confirmed question under it) and not only the article."""
    db["answers"].add_column("section", str)


# The steps a SQLite file took before the Alembic path (each brought it to `user_version = n`): only a
# file older than the baseline runs them now. Never edit one; new schema changes are Alembic revisions.
MIGRATIONS: list[Migration] = [
    Migration(1, "initial", _m1_initial),
    Migration(2, "corrections_monitoring_training", _m2_corrections_monitoring_training),
    Migration(3, "sentiment_corrections_alerts", _m3_sentiment_corrections_alerts),
    Migration(4, "slack_inbox", _m4_slack_inbox),
    Migration(5, "composed_answers", _m5_composed_answers),
    Migration(6, "answer_sections", _m6_answer_sections),
]
LEGACY_STEPS = MIGRATIONS
BASELINE_VERSION = len(MIGRATIONS)  # the Alembic baseline revision "0006" is this schema
assert [m.version for m in MIGRATIONS] == list(range(1, BASELINE_VERSION + 1))

# --- opening ----------------------------------------------------------------------------------

_migrate_lock = threading.Lock()


def connect(path: Path, *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT, read_only: bool = False) -> sqlite3.Connection:
    """A connection with csbot's pragmas. Callers must have run `check_file` / `open_database`."""
    if read_only:
        conn = sqlite3.connect(
            f"file:{pathname2url(str(Path(path).resolve()))}?mode=ro",
            uri=True,
            timeout=busy_timeout,
            check_same_thread=False,
        )
    else:
        conn = sqlite3.connect(str(path), timeout=busy_timeout, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA secure_delete = ON")
    return conn


def check_file(path: Path) -> str:
    """Classify `path` without writing to it: "new" (absent or empty) or "sqlite". Raises on garbage."""
    path = Path(path)
    if not path.exists():
        return "new"
    if not path.is_file():
        raise CorruptDatabaseError(f"{path} is not a regular file; cannot use it as the csbot database")
    try:
        with open(path, "rb") as fh:
            header = fh.read(100)
    except OSError as exc:
        raise StoreError(f"cannot read the csbot database {path}: {exc.strerror or exc}") from exc
    if not header:
        return "new"
    if len(header) < 100 or not header.startswith(SQLITE_HEADER):
        raise CorruptDatabaseError(
            f"{path} is not an SQLite database (corrupt or some other file); "
            "csbot will not use or overwrite it - move it away or set CSBOT_HOME elsewhere"
        )
    return "sqlite"


def inspect(path: Path, *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> dict:
    """Read-only look at an existing file: application id, schema version and table names."""
    try:
        conn = connect(path, busy_timeout=busy_timeout, read_only=True)
    except sqlite3.Error as exc:
        raise (describe_error(path, exc, busy_timeout=busy_timeout)
               or CorruptDatabaseError(f"{path} cannot be opened as an SQLite database: {exc}")) from exc
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        objects = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        _probe_roots(conn)
    except sqlite3.DatabaseError as exc:
        raise (describe_error(path, exc, busy_timeout=busy_timeout)
               or CorruptDatabaseError(f"{path} is a damaged SQLite database ({exc}); csbot will not use it")) from exc
    finally:
        conn.close()
    return {"application_id": app_id, "user_version": version, "tables": tables, "objects": objects}


def _probe_roots(conn: sqlite3.Connection) -> None:
    """Read the first entry of every table and index. Garbage in a root page, or on the way to the
    first entry, then shows at open whatever the command (a report reads other tables than a vote
    writes), for about 40 page reads; damage deeper in a b-tree shows when a command reads it."""
    def quoted(name: str) -> str:
        return '"' + name.replace('"', '""') + '"'

    for kind, name, table in conn.execute(
            "SELECT type, name, tbl_name FROM sqlite_master WHERE type IN ('table', 'index') AND rootpage > 0"
            " ORDER BY rootpage").fetchall():
        if kind == "table":
            conn.execute(f"SELECT * FROM {quoted(table)} LIMIT 1").fetchall()
            continue
        columns = [row[2] for row in conn.execute(f"PRAGMA index_info({quoted(name)})")]
        if not columns or None in columns:
            continue  # an index on an expression: read when used
        order = ", ".join(quoted(c) for c in columns)
        try:
            conn.execute(f"SELECT {order} FROM {quoted(table)} INDEXED BY {quoted(name)} ORDER BY {order} LIMIT 1"
                         ).fetchall()
        except sqlite3.OperationalError as exc:
            if _primary_code(exc) in (_CORRUPT, _NOTADB):
                raise
            # e.g. "no query solution" for an index with another collation: read when used


def _verify_ours(path: Path, info: dict) -> bool:
    """True if the file is an (older or current) csbot store, False if it is an empty database."""
    if info["application_id"] == APPLICATION_ID:
        if info["user_version"] > migration_path.SCHEMA_VERSION:
            raise SchemaTooNewError(
                f"{path} has csbot schema version {info['user_version']}, newer than this csbot "
                f"understands ({migration_path.SCHEMA_VERSION}); upgrade csbot"
            )
        return True
    if info["application_id"] == 0 and info["objects"] == 0 and info["user_version"] == 0:
        return False
    shown = ", ".join(info["tables"][:8]) + (", ..." if len(info["tables"]) > 8 else "")
    raise ForeignDatabaseError(
        f"{path} is an SQLite database that does not belong to csbot "
        f"(application_id={info['application_id']}, tables: {shown or 'none'}); "
        "csbot will not modify it - move it away or set CSBOT_HOME elsewhere"
    )


def schema_version(conn: sqlite3.Connection) -> int:
    return conn.execute("PRAGMA user_version").fetchone()[0]


def stamped_revision(conn: sqlite3.Connection) -> str | None:
    """The Alembic revision the file is stamped with (None before the Alembic path)."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (VERSION_TABLE,)).fetchone() is None:
        return None
    row = conn.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchone()
    return row[0] if row else None


def migrate(conn: sqlite3.Connection, *, target: int | None = None, path: Path | None = None) -> list[int]:
    """Bring the file up to schema `target` (default: the head). Returns the versions applied.

    A new (empty) file is created from store/tables.py at the head; an older file runs the legacy steps
    up to the baseline, is stamped with it, and runs the Alembic revisions after it (`path` names the
    file for them). `target` below the baseline only serves tests that need an old file."""
    head = migration_path.SCHEMA_VERSION
    target = head if target is None else target
    version = schema_version(conn)
    if version >= target and (target < BASELINE_VERSION or stamped_revision(conn) is not None):
        return []
    applied: list[int] = []
    with _migrate_lock:
        if version == 0 and target >= head and _create_if_empty(conn):
            return [head]
        for migration in MIGRATIONS:
            if migration.version > min(target, BASELINE_VERSION):
                break
            if schema_version(conn) >= migration.version:
                continue
            if _step(conn, migration.version, lambda: migration.apply(_sqlite_utils(conn))):
                applied.append(migration.version)
        if target >= BASELINE_VERSION and schema_version(conn) == BASELINE_VERSION:
            _step(conn, BASELINE_VERSION, lambda: _stamp(conn, revision_name(BASELINE_VERSION)), stamping=True)
        if target > BASELINE_VERSION and schema_version(conn) < target:
            if path is None:
                raise StoreError("cannot run the schema's Alembic revisions without the database's path")
            applied += _alembic_upgrade(path, target)
    return applied


def _sqlite_utils(conn: sqlite3.Connection) -> "Database":
    from sqlite_utils import Database

    return Database(conn, execute_plugins=False)


def _step(conn: sqlite3.Connection, version: int, apply: Callable[[], None], *, stamping: bool = False) -> bool:
    """Run one step to `version` in its own BEGIN IMMEDIATE transaction with the version bump; False
    when another process got there first (the version is re-read inside the transaction)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        done = stamped_revision(conn) is not None if stamping else schema_version(conn) >= version
        if done:
            conn.execute("ROLLBACK")
            return False
        apply()
        conn.execute(f"PRAGMA user_version = {version}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return True


def _stamp(conn: sqlite3.Connection, revision: str) -> None:
    conn.execute(f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (version_num VARCHAR(32) NOT NULL,"
                 f" CONSTRAINT {VERSION_TABLE}_pkc PRIMARY KEY (version_num))")
    conn.execute(f"DELETE FROM {VERSION_TABLE}")
    conn.execute(f"INSERT INTO {VERSION_TABLE} (version_num) VALUES (?)", (revision,))


def _create_if_empty(conn: sqlite3.Connection) -> bool:
    """Create the whole schema from store/tables.py in a new file, stamped with the head; False when the
    file is not empty (another process created it first, or it is an old store)."""
    head = migration_path.SCHEMA_VERSION
    conn.execute("BEGIN IMMEDIATE")
    try:
        if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] or schema_version(conn):
            conn.execute("ROLLBACK")
            return False
        for statement in migration_path.create_ddl("sqlite"):
            if not statement.startswith(f"CREATE TABLE {VERSION_TABLE}"):
                conn.execute(statement)
        _stamp(conn, revision_name(head))
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version = {head}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return True


def _alembic_upgrade(path: Path, target: int) -> list[int]:
    """Run the Alembic revisions after the file's own up to `target`, in one BEGIN IMMEDIATE transaction
    on a connection of SQLAlchemy's, and set user_version to match. Returns [target] or []."""
    from sqlalchemy import create_engine, event
    from sqlalchemy.pool import NullPool

    engine = create_engine(f"sqlite:///{path}", poolclass=NullPool)

    @event.listens_for(engine, "connect")
    def _autocommit_driver(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # SQLAlchemy's "begin" below issues the BEGIN itself
        dbapi_conn.execute("PRAGMA busy_timeout = 30000")

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    try:
        with engine.connect() as connection, connection.begin():
            if connection.exec_driver_sql("PRAGMA user_version").scalar() >= target:
                return []
            migration_path.upgrade(connection, revision_name(target), migration_path.EXTRA_LOCATIONS)
            connection.exec_driver_sql(f"PRAGMA user_version = {int(target)}")
    finally:
        engine.dispose()
    return [target]


def open_database(
    path: Path, *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT, target_version: int | None = None
) -> sqlite3.Connection:
    """Open (creating if needed) the csbot store at `path`, upgraded to the current schema."""
    path = Path(path)
    kind = check_file(path)
    if kind == "sqlite":
        _verify_ours(path, inspect(path, busy_timeout=busy_timeout))
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "new" and not path.exists():
        # Private from the start: SQLite gives the -wal and -shm files the same permissions.
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            pass
    try:
        conn = connect(path, busy_timeout=busy_timeout)
    except sqlite3.Error as exc:
        raise (describe_error(path, exc, busy_timeout=busy_timeout)
               or StoreError(f"cannot open the csbot database {path}: {exc}")) from exc
    try:
        if kind == "new":
            # Another process may have created it between check_file and connect.
            _verify_ours(path, _inspect_conn(conn))
        if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            conn.execute("PRAGMA journal_mode = WAL")
        migrate(conn, target=target_version, path=path)
    except sqlite3.OperationalError as exc:
        conn.close()
        raise (describe_error(path, exc, busy_timeout=busy_timeout)
               or StoreError(f"cannot prepare the csbot database {path}: {exc}")) from exc
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise (describe_error(path, exc, busy_timeout=busy_timeout)
               or CorruptDatabaseError(f"{path} is a damaged SQLite database ({exc})")) from exc
    except BaseException:
        conn.close()
        raise
    return conn


def _inspect_conn(conn: sqlite3.Connection) -> dict:
    return {
        "application_id": conn.execute("PRAGMA application_id").fetchone()[0],
        "user_version": conn.execute("PRAGMA user_version").fetchone()[0],
        "tables": [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")],
        "objects": conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0],
    }

