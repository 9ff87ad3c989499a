"""Channel monitoring in Slack, end to end over HTTP against the local mock Slack API: watched channels are
scored without a reply, a replayed real surge raises one alert (and the cooldown holds across a
restart), `/csbot sentiment` uploads the chart into a thread, "Correct sentiment" stores the label,
strongly negative support messages get a priority hand-off, and the App Home shows the summary."""

from __future__ import annotations

import datetime as dt
import io
import json
import time

from PIL import Image

from bot.monitoring.spikes import ALERT, COOLDOWN, Observation, SpikeConfig, scan, topic_of
from bot.monitoring.watch import replay, slack_ts_for
from bot.slack import blocks, ids
from tests.monitoring.conftest import LabelEngine, by_airline, utc
from tests.slack.slack_mock import TEAM

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def posts_to(bot, channel):
    return [c.args for c in bot.mock.calls_to("chat.postMessage") if c.args.get("channel") == channel]


def view_of(call):
    view = call.args["view"]
    return json.loads(view) if isinstance(view, str) else view


def run_command(bot, text, **kwargs):
    status, body = bot.sender.command(text, response_url=bot.mock.response_url("cmd"), **kwargs)
    assert status == 200
    bot.idle()
    return json.loads(body) if body else {}


def store_recent(store, channel, labels, *, hours_ago=(1, 100)):
    """Monitored messages spread over the last days (real time: the slash command's clock is now)."""
    now = time.time()
    lo, hi = hours_ago
    for i, label in enumerate(labels):
        ts = now - 3600 * (lo + (hi - lo) * i / max(1, len(labels) - 1))
        store.record_monitored_message(channel=channel, ts=f"{ts:.6f}", user=f"U{i}", sentiment=label,
                                       scores={label: 1.0}, intent="late_delivery" if label == "negative" else None,
                                       confidence=0.5, text=None)


# ----- watching --------------------------------------------------------------------------------------

def test_watched_channel_messages_are_scored_and_stored_without_a_reply(monitor_bot, label_engine):
    bot = monitor_bot(label_engine, slack={"watched_channels": "CWATCH"})
    first = bot.message("this is the worst service ever", channel="CWATCH", user="U7")
    bot.message("how do I reset my password?", channel="CWATCH", user="U8")
    bot.message("how do I reset my password?", channel="COTHER", user="U8")  # not watched, not support
    bot.sender.event({"type": "message", "channel": "CWATCH", "channel_type": "channel", **first},
                     event_id="EvReplayed")
    bot.sender.event({"type": "message", "channel": "CWATCH", "channel_type": "channel", **first},
                     event_id="EvReplayed", retry_num=1)
    bot.idle()
    rows = bot.store.monitored_messages()
    assert [(r["channel"], r["sentiment"], r["intent"]) for r in rows] == [
        ("CWATCH", "negative", "out_of_scope"), ("CWATCH", "neutral", "reset_password")]
    assert rows[0]["scores"]["negative"] == 0.95 and rows[0]["ts"] == first["ts"]
    assert all(r["text"] is None for r in rows)  # text only when store_message_text is on; scores always
    assert rows[0]["user_hash"] == bot.store.hash_user("U7")
    assert bot.mock.calls_to("chat.postMessage") == []  # watching never replies
    assert bot.store.monitoring_alerts() == []


def test_watched_text_is_kept_redacted_when_configured(monitor_bot, label_engine):
    bot = monitor_bot(label_engine, store_message_text=True, slack={"watched_channels": "CWATCH"})
    bot.message("worst day, write to me at jane.doe@example.com or +44 20 7946 0958", channel="CWATCH")
    bot.idle()
    [row] = bot.store.monitored_messages("CWATCH")
    assert row["text"] == "worst day, write to me at [EMAIL] or [PHONE]"


# ----- a replayed surge -------------------------------------------------------------------------------

