"""The store's two databases behind one small interface: a SQLite file under CSBOT_HOME (the default)
or PostgreSQL (`database_url`). `Store` (store/store.py) and the table modules see only this:

* `write(serial=True)`: one durable transaction, committed before the `with` block's caller returns;
  yields a connection whose `execute(sql, params)` returns a DB-API cursor;
* `read(sql, params)`: rows as dicts;
* `errors()`: the driver's errors about the database itself (a damaged file, a full disk, an
  unreachable server) raised as one StoreError line naming it; a statement's own error stays as is;
* `checkpoint`, `schema_version`, `export_cursor`, `close`.

The SQL is written once, in the subset both dialects take: `?` (or `:name`) parameters, `INSERT ... ON
CONFLICT`, `IS` for a NULL-safe comparison, integer booleans. `PostgresConn` rewrites the three
spellings PostgreSQL has its own for (`%s`, `%(name)s`, `IS NOT DISTINCT FROM`); nothing else differs
but `Dialect.lock_rows` (the inbox's `FOR UPDATE SKIP LOCKED`) and `inserted_id`.

Why plain SQL over the drivers and not SQLAlchemy's engine for the queries: the SQLite default must
keep its speed (a durable vote is five statements; SQLAlchemy's execution layer adds tens of
microseconds each), and the statements are few and short. SQLAlchemy owns the schema
(store/tables.py), Alembic the migrations, and SQLAlchemy's pool the PostgreSQL connections.
"""

from __future__ import annotations

import functools
import re
import sqlite3
import threading
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from store import migrate, schema
from store.rows import dicts
from store.schema import SchemaTooNewError, StoreBusyError, StoreError

# The key of the transaction-level advisory lock every `serial` write takes on PostgreSQL: the
# read-then-write calls (a vote's cap and last-write-wins, an alert's cool-down, an inbox's depth) rely
# on one writer at a time, as SQLite's BEGIN IMMEDIATE gives them. The inbox's claim path does not.
WRITE_LOCK_KEY = zlib.crc32(b"csbot:store:write")
MIGRATE_LOCK_KEY = zlib.crc32(b"csbot:store:migrate")


class SqliteDb:
    """One SQLite file: one connection behind a lock (WAL: other processes read and write alongside)."""

    dialect = "sqlite"
    lock_rows = ""  # BEGIN IMMEDIATE already keeps every other writer out

    def __init__(self, path: Path, *, busy_timeout: float):
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self.lock = threading.RLock()
        self.conn = schema.open_database(self.path, busy_timeout=busy_timeout)

    def close(self) -> None:
        with self.lock:
            with suppress(sqlite3.Error):
                self.conn.close()

    @contextmanager
    def write(self, serial: bool = True) -> Iterator[sqlite3.Connection]:
        with self.lock:
            conn = self.conn
            with self.errors():
                conn.execute("BEGIN IMMEDIATE")
            with self.errors():
                try:
                    yield conn
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        # On a full or damaged disk the rollback may fail too; the first error says why.
                        with suppress(sqlite3.Error):
                            conn.execute("ROLLBACK")
                    raise

    def read(self, sql: str, params: Iterable[Any] | dict = ()) -> list[dict]:
        with self.lock, self.errors():
            return dicts(self.conn.execute(sql, params if isinstance(params, dict) else tuple(params)))

    @contextmanager
    def errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            error = schema.describe_error(self.path, exc, busy_timeout=self.busy_timeout)
            if error is None:
                raise
            raise error from exc

    def checkpoint(self, *, wait: float | None = None) -> bool:
        with self.lock:
            conn = self.conn
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

    def schema_version(self) -> int:
        with self.lock, self.errors():
            return schema.schema_version(self.conn)

    @contextmanager
    def snapshot(self) -> Iterator[Any]:
        """A read-only connection holding one consistent snapshot (export): writers are never blocked."""
        with self.errors():
            conn = schema.connect(self.path, busy_timeout=self.busy_timeout, read_only=True)
        try:
            with self.errors():
                conn.execute("BEGIN")
                yield conn
        finally:
            conn.close()


