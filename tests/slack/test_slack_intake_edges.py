"""The intake's edges, through the real waitress server on 127.0.0.1 with the real bolt App, the real
engine (demo KB) and a real store: bursts, backpressure and shedding, wrong-shaped payloads, every
event type, revoked workspaces, privacy of escalations and votes, /healthz, half-sent requests and
the age limit for work resumed after a restart."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from bot.slack import ids
from bot.slack.handlers.messages import BUSY_TEXT
from store.inbox import ANSWER, SENTIMENT, InboxItem
from tests.slack.slack_mock import BOT_USER, TEAM
from tests.slack.slack_sender import button_payload


def posts(bot, channel=None):
    return [c.args for c in bot.mock.calls_to("chat.postMessage") if channel in (None, c.args["channel"])]


def ephemerals(bot):
    return [c.args for c in bot.mock.calls_to("chat.postEphemeral")]


@pytest.mark.slow
def test_a_200_request_concurrent_burst_gets_no_connection_error(make_bot, recorded_engine):
    bot = make_bot(recorded_engine, busy_after_seconds=600)  # answer every one, however late
    messages = [bot.mock.add_message("C1", f"<@UBOT> how long does shipping take? ({i})") for i in range(200)]
    barrier = threading.Barrier(200)

    def send(message):
        event = {"type": "app_mention", "user": "U1", "text": message["text"], "ts": message["ts"], "channel": "C1"}
        barrier.wait()
        try:
            return bot.sender.event(event)[0]
        except OSError as exc:
            return repr(exc)

    with ThreadPoolExecutor(200) as pool:
        statuses = list(pool.map(send, messages))
    assert statuses == [200] * 200  # no reset, no refused connection
    bot.idle()
    assert sorted(p["thread_ts"] for p in posts(bot)) == sorted(m["ts"] for m in messages)


def test_a_backed_up_inbox_sheds_by_the_policy_and_acks_stay_fast(make_bot, recorded_engine):
    bot = make_bot(recorded_engine, workers=1, busy_after_seconds=0.5, sentiment_max_wait_seconds=0.5,
                   watched_channels="CWATCH")
    bot.mock.delay("chat.postMessage", 1.5)  # a slow Slack: one answer takes the only worker 1.5 s
    first = bot.mention("How do I reset my password?", user="U0")
    [call] = bot.mock.wait_for("chat.postMessage")  # the worker now waits on Slack
    answer_id = call.args["metadata"]["event_payload"]["answer_id"]
    acks = []
    for i in range(1, 5):
        started = time.monotonic()
        bot.mention("how do I cancel my subscription?", user=f"U{i}")
        acks.append(time.monotonic() - started)
    for i in range(3):
        started = time.monotonic()
        bot.message(f"this delivery is late again {i}", channel="CWATCH", user="U9")
        acks.append(time.monotonic() - started)
    started = time.monotonic()
    assert bot.sender.interaction(button_payload(bot, ids.VOTE_UP, answer_id, "1.0", user="U7"))[0] == 200
    acks.append(time.monotonic() - started)
    bot.idle()
    assert max(acks) < 3.0
    assert [p["thread_ts"] for p in posts(bot)] == [first["ts"]]  # only the question taken in time got a model answer
    assert sorted(e["user"] for e in ephemerals(bot)) == ["U1", "U2", "U3", "U4"]
    assert all(e["text"] == BUSY_TEXT for e in ephemerals(bot))
    assert bot.store.get_answer(answer_id)["votes"]["up"] == 1  # votes are never shed
    assert bot.store.monitored_messages("CWATCH") == []  # sentiment is shed first
    health = json.loads(bot.sender.get("/healthz")[1])
    assert health["shed"] == 3  # the watched-channel scoring
    assert health["late"] == 7  # 4 questions (the busy note) + 3 watched-channel messages (no reply anyway)


def test_a_full_inbox_sheds_sentiment_and_marks_questions_late_at_intake(tmp_path):
    from store import Store

    store = Store(tmp_path / "csbot.sqlite3", salt="test-salt")
    inbox = store.inbox
    items = [InboxItem("Monitoring.on_message", SENTIMENT, "{}"), InboxItem("MessageHandler.on_mention", ANSWER, "{}")]
    assert inbox.accept(items, event_id="Ev1", limit=4).queued == 2
    accepted = inbox.accept(items * 2, event_id="Ev2", limit=2)  # 2 already queued: full
    assert (accepted.queued, accepted.shed, accepted.late) == (2, 2, 2)
    assert inbox.accept(items, event_id="Ev2", limit=2).duplicate
    assert [row["late"] for row in inbox.items() if row["work"] == ANSWER] == [0, 1, 1]
    store.close()


WRONG_SHAPES = [
    {"type": "event_callback", "event_id": "EvW1", "event": {"type": "message", "subtype": "message_changed",
                                                             "channel": "C1", "message": "oops"}},
    {"type": "event_callback", "event_id": ["EvW2"], "event": {"type": "app_mention", "text": "hi", "ts": "1.0"}},
    {"type": "block_actions", "actions": [], "user": {"id": "U1"}},
    {"type": "block_actions", "actions": ["csbot_vote_up"], "user": {"id": "U1"}},
    {"type": "view_submission", "view": {"callback_id": ids.CORRECTION_MODAL}, "user": {"id": "U1"}},
    {"type": "event_callback", "event_id": "EvW3", "event": {"type": "app_mention", "user": {"id": "U1"}, "ts": "1.0"}},
    {"type": "message_action", "callback_id": ids.CORRECT_SENTIMENT_SHORTCUT, "message": "text"},
    {"type": "block_actions", "actions": [{"action_id": ids.VOTE_UP}], "user": "U1"},
    {"type": 7},
]


def test_signed_payloads_of_a_wrong_shape_get_400_never_500(make_bot, recorded_engine):
    bot = make_bot(recorded_engine)
    for payload in WRONG_SHAPES:
        assert bot.sender.post(json.dumps(payload))[0] == 400, payload
        assert bot.sender.interaction(payload)[0] == 400, payload
    # Well-formed but pointing at nothing: acknowledged, then nothing to do.
    odd_vote = {"type": "block_actions", "user": {"id": "U1"}, "channel": {"id": "C1"}, "trigger_id": "9.9.odd",
                "actions": [{"action_id": ids.VOTE_UP, "value": "no-such-answer"}],
                "response_url": bot.mock.response_url("odd")}
    assert bot.sender.interaction(odd_vote)[0] == 200
    bot.mention("How do I reset my password?")
    bot.idle()
    assert len(posts(bot)) == 1 and bot.store.inbox.depth()["failed"] == 0


OTHER_EVENTS = [
    {"type": "member_joined_channel", "user": "U5", "channel": "C1", "channel_type": "C", "team": TEAM},
    {"type": "channel_rename", "channel": {"id": "C1", "name": "support", "created": 1}},
    {"type": "user_change", "user": {"id": "U5", "name": "someone"}},
    {"type": "team_join", "user": {"id": "U6"}},
    {"type": "emoji_changed", "subtype": "add", "name": "party"},
]


def test_every_event_type_gets_200_and_one_log_line(make_bot, recorded_engine, caplog):
    bot = make_bot(recorded_engine)
    with caplog.at_level(logging.INFO):
        for event in OTHER_EVENTS:
            caplog.clear()
            assert bot.sender.event(event)[0] == 200, event
            lines = [r for r in caplog.records if r.name.startswith("csbot")]
            assert len(lines) == 1 and event["type"] in lines[0].getMessage(), (event, lines)
    for payload in ({"type": "block_actions", "user": {"id": "U1"}, "actions": [{"action_id": "not_ours"}]},
                    {"type": "shortcut", "callback_id": "not_ours", "user": {"id": "U1"}, "trigger_id": "1.2.3"},
                    {"type": "view_submission", "user": {"id": "U1"}, "view": {"type": "modal", "callback_id": "x"}}):
        assert bot.sender.interaction(payload)[0] == 200, payload
    bot.idle()
    assert bot.mock.calls_to("chat.postMessage") == []


def test_app_uninstalled_stops_posting_there_and_healthz_says_so(make_bot, recorded_engine, caplog):
    bot = make_bot(recorded_engine)
    with caplog.at_level(logging.WARNING, logger="csbot"):
        assert bot.sender.event({"type": "app_uninstalled"})[0] == 200
    assert any("app_uninstalled" in r.getMessage() and TEAM in r.getMessage() for r in caplog.records)
    assert bot.sender.event({"type": "tokens_revoked", "tokens": {"bot": [BOT_USER]}})[0] == 200
    health = json.loads(bot.sender.get("/healthz")[1])
    assert list(health["revoked_workspaces"]) == [TEAM]
    assert health["revoked_workspaces"][TEAM]["reason"] == "app_uninstalled"
    bot.mention("How do I reset my password?")
    bot.idle()
    assert bot.mock.calls_to("chat.postMessage") == []


def test_an_escalation_from_a_dm_carries_the_redacted_question(make_bot, recorded_engine):
    bot = make_bot(recorded_engine, escalation_channel="CESC", oncall_usergroup="SONCALL")
    bot.message("What is the capital of France? My card is 4111 1111 1111 1111, mail jane.doe@example.com",
                channel="D1", channel_type="im")
    bot.idle()
    [reply] = posts(bot, "D1")
    assert "colleague" in reply["text"]
    [escalation] = posts(bot, "CESC")
    shown = json.dumps(escalation)
    assert "4111" not in shown and "jane.doe@example.com" not in shown
    assert "[CARD]" in shown and "[EMAIL]" in shown and "slack.com/archives/D1/" in shown


def test_votes_count_only_from_users_who_could_see_the_answer(make_bot, recorded_engine):
    bot = make_bot(recorded_engine)
    bot.message("How do I reset my password?", channel="D1", channel_type="im", user="UASK")
    bot.idle()
    [reply] = bot.mock.bot_replies("D1")  # streamed, its metadata set by chat.stopStream
    answer_id, reply_ts = reply["metadata"]["event_payload"]["answer_id"], reply["ts"]
    outsider = button_payload(bot, ids.VOTE_UP, answer_id, reply_ts, user="UOTHER", channel="D1", trigger="1.o.a")
    elsewhere = button_payload(bot, ids.VOTE_UP, answer_id, reply_ts, user="UASK", channel="C1", trigger="2.o.a")
    asker = button_payload(bot, ids.VOTE_DOWN, answer_id, reply_ts, user="UASK", channel="D1", trigger="3.o.a")
    for payload in (outsider, elsewhere, asker):
        assert bot.sender.interaction(payload)[0] == 200
    bot.sender.event({"type": "reaction_added", "user": "UOTHER", "reaction": "+1", "item_user": BOT_USER,
                      "item": {"type": "message", "channel": "D1", "ts": reply_ts}})
    bot.idle()
    assert bot.store.get_answer(answer_id)["votes"] == {"up": 0, "down": 1}  # only the asker's
    [row] = bot.store.feedback_since()
    assert row["user_hash"] == bot.store.hash_user("UASK")


@pytest.mark.slow
def test_healthz_shows_a_newly_promoted_model_without_traffic(make_bot, settings, tmp_path):
    from serving.engine import Engine
    from training.ingest import ingest

    engine = Engine(settings, reload_check_seconds=0.0)
    bot = make_bot(engine)  # on the same CSBOT_HOME as `settings`
    before = json.loads(bot.sender.get("/healthz")[1])["model_version"]
    extra = tmp_path / "gift.md"
    extra.write_text("# Gift wrapping\n\nWe wrap any order for 2 euro; tick 'gift wrap' at checkout.\n")
    promoted = ingest([extra], settings)["version"]
    assert promoted != before
    deadline = time.monotonic() + 30
    while json.loads(bot.sender.get("/healthz")[1])["model_version"] != promoted:
        assert time.monotonic() < deadline, "healthz still shows the old model"
        time.sleep(0.2)
    assert bot.mock.calls_to("chat.postMessage") == []  # no traffic served in between


def test_half_sent_requests_hold_no_thread(make_bot, recorded_engine):
    bot = make_bot(recorded_engine)  # 8 HTTP threads
    stalled = []
    for _ in range(30):
        conn = socket.create_connection((bot.sender.host, bot.sender.port))
        conn.sendall(b"POST /slack/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 500\r\n\r\n{\"type\": ")
        stalled.append(conn)
    try:
        started = time.monotonic()
        bot.mention("How do I reset my password?")
        assert time.monotonic() - started < 1.0
        bot.mock.wait_for("chat.postMessage")
    finally:
        for conn in stalled:
            conn.close()


def test_work_resumed_after_a_restart_is_done_within_the_age_limit(make_bot, recorded_engine):
    bot = make_bot(recorded_engine, inbox_max_age_seconds=900)
    bot.app.workers.stop(5)  # the process stops; questions acknowledged after that wait in its inbox
    recent = bot.mention("How do I reset my password?", user="URECENT")
    bot.mention("How do I reset my password?", user="USTALE")
    with bot.store._write() as conn:  # their ages when the next process starts: 2 minutes and an hour
        conn.execute("UPDATE slack_inbox SET received = received - 120 WHERE body LIKE '%URECENT%'")
        conn.execute("UPDATE slack_inbox SET received = received - 3600 WHERE body LIKE '%USTALE%'")
    restarted = make_bot(recorded_engine, store=bot.store, inbox_max_age_seconds=900)
    restarted.idle()
    assert [p["thread_ts"] for p in posts(bot)] == [recent["ts"]]  # 2 minutes old: still worth answering
    assert [(e["user"], e["text"]) for e in ephemerals(bot)] == [("USTALE", BUSY_TEXT)]
