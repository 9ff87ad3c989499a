"""The Slack app on a PostgreSQL store: the real bolt App over HTTP with the real engine, the mock
Slack Web API and a real PostgreSQL database. While the database cannot be reached the intake answers
503 (Slack retries) instead of acknowledging what it could not store, and /healthz says so; once it
is back, Slack's retry is answered exactly once."""

from __future__ import annotations

import json
import time

import psycopg
import pytest

from store import Store
from store.backends import upgrade_database
from store.migrate import HEAD_REVISION
from tests.pg import new_database

pytestmark = pytest.mark.slow


@pytest.fixture
def pg_store():
    url, drop = new_database()
    upgrade_database(url)
    store = Store(url, salt="slack-pg")
    yield store, url
    store.close()
    drop()


def _connections(url: str, allow: bool) -> None:
    """Open or close the database to new connections, and end the open ones (an outage, as the
    store's processes see it)."""
    admin_url, name = url.rsplit("/", 1)[0] + "/postgres", url.rsplit("/", 1)[1]
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {"true" if allow else "false"}')
        if not allow:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))


def test_an_outage_is_503_not_an_ack_and_the_retry_is_answered_once(make_bot, recorded_engine, pg_store):
    store, url = pg_store
    bot = make_bot(recorded_engine, store=store)
    bot.mention("How do I reset my password?", event_id="EvPG1")
    bot.mock.wait_for("chat.postMessage")
    bot.idle()
    status, body = bot.sender.get("/healthz")
    health = json.loads(body)
    assert health["ok"] and health["database"]["dialect"] == "postgresql" and health["database"]["schema"] == HEAD_REVISION

    message = bot.mock.add_message("C1", "<@UBOT> how long does shipping take", user="U2")
    event = {"type": "app_mention", "user": "U2", "text": message["text"], "ts": message["ts"], "channel": "C1",
             "event_ts": message["ts"]}
    _connections(url, allow=False)
    try:
        status, _ = bot.sender.event(event, event_id="EvPG2")
        assert status == 503  # not acknowledged: Slack delivers it again
        health = json.loads(bot.sender.get("/healthz")[1])
        assert health["ok"] is False and health["database"]["ok"] is False
        assert "cannot reach the csbot database" in health["database"]["error"]
    finally:
        _connections(url, allow=True)
    status, _ = bot.sender.event(event, event_id="EvPG2", retry_num=1)
    assert status == 200
    bot.idle()
    status, _ = bot.sender.event(event, event_id="EvPG2", retry_num=2)  # acknowledged already: a duplicate
    assert status == 200
    bot.idle()
    replies = [c.args for c in bot.mock.calls_to("chat.postMessage") if c.args.get("thread_ts") == message["ts"]]
    assert len(replies) == 1
    assert json.loads(bot.sender.get("/healthz")[1])["database"]["ok"] is True


def test_an_outage_while_an_answer_is_posted_loses_nothing_and_posts_once(make_bot, recorded_engine, pg_store):
    """The database goes away while a worker posts an answer: the worker cannot record the outcome, the
    item stays this live process's, and once the database is back it is handed back and run again, where
    the reply ledger finds the answer already in the thread instead of posting it twice."""
    store, url = pg_store
    bot = make_bot(recorded_engine, store=store)
    bot.mock.delay("chat.postMessage", 3.0)
    message = bot.mock.add_message("C1", "<@UBOT> how long does shipping take", user="U3")
    event = {"type": "app_mention", "user": "U3", "text": message["text"], "ts": message["ts"], "channel": "C1",
             "event_ts": message["ts"]}
    assert bot.sender.event(event, event_id="EvPG3")[0] == 200
    deadline = time.monotonic() + 30
    # The mock records a call when it arrives, then holds the response back for the delay.
    while not [c for c in bot.mock.calls_to("chat.postMessage") if c.args.get("thread_ts") == message["ts"]]:
        assert time.monotonic() < deadline, "the answer was never being posted"
        time.sleep(0.05)
    _connections(url, allow=False)  # mid-post: the ledger's record and the item's finish cannot be written
    time.sleep(4.0)
    _connections(url, allow=True)
    bot.mock.delay("chat.postMessage", 0.0)
    deadline = time.monotonic() + 60
    while store.inbox.depth() != {"pending": 0, "running": 0, "failed": 0}:
        assert time.monotonic() < deadline, store.inbox.items()
        time.sleep(0.2)
    bot.idle()
    replies = [c.args for c in bot.mock.calls_to("chat.postMessage") if c.args.get("thread_ts") == message["ts"]]
    assert len(replies) == 1