def test_a_replayed_real_surge_alerts_once_and_the_cooldown_survives_a_restart(monitor_bot, airline_rows):
    """Southwest's tweets (see test_monitoring_replay.py): the day before is stored as history, then
    the first 80 minutes of its 21 Feb surge arrive as Slack messages, with the tweets' own times as
    their ts. The detector settings are the defaults except a 1-day baseline (a shorter history to
    store). The alert must come exactly where the offline detector puts it, once."""
    rows = by_airline(airline_rows, "Southwest", utc(2015, 2, 20, 12), utc(2015, 2, 21, 14, 20))
    timestamps = slack_ts_for(rows)
    cut = next(i for i, r in enumerate(rows) if r.time >= utc(2015, 2, 21, 13))
    history, live = rows[:cut], rows[cut:]
    engine = LabelEngine({r.text: (r.label, r.topic) for r in live})
    config = SpikeConfig(baseline=dt.timedelta(days=1))
    observed = [Observation(dt.datetime.fromtimestamp(float(ts), dt.timezone.utc), *(
        (r.label, topic_of(r.topic)) if i < cut else (engine.label(r.text)[0], topic_of(engine.label(r.text)[2]))))
        for i, (r, ts) in enumerate(zip(rows, timestamps))]
    checks = scan(observed, config, channel="CWATCH", every_message=True, start=utc(2015, 2, 21, 13))
    expected = [c for c in checks if c.status == ALERT]
    assert len(expected) == 1 and sum(c.status == COOLDOWN for c in checks) >= 3  # the spike goes on

    want = expected[0]
    settings = dict(store_message_text=True, slack={"watched_channels": "CWATCH", "alert_channel": "CALERT"},
                    alert_baseline_days=1)
    bot = monitor_bot(engine, **settings)
    replay(None, bot.store, history, "CWATCH", check=False)
    live_ts = timestamps[cut:]
    before = [(r, ts) for r, ts in zip(live, live_ts) if float(ts) <= want.now.timestamp()]
    after = [(r, ts) for r, ts in zip(live, live_ts) if float(ts) > want.now.timestamp()]
    for row, ts in before:
        bot.message(row.text, channel="CWATCH", user="UCUSTOMER", ts=ts)
        bot.idle()  # in order, as Slack delivers one channel's messages
    [alert] = posts_to(bot, "CALERT")
    text = json.dumps(alert["blocks"])
    assert "Negative spike in <#CWATCH>" in text
    assert f"{want.recent_negative} of {want.recent_n} messages negative" in text
    assert f"({want.recent_share:.0%})" in text and f"{want.baseline_share:.0%} negative" in text
    assert all(topic in text for topic, _ in want.topics)
    assert text.count("\\n>") >= 3  # three quoted (redacted) examples
    assert "Negative spike in <#CWATCH>" in alert["text"]
    [stored] = bot.store.monitoring_alerts("CWATCH")
    assert stored["time"] == want.now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    # The bot restarts (same database); the rest of the surge arrives. The channel keeps spiking
    # (the scan's COOLDOWN checks are all in this part), but the stored cooldown holds: no new alert.
    assert all(c.now > want.now for c in checks if c.status == COOLDOWN)
    restarted = monitor_bot(engine, **settings)
    for row, ts in after:
        restarted.message(row.text, channel="CWATCH", user="UCUSTOMER", ts=ts)
        restarted.idle()
    assert len(restarted.store.monitored_messages("CWATCH")) == len(rows)
    assert len(posts_to(restarted, "CALERT")) == 1 and len(restarted.store.monitoring_alerts()) == 1


def test_an_alert_says_when_examples_are_not_stored(monitor_bot, label_engine):
    bot = monitor_bot(label_engine, slack={"watched_channels": "CW", "alert_channel": "CALERT"},
                      alert_min_messages=5, alert_min_baseline=20)
    base = time.time() - 86400
    for i in range(40):  # a calm day
        bot.store.record_monitored_message(channel="CW", ts=f"{base + i * 600:.6f}", user="U1", sentiment="neutral",
                                           scores={}, intent=None, confidence=None, text=None)
    for i in range(6):
        bot.message(f"I am furious about order {i}", channel="CW", ts=f"{time.time():.6f}")
        bot.idle()
    [alert] = posts_to(bot, "CALERT")
    text = json.dumps(alert["blocks"])
    assert "5 of 5 messages negative" in text and "message text is not stored" in text  # the 6th: cooldown


# ----- reports in Slack ---------------------------------------------------------------------------------

