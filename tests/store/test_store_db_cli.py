"""`csbot db upgrade | status | copy` and the schema check at start, through the real CLI entry point,
on SQLite homes and real PostgreSQL databases (each test that needs one gets its own)."""

from __future__ import annotations

import json
import sqlite3
import textwrap

import psycopg
import pytest

import store.migrate as migration_path
from bot.cli import main
from store import Store, schema
from tests.pg import new_database

HEAD = migration_path.SCHEMA_VERSION  # the released head
HEAD_REV, NEXT_REV = f"{HEAD:04d}", f"{HEAD + 1:04d}"
REVISION_NEXT = f'''
"""A revision past the head, for the tests: one column and its index."""
from alembic import op
import sqlalchemy as sa

revision = "{NEXT_REV}"
down_revision = "{HEAD_REV}"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("answers", sa.Column("test_note", sa.Text()))
    op.create_index("idx_answers_test_note", "answers", ["test_note"])
'''


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def pg_url(monkeypatch):
    url, drop = new_database()
    monkeypatch.setenv("CSBOT_DATABASE_URL", url)
    yield url
    drop()


@pytest.fixture
def revision_next(tmp_path, monkeypatch):
    """A revision past the head beside the real ones, and this csbot's head moved to it."""
    folder = tmp_path / "more_versions"
    folder.mkdir()
    (folder / f"{NEXT_REV}_test_note.py").write_text(textwrap.dedent(REVISION_NEXT))
    monkeypatch.setattr(migration_path, "EXTRA_LOCATIONS", [str(folder)])
    monkeypatch.setattr(migration_path, "SCHEMA_VERSION", HEAD + 1)
    monkeypatch.setattr(migration_path, "HEAD_REVISION", NEXT_REV)


def _set_revision(url: str, revision: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"UPDATE {migration_path.VERSION_TABLE} SET version_num = %s", (revision,))


def test_the_head_revision_is_the_schema_version():
    assert migration_path.script_head() == migration_path.HEAD_REVISION == f"{schema.SCHEMA_VERSION:04d}"


def test_db_upgrade_on_sqlite_creates_then_finds_current_and_stamps_an_old_home(csbot_home, capsys):
    code, out, _ = run(capsys, "db", "upgrade", "--json")
    assert code == 0 and json.loads(out)["action"] == "created" and json.loads(out)["dialect"] == "sqlite"
    code, out, _ = run(capsys, "db", "upgrade", "--json")
    assert json.loads(out) == {**json.loads(out), "action": "current", "before": HEAD_REV, "after": HEAD_REV}
    old = csbot_home / "old.sqlite3"
    schema.open_database(old, target_version=1).close()
    from store.backends import upgrade_database

    assert upgrade_database(old)["action"] == "upgraded"
    conn = sqlite3.connect(old)
    assert schema.stamped_revision(conn) == HEAD_REV and schema.schema_version(conn) == HEAD
    conn.close()


def test_a_sqlite_home_at_the_baseline_runs_later_revisions_through_alembic(db_path, revision_next):
    monkey_head = migration_path.SCHEMA_VERSION
    migration_path.SCHEMA_VERSION = HEAD  # create the file as the released csbot does
    try:
        Store(db_path, salt="s").close()
    finally:
        migration_path.SCHEMA_VERSION = monkey_head
    with Store(db_path, salt="s") as s:
        assert s.schema_version() == HEAD + 1
        columns = {r["name"] for r in s._read("SELECT name FROM pragma_table_info('answers')")}
        assert "test_note" in columns
    conn = sqlite3.connect(db_path)
    assert schema.stamped_revision(conn) == NEXT_REV
    conn.close()


def test_postgres_is_refused_until_upgraded_then_served(csbot_home, pg_url, capsys):
    code, _, err = run(capsys, "db", "status")
    assert code == 2 and err.count("\n") == 1 and "csbot db upgrade" in err and "no csbot schema" in err
    code, out, _ = run(capsys, "db", "upgrade", "--json")
    report = json.loads(out)
    assert code == 0 and (report["action"], report["before"], report["after"]) == ("created", None, HEAD_REV)
    assert report["dialect"] == "postgresql"
    code, out, _ = run(capsys, "db", "status", "--json")
    assert code == 0 and json.loads(out)["current"] is True and json.loads(out)["dialect"] == "postgresql"
    code, out, _ = run(capsys, "export")
    assert code == 0 and out == ""


def test_an_older_postgres_schema_is_refused_then_migrated(csbot_home, pg_url, capsys, revision_next):
    from store.backends import _upgrade_postgres

    migration_path.SCHEMA_VERSION, migration_path.HEAD_REVISION = HEAD, HEAD_REV
    _upgrade_postgres(pg_url)  # the released schema
    migration_path.SCHEMA_VERSION, migration_path.HEAD_REVISION = HEAD + 1, NEXT_REV
    code, _, err = run(capsys, "export")
    assert code == 2 and err.count("\n") == 1 and "older" in err and "csbot db upgrade" in err
    code, out, _ = run(capsys, "db", "upgrade", "--json")
    assert (json.loads(out)["action"], json.loads(out)["before"], json.loads(out)["after"]) == ("upgraded", HEAD_REV, NEXT_REV)
    with Store(pg_url, salt="s") as s:
        assert s.schema_version() == HEAD + 1
        assert s._read("SELECT count(*) AS n FROM information_schema.columns WHERE table_name = 'answers'"
                       " AND column_name = 'test_note'") == [{"n": 1}]


