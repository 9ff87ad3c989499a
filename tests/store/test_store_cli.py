"""`csbot feedback`, `purge`, `forget` and `export` use the Store code."""

from __future__ import annotations

import datetime as dt
import getpass
import io
import json

import pytest

from core.settings import Settings
from store import Store


@pytest.fixture
def home_store(csbot_home):
    """Open the store the CLI will use (same settings, same salt file)."""

    def open_store() -> Store:
        return Store.from_settings(Settings.load())

    return open_store


@pytest.fixture
def answers(home_store, answer_factory):
    with home_store() as s:
        ids = []
        for i in range(3):
            a = answer_factory(f"cli-{i}")
            s.record_answer(a, user=f"ASKER{i}")
            ids.append(a.answer_id)
    return ids


def test_feedback_single_vote(cli, capsys, answers, home_store):
    assert cli("feedback", answers[0], "up") == 0
    assert capsys.readouterr().out.strip() == f"stored: up on answer {answers[0]}"
    assert cli("feedback", answers[0], "down", "--intent", "billing", "--user", "U123", "--json") == 0
    assert json.loads(capsys.readouterr().out) == {"answer_id": answers[0], "vote": "down", "status": "stored"}
    with home_store() as s:
        rows = {r["user_hash"]: r for r in s.feedback_since()}
        me = s.hash_user(getpass.getuser())  # without --user, the CLI votes as the login user
        assert rows[me]["vote"] == "up" and rows[me]["origin"] == "cli" and None not in rows
        assert rows[s.hash_user("U123")]["correct_intent"] == "billing"


@pytest.mark.parametrize("flag, column", [("--doc", "correct_doc_id"), ("--answer", "correct_answer")])
def test_feedback_corrections(cli, capsys, answers, home_store, flag, column):
    assert cli("feedback", answers[1], "down", flag, "the right one") == 0
    with home_store() as s:
        assert s.feedback_since()[0][column] == "the right one"


def test_feedback_retract(cli, capsys, answers, home_store):
    cli("feedback", answers[0], "up", "--user", "U1")
    assert cli("feedback", answers[0], "retract", "--user", "U1", "--json") == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["status"] == "stored"
    assert cli("feedback", answers[0], "retract", "--user", "U1") == 1  # nothing left to retract
    assert "nothing to retract" in capsys.readouterr().err


def test_feedback_unknown_answer_exits_2_with_one_line(cli, capsys, answers):
    assert cli("feedback", "nope-123", "up") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown answer id 'nope-123'" in err[0]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["feedback"], "give ANSWER_ID"),
        (["feedback", "a1"], "give ANSWER_ID"),
        (["feedback", "cli-0", "sideways"], "vote must be"),
        (["feedback", "a1", "up", "--file", "x.jsonl"], "cannot be combined"),
        (["feedback", "--file", "missing.jsonl"], "no such file"),
        (["feedback", "cli-0", "up", "--strict"], "--strict"),
    ],
)
def test_feedback_bad_input(cli, capsys, answers, argv, message):
    assert cli(*argv) == 2
    assert message in capsys.readouterr().err


def test_feedback_corrections_are_mutually_exclusive(cli, answers):
    with pytest.raises(SystemExit):
        cli("feedback", answers[0], "down", "--intent", "a", "--doc", "b")


def test_feedback_capped_single_vote_exits_1(cli, capsys, answers, monkeypatch):
    monkeypatch.setattr(Store, "from_settings", classmethod(
        lambda cls, settings: cls(settings.db_path, salt="s", daily_vote_cap=1)))
    assert cli("feedback", answers[0], "up", "--user", "U1") == 0
    assert cli("feedback", answers[1], "up", "--user", "U1", "--json") == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out.splitlines()[-1])["status"] == "capped"
    assert "daily vote cap" in captured.err