def test_sentiment_command_uploads_the_chart_into_a_thread(monitor_bot, label_engine):
    bot = monitor_bot(label_engine, slack={"watched_channels": "CWATCH", "admin_users": "UADMIN"})
    store_recent(bot.store, "CWATCH", ["negative", "neutral", "positive", "negative"] * 15)
    bot.mock.channels = [{"id": "CGEN", "name": "general"}, {"id": "CWATCH", "name": "support-feed"}]
    assert run_command(bot, "sentiment #support-feed 7d", user="UADMIN", channel="C1") == {}
    [post] = posts_to(bot, "C1")
    assert "Sentiment in <#CWATCH>, last 7 days" in json.dumps(post["blocks"])
    assert "60 messages" in post["text"] and "50% negative" in post["text"]
    [url] = bot.mock.calls_to("files.getUploadURLExternal")
    [upload] = bot.mock.calls_to("upload")
    [complete] = bot.mock.calls_to("files.completeUploadExternal")
    png = bot.mock.uploads[upload.args["file_id"]]
    assert int(url.args["length"]) == len(png) and url.args["filename"] == "sentiment-CWATCH-7d.png"
    assert png.startswith(PNG_SIGNATURE) and Image.open(io.BytesIO(png)).size == (1000, 650)
    reply_ts = bot.mock.messages["C1"][-1]["ts"]
    assert complete.args["channel_id"] == "C1" and complete.args["thread_ts"] == reply_ts
    assert json.loads(complete.args["files"])[0]["id"] == upload.args["file_id"]


def test_sentiment_report_permissions_and_empty_channels(monitor_bot, label_engine):
    bot = monitor_bot(label_engine, slack={"watched_channels": "CWATCH", "admin_users": "UADMIN"})
    store_recent(bot.store, "CWATCH", ["negative", "neutral"] * 10)
    # Another channel's report is for admins; your own channel's is for anyone.
    assert "admins only" in run_command(bot, "sentiment <#CWATCH|support-feed>", user="U1", channel="C1")["text"]
    assert run_command(bot, "sentiment 2d", user="U1", channel="CWATCH") == {}
    assert len(posts_to(bot, "CWATCH")) == 1 and len(bot.mock.uploads) == 1
    # Nothing monitored: said privately, nothing posted.
    run_command(bot, "sentiment CEMPTY01 7d", user="UADMIN", channel="C1")
    [reply] = [c.args for c in bot.mock.calls_to("response:cmd")]
    assert "No monitored messages in <#CEMPTY01>" in reply["text"] and "slack_watched_channels" in reply["text"]
    assert posts_to(bot, "C1") == []
    # An unknown #name, a period too long, and text are not reports.
    run_command(bot, "sentiment #nope", user="UADMIN", channel="C1")
    assert "can't find the channel #nope" in bot.mock.calls_to("response:cmd")[-1].args["text"]
    assert "at most 90 days" in run_command(bot, "sentiment 120d", user="UADMIN")["text"]
    run_command(bot, "sentiment this is the worst", user="UADMIN")
    assert "negative" in bot.mock.calls_to("response:cmd")[-1].args["text"]


# ----- corrections ----------------------------------------------------------------------------------------

def shortcut_payload(bot, message, *, user="U5", channel="CWATCH"):
    return {"type": "message_action", "callback_id": ids.CORRECT_SENTIMENT_SHORTCUT, "trigger_id": "777.888.xyz",
            "team": {"id": TEAM, "domain": "csbot-test"}, "user": {"id": user, "team_id": TEAM}, "api_app_id": "A0CSBOT",
            "token": "legacy", "channel": {"id": channel, "name": "support-feed"}, "message_ts": message["ts"],
            "message": {"type": "message", "user": message["user"], "ts": message["ts"], "text": message["text"]},
            "response_url": bot.mock.response_url("shortcut"), "action_ts": "1700000200.000300"}


def sentiment_submission(view, label, *, user="U5", view_id="VSENT1"):
    values = {ids.SENTIMENT_LABEL_BLOCK: {ids.SENTIMENT_LABEL: {
        "type": "radio_buttons", "selected_option": {"value": label} if label else None}}}
    return {"type": "view_submission", "team": {"id": TEAM}, "user": {"id": user, "team_id": TEAM},
            "api_app_id": "A0CSBOT", "token": "legacy", "trigger_id": f"555.666.{view_id}.{label}",  # one per submission
            "view": {**view, "id": view_id, "team_id": TEAM, "state": {"values": values}}}