# --- PostgreSQL -------------------------------------------------------------------------------

_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
_NULL_SAFE = re.compile(r"\bIS \?")


@functools.lru_cache(maxsize=512)
def postgres_sql(sql: str) -> str:
    """One statement of the shared SQL in psycopg's spelling (cached: the store's statements are few)."""
    sql = sql.replace("%", "%%")
    sql = _NULL_SAFE.sub("IS NOT DISTINCT FROM ?", sql)
    sql = _NAMED.sub(r"%(\1)s", sql)
    return sql.replace("?", "%s")


class PostgresConn:
    """A psycopg connection taking the shared SQL (see `postgres_sql`)."""

    __slots__ = ("raw",)

    def __init__(self, raw):
        self.raw = raw

    def execute(self, sql: str, params: Iterable[Any] | dict = ()):
        cursor = self.raw.cursor()
        cursor.execute(postgres_sql(sql), params if isinstance(params, dict) else tuple(params))
        return cursor


class PostgresDb:
    """PostgreSQL through SQLAlchemy's connection pool and psycopg 3; the schema must be at the head
    (`csbot db upgrade`), else the open refuses with one line."""

    dialect = "postgresql"
    lock_rows = " FOR UPDATE SKIP LOCKED"

    def __init__(self, url: str, *, busy_timeout: float, pool_size: int = 8):
        from sqlalchemy import create_engine

        self.url = url
        self.path = migrate.shown_url(url)  # what messages name (no password)
        self.busy_timeout = busy_timeout
        self.lock = threading.RLock()  # callers that hold the store's lock across calls (the inbox)
        ms = int(busy_timeout * 1000)
        self.engine = create_engine(
            migrate.engine_url(url), pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True, pool_timeout=busy_timeout,
            connect_args={"connect_timeout": max(1, int(min(busy_timeout, 10))),
                          "options": f"-c lock_timeout={ms} -c idle_in_transaction_session_timeout={max(ms, 60000)}",
                          "application_name": "csbot"})
        try:
            self.check_schema()
        except BaseException:
            self.engine.dispose()
            raise

    def close(self) -> None:
        self.engine.dispose()

    def check_schema(self) -> None:
        """Refuse a database that is not at this csbot's schema: empty or older (run `csbot db upgrade`),
        newer (upgrade csbot), or not csbot's."""
        with self.errors():
            state = postgres_state(self)
        problem = schema_problem(self.path, state)
        if problem is not None:
            raise problem

    @contextmanager
    def connection(self) -> Iterator[Any]:
        """A pooled connection. One whose server went away (a restart, a dropped link) is thrown out of
        the pool when a call on it fails, so the next call reconnects: no ping before every call."""
        import psycopg

        with self.errors():
            pooled = self.engine.raw_connection()
        try:
            yield pooled
        except Exception as exc:
            if isinstance(exc, psycopg.OperationalError) or isinstance(exc.__cause__, psycopg.OperationalError) \
                    or getattr(pooled.driver_connection, "broken", False):
                with suppress(Exception):
                    pooled.invalidate()
            raise
        finally:
            with suppress(Exception):
                pooled.close()  # back to the pool (rolled back if still open)

    @contextmanager
    def write(self, serial: bool = True) -> Iterator[PostgresConn]:
        with self.connection() as pooled, self.errors():
            conn = PostgresConn(pooled.driver_connection)
            try:
                if serial:
                    conn.execute("SELECT pg_advisory_xact_lock(?)", (WRITE_LOCK_KEY,))
                yield conn
                pooled.commit()
            except BaseException:
                with suppress(Exception):
                    pooled.rollback()
                raise

    def read(self, sql: str, params: Iterable[Any] | dict = ()) -> list[dict]:
        with self.connection() as pooled, self.errors():
            try:
                return dicts(PostgresConn(pooled.driver_connection).execute(sql, params))
            finally:
                pooled.rollback()

    @contextmanager
    def errors(self) -> Iterator[None]:
        try:
            yield
        except Exception as exc:
            error = describe_postgres_error(self.path, exc, busy_timeout=self.busy_timeout)
            if error is None:
                raise
            raise error from exc

    def checkpoint(self, *, wait: float | None = None) -> bool:
        return True  # no WAL file of csbot's to scrub: PostgreSQL's own WAL is the server's

    def schema_version(self) -> int:
        with self.errors():
            return migrate.revision_number(postgres_state(self)["revision"]) or 0

    @contextmanager
    def snapshot(self) -> Iterator[PostgresConn]:
        with self.connection() as pooled, self.errors():
            raw = pooled.driver_connection
            try:
                raw.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                yield PostgresConn(raw)
            finally:
                pooled.rollback()


