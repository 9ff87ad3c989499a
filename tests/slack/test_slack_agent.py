"""Slack's agent surface, end to end: the real slack-bolt App over signed HTTP (and Socket Mode's
handler), the real engine (demo KB), the real store, the mock Slack Web API with
assistant.threads.* and chat.startStream / appendStream / stopStream.

The messages tab gets suggested prompts from the knowledge base; a DM shows a status, gets a title
and a streamed answer ending with sources and native feedback buttons; a 👍 on it is stored; with
streaming refused (or failing midway) the same answer arrives whole.
"""

from __future__ import annotations

import json
import time

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.slack import ids, streaming
from tests.slack.slack_mock import BOT_TOKEN, TEAM
from tests.slack.slack_sender import button_payload, feedback_answer_id, feedback_payload, submission

QUESTION = "How do I reset my password?"


def timed(recorded_engine) -> list[float]:
    """Record when the app starts each engine call (time.monotonic, the clock the mock's calls use)."""
    started, original = [], recorded_engine.answer

    def answer(text, context=None):
        started.append(time.monotonic())
        return original(text, context)

    recorded_engine.answer = answer
    return started


def dm(bot, text=QUESTION, *, user="U1", thread_ts=None):
    event = bot.message(text, channel="D1", channel_type="im", user=user, thread_ts=thread_ts)
    bot.idle()
    return event


# ----- the messages tab and the legacy assistant events ---------------------------------------------

def test_messages_tab_gets_suggested_prompts_from_the_knowledge_base_most_asked_first(make_bot, recorded_engine):
    bot = make_bot(recorded_engine)
    dm(bot, "how do I track my order")  # the store now knows an article people ask about
    tracked = bot.store.get_answer(bot.mock.bot_replies("D1")[0]["metadata"]["event_payload"]["answer_id"])["doc_id"]
    assert bot.sender.event({"type": "app_home_opened", "user": "U1", "channel": "D1", "tab": "messages"})[0] == 200
    bot.idle()
    [call] = bot.mock.calls_to("assistant.threads.setSuggestedPrompts")
    assert call.args["channel_id"] == "D1" and "thread_ts" not in call.args and call.args["title"] == "Popular questions"
    prompts = call.args["prompts"]
    documents = recorded_engine.served.documents  # what the test compares with (the app reads bot/catalog.py)
    assert len(prompts) == 4 and prompts[0]["title"] == documents[tracked].title  # the most asked first
    titles = {doc.title: doc for doc in documents.values()}
    for prompt in prompts:
        doc = titles[prompt["title"]]
        assert prompt["message"] == (doc.questions[0] if doc.questions else doc.title)
    assert bot.mock.calls_to("views.publish") == []  # the Home tab's view is not published for the messages tab

    assert bot.sender.event({"type": "app_home_opened", "user": "U1", "channel": "D1", "tab": "home"})[0] == 200
    bot.idle()
    assert len(bot.mock.calls_to("views.publish")) == 1
    assert len(bot.mock.calls_to("assistant.threads.setSuggestedPrompts")) == 1


def test_suggested_prompts_follow_the_setting(make_bot, recorded_engine):
    bot = make_bot(recorded_engine, suggested_prompts=2)
    bot.sender.event({"type": "app_home_opened", "user": "U1", "channel": "D1", "tab": "messages"})
    bot.idle()
    [call] = bot.mock.calls_to("assistant.threads.setSuggestedPrompts")
    assert len(call.args["prompts"]) == 2
    off = make_bot(recorded_engine, suggested_prompts=0)
    off.sender.event({"type": "app_home_opened", "user": "U1", "channel": "D1", "tab": "messages"})
    off.idle()
    assert len(bot.mock.calls_to("assistant.threads.setSuggestedPrompts")) == 1


