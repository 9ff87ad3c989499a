"""Slack's rules, end to end over loopback with the real slack-bolt App and the real engine (demo KB).

Signatures (401), malformed payloads (400), retries and duplicate event ids (answered once),
HTTP 429 (Retry-After honoured), bots / the bot itself / subtypes ignored, health check.
"""

from __future__ import annotations

import json
import time

from tests.slack.slack_mock import BOT_ID, BOT_USER


def test_healthz_reports_the_served_model_the_database_and_the_inbox(make_bot, recorded_engine):
    from store.migrate import HEAD_REVISION

    bot = make_bot(recorded_engine)
    status, body = bot.sender.get("/healthz")
    health = json.loads(body)
    store = health.pop("model_store")
    assert status == 200 and health == {
        "ok": True, "model_version": recorded_engine.model_version, "workers": 4, "shed": 0, "late": 0,
        "database": {"ok": True, "dialect": "sqlite", "database": str(bot.store.path), "schema": HEAD_REVISION},
        "inbox": {"pending": 0, "running": 0, "failed": 0}, "revoked_workspaces": {}}
    # The model store: the local folder here (no model_store set), and how the last champion check went.
    assert store["location"] == str(recorded_engine.versions.root) and store["remote"] is False and store["ok"] is True
    assert recorded_engine.model_version  # a real version id, not empty
    assert bot.sender.get("/nope")[0] == 404


def test_bad_or_stale_signature_gets_401_and_nothing_is_processed(make_bot, recorded_engine):
    bot = make_bot(recorded_engine)
    event = {"type": "app_mention", "user": "U1", "text": "<@UBOT> password?", "ts": "1.0", "channel": "C1"}
    envelope = json.dumps({"type": "event_callback", "team_id": "T0TEST", "event_id": "EvBAD", "event": event})
    assert bot.sender.post(envelope, signature="v0=" + "0" * 64)[0] == 401
    assert bot.sender.post(envelope, timestamp=int(time.time()) - 600)[0] == 401  # stale: replay window is 5 min
    assert bot.sender.post(envelope, signature="")[0] == 401
    bot.idle()
    assert bot.mock.calls_to("chat.postMessage") == []
    assert recorded_engine.calls == []
    assert bot.store.counts()["processed_events"] == 0


def test_malformed_body_gets_400_and_the_app_keeps_serving(make_bot, recorded_engine):
    bot = make_bot(recorded_engine)
    for body, content_type in [
        ("{not json", "application/json"),
        ("[1, 2, 3]", "application/json"),
        ('{"no": "type"}', "application/json"),
        ('{"type": "event_callback", "event_id": "Ev1", "event": "oops"}', "application/json"),
        ("payload=%7Bbroken", "application/x-www-form-urlencoded"),
        (b"\xff\xfe\x00garbage", "application/json"),
    ]:
        status, _ = bot.sender.post(body, content_type)
        assert status == 400, body
    bot.mention("how do I reset my password?")
    bot.mock.wait_for("chat.postMessage")
    bot.idle()
    assert len(bot.mock.calls_to("chat.postMessage")) == 1


def test_url_verification_challenge_is_answered(make_bot, recorded_engine):
    bot = make_bot(recorded_engine)
    status, body = bot.sender.post(json.dumps({"type": "url_verification", "challenge": "abc123", "token": "x"}))
    assert status == 200 and "abc123" in body


def test_retried_and_duplicate_events_are_answered_exactly_once(make_bot, recorded_engine):
    bot = make_bot(recorded_engine)
    event = bot.mention("I forgot my password", event_id="EvDUP1")
    bot.mock.wait_for("chat.postMessage")
    for retry in (1, 2, 3):  # Slack's retries carry the same event id and X-Slack-Retry-Num
        assert bot.sender.event(event, event_id="EvDUP1", retry_num=retry)[0] == 200
    assert bot.sender.event(event, event_id="EvDUP1")[0] == 200  # a plain replay
    bot.idle()
    assert len(bot.mock.calls_to("chat.postMessage")) == 1
    assert len(recorded_engine.calls) == 1
    # The de-duplication is persistent: a restarted app on the same store skips it too.
    restarted = make_bot(recorded_engine, store=bot.store)
    assert restarted.sender.event(event, event_id="EvDUP1", retry_num=4)[0] == 200
    restarted.idle()
    assert len(bot.mock.calls_to("chat.postMessage")) == 1


