"""`/csbot` sub-commands, admin restrictions, the channel allowlist and the App Home tab (the real
engine on the demo KB: 34 JSONL articles + 2 Markdown articles, one intent each)."""

from __future__ import annotations

import json

from tests.slack.slack_sender import feedback_answer_id


def run_command(bot, text, **kwargs):
    status, body = bot.sender.command(text, response_url=bot.mock.response_url("cmd"), **kwargs)
    assert status == 200
    bot.idle()
    return json.loads(body) if body else {}


def responses(bot):
    return [c.args for c in bot.mock.calls_to("response:cmd")]


def test_help_is_answered_in_the_ack(make_bot, recorded_engine):
    bot = make_bot(recorded_engine)
    for text in ("help", ""):
        ack = run_command(bot, text)
        assert ack["response_type"] == "ephemeral" and "/csbot ask" in json.dumps(ack["blocks"])
    assert responses(bot) == []


def test_ask_answers_privately_with_feedback_buttons_and_records_the_answer(make_bot, recorded_engine):
    bot = make_bot(recorded_engine)
    assert run_command(bot, "ask I forgot my password", channel="C5") == {}
    [reply] = responses(bot)
    assert reply["response_type"] == "ephemeral"
    assert "Forgot password?" in reply["text"]  # the reset-password article's answer
    answer_id = feedback_answer_id(reply["blocks"])
    stored = bot.store.get_answer(answer_id)
    assert stored["channel"] == "C5" and stored["question"] == "I forgot my password"
    assert stored["intent"] == "reset_password" and stored["doc_id"] == "reset-password"
    assert recorded_engine.calls == [("I forgot my password", [])]


def test_status_shows_model_kb_and_last_retrain(make_bot, recorded_engine):
    bot = make_bot(recorded_engine)
    bot.store.record_training_run(model_version="v2", n_feedback=12, metrics={"accuracy": 0.912, "macro_f1": 0.88})
    run_command(bot, "status")
    [reply] = responses(bot)
    text = json.dumps(reply["blocks"])
    assert f"`{recorded_engine.model_version}`" in text and "36 articles, 36 intents" in text
    assert "accuracy 0.912" in text and "12 votes" in text


def test_admin_commands_are_restricted_to_configured_users(make_bot, recorded_engine):
    bot = make_bot(recorded_engine, admin_users="UADMIN, UOTHER")
    ack = run_command(bot, "sentiment this is awful", user="U1")
    assert "admins only" in ack["text"]
    assert responses(bot) == []
    run_command(bot, "sentiment this is awful", user="UADMIN")
    run_command(bot, "sentiment thanks, that was great", user="UOTHER")
    assert [r["text"] for r in responses(bot)] == ["Sentiment: negative", "Sentiment: positive"]
    assert "Usage" in run_command(bot, "ask")["text"]
    assert "don't know" in run_command(bot, "frobnicate")["text"]


def test_nobody_is_admin_when_none_are_configured(make_bot, recorded_engine):
    bot = make_bot(recorded_engine)
    assert "admins only" in run_command(bot, "reload", user="U1")["text"]


def test_allowlist_limits_the_channels_the_bot_answers_in(make_bot, recorded_engine):
    bot = make_bot(recorded_engine, allowed_channels="CALLOWED")
    bot.mention("password please", channel="COTHER")
    bot.message("password please", channel="D1", channel_type="im")  # DMs stay allowed
    bot.mention("password please", channel="CALLOWED")
    bot.idle()
    assert [c.args["channel"] for c in bot.mock.calls_to("chat.postMessage")] == ["CALLOWED"]
    [dm_reply] = bot.mock.bot_replies("D1")  # a DM's answer is streamed
    assert bot.mock.calls_to("chat.stopStream")[0].args["ts"] == dm_reply["ts"]
    assert bot.mock.bot_replies("COTHER") == []
    assert "not enabled" in run_command(bot, "ask password", channel="COTHER")["text"]


def test_app_home_shows_the_status(make_bot, recorded_engine):
    bot = make_bot(recorded_engine)
    bot.sender.event({"type": "app_home_opened", "user": "U3", "channel": "D3", "tab": "home"})
    [publish] = bot.mock.wait_for("views.publish")
    view = publish.args["view"]
    view = json.loads(view) if isinstance(view, str) else view
    assert publish.args["user_id"] == "U3" and view["type"] == "home"
    home = json.dumps(view["blocks"])
    assert f"`{recorded_engine.model_version}`" in home and "36 articles, 36 intents" in home
    bot.sender.event({"type": "app_home_opened", "user": "U3", "channel": "D3", "tab": "messages"})
    bot.idle()
    assert len(bot.mock.calls_to("views.publish")) == 1
