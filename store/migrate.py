"""The one migration path for both dialects: Alembic revisions (store/migrations/) over the one schema
definition (store/tables.py), and where a database stands against them.

A database is at a revision named by the number of the schema it holds ("0006", "0007", ...), kept in
Alembic's version table `csbot_alembic_version` (a name no other application's Alembic uses, so the
table also marks a PostgreSQL database as csbot's). SQLite files keep `PRAGMA user_version` equal to
that number as well, so opening one needs neither SQLAlchemy nor Alembic unless something must change.

* A new database is created from store/tables.py and stamped with the head (`create`);
* an older one runs the revisions after its own (`upgrade`), in one transaction with the stamp;
* a SQLite file from before Alembic (user_version 1-6) first runs store/schema.py's legacy steps to 6,
  then is stamped with the baseline "0006" (store/schema.py `migrate`).

SQLAlchemy and Alembic are imported inside the functions that need them (~0.3 s).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.settings import DATABASE_SCHEMES, without_password

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

# The number of the newest revision in store/migrations/versions/ (tests/store/test_store_migrations.py
# checks they agree): bump it with each new revision.
SCHEMA_VERSION = 7
VERSION_TABLE = "csbot_alembic_version"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
HEAD_REVISION = f"{SCHEMA_VERSION:04d}"
# More revision folders beside store/migrations/versions (tests put a revision past the head there to run
# the path on both dialects); empty in use.
EXTRA_LOCATIONS: list[str] = []
POSTGRES_SCHEMES = DATABASE_SCHEMES


def revision_name(version: int) -> str:
    return f"{version:04d}"


def revision_number(revision: str | None) -> int | None:
    """The schema number of a revision id ("0007" -> 7); None for one csbot never wrote."""
    if revision is None or not revision.isdigit():
        return None
    return int(revision)


def is_postgres_url(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lower().startswith(POSTGRES_SCHEMES)


def engine_url(url: str | None) -> str:
    """SQLAlchemy's URL for a `postgresql://` database URL (the psycopg 3 driver); default: $CSBOT_DATABASE_URL."""
    url = (url or os.environ.get("CSBOT_DATABASE_URL") or "").strip()
    if not is_postgres_url(url):
        raise ValueError(f"not a PostgreSQL URL: {shown_url(url)!r}")
    scheme, _, rest = url.partition("://")
    return f"postgresql+psycopg://{rest}"


def libpq_url(url: str) -> str:
    """The URL as psycopg (libpq) takes it: `postgresql://…` (SQLAlchemy's `+psycopg` driver name removed)."""
    scheme, _, rest = url.strip().partition("://")
    return f"postgresql://{rest}"


def shown_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    return without_password(url) or ""


def version_table(metadata=None):
    """Alembic's own version table, under csbot's name (the same columns and constraint name)."""
    from sqlalchemy import Column, MetaData, PrimaryKeyConstraint, String, Table

    return Table(VERSION_TABLE, metadata if metadata is not None else MetaData(),
                 Column("version_num", String(32), nullable=False),
                 PrimaryKeyConstraint("version_num", name=f"{VERSION_TABLE}_pkc"))


def create_ddl(dialect_name: str) -> list[str]:
    """The statements that create the whole schema (tables, indexes, the version table) in a dialect."""
    from sqlalchemy.dialects import postgresql, sqlite
    from sqlalchemy.schema import CreateIndex, CreateTable

    from store.tables import METADATA

    dialect = {"sqlite": sqlite.dialect(), "postgresql": postgresql.dialect()}[dialect_name]
    statements = []
    for table in (*METADATA.sorted_tables, version_table()):
        statements.append(str(CreateTable(table).compile(dialect=dialect)).strip())
        statements += [str(CreateIndex(index).compile(dialect=dialect)).strip()
                       for index in sorted(table.indexes, key=lambda i: i.name or "")]
    return statements


def alembic_config(connection: Connection, locations: list[str] | None = None):
    from alembic.config import Config

    locations = EXTRA_LOCATIONS if locations is None else locations
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if locations:  # extra revision folders (tests add one to exercise the path past the head)
        config.set_main_option("version_locations", " ".join([str(MIGRATIONS_DIR / "versions"), *locations]))
        config.set_main_option("path_separator", "space")
    config.attributes["connection"] = connection
    return config


def script_head(locations: list[str] | None = None) -> str:
    """The newest revision in the migrations folder(s)."""
    from alembic.script import ScriptDirectory

    config = alembic_config(None, locations)  # type: ignore[arg-type]
    return ScriptDirectory.from_config(config).get_current_head()


def upgrade(connection: Connection, target: str = "head", locations: list[str] | None = None) -> None:
    """Run the revisions after the database's own up to `target`, inside the caller's transaction."""
    from alembic import command

    command.upgrade(alembic_config(connection, locations), target)


def stamp(connection: Connection, revision: str) -> None:
    from alembic import command

    command.stamp(alembic_config(connection), revision)