def test_a_newer_or_foreign_postgres_database_is_refused_without_a_change(csbot_home, pg_url, capsys):
    assert run(capsys, "db", "upgrade")[0] == 0
    _set_revision(pg_url, "0099")
    for argv in (("export",), ("db", "upgrade"), ("db", "status")):
        code, _, err = run(capsys, *argv)
        assert code == 2 and err.count("\n") == 1 and "newer" in err and "upgrade csbot" in err
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert conn.execute(f"SELECT version_num FROM {migration_path.VERSION_TABLE}").fetchone() == ("0099",)
        conn.execute(f"DROP TABLE {migration_path.VERSION_TABLE}")
    code, _, err = run(capsys, "db", "upgrade")
    assert code == 2 and "csbot will not use or change it" in err


def test_an_unreachable_server_and_a_bad_url_are_one_line(csbot_home, monkeypatch, capsys):
    monkeypatch.setenv("CSBOT_DATABASE_URL", "postgresql://postgres:secret@127.0.0.1:1/nothing")
    code, _, err = run(capsys, "export")
    assert code == 2 and err.count("\n") == 1 and "cannot reach the csbot database" in err
    assert "secret" not in err and "postgresql://postgres:***@127.0.0.1:1/nothing" in err
    monkeypatch.setenv("CSBOT_DATABASE_URL", "mysql://root@localhost/csbot")
    code, _, err = run(capsys, "export")
    assert code == 2 and err.count("\n") == 1 and "database_url must be a PostgreSQL URL" in err


def test_db_copy_moves_a_sqlite_home_into_postgres(csbot_home, answer_factory, capsys):
    url, drop = new_database()
    try:
        with Store(csbot_home / "csbot.sqlite3", salt="copy-salt") as home:
            for i in range(3):
                home.record_answer(answer_factory(f"c{i}"), user="U1")
            home.record_vote("c0", "up", user="U2", origin="button", event_id="E1")
            home.record_vote("c1", "down", user="U2", origin="modal", doc_id="kb-3")
            home.inbox.accept([], event_id="Ev-accepted")
            home.record_training_run(status="promoted", data_until=home.feedback_since()[-1]["time"])
            expected = (home.feedback_since(), list(home.export()), home.feedback_watermark())
        code, out, _ = run(capsys, "db", "copy", "--to", url, "--json")
        report = json.loads(out)
        assert code == 0 and report["rows"] == sum(report["tables"].values())
        assert report["tables"]["answers"] == 3 and report["tables"]["feedback"] == 2
        with Store(url, salt="copy-salt") as pg:
            assert (pg.feedback_since(), list(pg.export()), pg.feedback_watermark()) == expected
            assert pg.record_vote("c0", "up", user="U2", origin="button", event_id="E1").status == "duplicate"
            assert pg.inbox.event_claimed("Ev-accepted")
            new = pg.record_vote("c2", "up", user="U3", origin="button")  # the ids go on after the copied ones
            assert new.stored and new.feedback_id == 3
        # The home's salt went with it: every replica now hashes a user as this home did.
        with Store(url, salt=None) as pg:
            assert pg.shared_salt() == (csbot_home / "salt").read_text().strip()
        code, _, err = run(capsys, "db", "copy", "--to", url)
        assert code == 2 and "already holds csbot rows" in err and err.count("\n") == 1
    finally:
        drop()


def test_replicas_with_homes_of_their_own_share_the_databases_salt(tmp_path, pg_url):
    """Votes on one replica and `forget --user` on another must meet: one user, one hash, everywhere."""
    from core.settings import Settings
    from store.schema import StoreError

    assert main(["db", "upgrade"]) == 0
    homes = [tmp_path / f"replica{i}" for i in range(2)]
    hashes = []
    for home in homes:
        home.mkdir()
        with Store.from_settings(Settings.load(env={"CSBOT_DATABASE_URL": pg_url}, home=home)) as store:
            hashes.append(store.hash_user("U123"))
        assert not (home / "salt").exists()  # nothing kept per home
    assert hashes[0] == hashes[1]
    other = tmp_path / "other"
    other.mkdir()
    (other / "salt").write_text("a-salt-of-its-own\n")  # a home that kept hashing with its own salt
    with pytest.raises(StoreError, match="holds another user-hash salt than the database's"):
        Store.from_settings(Settings.load(env={"CSBOT_DATABASE_URL": pg_url}, home=other))
    explicit = Settings.load(env={"CSBOT_DATABASE_URL": pg_url, "CSBOT_USER_HASH_SALT": "pinned"}, home=other)
    with Store.from_settings(explicit) as store:  # the setting wins
        assert store.hash_user("U123") != hashes[0]


def _schema_differences(url: str) -> list:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy import create_engine

    from store.tables import METADATA

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True,
                                                              "version_table": migration_path.VERSION_TABLE})
            return compare_metadata(context, METADATA)
    finally:
        engine.dispose()


def test_a_migrated_sqlite_home_and_a_created_postgres_database_match_the_one_definition(db_path):
    schema.open_database(db_path, target_version=5).close()  # an old home: legacy step 6, then the stamp
    Store(db_path, salt="s").close()
    left = []
    for diff in _schema_differences(f"sqlite:///{db_path}"):
        change = diff[0] if isinstance(diff, list) else diff
        if change[0] == "modify_nullable" and change[3] in ("id", "answer_id", "event_id", "key", "owner", "team"):
            continue  # SQLite's own: a PRIMARY KEY column may hold NULL unless declared NOT NULL; never written
        if change[0] in ("remove_fk", "add_fk") and change[1].parent.name == "feedback":
            continue  # SQLAlchemy reads sqlite-utils' inline REFERENCES ... ON DELETE CASCADE without its ON DELETE
        left.append(diff)
    assert left == []
    url, drop = new_database()
    try:
        from store.backends import upgrade_database

        upgrade_database(url)
        assert _schema_differences(url.replace("postgresql://", "postgresql+psycopg://")) == []
    finally:
        drop()
