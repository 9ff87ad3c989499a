"""The Slack inbox's payloads leave the disk with their processing: secure_delete clears the database
file, `Inbox.scrub` (a TRUNCATE checkpoint) the WAL. Real SQLite files; the raw bytes of the database,
its -wal and its -shm file are searched for the payload's text."""

from __future__ import annotations

import itertools
import json
import sqlite3

import pytest

from store.inbox import FAILED, InboxItem

CARD, EMAIL = "4111 1111 1111 1111", "jane.roe@example.org"
_events = itertools.count(1)

pytestmark = pytest.mark.sqlite_only  # the file itself: its checks, pragmas, WAL


def on_disk(db_path, text: str) -> int:
    return sum(p.read_bytes().count(text.encode()) for p in db_path.parent.iterdir() if p.name.startswith(db_path.name))


def queue(store, marker: str) -> dict:
    body = json.dumps({"event": {"type": "message", "text": f"{marker}: card {CARD}, mail {EMAIL}"}})
    store.inbox.accept([InboxItem(function="answer", work="answer", body=body)], event_id=f"Ev{next(_events)}")
    return store.inbox.take("owner-1")


def test_finishing_the_last_item_scrubs_the_wal(store, db_path):
    item = queue(store, "alpha-marker")
    assert on_disk(db_path, "alpha-marker") > 0 and on_disk(db_path, CARD) > 0
    store.inbox.finish(item["id"])
    assert on_disk(db_path, "alpha-marker") == 0 and on_disk(db_path, CARD) == 0 and on_disk(db_path, EMAIL) == 0
    assert (db_path.parent / (db_path.name + "-wal")).stat().st_size == 0


def test_a_busy_inbox_is_scrubbed_by_the_periodic_call_not_per_message(store, db_path):
    first = queue(store, "first-marker")
    store.inbox.accept([InboxItem(function="answer", work="answer", body='{"text": "second-marker"}')],
                       event_id="EvSecond")
    store.inbox.finish(first["id"])  # another item is still pending: no checkpoint for this one
    assert on_disk(db_path, "first-marker") > 0
    assert store.inbox.scrub(if_needed=True) is True  # the housekeeping round
    assert on_disk(db_path, "first-marker") == 0
    assert on_disk(db_path, "second-marker") > 0  # still pending: its payload is needed


def test_a_scrub_held_up_by_a_reader_reports_it_and_the_next_one_completes(store, db_path):
    item = queue(store, "held-marker")
    reader = sqlite3.connect(db_path)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM slack_inbox").fetchone()  # an open snapshot, as another process's
        store.inbox.finish(item["id"])
        assert on_disk(db_path, "held-marker") > 0
        assert store.inbox.scrub() is False
        reader.execute("COMMIT")
    finally:
        reader.close()
    assert store.inbox.scrub(if_needed=True) is True
    assert on_disk(db_path, "held-marker") == 0
    assert store.inbox.scrub(if_needed=True) is True  # nothing left to do


def test_a_failed_item_keeps_neither_its_payload_nor_raw_values_in_its_error(store, db_path):
    item = queue(store, "failed-marker")
    store.inbox.retry(item["id"], f"SlackApiError: could not post 'card {CARD}' for {EMAIL}", delay=0)
    [row] = store._read("SELECT body, error FROM slack_inbox")
    assert "failed-marker" in row["body"]  # a retry needs its payload
    assert CARD not in row["error"] and EMAIL not in row["error"] and "[CARD]" in row["error"]
    item = store.inbox.take("owner-1")
    store.inbox.fail(item["id"], f"SlackApiError: could not post 'card {CARD}' for {EMAIL}")
    [failed] = store.inbox.items(FAILED)
    assert failed["error"] == "SlackApiError: could not post 'card [CARD]' for [EMAIL]"
    assert store._read("SELECT body FROM slack_inbox") == [{"body": None}]
    assert on_disk(db_path, "failed-marker") == 0 and on_disk(db_path, CARD) == 0 and on_disk(db_path, EMAIL) == 0