def test_legacy_assistant_thread_events_are_handled(make_bot, recorded_engine, caplog):
    bot = make_bot(recorded_engine)
    started = {"type": "assistant_thread_started", "event_ts": "1700000001.000100", "assistant_thread": {
        "user_id": "U1", "channel_id": "D1", "thread_ts": "1700000000.000100",
        "context": {"channel_id": "C1", "team_id": TEAM, "enterprise_id": None}}}
    changed = {"type": "assistant_thread_context_changed", "event_ts": "1700000002.000100", "assistant_thread": {
        "user_id": "U1", "channel_id": "D1", "thread_ts": "1700000000.000100",
        "context": {"channel_id": "C2", "team_id": TEAM, "enterprise_id": None}}}
    with caplog.at_level("INFO", logger="csbot"):
        assert bot.sender.event(started)[0] == 200
        assert bot.sender.event(changed)[0] == 200
        bot.idle()
    assert not [r for r in caplog.records if "no listener" in r.getMessage()]  # neither is "ignored" any more
    [call] = bot.mock.calls_to("assistant.threads.setSuggestedPrompts")
    assert (call.args["channel_id"], call.args["thread_ts"]) == ("D1", "1700000000.000100")
    assert len(call.args["prompts"]) == 4
    assert bot.mock.calls_to("chat.postMessage") == [] and bot.store.inbox.depth()["failed"] == 0


# ----- a DM: status, title, streamed answer, native feedback -----------------------------------------

def test_dm_shows_a_status_then_streams_the_answer_with_sources_and_feedback(make_bot, recorded_engine):
    engine_started = timed(recorded_engine)
    bot = make_bot(recorded_engine)
    event = dm(bot)
    [status] = bot.mock.calls_to("assistant.threads.setStatus")
    assert (status.args["channel_id"], status.args["thread_ts"], status.args["status"]) == ("D1", event["ts"], ids.WORKING_STATUS)
    assert status.time - engine_started[0] < 1.0  # sent as the model starts working (on its own thread)
    [title] = bot.mock.calls_to("assistant.threads.setTitle")
    assert (title.args["channel_id"], title.args["thread_ts"], title.args["title"]) == ("D1", event["ts"], QUESTION)

    [start] = bot.mock.calls_to("chat.startStream")
    [stop] = bot.mock.calls_to("chat.stopStream")
    assert bot.mock.calls_to("chat.appendStream") == []
    assert start.time > status.time and start.args["thread_ts"] == event["ts"]  # the status is settled first
    assert bot.mock.calls_to("chat.postMessage") == []
    [reply] = bot.mock.bot_replies("D1")
    assert reply["ts"] == stop.args["ts"] and reply["thread_ts"] == event["ts"] and "streaming" not in reply
    answer_id = reply["metadata"]["event_payload"]["answer_id"]
    stored = bot.store.get_answer(answer_id)
    assert stored["intent"] == "reset_password" and stored["channel"] == "D1" and stored["thread"] == event["ts"]
    assert "Forgot password?" in reply["text"]  # the article's Markdown, streamed
    assert reply["text"] == "".join(bot.mock.streams[reply["ts"]]["chunks"])
    assert start.args["chunks"] == [{"type": "markdown_text", "text": reply["text"]}]  # select mode: shown at once
    assert title.time > stop.time  # the title after the answer
    shown = json.dumps(stop.args["blocks"])
    assert "Resetting a forgotten password" in shown and "Confidence" in shown  # sources, details
    assert feedback_answer_id(stop.args["blocks"]) == answer_id

    # 👍 on the streamed answer is stored exactly as the classic button's vote.
    assert bot.sender.interaction(feedback_payload(bot, "up", answer_id, reply["ts"], channel="D1"))[0] == 200
    bot.idle()
    assert bot.store.get_answer(answer_id)["votes"] == {"up": 1, "down": 0}
    [row] = bot.store.feedback_since()
    assert (row["origin"], row["event_id"]) == ("button", "action:111.222.fb")
    assert bot.mock.calls_to("response:vote")  # the private thank-you


def test_a_follow_up_in_the_dm_thread_gets_no_new_title(make_bot, recorded_engine):
    bot = make_bot(recorded_engine)
    first = dm(bot, "how long does shipping take")
    dm(bot, "what about international orders?", thread_ts=first["ts"])
    assert len(bot.mock.calls_to("assistant.threads.setStatus")) == 2
    assert len(bot.mock.calls_to("assistant.threads.setTitle")) == 1
    assert len(bot.mock.calls_to("chat.stopStream")) == 2
    assert [len(recorded_engine.calls[1][1])] == [1]  # read with the thread's earlier turn