def _write_jsonl(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_feedback_bulk_import(cli, capsys, answers, home_store, tmp_path):
    votes = _write_jsonl(tmp_path / "votes.jsonl", [
        json.dumps({"answer_id": answers[0], "vote": "up"}),
        json.dumps({"answer_id": answers[1], "vote": "down", "intent": "refund", "user": "U1"}),
        "",
        "{not json",
        json.dumps({"answer_id": "ghost", "vote": "up"}),
        json.dumps({"answer_id": answers[2], "vote": "meh"}),
        json.dumps({"answer_id": answers[2], "vote": "down", "answer": "Call 415-555-2671", "user": "U2"}),
        json.dumps(["not", "an", "object"]),
        json.dumps({"answer_id": answers[2], "vote": "up", "ticket": 7}),
        json.dumps({"answer_id": answers[0], "vote": "up"}),  # same as line 1: duplicate
        json.dumps({"vote": "up"}),
        json.dumps({"answer_id": answers[2], "vote": "up", "doc_id": 12}),
    ])
    assert cli("feedback", "--file", str(votes), "--json") == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["stored"] == 3 and report["duplicates"] == 1 and report["capped"] == 0
    rejected = {r["line"]: r["error"] for r in report["rejected"]}
    assert sorted(rejected) == [4, 5, 6, 8, 9, 11, 12]
    assert "not valid JSON" in rejected[4]
    assert "unknown answer id 'ghost'" in rejected[5]
    assert 'vote must be "up" or "down"' in rejected[6]
    assert "expected a JSON object" in rejected[8]
    assert "unknown field(s) ticket" in rejected[9]
    assert "missing answer_id" in rejected[11]
    assert "doc_id must be a string" in rejected[12]
    # Rejected lines are visible on stderr, with file and line number.
    assert f"{votes}:5: rejected: unknown answer id 'ghost'" in captured.err
    with home_store() as s:
        rows = s.feedback_since()
        assert len(rows) == 3 and {r["origin"] for r in rows} == {"import"}
        assert any(r["correct_answer"] == "Call [PHONE]" for r in rows)
    # Importing the same file again stores nothing new.
    assert cli("feedback", "--file", str(votes)) == 0
    out = capsys.readouterr().out
    assert "stored 0, duplicates 4, capped 0, rejected 7 (of 11 lines)" in out
    assert cli("feedback", "--file", str(votes), "--strict") == 1


def test_feedback_bulk_import_from_stdin(cli, capsys, answers, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps({"answer_id": answers[0], "vote": "down"}) + "\n"))
    assert cli("feedback", "--file", "-", "--json") == 0
    assert json.loads(capsys.readouterr().out) == {"stored": 1, "duplicates": 0, "capped": 0, "rejected": []}


def test_feedback_bulk_unreadable_file(cli, capsys, answers, tmp_path):
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes(b'{"answer_id": "cli-0", "vote": "up", "user": "J\xf6rg"}\n')
    assert cli("feedback", "--file", str(bad)) == 2
    assert "cannot read" in capsys.readouterr().err


def test_purge_cli(cli, capsys, home_store, answer_factory, clock):
    clock.set(dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc))
    with home_store() as s:
        s.record_answer(answer_factory("old"))
    clock.set(dt.datetime(2025, 6, 1, tzinfo=dt.timezone.utc))
    with home_store() as s:
        s.record_answer(answer_factory("new"))
    assert cli("purge", "--older-than", "90d", "--dry-run", "--json") == 0
    dry = json.loads(capsys.readouterr().out)
    assert dry["dry_run"] is True and dry["deleted"]["answers"] == 1
    assert cli("purge", "--older-than", "90d") == 0
    assert "deleted: 0 feedback, 1 answers" in capsys.readouterr().out
    with home_store() as s:
        assert s.get_answer("old") is None and s.get_answer("new") is not None
    assert cli("purge", "--older-than", "90") == 2
    assert "duration" in capsys.readouterr().err


def test_forget_cli(cli, capsys, home_store, answers):
    with home_store() as s:
        s.record_vote(answers[1], "up", user="ASKER0", origin="button")
    assert cli("forget", "--user", "ASKER0", "--json") == 0
    assert json.loads(capsys.readouterr().out) == {
        "users": 1, "dry_run": False, "deleted": {"feedback": 1, "answers": 1, "monitored_messages": 0},
        "learned": {"learned_examples": 0, "versions_rebuilt": [], "versions_deleted": [], "heldout_rows": 0},
    }
    assert cli("forget", "--user", "ASKER1", "--user", "ASKER2") == 0
    assert "deleted: 0 feedback, 2 answers, 0 monitored_messages" in capsys.readouterr().out
    with home_store() as s:
        assert s.counts()["answers"] == 0


def test_export_cli(cli, capsys, home_store, answer_factory, clock, tmp_path):
    clock.set(dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc))
    with home_store() as s:
        s.record_answer(answer_factory("jan"))
        s.record_vote("jan", "up", user="U1", origin="button")
    clock.set(dt.datetime(2025, 2, 1, tzinfo=dt.timezone.utc))
    with home_store() as s:
        s.record_answer(answer_factory("feb"))
    assert cli("export") == 0
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert [(r["type"], r.get("answer_id")) for r in lines] == [("answer", "jan"), ("answer", "feb"), ("feedback", "jan")]
    assert "exported 3 records" in captured.err
    assert cli("export", "--since", "2025-01-15") == 0
    assert [json.loads(line)["answer_id"] for line in capsys.readouterr().out.splitlines()] == ["feb"]
    out = tmp_path / "out" / "export.jsonl"
    out.parent.mkdir()
    assert cli("export", "--kind", "feedback", "-o", str(out)) == 0
    assert [json.loads(line)["type"] for line in out.read_text().splitlines()] == ["feedback"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["export.jsonl"]  # no temp file left
    assert cli("export", "--since", "someday") == 2
    assert "cannot read 'someday'" in capsys.readouterr().err


def test_cli_refuses_a_foreign_database(cli, capsys, csbot_home, tmp_path):
    csbot_home.mkdir()
    (csbot_home / "csbot.sqlite3").write_bytes(b"garbage" * 100)
    assert cli("export") == 2
    err = capsys.readouterr().err
    assert str(csbot_home / "csbot.sqlite3") in err and err.count("\n") == 1