def test_correct_sentiment_shortcut_stores_the_label_for_the_retrain(monitor_bot, label_engine):
    bot = monitor_bot(label_engine, slack={"watched_channels": "CWATCH"})
    message = bot.message("oh great, another delay. call me on 07700 900123", channel="CWATCH", user="U9")
    bot.idle()
    assert bot.store.monitored_message("CWATCH", message["ts"])["sentiment"] == "neutral"  # sarcasm missed
    assert bot.sender.interaction(shortcut_payload(bot, message))[0] == 200
    [opened] = bot.mock.wait_for("views.open")
    bot.idle()
    view = view_of(opened)
    assert opened.args["trigger_id"] == "777.888.xyz" and view["callback_id"] == ids.SENTIMENT_MODAL
    text = json.dumps(view["blocks"])
    assert "oh great, another delay" in text and "csbot scored it *neutral*" in text
    radio = next(b for b in view["blocks"] if b.get("block_id") == ids.SENTIMENT_LABEL_BLOCK)
    assert [o["value"] for o in radio["element"]["options"]] == ["negative", "neutral", "positive"]

    status, body = bot.sender.interaction(sentiment_submission(view, None))  # nothing picked
    assert status == 200 and json.loads(body)["response_action"] == "errors"
    for _ in range(2):  # the same submission delivered twice
        assert bot.sender.interaction(sentiment_submission(view, "negative")) == (200, "")
    bot.mock.wait_for("chat.postEphemeral")
    bot.idle()
    [row] = bot.store.sentiment_corrections()
    assert set(row) == {"text", "label", "user_hash", "time", "channel", "ts"}
    assert (row["label"], row["channel"], row["ts"]) == ("negative", "CWATCH", message["ts"])
    assert row["text"] == "oh great, another delay. call me on [PHONE]" and row["user_hash"] == bot.store.hash_user("U5")
    assert len(bot.mock.calls_to("chat.postEphemeral")) == 1
    # Changing one's mind replaces the label.
    bot.sender.interaction(sentiment_submission(view, "positive", view_id="VSENT2"))
    bot.idle()
    assert [r["label"] for r in bot.store.sentiment_corrections()] == ["positive"]


# ----- priority hand-off -----------------------------------------------------------------------------------

def test_strongly_negative_support_messages_get_a_priority_handoff(monitor_bot):
    bot = monitor_bot(LabelEngine(negative=0.95), slack={"support_channels": "CSUP", "escalation_channel": "CESC",
                                                          "oncall_usergroup": "SONCALL"})
    bot.message("I am furious, my order never arrived", channel="CSUP")  # no answer, strongly negative
    bot.idle()
    [reply] = posts_to(bot, "CSUP")
    assert reply["text"].startswith(blocks.PRIORITY_HANDOFF_TEXT)
    [escalation] = posts_to(bot, "CESC")
    text = json.dumps(escalation["blocks"])
    assert "*Priority:*" in text and "<!subteam^SONCALL>" in text and "Negative 95%" in text
    bot.message("I'm furious, how do I reset my password?", channel="CSUP")  # answered, and flagged
    bot.message("when do you open tomorrow?", channel="CSUP")  # neutral and unanswerable: quiet
    bot.idle()
    replies = posts_to(bot, "CSUP")
    assert len(replies) == 2 and "Forgot password" in replies[1]["text"]
    assert len(posts_to(bot, "CESC")) == 2 and "Priority" in posts_to(bot, "CESC")[1]["text"]


def test_moderately_negative_messages_are_not_priority(monitor_bot):
    bot = monitor_bot(LabelEngine(negative=0.6), slack={"support_channels": "CSUP", "escalation_channel": "CESC"})
    bot.message("I am furious, my order never arrived", channel="CSUP")
    bot.idle()
    assert posts_to(bot, "CSUP") == [] and posts_to(bot, "CESC") == []


