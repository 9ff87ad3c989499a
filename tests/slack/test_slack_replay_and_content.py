"""What each bad signed request gets, through the real waitress server on 127.0.0.1 with the real
bolt App, the real engine (demo KB) and a real store (docs/slack.md "What each bad request gets"):
JSON nested past the limit, replayed commands and clicks, payloads without the fields their work
needs, text no tokenizer should see, and work that fails because of its content."""

from __future__ import annotations

import json
import logging
import time
from urllib.parse import urlencode

import pytest

from bot.slack import ids
from bot.slack.handlers.messages import BUSY_TEXT
from bot.slack.server import MAX_DEPTH
from store.inbox import ANSWER, InboxItem
from tests.slack.slack_mock import APP_ID, BOT_USER, TEAM
from tests.slack.slack_sender import button_payload, submission

FORM = "application/x-www-form-urlencoded"


def csbot_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("csbot")]


def posts(bot, channel=None):
    return [c.args for c in bot.mock.calls_to("chat.postMessage") if channel in (None, c.args["channel"])]


def nested(depth: int) -> str:
    """An otherwise ordinary event of a type csbot does not handle, whose JSON nests `depth` levels."""
    inner = "[" * (depth - 2) + "]" * (depth - 2)
    return ('{"type": "event_callback", "team_id": "%s", "event_id": "EvDeep%d", "event": '
            '{"type": "emoji_changed", "names": %s}}' % (TEAM, depth, inner))


def test_deeply_nested_signed_bodies_get_400_and_the_server_keeps_answering(make_bot, recorded_engine, caplog):
    bot = make_bot(recorded_engine)
    deep_payload = '{"type": "block_actions", "actions": ' + "[" * 50_000 + "]" * 50_000 + "}"
    bodies = [
        ("{" + '"a": {' * 100_000 + "}" * 100_000 + "}", "application/json"),  # probe: 100,000 levels
        ('{"type": "event_callback", "event": ' + "[" * 100_000, "application/json"),  # never closed
        (nested(MAX_DEPTH + 1), "application/json"),
        (urlencode({"payload": deep_payload}), FORM),  # an interaction's payload= field, 50,000 levels
        (urlencode({"payload": nested(MAX_DEPTH + 1)}), FORM),
    ]
    with caplog.at_level(logging.INFO, logger="csbot"):
        for body, content_type in bodies:
            caplog.clear()
            status, text = bot.sender.post(body, content_type)
            assert (status, text) == (400, f"the JSON nests deeper than {MAX_DEPTH} levels"), body[:60]
            assert csbot_lines(caplog) == [f"rejected a signed request: the JSON nests deeper than {MAX_DEPTH} levels"]
    # At the limit it is an ordinary payload; brackets inside strings are text, not nesting.
    assert bot.sender.post(nested(MAX_DEPTH))[0] == 200
    assert bot.sender.interaction({"type": "block_actions", "user": {"id": "U1"}, "trigger_id": "1.2.brackets",
                                   "actions": [{"action_id": "not_ours", "value": "[{" * 10_000}]})[0] == 200
    assert bot.sender.get("/healthz")[0] == 200
    bot.mention("How do I reset my password?")
    bot.idle()
    assert len(posts(bot)) == 1 and bot.store.inbox.depth()["failed"] == 0


def test_a_replayed_slash_command_is_answered_once(make_bot, recorded_engine, caplog):
    bot = make_bot(recorded_engine)
    body = bot.sender.command_body("ask I forgot my password", response_url=bot.mock.response_url("cmd"))
    stamp = int(time.time())  # the same signed request, headers and all, three times
    with caplog.at_level(logging.INFO, logger="csbot.slack.intake"):
        assert [bot.sender.post(body, FORM, timestamp=stamp)[0] for _ in range(3)] == [200, 200, 200]
    bot.idle()
    [reply] = [c.args for c in bot.mock.calls_to("response:cmd")]
    assert "Forgot password?" in reply["text"]
    assert recorded_engine.calls == [("I forgot my password", [])]
    skipped = [line for line in csbot_lines(caplog) if "already accepted" in line]
    assert len(skipped) == 2 and "trigger:" in skipped[0]
    # Another command with the same text is another request (its own trigger id): answered.
    bot.sender.form(bot.sender.command_body("ask I forgot my password", response_url=bot.mock.response_url("cmd")))
    bot.idle()
    assert len(bot.mock.calls_to("response:cmd")) == 2


