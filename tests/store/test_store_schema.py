"""One schema owner, versioned migrations, pragmas, refusing foreign files."""

from __future__ import annotations

import os
import sqlite3
import stat

import pytest

from core.errors import CsbotError
from store import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    CorruptDatabaseError,
    ForeignDatabaseError,
    SchemaTooNewError,
    Store,
    schema,
)

TABLES = {"answers", "feedback", "monitored_messages", "processed_events", "training_runs"}

pytestmark = pytest.mark.sqlite_only  # the file itself: its checks, pragmas, WAL


def test_new_database_has_current_schema_wal_and_is_private(store, db_path):
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert TABLES <= tables
    conn.close()
    assert stat.S_IMODE(os.stat(db_path).st_mode) == 0o600
    assert store.schema_version() == SCHEMA_VERSION


def test_connection_pragmas(store):
    conn = store._conn
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL: durable on commit
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 5000
    assert conn.execute("PRAGMA secure_delete").fetchone()[0] == 1


def test_time_indexes_make_since_queries_use_an_index(store):
    plan = " ".join(
        str(r[-1])
        for r in store._conn.execute(
            "EXPLAIN QUERY PLAN SELECT * FROM feedback f JOIN answers a ON a.answer_id = f.answer_id "
            "WHERE f.time > ? ORDER BY f.time",
            ("2025-01-01",),
        )
    )
    assert "idx_feedback_time" in plan
    plan = " ".join(str(r[-1]) for r in store._conn.execute("EXPLAIN QUERY PLAN SELECT * FROM monitored_messages WHERE time > ?", ("x",)))
    assert "idx_monitored_messages_time" in plan


def test_foreign_keys_cascade_from_answers_to_feedback(store, answer_factory):
    a = answer_factory()
    store.record_answer(a)
    store.record_vote(a.answer_id, "up", user="U1", origin="button")
    with store._write() as conn:
        conn.execute("DELETE FROM answers WHERE answer_id = ?", (a.answer_id,))
    assert store.counts()["feedback"] == 0


def test_reopening_applies_no_migration_and_keeps_data(db_path, answer_factory):
    with Store(db_path, salt="s") as s:
        s.record_answer(answer_factory("keep-me"))
    conn = schema.open_database(db_path)
    assert schema.migrate(conn) == []
    conn.close()
    with Store(db_path, salt="s") as s:
        assert s.get_answer("keep-me") is not None


def test_migrates_a_version_1_database_in_place(db_path):
    conn = schema.open_database(db_path, target_version=1)
    assert schema.schema_version(conn) == 1
    columns = {r[1] for r in conn.execute("PRAGMA table_info(feedback)")}
    assert "correct_intent" not in columns and "created" not in columns
    conn.execute(
        "INSERT INTO answers (answer_id, time, user_hash, question, intent, confidence, sentiment, sources,"
        " model_version, handoff) VALUES ('old-1', '2025-01-02T03:04:05.000000Z', 'h1', 'old question',"
        " 'billing', 0.8, 'negative', '[]', 'intent-v1', 0)"
    )
    conn.execute(
        "INSERT INTO feedback (answer_id, user_hash, vote, origin, event_id, time)"
        " VALUES ('old-1', 'h2', 'down', 'button', 'Ev1', '2025-01-02T03:05:00.000000Z')"
    )
    conn.commit()
    conn.close()

    with Store(db_path, salt="s") as s:
        assert s.schema_version() == SCHEMA_VERSION
        answer = s.get_answer("old-1")
        assert answer["question"] == "old question" and answer["votes"] == {"up": 0, "down": 1}
        rows = s.feedback_since()
        assert len(rows) == 1
        assert rows[0]["vote"] == "down" and rows[0]["created"] == rows[0]["time"]  # backfilled
        assert rows[0]["correct_intent"] is None
        assert s.counts()["monitored_messages"] == 0 and s.training_runs() == []
        # The migrated database works like a new one.
        assert s.record_vote("old-1", "up", user="U9", origin="reaction", event_id="Ev2").stored
        # Slack replays of events stored before the upgrade are still recognised.
        assert s.record_vote("old-1", "up", user="U9", origin="reaction", event_id="Ev1").status == "duplicate"


def test_failed_migration_rolls_back_and_leaves_version(db_path, monkeypatch):
    schema.open_database(db_path, target_version=1).close()

    def broken(db):
        db["answers"].add_column("half_done", str)
        raise RuntimeError("boom")

    monkeypatch.setattr(schema, "MIGRATIONS", [schema.MIGRATIONS[0], schema.Migration(2, "broken", broken)])
    with pytest.raises(RuntimeError):
        schema.open_database(db_path)
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    assert "half_done" not in {r[1] for r in conn.execute("PRAGMA table_info(answers)")}
    conn.close()


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"this is not a database at all\n" * 50, id="text"),
        pytest.param(os.urandom(8192), id="random-bytes"),
        pytest.param(schema.SQLITE_HEADER + os.urandom(4096 - 16), id="sqlite-header-then-garbage"),
        pytest.param(b"SQLite", id="truncated-header"),
    ],
)
def test_corrupt_file_is_a_clear_error_and_never_overwritten(db_path, content, digest):
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(content)
    before = digest(db_path)
    with pytest.raises(CorruptDatabaseError) as info:
        Store(db_path, salt="s")
    assert str(db_path) in str(info.value)
    assert isinstance(info.value, CsbotError)  # the CLI prints it as one line
    assert digest(db_path) == before
    assert sorted(p.name for p in db_path.parent.iterdir()) == [db_path.name]


def test_foreign_sqlite_database_is_refused_untouched(db_path, digest):
    db_path.parent.mkdir(parents=True)
    conn = sqlite3.connect(db_path)
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
    conn.execute("INSERT INTO invoices (total) VALUES (12.5)")
    conn.commit()
    conn.close()
    before = digest(db_path)
    with pytest.raises(ForeignDatabaseError) as info:
        Store(db_path, salt="s")
    message = str(info.value)
    assert str(db_path) in message and "invoices" in message
    assert digest(db_path) == before


def test_foreign_application_id_is_refused_even_without_tables(db_path, digest):
    db_path.parent.mkdir(parents=True)
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA application_id = 12345")
    conn.commit()
    conn.close()
    before = digest(db_path)
    with pytest.raises(ForeignDatabaseError):
        Store(db_path, salt="s")
    assert digest(db_path) == before


def test_database_from_a_newer_csbot_is_refused_untouched(db_path, digest):
    Store(db_path, salt="s").close()
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    conn.commit()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    before = digest(db_path)
    with pytest.raises(SchemaTooNewError) as info:
        Store(db_path, salt="s")
    assert str(db_path) in str(info.value) and "upgrade csbot" in str(info.value)
    assert digest(db_path) == before


def test_empty_file_becomes_a_store(db_path):
    db_path.parent.mkdir(parents=True)
    db_path.touch()
    with Store(db_path, salt="s") as s:
        assert s.schema_version() == SCHEMA_VERSION


def test_directory_in_place_of_the_file_is_a_clear_error(db_path):
    db_path.mkdir(parents=True)
    with pytest.raises(CorruptDatabaseError, match="not a regular file"):
        Store(db_path, salt="s")


def test_store_requires_a_salt(db_path):
    with pytest.raises(ValueError):
        Store(db_path, salt="")