def test_priority_without_an_escalation_channel_pings_the_oncall_group_in_the_thread(monitor_bot):
    bot = monitor_bot(LabelEngine(), slack={"support_channels": "CSUP", "oncall_usergroup": "SONCALL"})
    event = bot.message("I'm furious, how do I reset my password?", channel="CSUP")
    bot.idle()
    answer, ping = posts_to(bot, "CSUP")
    assert "Forgot password" in answer["text"] and ping["thread_ts"] == event["ts"]
    assert ping["text"].startswith("<!subteam^SONCALL>")


# ----- App Home -------------------------------------------------------------------------------------------

def test_app_home_shows_the_monitoring_summary(monitor_bot, label_engine):
    bot = monitor_bot(label_engine, slack={"watched_channels": "CWATCH"})
    store_recent(bot.store, "CWATCH", ["negative", "neutral", "neutral", "neutral"] * 5, hours_ago=(1, 150))
    bot.sender.event({"type": "app_home_opened", "user": "U3", "channel": "D3", "tab": "home"})
    [publish] = bot.mock.wait_for("views.publish")
    text = json.dumps(view_of(publish)["blocks"])
    assert "Sentiment monitoring" in text and "<#CWATCH>" in text
    assert "25% negative" in text and "top negative topic: late_delivery" in text
    assert "stub-v1" in text  # the status is still there


def test_app_home_tells_a_new_user_how_to_watch_a_channel(monitor_bot, label_engine):
    bot = monitor_bot(label_engine)
    bot.sender.event({"type": "app_home_opened", "user": "U3", "channel": "D3", "tab": "home"})
    [publish] = bot.mock.wait_for("views.publish")
    assert "slack_watched_channels" in json.dumps(view_of(publish)["blocks"])


# ----- Block Kit ------------------------------------------------------------------------------------------

def test_monitoring_blocks_pass_slack_sdk_validation():
    """to_dict() runs slack_sdk's checks (lengths, required fields) on every new surface."""
    summary = {"channel": "C1", "time": "2015-02-21 13:31 UTC", "window_minutes": 60, "baseline_days": 7.0,
               "recent_n": 21, "recent_negative": 18, "recent_share": 18 / 21, "lower_bound": 0.52, "baseline_n": 1497,
               "baseline_share": 0.47, "confidence": 0.999, "cooldown_minutes": 60,
               "topics": [("Customer Service Issue", 8), ("Cancelled <Flight>", 5)],
               "examples": ["x" * 5000, "short & <sweet>", "third"], "text_stored": True}
    dicts = [b.to_dict() for b in blocks.spike_alert_blocks(summary)]
    text = json.dumps(dicts)
    assert "18 of 21 messages negative (86%)" in text and "47% negative (1,497 messages)" in text
    assert "Cancelled &lt;Flight&gt;" in text and "short &amp; &lt;sweet&gt;" in text
    assert "99.9% confidence" in text
    no_text = [b.to_dict() for b in blocks.spike_alert_blocks({**summary, "examples": None, "text_stored": False})]
    assert "store_message_text" in json.dumps(no_text)
    report = {"channel": "C1", "total": 1234, "negative_share": 0.41, "counts": {"negative": 506, "neutral": 500,
              "positive": 228}, "top_negative_topics": [{"topic": "refund", "count": 40}],
              "alerts": [{"now": "2015-02-21T13:31:00Z"}]}
    assert "1,234 messages" in json.dumps([b.to_dict() for b in blocks.sentiment_report_blocks(report, "7 days")])
    modal = blocks.sentiment_correction_modal(text="é" * 10000, current="neutral", context={"channel": "C1", "ts": "1.2"})
    data = modal.to_dict()
    assert len(data["private_metadata"]) <= 3000 and json.loads(data["private_metadata"])["ts"] == "1.2"
    assert len(data["title"]["text"]) <= 24
    home = blocks.home_view({"model_version": "v1", "monitoring": [
        {"channel": "C1", "days": 7, "total": 10, "negative_share": 0.5, "previous_share": 0.2, "top_topic": "refund",
         "last_alert": "2015-02-21 13:31 UTC"}]}).to_dict()
    assert "previous 7 days 20%" in json.dumps(home)
