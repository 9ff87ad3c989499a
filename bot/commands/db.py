"""`csbot db`: the store's database (docs/store.md).

    csbot db upgrade [--json]                      # create the schema, or run the migrations it lacks
    csbot db status [--json]                       # which database, at which schema revision
    csbot db copy --to postgresql://... [--json]   # copy this home's SQLite store into PostgreSQL

The database is `database_url` (CSBOT_DATABASE_URL) when set, else $CSBOT_HOME/csbot.sqlite3. On
PostgreSQL every process refuses to start on a database that is not at its schema (exit 2, one line):
run `csbot db upgrade` once per release, before the new version's processes start. A SQLite file is
brought up to date when it is opened, as before.
"""

from __future__ import annotations

import argparse
import json

from core.output import out


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("db", help="the store's database: upgrade its schema, status, copy to PostgreSQL",
                                   description="The store's database: database_url (CSBOT_DATABASE_URL) when set, "
                                   "else the SQLite file under CSBOT_HOME.")
    sub = parser.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    upgrade = sub.add_parser("upgrade", help="create the schema in a new database, or run the migrations it lacks")
    upgrade.add_argument("--json", action="store_true", help="print the result as one JSON object")
    upgrade.set_defaults(func=run_upgrade)
    status = sub.add_parser("status", help="which database, and whether its schema is this csbot's")
    status.add_argument("--json", action="store_true", help="print the result as one JSON object")
    status.set_defaults(func=run_status)
    copy = sub.add_parser("copy", help="copy this home's SQLite store into an empty PostgreSQL database")
    copy.add_argument("--to", required=True, metavar="URL", help="postgresql://user[:password]@host:5432/dbname")
    copy.add_argument("--json", action="store_true", help="print the result as one JSON object")
    copy.set_defaults(func=run_copy)


def _target(settings):
    return (settings.database_url or "").strip() or settings.db_path


def run_upgrade(args: argparse.Namespace) -> int:
    from core.settings import Settings
    from store.backends import upgrade_database

    report = upgrade_database(_target(Settings.load()))
    if args.json:
        out(json.dumps(report))
    else:
        before = report["before"] or "nothing"
        out(f"{report['database']}: {report['action']} (schema {before} -> {report['after']})")
    return 0


def run_status(args: argparse.Namespace) -> int:
    from core.settings import Settings
    from store import Store
    from store.migrate import HEAD_REVISION, revision_name

    settings = Settings.load()
    with Store.from_settings(settings) as store:  # refuses a database at another schema (exit 2)
        report = {"database": str(store.path), "dialect": store.dialect,
                  "revision": revision_name(store.schema_version()), "head": HEAD_REVISION, "current": True}
    if args.json:
        out(json.dumps(report))
    else:
        out(f"{report['database']} ({report['dialect']}): schema {report['revision']}, current")
    return 0


def run_copy(args: argparse.Namespace) -> int:
    from core.settings import Settings
    from store.copy import copy_sqlite_to_postgres

    from store import load_or_create_salt
    from store.store import SALT_FILE

    settings = Settings.load()
    salt = settings.user_hash_salt or load_or_create_salt(settings.home / SALT_FILE)
    report = copy_sqlite_to_postgres(settings.db_path, args.to, salt=salt)
    if args.json:
        out(json.dumps(report))
    else:
        out(f"copied {report['rows']} rows from {report['source']} to {report['target']}; the database now "
            "keeps this home's user-hash salt for every replica")
    return 0
