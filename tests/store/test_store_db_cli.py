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

REVISION_0007 = '''
"""A revision past the head, for the tests: one column and its index."""
from alembic import op
import sqlalchemy as sa

revision = "0007"
down_revision = "0006"
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
def revision_0007(tmp_path, monkeypatch):
    """A revision 0007 beside the real ones, and this csbot's head moved to it."""
    folder = tmp_path / "more_versions"
    folder.mkdir()
    (folder / "0007_test_note.py").write_text(textwrap.dedent(REVISION_0007))
    monkeypatch.setattr(migration_path, "EXTRA_LOCATIONS", [str(folder)])
    monkeypatch.setattr(migration_path, "SCHEMA_VERSION", 7)
    monkeypatch.setattr(migration_path, "HEAD_REVISION", "0007")


def _set_revision(url: str, revision: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"UPDATE {migration_path.VERSION_TABLE} SET version_num = %s", (revision,))


def test_the_head_revision_is_the_schema_version():
    assert migration_path.script_head() == migration_path.HEAD_REVISION == f"{schema.SCHEMA_VERSION:04d}"


def test_db_upgrade_on_sqlite_creates_then_finds_current_and_stamps_an_old_home(csbot_home, capsys):
    code, out, _ = run(capsys, "db", "upgrade", "--json")
    assert code == 0 and json.loads(out)["action"] == "created" and json.loads(out)["dialect"] == "sqlite"
    code, out, _ = run(capsys, "db", "upgrade", "--json")
    assert json.loads(out) == {**json.loads(out), "action": "current", "before": "0006", "after": "0006"}
    old = csbot_home / "old.sqlite3"
    schema.open_database(old, target_version=1).close()
    from store.backends import upgrade_database

    assert upgrade_database(old)["action"] == "upgraded"
    conn = sqlite3.connect(old)
    assert schema.stamped_revision(conn) == "0006" and schema.schema_version(conn) == 6
    conn.close()


def test_a_sqlite_home_at_the_baseline_runs_later_revisions_through_alembic(db_path, revision_0007):
    monkey_head = migration_path.SCHEMA_VERSION
    migration_path.SCHEMA_VERSION = 6  # create the file as the released csbot does
    try:
        Store(db_path, salt="s").close()
    finally:
        migration_path.SCHEMA_VERSION = monkey_head
    with Store(db_path, salt="s") as s:
        assert s.schema_version() == 7
        columns = {r["name"] for r in s._read("SELECT name FROM pragma_table_info('answers')")}
        assert "test_note" in columns
    conn = sqlite3.connect(db_path)
    assert schema.stamped_revision(conn) == "0007"
    conn.close()


def test_postgres_is_refused_until_upgraded_then_served(csbot_home, pg_url, capsys):
    code, _, err = run(capsys, "db", "status")
    assert code == 2 and err.count("\n") == 1 and "csbot db upgrade" in err and "no csbot schema" in err
    code, out, _ = run(capsys, "db", "upgrade", "--json")
    report = json.loads(out)
    assert code == 0 and (report["action"], report["before"], report["after"]) == ("created", None, "0006")
    assert report["dialect"] == "postgresql"
    code, out, _ = run(capsys, "db", "status", "--json")
    assert code == 0 and json.loads(out)["current"] is True and json.loads(out)["dialect"] == "postgresql"
    code, out, _ = run(capsys, "export")
    assert code == 0 and out == ""


def test_an_older_postgres_schema_is_refused_then_migrated(csbot_home, pg_url, capsys, revision_0007):
    from store.backends import _upgrade_postgres

    migration_path.SCHEMA_VERSION, migration_path.HEAD_REVISION = 6, "0006"
    _upgrade_postgres(pg_url)  # the released schema
    migration_path.SCHEMA_VERSION, migration_path.HEAD_REVISION = 7, "0007"
    code, _, err = run(capsys, "export")
    assert code == 2 and err.count("\n") == 1 and "older" in err and "csbot db upgrade" in err
    code, out, _ = run(capsys, "db", "upgrade", "--json")
    assert (json.loads(out)["action"], json.loads(out)["before"], json.loads(out)["after"]) == ("upgraded", "0006", "0007")
    with Store(pg_url, salt="s") as s:
        assert s.schema_version() == 7
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
        code, _, err = run(capsys, "db", "copy", "--to", url)
        assert code == 2 and "already holds csbot rows" in err and err.count("\n") == 1
    finally:
        drop()


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
