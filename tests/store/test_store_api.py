"""The rest of the Store API: answers, monitored messages, training runs, retention, export, settings."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import stat

import pytest

from core.errors import UserError
from store import Store, load_or_create_salt, parse_duration, parse_since, to_iso

DAY = dt.timedelta(days=1)


def test_record_answer_keeps_provenance(store, answer_factory):
    a = answer_factory(used_context=True)
    assert store.record_answer(a, user="U1", workspace="T1", channel="C1", thread="171.2", origin="slack")
    row = store.get_answer(a.answer_id)
    assert row["workspace"] == "T1" and row["channel"] == "C1" and row["thread"] == "171.2"
    assert row["origin"] == "slack" and row["user_hash"] == store.hash_user("U1")
    assert row["intent"] == "password_reset" and row["confidence"] == pytest.approx(0.91)
    assert row["sentiment"] == "neutral" and row["sentiment_scores"]["neutral"] == pytest.approx(0.7)
    assert row["sources"] == [
        {"doc_id": "kb-12", "title": "Resetting your password", "url": "https://help.example.com/kb-12", "score": 0.83}
    ]
    assert row["model_version"] == "intent-v3" and row["handoff"] is False and row["used_context"] is True
    assert row["doc_id"] == "kb-12" and row["time"].endswith("Z")


def test_record_answer_is_idempotent_and_question_override_is_redacted(store, answer_factory):
    a = answer_factory(question="engine's normalised text")
    assert store.record_answer(a, question="original text from bob@x.io") is True
    assert store.record_answer(a, question="a replay") is False
    assert store.get_answer(a.answer_id)["question"] == "original text from [EMAIL]"
    assert store.get_answer("missing") is None
    with pytest.raises(UserError):
        store.record_answer(dataclasses.replace(a, answer_id=""))


def test_monitored_messages_text_only_when_configured(tmp_path):
    msg = dict(channel="C1", user="U1", sentiment="negative", scores={"negative": 0.8, "neutral": 0.15, "positive": 0.05},
               intent="refund", confidence=0.7, text="angry at bob@x.io")
    with Store(tmp_path / "a.sqlite3", salt="s") as s:
        assert s.record_monitored_message(ts="1700000000.000100", **msg)
        (row,) = s.monitored_messages()
        assert row["text"] is None and row["scores"]["negative"] == pytest.approx(0.8)
        assert row["user_hash"] == s.hash_user("U1") and row["time"].startswith("2023-11-14T22:13:20")
    with Store(tmp_path / "b.sqlite3", salt="s", store_message_text=True) as s:
        s.record_monitored_message(ts="1700000000.000100", **msg)
        assert s.monitored_messages()[0]["text"] == "angry at [EMAIL]"


def test_monitored_messages_dedupe_and_filters(store):
    def rec(channel, ts):
        return store.record_monitored_message(channel=channel, ts=ts, user="U1", sentiment="neutral",
                                              scores={}, intent=None, confidence=None, text=None)

    assert rec("C1", "1700000000.000100") and not rec("C1", "1700000000.000100")  # Slack replay
    rec("C2", "1700000100.000100")
    rec("C1", "1700086400.000100")
    assert len(store.monitored_messages()) == 3
    assert [r["ts"] for r in store.monitored_messages(channel="C1")] == ["1700000000.000100", "1700086400.000100"]
    assert [r["ts"] for r in store.monitored_messages(since="2023-11-15")] == ["1700086400.000100"]
    assert len(store.monitored_messages(channel="C2", since=dt.datetime(2023, 11, 14))) == 1


def test_training_runs(store, clock):
    assert store.last_training_run() is None and store.training_runs() == []
    r1 = store.record_training_run(model_version="m1", data_until="2025-03-01T00:00:00Z", n_feedback=10,
                                   metrics={"accuracy": 0.9}, started_at=dt.datetime(2025, 3, 1, 2, 0), git_sha="abc")
    r2 = store.record_training_run(model_version="m2", status="failed", notes="OOM")
    assert r2 > r1
    runs = store.training_runs()
    assert [r["id"] for r in runs] == [r2, r1]
    last = store.last_training_run()
    assert last["id"] == r1 and last["metrics"] == {"accuracy": 0.9} and last["git_sha"] == "abc"
    assert last["started_at"] == "2025-03-01T02:00:00.000000Z" and last["data_until"] == "2025-03-01T00:00:00.000000Z"
    assert store.last_training_run(any_status=True)["id"] == r2
    assert len(store.training_runs(limit=1)) == 1


def _populate(store, answer_factory, clock, user="U1", when=None):
    if when is not None:
        clock.set(when)
    a = answer_factory(question=f"question from {user}")
    store.record_answer(a, user=user)
    store.record_vote(a.answer_id, "up", user=user, origin="button", event_id=f"ev-{a.answer_id}")
    store.record_monitored_message(channel="C1", ts=str(clock.now.timestamp()), user=user, sentiment="neutral",
                                   scores={}, intent=None, confidence=None, text=None)
    return a.answer_id


def test_purge_older_than(store, answer_factory, clock):
    now = dt.datetime(2025, 6, 1, tzinfo=dt.timezone.utc)
    old = _populate(store, answer_factory, clock, when=now - 120 * DAY)
    # A recent vote on an old answer goes with the answer.
    clock.set(now - 10 * DAY)
    store.record_vote(old, "down", user="U2", origin="button")
    new = _populate(store, answer_factory, clock, when=now - 5 * DAY)
    clock.set(now)
    assert store.purge(dt.timedelta(days=90), dry_run=True) == {
        "feedback": 2, "answers": 1, "monitored_messages": 1, "processed_events": 1,
    }
    assert store.counts()["answers"] == 2
    counts = store.purge(dt.timedelta(days=90))
    assert counts == {"feedback": 2, "answers": 1, "monitored_messages": 1, "processed_events": 1}
    assert store.get_answer(old) is None and store.get_answer(new) is not None
    assert len(store.feedback_since()) == 1 and len(store.monitored_messages()) == 1
    assert store.purge(dt.timedelta(days=90)) == {"feedback": 0, "answers": 0, "monitored_messages": 0, "processed_events": 0}
    with pytest.raises(UserError):
        store.purge(dt.timedelta(0))


def test_purge_keeps_training_runs(store, clock):
    clock.set(dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc))
    store.record_training_run(model_version="m0")
    clock.set(dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc))
    store.purge(dt.timedelta(days=1))
    assert store.last_training_run()["model_version"] == "m0"


def test_forget_user_deletes_every_row_and_leaves_no_trace_on_disk(db_path, answer_factory, clock):
    store = Store(db_path, salt="s")
    mine = answer_factory(question="zebracorn-marker my private question")
    store.record_answer(mine, user="U_GONE")
    store.record_vote(mine.answer_id, "up", user="U_OTHER", origin="button")  # a vote on my question
    theirs = answer_factory(question="someone else's question")
    store.record_answer(theirs, user="U_OTHER")
    store.record_vote(theirs.answer_id, "down", user="U_GONE", origin="modal", answer_text="quokka-marker fix")
    store.record_monitored_message(channel="C1", ts="1.0", user="U_GONE", sentiment="negative", scores={},
                                   intent=None, confidence=None, text=None)
    assert store.forget_user("U_GONE", dry_run=True) == {"feedback": 2, "answers": 1, "monitored_messages": 1}
    assert store.forget_user("U_GONE") == {"feedback": 2, "answers": 1, "monitored_messages": 1}
    assert store.get_answer(mine.answer_id) is None
    assert store.get_answer(theirs.answer_id)["votes"] == {"up": 0, "down": 0}
    assert store.counts()["answers"] == 1 and store.monitored_messages() == []
    assert store.forget_user("U_GONE") == {"feedback": 0, "answers": 0, "monitored_messages": 0}
    store.close()
    on_disk = b"".join(p.read_bytes() for p in db_path.parent.iterdir() if p.name.startswith(db_path.name))
    assert b"zebracorn-marker" not in on_disk and b"quokka-marker" not in on_disk


def test_export_jsonl_records(store, answer_factory, clock):
    clock.set(dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc))
    old = _populate(store, answer_factory, clock, user="U1")
    clock.set(dt.datetime(2025, 2, 1, tzinfo=dt.timezone.utc))
    new = _populate(store, answer_factory, clock, user="U2")
    records = list(store.export())
    assert [r["type"] for r in records] == ["answer", "answer", "feedback", "feedback", "monitored_message", "monitored_message"]
    json.dumps(records)  # all JSON-able
    recent = list(store.export(since="2025-01-15"))
    assert {r.get("answer_id") for r in recent if r["type"] != "monitored_message"} == {new}
    assert old not in {r.get("answer_id") for r in recent}
    assert [r["type"] for r in store.export(kinds=["feedback"])] == ["feedback", "feedback"]
    with pytest.raises(UserError):
        list(store.export(kinds=["nope"]))


def test_export_does_not_block_writers(store, answer_factory):
    for _ in range(3):
        store.record_answer(answer_factory())
    records = store.export()
    first = next(records)  # a read snapshot is open now
    extra = answer_factory()
    assert store.record_answer(extra)  # the writer is not blocked
    rest = list(records)
    assert first["type"] == "answer" and len(rest) == 2  # snapshot taken before the write


def test_counts(store, answer_factory):
    a = answer_factory()
    store.record_answer(a)
    store.record_vote(a.answer_id, "up", user="U1", origin="button")
    store.record_vote(a.answer_id, "down", user="U2", origin="button")
    store.claim_event("E1")
    c = store.counts()
    assert c["answers"] == 1 and c["feedback"] == 2 and c["votes_up"] == 1 and c["votes_down"] == 1
    assert c["processed_events"] == 1 and c["training_runs"] == 0 and c["monitored_messages"] == 0


def test_from_settings_creates_a_private_salt_once(csbot_home):
    from core.settings import Settings

    with Store.from_settings(Settings.load()) as s1:
        assert s1.path == csbot_home / "csbot.sqlite3"
        h1 = s1.hash_user("U1")
        assert s1.daily_vote_cap == 200 and s1.redactor.kinds and not s1.store_message_text
    salt_file = csbot_home / "salt"
    assert stat.S_IMODE(os.stat(salt_file).st_mode) == 0o600
    salt = salt_file.read_text()
    with Store.from_settings(Settings.load()) as s2:
        assert s2.hash_user("U1") == h1
    assert salt_file.read_text() == salt
    assert sorted(p.name for p in csbot_home.iterdir() if not p.name.startswith("csbot.sqlite3")) == ["salt"]
    assert load_or_create_salt(salt_file) == salt.strip()


def test_from_settings_reads_the_privacy_and_cap_settings_from_csbot_toml(csbot_home, tmp_path, answer_factory):
    from core.settings import Settings

    csbot_home.mkdir(parents=True)
    (csbot_home / "csbot.toml").write_text('user_hash_salt = "configured"\nvote_daily_cap = 2\n'
                                           "redact_pii = false\nstore_message_text = true\n", encoding="utf-8")
    with Store.from_settings(Settings.load()) as s:
        assert s.hash_user("U1") == Store(tmp_path / "x.sqlite3", salt="configured").hash_user("U1")
        a = answer_factory(question="mail bob@x.io")
        s.record_answer(a)
        assert s.get_answer(a.answer_id)["question"] == "mail bob@x.io"  # redaction off
        s.record_monitored_message(channel="C1", ts="1.0", user="U1", sentiment="neutral", scores={},
                                   intent=None, confidence=None, text="kept")
        assert s.monitored_message("C1", "1.0")["text"] == "kept"  # message text kept
        others = [answer_factory() for _ in range(3)]
        for other in others:
            s.record_answer(other)
        statuses = [s.record_vote(o.answer_id, "up", user="U1", origin="button").status for o in others]
        assert statuses == ["stored", "stored", "capped"]  # two new votes a day
    assert not (csbot_home / "salt").exists()


def test_time_helpers(clock):
    assert to_iso(dt.datetime(2025, 1, 2, 3, 4, 5)) == "2025-01-02T03:04:05.000000Z"
    assert to_iso("2025-01-02T05:04:05+02:00") == "2025-01-02T03:04:05.000000Z"
    assert to_iso("2025-01-02") == "2025-01-02T00:00:00.000000Z"
    assert to_iso(dt.date(2025, 1, 2)) == "2025-01-02T00:00:00.000000Z"
    assert to_iso(0) == "1970-01-01T00:00:00.000000Z"
    assert parse_duration("90d") == dt.timedelta(days=90)
    assert parse_duration("12h") == dt.timedelta(hours=12) and parse_duration("2w") == dt.timedelta(weeks=2)
    assert parse_duration("30m") == dt.timedelta(minutes=30) and parse_duration("45s") == dt.timedelta(seconds=45)
    for bad in ("90", "d", "-3d", "3 years"):
        with pytest.raises(UserError):
            parse_duration(bad)
    assert parse_since(None) is None
    assert parse_since("7d").startswith("2025-03-03T12:00:00.")  # the clock says 2025-03-10T12:00
    with pytest.raises(UserError, match="cannot read"):
        parse_since("last tuesday")