def test_an_edited_question_in_a_dm_thread_replaces_the_streamed_answer(make_bot, recorded_engine):
    """bolt's Assistant middleware would acknowledge and drop edits in DM threads: csbot gives it only
    the assistant_thread_* events, so the edit still reaches the message handler."""
    bot = make_bot(recorded_engine)
    first = dm(bot, "how long does shipping take")
    follow = dm(bot, "how do I reset my password", thread_ts=first["ts"])
    [_, reply] = bot.mock.bot_replies("D1")
    edited = {"type": "message", "subtype": "message_changed", "channel": "D1", "channel_type": "im", "hidden": True,
              "ts": "1700009000.000100",
              "message": {"type": "message", "user": "U1", "text": "how do I cancel my subscription",
                          "ts": follow["ts"], "thread_ts": first["ts"], "edited": {"user": "U1", "ts": "1700009000.000100"}},
              "previous_message": {"type": "message", "user": "U1", "text": follow["text"], "ts": follow["ts"],
                                   "thread_ts": first["ts"]}}
    assert bot.sender.event(edited)[0] == 200
    bot.idle()
    [update] = bot.mock.calls_to("chat.update")
    assert update.args["ts"] == reply["ts"] and update.args["channel"] == "D1"
    assert bot.store.get_answer(update.args["metadata"]["event_payload"]["answer_id"])["intent"] == "cancel_subscription"


def test_thumbs_down_on_the_native_buttons_opens_the_correction_modal(make_bot, recorded_engine):
    bot = make_bot(recorded_engine)
    dm(bot)
    [reply] = bot.mock.bot_replies("D1")
    answer_id = feedback_answer_id(reply["blocks"])
    assert bot.sender.interaction(feedback_payload(bot, "down", answer_id, reply["ts"], channel="D1",
                                                   trigger="7.7.down"))[0] == 200
    [opened] = bot.mock.wait_for("views.open")
    bot.idle()
    assert opened.args["trigger_id"] == "7.7.down" and opened.args["view"]["callback_id"] == ids.CORRECTION_MODAL
    assert bot.store.get_answer(answer_id)["votes"] == {"up": 0, "down": 1}
    bot.sender.interaction(submission(opened.args["view"], doc_id="locked-account"))
    bot.idle()
    [correction] = [r for r in bot.store.feedback_since() if r["origin"] == "modal"]
    assert correction["correct_doc_id"] == "locked-account" and correction["answer_id"] == answer_id


def test_the_classic_buttons_of_messages_already_posted_keep_working(make_bot, recorded_engine):
    bot = make_bot(recorded_engine)
    dm(bot)
    [reply] = bot.mock.bot_replies("D1")
    answer_id = feedback_answer_id(reply["blocks"])
    bot.sender.interaction(button_payload(bot, ids.VOTE_UP, answer_id, reply["ts"], channel="D1", trigger="1.c.u"))
    bot.idle()
    assert bot.store.get_answer(answer_id)["votes"] == {"up": 1, "down": 0}
    assert bot.sender.interaction(feedback_payload(bot, "up", answer_id, reply["ts"], channel="D1",
                                                   value="sideways:" + answer_id))[0] == 200
    bot.idle()
    assert bot.store.get_answer(answer_id)["votes"] == {"up": 1, "down": 0}  # an unknown value is no vote


# ----- fallbacks ---------------------------------------------------------------------------------------

def test_with_streaming_refused_the_same_answer_is_posted(make_bot, recorded_engine, slack_mock):
    slack_mock.streaming = False
    bot = make_bot(recorded_engine)
    event = dm(bot)
    [refused] = bot.mock.calls_to("chat.startStream", ok_only=True)
    assert bot.mock.streams == {}  # refused: nothing streamed
    assert bot.mock.calls_to("chat.appendStream") == [] and bot.mock.calls_to("chat.stopStream") == []
    [post] = bot.mock.calls_to("chat.postMessage")
    assert post.args["channel"] == "D1" and post.args["thread_ts"] == event["ts"]
    assert post.time > refused.time
    blocks = post.args["blocks"]
    assert blocks[0]["type"] == "markdown" and "Forgot password?" in blocks[0]["text"]
    assert "Forgot password?" in post.args["text"]  # the mrkdwn fallback for notifications
    answer_id = feedback_answer_id(blocks)
    assert post.args["metadata"]["event_payload"]["answer_id"] == answer_id
    assert bot.store.get_answer(answer_id)["intent"] == "reset_password"
    assert len(bot.mock.calls_to("assistant.threads.setStatus")) == 1  # the status still shows