def test_a_replayed_click_is_queued_once_with_or_without_a_trigger_id(make_bot, recorded_engine):
    bot = make_bot(recorded_engine)
    bot.mention("How do I reset my password?")
    [call] = bot.mock.wait_for("chat.postMessage")
    bot.idle()
    answer_id, ts = call.args["metadata"]["event_payload"]["answer_id"], "1.0"
    bot.app.workers.stop(5)  # what the intake queued stays in the inbox, to be counted
    click = button_payload(bot, ids.VOTE_UP, answer_id, ts, user="U1", trigger="5.5.replay")
    untriggered = button_payload(bot, ids.VOTE_UP, answer_id, ts, user="U2")
    del untriggered["trigger_id"]  # claimed by a hash of its body instead
    other = {**untriggered, "user": {"id": "U3", "team_id": TEAM}}
    for payload in (click, click, untriggered, untriggered, other):
        assert bot.sender.interaction(payload)[0] == 200
    assert bot.store.inbox.depth()["pending"] == 3  # the click, the untriggered click, U3's click
    restarted = make_bot(recorded_engine, store=bot.store)
    restarted.idle()
    assert bot.store.get_answer(answer_id)["votes"] == {"up": 3, "down": 0}
    assert len(bot.mock.calls_to("response:vote")) == 3  # one thank-you per click


def _event(event: dict) -> dict:
    return {"type": "event_callback", "team_id": TEAM, "api_app_id": APP_ID, "event_id": f"Ev{event['type']}X",
            "event": event, "authorizations": [{"team_id": TEAM, "user_id": BOT_USER, "is_bot": True}]}


INCOMPLETE = [
    (_event({"type": "app_mention", "user": "U1", "text": "<@UBOT> reset my password", "ts": "1700000000.000100"}),
     "event app_mention", "event.channel"),
    (_event({"type": "app_mention", "user": "U1", "text": "<@UBOT> reset my password", "channel": "C1"}),
     "event app_mention", "event.ts"),
    (_event({"type": "message", "channel": "D1", "channel_type": "im", "text": "reset my password",
             "ts": "1700000000.000200"}), "event message", "event.user"),
    (_event({"type": "reaction_added", "user": "U1", "reaction": "+1", "item": {"type": "message", "channel": "C1"}}),
     "event reaction_added", "event.item.ts"),
    (_event({"type": "app_home_opened", "channel": "D1", "tab": "home"}), "event app_home_opened", "event.user"),
    ({"type": "block_actions", "trigger_id": "6.6.nouser", "channel": {"id": "C1"},
      "actions": [{"action_id": ids.VOTE_UP, "value": "a1"}]}, "block_actions", "user.id"),
    ({"type": "view_submission", "trigger_id": "6.6.noview", "user": {"id": " "},
      "view": {"type": "modal", "callback_id": ids.CORRECTION_MODAL}}, "view_submission", "user.id"),
]


@pytest.mark.parametrize("payload,kind,missing", INCOMPLETE, ids=[m for _, _, m in INCOMPLETE])
def test_a_payload_without_a_field_its_work_needs_is_acknowledged_and_not_queued(
        make_bot, recorded_engine, caplog, payload, kind, missing):
    bot = make_bot(recorded_engine)
    bot.app.workers.stop(5)
    with caplog.at_level(logging.INFO, logger="csbot"):
        if payload["type"] == "event_callback":
            status, text = bot.sender.post(json.dumps(payload))
        else:
            status, text = bot.sender.interaction(payload)
    assert (status, text) == (200, "")  # Slack must not retry it
    assert csbot_lines(caplog) == [f"ignored a {kind} request without {missing}: csbot could not carry it out"]
    assert bot.store.inbox.depth() == {"pending": 0, "running": 0, "failed": 0}
    assert bot.store.counts()["processed_events"] == 0
    assert json.loads(bot.sender.get("/healthz")[1])["inbox"]["failed"] == 0