def postgres_state(db: PostgresDb) -> dict:
    """Where a PostgreSQL database stands: its csbot revision (None: not stamped) and which of csbot's
    tables it has."""
    from store.tables import TABLES

    with db.connection() as pooled:
        try:
            cur = pooled.driver_connection.cursor()
            cur.execute("SELECT to_regclass(%s) IS NOT NULL", (migrate.VERSION_TABLE,))
            revision = None
            if cur.fetchone()[0]:
                cur.execute(f"SELECT version_num FROM {migrate.VERSION_TABLE}")
                row = cur.fetchone()
                revision = row[0] if row else None
            cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename = ANY(%s)",
                        (list(TABLES),))
            ours = sorted(r[0] for r in cur.fetchall())
        finally:
            pooled.rollback()
    return {"revision": revision, "tables": ours}


def schema_problem(shown: str, state: dict) -> StoreError | None:
    """The one-line error for a PostgreSQL database this csbot must not serve from, or None."""
    revision, tables = state["revision"], state["tables"]
    number = migrate.revision_number(revision)
    if revision is None and not tables:
        return SchemaMismatchError(f"the csbot database {shown} has no csbot schema yet; create it with: csbot db upgrade")
    if revision is None:
        return schema.ForeignDatabaseError(
            f"the database {shown} has tables named like csbot's ({', '.join(tables[:5])}) but no "
            f"{migrate.VERSION_TABLE}; csbot will not use or change it - point database_url at another database")
    if number is None or number > migrate.SCHEMA_VERSION:
        return SchemaTooNewError(f"the csbot database {shown} is at schema revision {revision}, newer than this "
                                 f"csbot understands ({migrate.HEAD_REVISION}); upgrade csbot")
    if number < migrate.SCHEMA_VERSION:
        return SchemaMismatchError(f"the csbot database {shown} is at schema revision {revision}, older than this "
                                   f"csbot's ({migrate.HEAD_REVISION}); upgrade it first with: csbot db upgrade")
    return None


class SchemaMismatchError(StoreError):
    """The PostgreSQL database is empty or at an older schema: `csbot db upgrade` brings it to the head."""


class DatabaseUnavailableError(StoreError):
    """The PostgreSQL server cannot be reached (down, refused, a dropped connection)."""


def describe_postgres_error(shown: str, exc: BaseException, *, busy_timeout: float) -> StoreError | None:
    """One line for a driver or pool error about the database server itself; None for a statement's own
    error (a constraint, a bug), which stays as it is."""
    import psycopg
    from sqlalchemy import exc as sa_exc

    orig = getattr(exc, "orig", None) if isinstance(exc, sa_exc.DBAPIError) else exc
    if isinstance(exc, sa_exc.TimeoutError):
        return StoreBusyError(f"no connection to the csbot database {shown} came free within {busy_timeout:g}s ({exc})")
    if isinstance(orig, psycopg.errors.LockNotAvailable):
        return StoreBusyError(f"the csbot database {shown} stayed locked by another process for {busy_timeout:g}s")
    if isinstance(orig, psycopg.errors.DiskFull):
        return schema.StoreFullError(f"disk full on the PostgreSQL server of the csbot database {shown} ({_first_line(orig)})")
    if isinstance(orig, psycopg.errors.ReadOnlySqlTransaction):
        return StoreError(f"the csbot database {shown} is read-only ({_first_line(orig)}): is it a standby?")
    if isinstance(orig, psycopg.errors.InsufficientPrivilege):
        return StoreError(f"csbot may not use the database {shown} ({_first_line(orig)}): grant its user the rights")
    if isinstance(orig, psycopg.OperationalError) or isinstance(exc, sa_exc.OperationalError):
        return DatabaseUnavailableError(f"cannot reach the csbot database {shown} ({_first_line(orig or exc)}); "
                                        "is the PostgreSQL server up and database_url right?")
    return None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def open_db(target: str | Path, *, busy_timeout: float) -> SqliteDb | PostgresDb:
    if migrate.is_postgres_url(target):
        return PostgresDb(str(target), busy_timeout=busy_timeout)
    return SqliteDb(Path(target), busy_timeout=busy_timeout)


