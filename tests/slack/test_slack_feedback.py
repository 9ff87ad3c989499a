"""Feedback from Slack lands in the store: 👍/👎 buttons, the correction modal, reactions (the real
engine on the demo KB). The block_actions / view_submission payloads follow Slack's documented shapes."""

from __future__ import annotations

import json

from bot.slack import ids
from tests.slack.slack_mock import BOT_USER, TEAM
from tests.slack.slack_sender import button_payload, feedback_values, submission


def ask(bot, text="how do I reset my password?", channel="C1"):
    """Mention the bot; return (question event, the answer post's call args, the answer's ts, answer id)."""
    event = bot.mention(text, channel=channel)
    call = bot.mock.wait_for("chat.postMessage")[-1]
    bot.idle()
    posted = bot.mock.messages[channel][-1]
    answer_id = call.args["metadata"]["event_payload"]["answer_id"]
    return event, call.args, posted["ts"], answer_id


def test_answer_message_has_text_sources_confidence_and_feedback_buttons(make_bot, recorded_engine):
    bot = make_bot(recorded_engine)
    event, args, _, answer_id = ask(bot)
    assert args["channel"] == "C1" and args["thread_ts"] == event["ts"]
    blocks = args["blocks"]
    stored = bot.store.get_answer(answer_id)
    assert stored["intent"] == "reset_password" and not stored["handoff"]
    assert blocks[0]["type"] == "markdown" and "Forgot password?" in blocks[0]["text"]  # the article's answer
    assert ("<https://help.parcelly.example/articles/reset-password|Resetting a forgotten password>"
            in json.dumps(blocks))
    details = f"Confidence {stored['confidence']:.0%} · model {recorded_engine.model_version}"
    assert details in json.dumps(blocks, ensure_ascii=False)
    assert feedback_values(blocks) == {"up": f"up:{answer_id}", "down": f"down:{answer_id}"}  # native 👍/👎
    assert not [b for b in blocks if b["type"] == "actions"]  # no classic buttons on new answers
    assert stored["channel"] == "C1" and stored["thread"] == event["ts"] and stored["workspace"] == TEAM


def test_thumbs_up_button_stores_one_vote(make_bot, recorded_engine):
    bot = make_bot(recorded_engine)
    _, _, ts, answer_id = ask(bot)
    payload = button_payload(bot, ids.VOTE_UP, answer_id, ts)
    assert bot.sender.interaction(payload)[0] == 200
    assert bot.sender.interaction(payload)[0] == 200  # the same interaction replayed
    bot.idle()
    assert bot.store.get_answer(answer_id)["votes"] == {"up": 1, "down": 0}
    [row] = bot.store.feedback_since()
    assert row["origin"] == "button" and row["event_id"] == "action:111.222.abc"
    assert bot.mock.calls_to("response:vote")  # the private thank-you


def test_thumbs_down_opens_the_modal_and_the_correction_is_stored(make_bot, recorded_engine):
    bot = make_bot(recorded_engine)
    _, _, ts, answer_id = ask(bot)
    assert bot.sender.interaction(button_payload(bot, ids.VOTE_DOWN, answer_id, ts))[0] == 200
    [opened] = bot.mock.wait_for("views.open")
    bot.idle()
    view = opened.args["view"]
    assert opened.args["trigger_id"] == "111.222.abc" and view["callback_id"] == ids.CORRECTION_MODAL
    [articles] = [b for b in view["blocks"] if b.get("block_id") == ids.CORRECTION_ARTICLE_BLOCK]
    offered = [o["value"] for o in articles["element"]["options"]]  # every KB article
    assert len(offered) == 36 and set(offered) == set(recorded_engine.served.documents)
    assert {"reset-password", "track-order"} <= set(offered)
    assert bot.store.get_answer(answer_id)["votes"] == {"up": 0, "down": 1}

    empty = submission(view)  # nothing picked: an inline error, nothing stored
    status, body = bot.sender.interaction(empty)
    assert status == 200 and json.loads(body)["response_action"] == "errors"
    status, body = bot.sender.interaction(submission(view, doc_id="track-order", text="See the tracking page."))
    assert status == 200 and body == ""
    bot.mock.wait_for("chat.postEphemeral")
    bot.idle()
    [row] = bot.store.feedback_since()
    assert (row["vote"], row["origin"], row["correct_doc_id"], row["correct_intent"], row["correct_answer"]) == (
        "down", "modal", "track-order", "track_order", "See the tracking page.")
    assert row["event_id"] == "view:VCORR1"


