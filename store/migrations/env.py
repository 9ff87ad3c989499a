"""Alembic's environment for the store: one migration path for SQLite and PostgreSQL.

csbot runs it through store/migrate.py (`csbot db upgrade`, and a SQLite store's open), which passes
the connection in `config.attributes["connection"]`, inside a transaction it already holds (SQLite:
BEGIN IMMEDIATE; PostgreSQL: an advisory lock), so two processes never migrate at once. A developer
writing a revision may run alembic itself (`alembic -c store/migrations/alembic.ini revision
--autogenerate -m "..."`) against CSBOT_DATABASE_URL, or a SQLite file with `-x sqlite=PATH`.
"""

from alembic import context
from sqlalchemy import create_engine

from store.migrate import VERSION_TABLE, engine_url
from store.tables import METADATA

config = context.config


def run(connection) -> None:
    context.configure(connection=connection, target_metadata=METADATA, version_table=VERSION_TABLE,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run(connection)
else:  # the alembic command line
    sqlite_path = context.get_x_argument(as_dictionary=True).get("sqlite")
    url = f"sqlite:///{sqlite_path}" if sqlite_path else engine_url(None)
    with create_engine(url).connect() as own:
        run(own)
        own.commit()
