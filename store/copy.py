"""Copy a SQLite home's store into PostgreSQL (`csbot db copy --to postgresql://...`).

Every table of store/tables.py is copied as it is (the user hashes too: the replicas must hash with the
same salt, docs/store.md), parents before children, in ONE PostgreSQL transaction: the copy lands whole
or not at all. The source is read in one consistent snapshot, so the bot may keep running on it (what
it writes after the snapshot began is not copied). The target must hold no csbot rows yet; it is
created (or upgraded) first, as `csbot db upgrade` does.
"""

from __future__ import annotations

from pathlib import Path

from core.errors import UserError
from store import migrate
from store.backends import PostgresDb, SqliteDb, describe_postgres_error, upgrade_database
from store.schema import DEFAULT_BUSY_TIMEOUT, StoreError
from store.store import SALT_META_KEY

CHUNK_ROWS = 5000


class TargetNotEmptyError(UserError):
    """The PostgreSQL database already holds csbot rows: a copy would mix two stores."""


def copy_sqlite_to_postgres(source: Path, url: str, *, salt: str | None = None,
                            busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> dict:
    """Copy the store in the SQLite file `source` into the PostgreSQL database `url`, and `salt` (the
    home's user-hash salt) as the database's shared one, so the copied hashes match what every replica
    computes. Returns {"source", "target", "tables": {table: rows}, "rows": total}."""
    from store.tables import METADATA

    if not migrate.is_postgres_url(url):
        raise UserError(f"--to must be a PostgreSQL URL (postgresql://user@host:5432/dbname), not {url!r}")
    if not Path(source).exists():
        raise UserError(f"there is no SQLite store to copy at {source}")
    upgrade_database(url, busy_timeout=busy_timeout)
    sqlite = SqliteDb(Path(source), busy_timeout=busy_timeout)  # brings an older file to the head first
    target = PostgresDb(url, busy_timeout=busy_timeout, pool_size=1)
    counts: dict[str, int] = {}
    try:
        with sqlite.snapshot() as src, target.connection() as pooled, target.errors():
            raw = pooled.driver_connection
            try:
                _refuse_rows(raw, target.path)
                for table in METADATA.sorted_tables:
                    counts[table.name] = _copy_table(src, raw, table)
                    _move_identity(raw, table)
                if salt:
                    raw.execute("INSERT INTO store_meta (key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE"
                                " SET value = EXCLUDED.value", (SALT_META_KEY, salt))
                pooled.commit()
            except BaseException:
                pooled.rollback()
                raise
    except StoreError:
        raise
    except Exception as exc:
        error = describe_postgres_error(target.path, exc, busy_timeout=busy_timeout)
        if error is None:
            raise
        raise error from exc
    finally:
        sqlite.close()
        target.close()
    return {"source": str(source), "target": migrate.shown_url(url), "tables": counts, "rows": sum(counts.values())}


def _refuse_rows(raw, shown: str) -> None:
    from store.tables import TABLES

    cur = raw.cursor()
    full = []
    for table in TABLES:
        if table == "store_meta":  # a replica that connected first may have stored a salt: the copy replaces it
            continue
        cur.execute(f"SELECT EXISTS (SELECT 1 FROM {table})")
        if cur.fetchone()[0]:
            full.append(table)
    if full:
        raise TargetNotEmptyError(f"the database {shown} already holds csbot rows ({', '.join(full)}); "
                                  "copy into an empty database (create one, or drop and re-create it)")


def _copy_table(src, raw, table) -> int:
    columns = [c.name for c in table.columns]
    names = ", ".join(columns)
    cursor = src.execute(f"SELECT {names} FROM {table.name}")
    n = 0
    with raw.cursor().copy(f"COPY {table.name} ({names}) FROM STDIN") as copy:
        while True:
            rows = cursor.fetchmany(CHUNK_ROWS)
            if not rows:
                break
            for row in rows:
                copy.write_row(row)
            n += len(rows)
    return n


def _move_identity(raw, table) -> None:
    """Point an integer key's sequence past the copied ids, so the next insert does not collide."""
    if "id" not in table.columns or not table.c.id.autoincrement:
        return
    raw.execute(f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'),"
                f" COALESCE((SELECT max(id) FROM {table.name}), 0) + 1, false)")