def test_a_correction_can_name_another_section_of_the_answered_article(make_bot, helpcentre_home, tmp_path):
    """The answer found the right article but quoted the wrong part: the modal offers the answered
    article's sections, and the pick is stored as `doc#section` with the article's intent."""
    from core.settings import Settings
    from serving.engine import Engine
    from tests.conftest import copy_home

    engine = Engine(Settings.load(env={}, home=copy_home(helpcentre_home, tmp_path / "helpcentre")))
    bot = make_bot(engine)
    _, _, ts, answer_id = ask(bot, "how long does a refund take to arrive")
    assert bot.store.get_answer(answer_id)["doc_id"] == "refunds"
    assert bot.sender.interaction(button_payload(bot, ids.VOTE_DOWN, answer_id, ts))[0] == 200
    [opened] = bot.mock.wait_for("views.open")
    bot.idle()
    view = opened.args["view"]
    [sections] = [b for b in view["blocks"] if b.get("block_id") == ids.CORRECTION_SECTION_BLOCK]
    assert "Refunds" in sections["label"]["text"]
    offered = {o["value"]: o["text"]["text"] for o in sections["element"]["options"]}
    assert offered == dict(engine.catalogue().sections("refunds")) and len(offered) >= 2
    assert offered["refunds#items-that-cannot-be-refunded"] == "Items that cannot be refunded"

    status, body = bot.sender.interaction(submission(view, section="refunds#items-that-cannot-be-refunded"))
    assert status == 200 and body == ""
    bot.mock.wait_for("chat.postEphemeral")
    bot.idle()
    [row] = bot.store.feedback_since()
    assert (row["correct_doc_id"], row["correct_intent"]) == ("refunds#items-that-cannot-be-refunded",
                                                              engine.catalogue().article("refunds").label)
    # Another article picked as well: the article wins (the section belonged to the answered one).
    assert bot.sender.interaction(submission(view, section="refunds#items-that-cannot-be-refunded",
                                             doc_id="exchanges", view_id="VCORR2"))[0] == 200
    bot.idle()  # the same user's later correction replaces the first
    [row] = bot.store.feedback_since()
    assert row["correct_doc_id"] == "exchanges"


def test_reaction_added_and_removed_vote_and_retract(make_bot, recorded_engine):
    bot = make_bot(recorded_engine)
    _, _, ts, answer_id = ask(bot)

    def react(kind, name, event_id):
        event = {"type": kind, "user": "U7", "reaction": name, "item_user": BOT_USER,
                 "item": {"type": "message", "channel": "C1", "ts": ts}, "event_ts": "1700000200.000100"}
        assert bot.sender.event(event, event_id=event_id)[0] == 200
        bot.idle()

    react("reaction_added", "+1::skin-tone-3", "EvR1")
    assert bot.store.get_answer(answer_id)["votes"] == {"up": 1, "down": 0}
    react("reaction_added", "+1::skin-tone-3", "EvR1")  # replayed event: not counted twice
    react("reaction_added", "tada", "EvR2")  # not a vote
    assert bot.store.get_answer(answer_id)["votes"] == {"up": 1, "down": 0}
    react("reaction_removed", "+1::skin-tone-3", "EvR3")
    assert bot.store.get_answer(answer_id)["votes"] == {"up": 0, "down": 0}
    react("reaction_added", "-1", "EvR4")
    assert bot.store.get_answer(answer_id)["votes"] == {"up": 0, "down": 1}
    assert {r["origin"] for r in bot.store.feedback_since()} == {"reaction"}


def test_reaction_after_a_restart_is_mapped_through_the_reply_ledger(make_bot, recorded_engine):
    bot = make_bot(recorded_engine)
    _, _, ts, answer_id = ask(bot)
    restarted = make_bot(recorded_engine, store=bot.store)  # empty in-memory map
    event = {"type": "reaction_added", "user": "U7", "reaction": "thumbsdown", "item_user": BOT_USER,
             "item": {"type": "message", "channel": "C1", "ts": ts}}
    restarted.sender.event(event)
    restarted.idle()
    assert bot.mock.calls_to("conversations.replies") == []  # the store knew which answer that message holds
    assert bot.store.get_answer(answer_id)["votes"] == {"up": 0, "down": 1}


def test_reaction_on_an_answer_missing_from_the_ledger_is_mapped_through_message_metadata(make_bot, recorded_engine):
    bot = make_bot(recorded_engine)
    _, _, ts, answer_id = ask(bot)
    with bot.store._write() as conn:  # e.g. answered before the ledger existed
        conn.execute("DELETE FROM slack_posts")
    restarted = make_bot(recorded_engine, store=bot.store)  # empty in-memory map
    event = {"type": "reaction_added", "user": "U7", "reaction": "thumbsdown", "item_user": BOT_USER,
             "item": {"type": "message", "channel": "C1", "ts": ts}}
    restarted.sender.event(event)
    restarted.idle()
    [lookup] = bot.mock.calls_to("conversations.replies")
    assert lookup.args["ts"] == ts
    assert bot.store.get_answer(answer_id)["votes"] == {"up": 0, "down": 1}


def test_custom_reaction_emoji_and_reactions_on_other_messages(make_bot, recorded_engine):
    bot = make_bot(recorded_engine, up_reactions="white_check_mark", down_reactions=":x:")
    _, _, ts, answer_id = ask(bot)
    for name, item_user in [("+1", BOT_USER), ("white_check_mark", "U9"), ("white_check_mark", BOT_USER)]:
        bot.sender.event({"type": "reaction_added", "user": "U7", "reaction": name, "item_user": item_user,
                          "item": {"type": "message", "channel": "C1", "ts": ts}})
        bot.idle()
    assert bot.store.get_answer(answer_id)["votes"] == {"up": 1, "down": 0}
