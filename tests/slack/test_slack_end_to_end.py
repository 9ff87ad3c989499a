"""End to end with the real engine (demo KB, built once per session; `recorded_engine` records what
the app asked it), the real slack-bolt App served over HTTP on 127.0.0.1, the real store and the
mock Slack Web API."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from bot.slack import ids
from tests.slack.slack_mock import BOT_TOKEN, BOT_USER, SIGNING_SECRET
from tests.slack.slack_sender import SlackSender, button_payload, submission

pytestmark = pytest.mark.slow


def posts(bot, channel=None):
    return [c.args for c in bot.mock.calls_to("chat.postMessage") if channel in (None, c.args["channel"])]


def test_mention_gets_exactly_one_threaded_answer_with_sources_and_feedback(make_bot, recorded_engine):
    bot = make_bot(recorded_engine)
    event = bot.mention("How do I reset my password?", event_id="EvE2E1")
    bot.mock.wait_for("chat.postMessage")
    bot.sender.event(event, event_id="EvE2E1", retry_num=1)  # Slack's retry
    bot.idle()
    [reply] = posts(bot)
    assert reply["channel"] == "C1" and reply["thread_ts"] == event["ts"]
    text = json.dumps(reply["blocks"])
    assert "Resetting a forgotten password" in text and "https://help.parcelly.example/" in text
    assert "Confidence" in text and ids.FEEDBACK in text and "context_actions" in text
    answer_id = reply["metadata"]["event_payload"]["answer_id"]
    stored = bot.store.get_answer(answer_id)
    assert stored["intent"] == "reset_password" and stored["thread"] == event["ts"] and stored["origin"] == "slack"
    assert recorded_engine.calls == [("How do I reset my password?", [])]


def test_follow_up_in_the_thread_is_answered_with_its_earlier_turns(make_bot, recorded_engine):
    bot = make_bot(recorded_engine)
    first = bot.mention("how long does shipping take")
    bot.mock.wait_for("chat.postMessage")
    bot.idle()
    # An un-mentioned follow-up in a thread the bot answered in (answered when confident).
    bot.message("what about international orders?", thread_ts=first["ts"])
    bot.mock.wait_for("chat.postMessage", 2)
    bot.idle()
    assert recorded_engine.calls[1] == ("what about international orders?", ["how long does shipping take"])
    second = posts(bot)[1]
    assert second["thread_ts"] == first["ts"]
    assert bot.store.get_answer(second["metadata"]["event_payload"]["answer_id"])["intent"] == "international_shipping"


def test_direct_messages_and_support_channels_but_not_chatter(make_bot, recorded_engine):
    bot = make_bot(recorded_engine, support_channels="CSUP")
    bot.message("my card was charged twice", channel="D1", channel_type="im")
    bot.message("How do I reset my password?", channel="CSUP")
    for chatter in ("lol see you at lunch", "thanks!", "anyone up for coffee?"):
        bot.message(chatter, channel="CSUP")
    bot.message("How do I reset my password?", channel="CNOTSUPPORT")  # not mentioned, not support
    bot.mock.wait_for("chat.postMessage")
    bot.idle()
    assert [p["channel"] for p in posts(bot)] == ["CSUP"]
    [dm_answer] = bot.mock.bot_replies("D1")  # streamed
    [stop] = bot.mock.calls_to("chat.stopStream")
    assert stop.args["ts"] == dm_answer["ts"] and dm_answer["metadata"]["event_type"] == ids.ANSWER_EVENT_TYPE
    assert bot.store.get_answer(dm_answer["metadata"]["event_payload"]["answer_id"])["channel"] == "D1"
    assert bot.mock.bot_replies("CNOTSUPPORT") == []


def test_hand_off_mentions_on_call_and_posts_a_link_to_the_escalation_channel(make_bot, recorded_engine):
    bot = make_bot(recorded_engine, oncall_usergroup="SONCALL", escalation_channel="CESC")
    event = bot.mention("What is the capital of France?")
    bot.mock.wait_for("chat.postMessage", 2)
    bot.idle()
    [reply] = posts(bot, "C1")
    assert "colleague" in reply["text"] and reply["thread_ts"] == event["ts"]
    stored = bot.store.get_answer(reply["metadata"]["event_payload"]["answer_id"])
    assert stored["handoff"] and stored["intent"] == "out_of_scope"
    [escalation] = posts(bot, "CESC")
    [permalink] = bot.mock.calls_to("chat.getPermalink")
    assert permalink.args["message_ts"] == event["ts"]
    text = json.dumps(escalation["blocks"])
    assert "<!subteam^SONCALL>" in text and f"p{event['ts'].replace('.', '')}" in text


def test_hand_off_without_escalation_channel_mentions_the_group_in_the_thread(make_bot, recorded_engine):
    bot = make_bot(recorded_engine, oncall_usergroup="SONCALL")
    bot.mention("What is the capital of France?")
    bot.mock.wait_for("chat.postMessage")
    bot.idle()
    [reply] = posts(bot)
    assert "<!subteam^SONCALL>" in reply["text"] and "<!subteam^SONCALL>" in json.dumps(reply["blocks"])


def test_edited_question_replaces_the_answer_in_place(make_bot, recorded_engine):
    bot = make_bot(recorded_engine)
    event = bot.mention("how do I reset my password")
    bot.mock.wait_for("chat.postMessage")
    bot.idle()
    reply_ts = bot.mock.messages["C1"][-1]["ts"]
    edited = {"type": "message", "subtype": "message_changed", "channel": "C1", "channel_type": "channel",
              "hidden": True, "ts": "1700009000.000100",
              "message": {"type": "message", "user": "U1", "text": "<@UBOT> how do I cancel my subscription",
                          "ts": event["ts"], "edited": {"user": "U1", "ts": "1700009000.000100"}},
              "previous_message": {"type": "message", "user": "U1", "text": event["text"], "ts": event["ts"]}}
    bot.sender.event(edited)
    [update] = bot.mock.wait_for("chat.update")
    unfurl = {**edited, "message": {**edited["message"], "text": event["text"]}}  # text unchanged: ignored
    bot.sender.event(unfurl)
    bot.idle()
    assert update.args["ts"] == reply_ts and len(posts(bot)) == 1 and len(bot.mock.calls_to("chat.update")) == 1
    new_id = update.args["metadata"]["event_payload"]["answer_id"]
    assert bot.store.get_answer(new_id)["intent"] == "cancel_subscription"


def test_votes_correction_and_reactions_with_the_real_model(make_bot, recorded_engine):
    bot = make_bot(recorded_engine)
    bot.mention("How do I reset my password?")
    bot.mock.wait_for("chat.postMessage")
    bot.idle()
    reply = bot.mock.messages["C1"][-1]
    answer_id = reply["metadata"]["event_payload"]["answer_id"]
    bot.sender.interaction(button_payload(bot, ids.VOTE_UP, answer_id, reply["ts"], user="U2", trigger="1.1.a"))
    bot.sender.interaction(button_payload(bot, ids.VOTE_DOWN, answer_id, reply["ts"], user="U3", trigger="2.2.b"))
    [opened] = bot.mock.wait_for("views.open")
    bot.idle()
    view = opened.args["view"]
    articles = [o["value"] for o in view["blocks"][2]["element"]["options"]]
    assert len(articles) == 36 and "locked-account" in articles
    bot.sender.interaction(submission(view, doc_id="locked-account", user="U3"))
    bot.sender.event({"type": "reaction_added", "user": "U4", "reaction": "thumbsup", "item_user": BOT_USER,
                      "item": {"type": "message", "channel": "C1", "ts": reply["ts"]}})
    bot.idle()
    assert bot.store.get_answer(answer_id)["votes"] == {"up": 2, "down": 1}
    [correction] = [r for r in bot.store.feedback_since() if r["origin"] == "modal"]
    assert (correction["correct_doc_id"], correction["correct_intent"]) == ("locked-account", "locked_account")


def test_csbot_serve_http_runs_the_bot(home, slack_mock, tmp_path):
    """`csbot serve --http PORT` in a subprocess: /healthz answers, a signed mention is answered."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "CSBOT_HOME": str(home), "CSBOT_SLACK_API_URL": slack_mock.api_url,
           "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET}
    script = ("import argparse, sys; from bot.commands import serve; p = argparse.ArgumentParser(); "
              "serve.register(p.add_subparsers()); a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))")
    proc = subprocess.Popen([sys.executable, "-c", script, "serve", "--http", str(port), "--host", "127.0.0.1",
                             "--log-level", "WARNING"], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    sender = SlackSender(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                status, body = sender.get("/healthz")
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read().decode()
                assert time.monotonic() < deadline, "csbot serve did not come up"
                time.sleep(0.2)
        assert status == 200 and json.loads(body)["ok"]
        message = slack_mock.add_message("C1", "<@UBOT> How do I reset my password?")
        event = {"type": "app_mention", "user": "U1", "text": message["text"], "ts": message["ts"], "channel": "C1"}
        assert sender.event(event)[0] == 200
        [post] = slack_mock.wait_for("chat.postMessage", timeout=60)
        assert post.args["thread_ts"] == message["ts"]
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        proc.stdout.close()