def upgrade_database(target: str | Path, *, busy_timeout: float = schema.DEFAULT_BUSY_TIMEOUT) -> dict:
    """Bring the database to this csbot's schema (`csbot db upgrade`): create an empty one, run the
    revisions an older one lacks; refuse a newer or foreign one. Returns {"database", "dialect", "before",
    "after", "action": "created" | "upgraded" | "current"} (revisions as "0006"; before None when new)."""
    if not migrate.is_postgres_url(target):
        path = Path(target)
        existed = path.exists() and path.stat().st_size > 0
        before = None
        if existed:
            info = schema.inspect(path, busy_timeout=busy_timeout) if schema.check_file(path) == "sqlite" else None
            before = migrate.revision_name(info["user_version"]) if info and info["user_version"] else None
        db = SqliteDb(path, busy_timeout=busy_timeout)
        try:
            after = migrate.revision_name(db.schema_version())
        finally:
            db.close()
        action = "created" if before is None else ("current" if before == after else "upgraded")
        return {"database": str(path), "dialect": "sqlite", "before": before, "after": after, "action": action}
    return _upgrade_postgres(str(target))


def _upgrade_postgres(url: str) -> dict:
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    shown = migrate.shown_url(url)
    engine = create_engine(migrate.engine_url(url), poolclass=NullPool, connect_args={"connect_timeout": 10})
    report = {"database": shown, "dialect": "postgresql", "before": None, "after": migrate.HEAD_REVISION}
    try:
        with engine.connect() as conn:
            with conn.begin():
                # One migrator at a time: replicas starting together all run `csbot db upgrade`.
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_LOCK_KEY,))
                state = _sa_state(conn)
                report["before"] = state["revision"]
                problem = schema_problem(shown, state)
                if state["revision"] is None and not state["tables"]:
                    for statement in migrate.create_ddl("postgresql"):
                        conn.exec_driver_sql(statement)
                    conn.exec_driver_sql(f"INSERT INTO {migrate.VERSION_TABLE} (version_num) VALUES (%s)",
                                         (migrate.HEAD_REVISION,))
                    report["action"] = "created"
                elif isinstance(problem, SchemaMismatchError):
                    migrate.upgrade(conn)
                    report["action"] = "upgraded"
                elif problem is not None:
                    raise problem
                else:
                    report["action"] = "current"
    except StoreError:
        raise
    except Exception as exc:
        error = describe_postgres_error(shown, exc, busy_timeout=30)
        if error is None:
            raise
        raise error from exc
    finally:
        engine.dispose()
    return report


def _sa_state(conn) -> dict:
    from store.tables import TABLES

    revision = None
    if conn.exec_driver_sql("SELECT to_regclass(%s) IS NOT NULL", (migrate.VERSION_TABLE,)).scalar():
        revision = conn.exec_driver_sql(f"SELECT version_num FROM {migrate.VERSION_TABLE}").scalar()
    ours = conn.exec_driver_sql("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
                                " AND tablename = ANY(%s)", (list(TABLES),)).scalars().all()
    return {"revision": revision, "tables": sorted(ours)}