def test_the_bots_own_messages_other_bots_and_subtypes_are_ignored(make_bot, recorded_engine):
    bot = make_bot(recorded_engine)
    bot.message("password reset please", channel="D1", channel_type="im", user=BOT_USER, bot_id=BOT_ID)
    bot.message("password reset please", channel="D1", channel_type="im", user="U2", bot_id="BOTHER")
    bot.message("password", channel="D1", channel_type="im", subtype="bot_message", bot_id="BOTHER")
    bot.message("<@U1> has joined the channel", channel="C1", subtype="channel_join")
    bot.message("", channel="C1", subtype="message_deleted")
    bot.sender.event({"type": "app_mention", "user": "U2", "bot_id": "BOTHER", "text": "<@UBOT> password",
                      "ts": "1700009999.000100", "channel": "C1"})
    bot.idle()
    assert recorded_engine.calls == []
    assert bot.mock.calls_to("chat.postMessage") == []


def test_rate_limited_post_is_retried_after_retry_after(make_bot, recorded_engine, slack_mock):
    bot = make_bot(recorded_engine)
    slack_mock.fail("chat.postMessage", status=429, headers={"Retry-After": "1"}, times=1)
    bot.mention("password help")
    bot.mock.wait_for("chat.postMessage")
    bot.idle()
    attempts = bot.mock.calls_to("chat.postMessage", ok_only=False)
    assert [c.status for c in attempts] == [429, 200]  # exactly one successful post
    assert attempts[1].time - attempts[0].time >= 1.0
    assert len(bot.mock.messages["C1"]) == 2  # the question and one answer


def test_ack_comes_before_the_model_work(make_bot, recorded_engine):
    """The HTTP response does not wait for the (slow) model: the answer is computed after the ack."""
    original = recorded_engine.answer

    def slow_answer(text, context=None):
        time.sleep(1.5)
        return original(text, context)

    recorded_engine.answer = slow_answer
    bot = make_bot(recorded_engine)
    started = time.monotonic()
    bot.mention("password?")
    assert time.monotonic() - started < 1.0
    bot.mock.wait_for("chat.postMessage")


def test_a_mention_delivered_as_both_app_mention_and_message_is_answered_once(make_bot, recorded_engine):
    bot = make_bot(recorded_engine, support_channels="C1")
    event = bot.mention("password please")
    bot.sender.event({**event, "type": "message", "channel_type": "channel"})  # message.channels copy
    bot.mock.wait_for("chat.postMessage")
    bot.idle()
    assert len(bot.mock.calls_to("chat.postMessage")) == 1


def test_socket_mode_requests_are_dispatched_without_signatures(make_bot, recorded_engine):
    """Socket Mode delivers the same payloads over a WebSocket (no signature); the app handles them alike."""
    from slack_bolt.request import BoltRequest

    from bot.slack.app import build_app

    bot = make_bot(recorded_engine)
    app = build_app(bot.settings, recorded_engine, bot.store)  # its work is run by `bot`'s worker pool
    message = bot.mock.add_message("C1", "<@UBOT> password?")
    body = {"type": "event_callback", "team_id": "T0TEST", "event_id": "EvSOCK1",
            "event": {"type": "app_mention", "user": "U1", "text": message["text"], "ts": message["ts"], "channel": "C1"}}
    assert app.dispatch(BoltRequest(body=body, mode="socket_mode")).status == 200
    bot.mock.wait_for("chat.postMessage")
    assert app.dispatch(BoltRequest(body=body, mode="socket_mode")).status == 200  # redelivered
    bot.idle()
    assert len(bot.mock.calls_to("chat.postMessage")) == 1
