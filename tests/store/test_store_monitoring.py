"""Schema version 3: sentiment corrections for the retrain, monitoring alerts (the spike
cooldown), and the monitored-message reads the spike detector uses."""

from __future__ import annotations

import datetime as dt
import sqlite3

import pytest

from core.errors import UserError
from store import SCHEMA_VERSION, Store, schema

UTC = dt.timezone.utc
HOUR = dt.timedelta(hours=1)


def test_migrates_a_version_2_database_to_3_in_place(db_path):
    conn = schema.open_database(db_path, target_version=2)
    conn.execute(
        "INSERT INTO monitored_messages (time, channel, ts, sentiment, scores) VALUES"
        " ('2025-01-02T03:04:05.000000Z', 'C1', '1735787045.000000', 'negative', '{}')"
    )
    conn.commit()
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "sentiment_corrections" not in tables and "monitoring_alerts" not in tables
    conn.close()
    with Store(db_path, salt="s") as s:
        assert s.schema_version() == SCHEMA_VERSION >= 3
        assert [r["ts"] for r in s.monitored_messages()] == ["1735787045.000000"]
        assert s.sentiment_corrections() == [] and s.monitoring_alerts() == []
        assert s.record_sentiment_correction("C1", "1735787045.000000", "U1", "neutral", "fine")
    conn = sqlite3.connect(db_path)
    indexes = {r[1] for r in conn.execute("PRAGMA index_list(sentiment_corrections)")}
    assert "idx_sentiment_corrections_channel_ts_user_hash" in indexes
    conn.close()


def test_sentiment_corrections_are_redacted_validated_and_last_write_wins(store, clock):
    clock.set(dt.datetime(2025, 5, 1, 9, tzinfo=UTC))
    assert store.record_sentiment_correction("C1", "1.000001", "U1", "negative",
                                             "not happy, mail me at a.b@example.com", event_id="view:V1")
    assert not store.record_sentiment_correction("C1", "1.000001", "U1", "negative", "x", event_id="view:V1")  # replay
    store.record_sentiment_correction("C1", "1.000002", "U2", "Positive", "love it")
    rows = store.sentiment_corrections()
    assert [set(r) for r in rows] == [{"text", "label", "user_hash", "time", "channel", "ts"}] * 2
    assert rows[0]["text"] == "not happy, mail me at [EMAIL]" and rows[0]["label"] == "negative"
    assert rows[0]["user_hash"] == store.hash_user("U1") and rows[0]["channel"] == "C1" and rows[0]["ts"] == "1.000001"
    assert rows[1]["label"] == "positive"
    watermark = rows[-1]["time"]
    clock.advance(HOUR)
    store.record_sentiment_correction("C1", "1.000001", "U1", "neutral", "not happy, mail me at a.b@example.com")
    assert [(r["ts"], r["label"]) for r in store.sentiment_corrections()] == [("1.000002", "positive"),
                                                                           ("1.000001", "neutral")]
    assert [r["label"] for r in store.sentiment_corrections(since=watermark)] == ["neutral"]
    assert [r["label"] for r in store.sentiment_corrections(since={"data_until": watermark})] == ["neutral"]
    with pytest.raises(UserError):
        store.record_sentiment_correction("C1", "1.0", "U1", "angry", "x")
    with pytest.raises(UserError):
        store.record_sentiment_correction("C1", "1.0", "U1", "negative", "x", origin="button")
    with pytest.raises(UserError):
        store.record_sentiment_correction("", "1.0", "U1", "negative", "x")


def test_text_of_corrections_is_kept_even_without_message_text(make_store):
    with make_store(salt="s", store_message_text=False) as s:
        s.record_sentiment_correction("C1", "2.0", "U1", "negative", "the app crashed again")
        assert s.sentiment_corrections()[0]["text"] == "the app crashed again"


def test_forget_and_purge_cover_corrections_and_alerts(store, clock):
    clock.set(dt.datetime(2025, 1, 1, tzinfo=UTC))
    store.record_sentiment_correction("C1", "1.0", "U_GONE", "negative", "walrus-marker text")
    store.claim_monitoring_alert("C1", dt.datetime(2025, 1, 1, tzinfo=UTC), HOUR, {"recent_n": 20})
    clock.set(dt.datetime(2025, 6, 1, tzinfo=UTC))
    store.record_sentiment_correction("C1", "2.0", "U_KEEP", "neutral", "recent")
    assert store.forget_user("U_GONE", dry_run=True) == {"feedback": 0, "answers": 0, "monitored_messages": 0,
                                                         "sentiment_corrections": 1}
    assert store.forget_user("U_GONE")["sentiment_corrections"] == 1
    assert store.forget_user("U_GONE") == {"feedback": 0, "answers": 0, "monitored_messages": 0}
    assert [r["text"] for r in store.sentiment_corrections()] == ["recent"]
    store.record_sentiment_correction("C1", "3.0", "U3", "negative", "old")  # at 2025-06-01
    clock.set(dt.datetime(2025, 12, 1, tzinfo=UTC))
    counts = store.purge(dt.timedelta(days=90))
    assert counts["sentiment_corrections"] == 2 and counts["monitoring_alerts"] == 1
    assert store.sentiment_corrections() == [] and store.monitoring_alerts() == []


def test_alert_claims_respect_the_cooldown_both_ways(store):
    t = dt.datetime(2025, 4, 1, 12, tzinfo=UTC)
    first = store.claim_monitoring_alert("C1", t, HOUR, {"recent_n": 25, "recent_negative": 20, "baseline_n": 300,
                                                         "baseline_negative": 60, "topics": [["refund", 9]]})
    assert isinstance(first, int)
    assert store.claim_monitoring_alert("C1", t + 59 * dt.timedelta(minutes=1), HOUR) is None
    assert store.claim_monitoring_alert("C1", t - 30 * dt.timedelta(minutes=1), HOUR) is None  # a late message
    assert store.claim_monitoring_alert("C2", t, HOUR) is not None  # per channel
    assert store.claim_monitoring_alert("C1", t + HOUR, HOUR) is not None
    [a, b] = store.monitoring_alerts("C1")
    assert (a["recent_n"], a["recent_negative"], a["baseline_n"], a["baseline_negative"]) == (25, 20, 300, 60)
    assert a["details"]["topics"] == [["refund", 9]] and b["time"] > a["time"]
    assert [r["channel"] for r in store.monitoring_alerts(since=t + dt.timedelta(minutes=1))] == ["C1"]


def test_monitored_counts_and_lookup(store):
    base = dt.datetime(2025, 4, 1, tzinfo=UTC).timestamp()
    for i, label in enumerate(["negative", "neutral", "negative", "positive"]):
        store.record_monitored_message(channel="C1", ts=f"{base + i * 60:.6f}", user="U1", sentiment=label,
                                       scores={label: 0.9}, intent=None, confidence=None, text=None)
    start = dt.datetime.fromtimestamp(base, UTC)
    # (start, end]: the first message is at `start` exactly, so it is left out.
    assert store.monitored_sentiment_counts("C1", start, start + dt.timedelta(minutes=3)) == {
        "neutral": 1, "negative": 1, "positive": 1}
    assert store.monitored_sentiment_counts("C1", start - HOUR, start) == {"negative": 1}
    assert store.monitored_sentiment_counts("C2", start - HOUR, start + HOUR) == {}
    row = store.monitored_message("C1", f"{base + 60:.6f}")
    assert row["sentiment"] == "neutral" and row["scores"] == {"neutral": 0.9}
    assert store.monitored_message("C1", "123.0") is None