def test_a_slash_command_without_its_user_or_channel_is_not_run(make_bot, recorded_engine, caplog):
    bot = make_bot(recorded_engine)
    with caplog.at_level(logging.INFO, logger="csbot"):
        for field in ("user", "channel"):
            body = bot.sender.command_body("ask I forgot my password", response_url=bot.mock.response_url("cmd"),
                                           **{field: None})
            assert bot.sender.form(body) == (200, "")
    assert csbot_lines(caplog) == ["ignored a command /csbot request without user_id: csbot could not carry it out",
                                   "ignored a command /csbot request without channel_id: csbot could not carry it out"]
    bot.idle()
    assert recorded_engine.calls == [] and bot.mock.calls_to("response:cmd") == []


def test_a_question_with_a_lone_surrogate_and_a_nul_gets_a_real_answer(make_bot, recorded_engine):
    bot = make_bot(recorded_engine, escalation_channel="CESC")
    ts = bot.mock.next_ts()
    event = {"type": "app_mention", "user": "U1", "channel": "C1", "ts": ts, "event_ts": ts,
             "text": "<@UBOT> How do I reset my \ud800password?\x00"}
    body = json.dumps(_event(event))
    assert "\\ud800" in body and "\\u0000" in body  # as the JSON escapes Slack's JSON can hold
    assert bot.sender.post(body)[0] == 200
    bot.idle()
    [reply] = posts(bot)
    assert reply["thread_ts"] == ts and "Forgot password?" in reply["text"]
    assert recorded_engine.calls == [("How do I reset my \ufffdpassword?", [])]
    assert bot.mock.calls_to("chat.postEphemeral") == []  # no busy note
    assert posts(bot, "CESC") == [] and BUSY_TEXT not in json.dumps(posts(bot))
    stored = bot.store.get_answer(reply["metadata"]["event_payload"]["answer_id"])
    assert stored["question"] == "How do I reset my \ufffdpassword?"
    assert bot.store.inbox.depth()["failed"] == 0


def test_work_that_fails_on_its_content_is_not_retried_into_a_busy_note(make_bot, recorded_engine, caplog):
    """An item queued before the intake checked its fields (e.g. by an older version) raises
    KeyError on every run: it fails at once, with one line, and nobody is told csbot was busy."""
    bot = make_bot(recorded_engine, escalation_channel="CESC", busy_after_seconds=1)
    bot.app.workers.stop(5)
    body = json.dumps(_event({"type": "app_mention", "user": "U1", "text": "<@UBOT> reset my password",
                              "ts": "1700000000.000300"}))
    item = InboxItem("MessageHandler.on_mention", ANSWER, body, content_type="application/json", team=TEAM)
    assert bot.store.inbox.accept([item], event_id="EvOld1").queued == 1
    with caplog.at_level(logging.WARNING, logger="csbot.slack.workers"):
        restarted = make_bot(recorded_engine, store=bot.store, escalation_channel="CESC", busy_after_seconds=1)
        restarted.idle()
    [failed] = bot.store.inbox.items("failed")
    assert (failed["attempts"], failed["error"]) == (1, "KeyError: 'channel'")
    [line] = csbot_lines(caplog)
    assert "cannot be carried out, its content raised (not retried): KeyError" in line
    assert bot.mock.calls_to("chat.postEphemeral") == [] and posts(bot) == []


def test_a_correction_submitted_without_a_user_is_not_stored(make_bot, recorded_engine):
    bot = make_bot(recorded_engine)
    bot.mention("How do I reset my password?")
    [call] = bot.mock.wait_for("chat.postMessage")
    answer_id = call.args["metadata"]["event_payload"]["answer_id"]
    assert bot.sender.interaction(button_payload(bot, ids.VOTE_DOWN, answer_id, call.args["thread_ts"]))[0] == 200
    [opened] = bot.mock.wait_for("views.open")
    bot.idle()
    anonymous = submission(opened.args["view"], doc_id="track-order", user=None)
    assert bot.sender.interaction(anonymous) == (200, "")
    bot.idle()
    [row] = bot.store.feedback_since()  # the click's own vote, uncorrected
    assert (row["origin"], row["correct_doc_id"], row["user_hash"]) == ("button", None, bot.store.hash_user("U1"))