def test_streaming_off_posts_the_answer_whole_and_status_off_shows_none(make_bot, recorded_engine):
    bot = make_bot(recorded_engine, stream=False)
    dm(bot)
    assert bot.mock.calls_to("chat.startStream", ok_only=False) == []
    [post] = bot.mock.calls_to("chat.postMessage")
    assert post.args["blocks"][0]["type"] == "markdown"
    [status] = bot.mock.calls_to("assistant.threads.setStatus")
    assert status.time < post.time
    quiet = make_bot(recorded_engine, status=False)
    quiet.message(QUESTION, channel="D2", channel_type="im")
    quiet.idle()
    assert [c.args["channel_id"] for c in bot.mock.calls_to("assistant.threads.setStatus")] == ["D1"]  # none in D2
    assert len(bot.mock.calls_to("chat.stopStream")) == 1 and bot.mock.bot_replies("D2")  # still streamed


def test_a_status_slack_refuses_does_not_hold_up_the_answer(make_bot, recorded_engine, slack_mock):
    slack_mock.fail("assistant.threads.setStatus", status=200, body={"ok": False, "error": "not_allowed_token_type"})
    bot = make_bot(recorded_engine)
    dm(bot)
    assert bot.mock.calls_to("assistant.threads.setStatus", ok_only=False)
    [reply] = bot.mock.bot_replies("D1")
    assert "Forgot password?" in reply["text"] and bot.store.inbox.depth()["failed"] == 0


def test_a_stream_failing_midway_is_replaced_by_the_whole_answer(make_bot, recorded_engine, slack_mock):
    slack_mock.fail("chat.stopStream", status=200, body={"ok": False, "error": "message_not_in_streaming_state"})
    bot = make_bot(recorded_engine)
    dm(bot)
    [start] = bot.mock.calls_to("chat.startStream")
    [update] = bot.mock.calls_to("chat.update")
    [reply] = bot.mock.bot_replies("D1")
    assert update.args["ts"] == reply["ts"] and update.args["channel"] == "D1"
    assert update.args["blocks"][0]["type"] == "markdown" and "Forgot password?" in update.args["blocks"][0]["text"]
    answer_id = feedback_answer_id(update.args["blocks"])
    assert reply["metadata"]["event_payload"]["answer_id"] == answer_id  # what reactions map back through
    assert bot.mock.calls_to("chat.postMessage") == [] and start.time < update.time
    assert bot.store.inbox.post_record(f"answer:D1:{bot.mock.messages['D1'][0]['ts']}")["ts"] == reply["ts"]


def test_hand_offs_and_channel_mentions_are_posted_whole(make_bot, recorded_engine):
    bot = make_bot(recorded_engine, oncall_usergroup="SONCALL")
    dm(bot, "What is the capital of France?")
    bot.mention(QUESTION)
    bot.idle()
    assert bot.mock.calls_to("chat.startStream", ok_only=False) == []
    assert sorted(c.args["channel"] for c in bot.mock.calls_to("chat.postMessage")) == ["C1", "D1"]
    assert [c.args["channel_id"] for c in bot.mock.calls_to("assistant.threads.setStatus")] == ["D1"]


def test_channel_mentions_stream_with_the_recipient_ids_when_enabled(make_bot, recorded_engine):
    bot = make_bot(recorded_engine, stream_channels=True)
    event = bot.mention(QUESTION, user="U7")
    bot.idle()
    [start] = bot.mock.calls_to("chat.startStream")
    assert (start.args["channel"], start.args["recipient_team_id"], start.args["recipient_user_id"]) == ("C1", TEAM, "U7")
    assert bot.mock.calls_to("assistant.threads.setTitle") == []  # titles are for DM threads
    [reply] = bot.mock.bot_replies("C1")
    assert reply["thread_ts"] == event["ts"] and "Forgot password?" in reply["text"]
    assert bot.mock.calls_to("chat.postMessage") == []


# ----- Socket Mode ---------------------------------------------------------------------------------------

def test_socket_mode_dm_is_streamed_and_the_messages_tab_gets_prompts(make_bot, recorded_engine, slack_mock):
    from slack_bolt.adapter.socket_mode import SocketModeHandler

    from tests.slack.socket_mock import SocketModeMock

    socket_mock = SocketModeMock()
    slack_mock.socket_url = socket_mock.url
    bot = make_bot(recorded_engine)  # its worker pool runs the queued work
    handler = SocketModeHandler(bot.app, "xapp-test-token")
    try:
        handler.connect()
        socket_mock.wait_connected(timeout=30)
        message = slack_mock.add_message("D1", QUESTION)
        tab = socket_mock.send_event({"type": "app_home_opened", "user": "U1", "channel": "D1", "tab": "messages"})
        question = socket_mock.send_event({"type": "message", "channel_type": "im", "channel": "D1", **message})
        slack_mock.wait_for("chat.stopStream")
        deadline = time.monotonic() + 20  # bolt's Socket Mode client acks on its own threads, in any order
        while not (tab in socket_mock.acks and question in socket_mock.acks) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert tab in socket_mock.acks and question in socket_mock.acks
        bot.idle()
    finally:
        handler.close()
        socket_mock.close()
    assert len(slack_mock.calls_to("assistant.threads.setSuggestedPrompts")) == 1
    [status] = slack_mock.calls_to("assistant.threads.setStatus")
    [reply] = slack_mock.bot_replies("D1")
    assert status.args["thread_ts"] == message["ts"] == reply["thread_ts"]
    assert "Forgot password?" in reply["text"] and feedback_answer_id(reply["blocks"])


# ----- the streaming path and the mock's argument checks -------------------------------------------------

def test_a_token_by_token_composer_streams_through_the_same_path(slack_mock):
    """bot/slack/streaming.py takes any iterator of Markdown pieces (a composer's tokens)."""
    client = WebClient(token=BOT_TOKEN, base_url=slack_mock.api_url)
    slack_mock.add_message("D2", "question", ts="1700000000.000100")
    tokens = [f"tok{i} " for i in range(200)]  # 1,190 characters
    delivery = streaming.stream_reply(client, channel="D2", thread_ts="1700000000.000100", chunks=iter(tokens),
                                      footer=[], metadata={"event_type": "x", "event_payload": {"a": 1}},
                                      fallback={"text": "whole"}, buffer_size=256)
    assert delivery.streamed
    [start] = slack_mock.calls_to("chat.startStream")
    assert start.args["chunks"] == [{"type": "markdown_text", "text": "tok0 "}]  # started with the first token
    appends = slack_mock.calls_to("chat.appendStream")
    assert 3 <= len(appends) <= 5 and all(len(a.args["chunks"][0]["text"]) >= 256 for a in appends)
    assert slack_mock.bot_replies("D2")[0]["text"] == "".join(tokens)


def test_the_mock_checks_arguments_as_slack_documents(slack_mock):
    client = WebClient(token=BOT_TOKEN, base_url=slack_mock.api_url)

    def error(call) -> str:
        with pytest.raises(SlackApiError) as raised:
            call()
        return raised.value.response["error"]

    five = [{"title": f"t{i}", "message": f"m{i}"} for i in range(5)]
    assert error(lambda: client.assistant_threads_setSuggestedPrompts(channel_id="D1", prompts=five)) == "invalid_arguments"
    assert error(lambda: client.assistant_threads_setSuggestedPrompts(
        channel_id="D1", prompts=[{"title": "t", "message": ""}])) == "invalid_arguments"
    assert error(lambda: client.assistant_threads_setTitle(channel_id="D1", thread_ts="1.0", title=" ")) == "invalid_arguments"
    assert error(lambda: client.assistant_threads_setStatus(channel_id="", thread_ts="1.0", status="x")) == "channel_not_found"
    assert error(lambda: client.chat_startStream(channel="C1", thread_ts="1.0")) == "missing_recipient_team_id"
    assert error(lambda: client.chat_startStream(channel="C1", thread_ts="1.0", recipient_team_id=TEAM)) == \
        "missing_recipient_user_id"
    assert error(lambda: client.chat_startStream(channel="D1", thread_ts="1.0", markdown_text="x" * 12_001)) == \
        "msg_too_long"
    ts = client.chat_startStream(channel="D1", thread_ts="1.0", markdown_text="hello")["ts"]
    assert error(lambda: client.chat_appendStream(channel="D1", ts=ts)) == "no_text"
    client.chat_stopStream(channel="D1", ts=ts, markdown_text=" world")
    assert error(lambda: client.chat_appendStream(channel="D1", ts=ts, markdown_text="late")) == \
        "message_not_in_streaming_state"
    assert error(lambda: client.chat_stopStream(channel="D1", ts="1.2")) == "message_not_found"
    assert slack_mock.bot_replies("D1")[0]["text"] == "hello world"
    slack_mock.streaming = False
    assert error(lambda: client.chat_startStream(channel="D1", thread_ts="1.0")) == "unknown_method"
