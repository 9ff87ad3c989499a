"""A clarifying question in Slack, end to end: the real engine on the Markdown help centre (no
example questions), the real bolt App behind the HTTP server, signed requests, the local mock Web API."""

from __future__ import annotations

import json

import pytest

from bot.slack import ids
from tests.slack.slack_sender import button_payload

pytestmark = pytest.mark.slow

QUESTION = "I need to change or cancel the order I placed"


@pytest.fixture(scope="module")
def clarifying_engine(helpcentre_home):
    from core.settings import Settings
    from serving.engine import Engine

    # A wide margin makes the engine ask whenever two articles are close (the default is 0.02).
    return Engine(Settings.load(env={}, home=helpcentre_home, clarify_margin=0.15))


def test_did_you_mean_buttons_answer_the_pick_and_store_it_for_the_retrain(make_bot, clarifying_engine):
    bot = make_bot(clarifying_engine)
    bot.mention(QUESTION)
    [call] = bot.mock.wait_for("chat.postMessage")
    bot.idle()
    blocks = call.args["blocks"]
    assert "Which one did you mean?" in blocks[0]["text"]["text"]
    actions = next(b for b in blocks if b["type"] == "actions")
    assert actions["block_id"] == ids.CLARIFY_BLOCK
    buttons = actions["elements"]
    titles = [b["text"]["text"] for b in buttons]
    assert 2 <= len(buttons) <= 3 and {"Cancel an order", "Change an order"} <= {t.split(" › ")[0] for t in titles}
    assert [b["action_id"] for b in buttons] == [f"{ids.CLARIFY_PICK_PREFIX}{n}" for n in range(len(buttons))]
    answer_id = call.args["metadata"]["event_payload"]["answer_id"]
    change = next(b for b in buttons if b["text"]["text"].startswith("Change an order"))
    assert json.loads(change["value"])["a"] == answer_id

    message_ts = bot.mock.messages["C1"][-1]["ts"]
    payload = button_payload(bot, change["action_id"], change["value"], message_ts, trigger="555.666.pick",
                             block_id=ids.CLARIFY_BLOCK, response="pick")
    assert bot.sender.interaction(payload)[0] == 200
    assert bot.sender.interaction(payload)[0] == 200  # a replayed click counts once
    [update, *_] = bot.mock.wait_for("chat.update")
    bot.idle()
    assert update.args["ts"] == message_ts and update.args["channel"] == "C1"
    shown = json.dumps(update.args["blocks"], ensure_ascii=False)
    assert update.args["blocks"][0]["type"] == "markdown" and "Edit order**" in update.args["blocks"][0]["text"]
    assert "*Edit order*" in update.args["text"] and "**" not in update.args["text"]  # the fallback, as mrkdwn
    assert ids.FEEDBACK in shown and ids.CLARIFY_BLOCK not in shown  # now an answer with 👍/👎

    [row] = bot.store.feedback_since()
    assert (row["vote"], row["origin"], row["correct_doc_id"], row["answer_id"]) == (
        "up", "clarify", "change-an-order", answer_id)
    assert row["question"] == QUESTION
    picked_id = update.args["metadata"]["event_payload"]["answer_id"]
    assert picked_id != answer_id and bot.store.get_answer(picked_id)["doc_id"] == "change-an-order"


def test_a_clarify_pick_becomes_a_labelled_example_not_a_complaint(helpcentre_home):
    """What the retrain reads from a pick: the picked article labels the question, no hard negative."""
    from core.settings import RetrainSettings, Settings
    from serving.versions import VersionStore
    from training.feedback_data import build_feedback_data

    documents = VersionStore(Settings.load(env={}, home=helpcentre_home).models_dir).champion().documents()
    row = {"answer_id": "a1", "vote": "up", "origin": "clarify", "correct_doc_id": "change-an-order",
           "correct_intent": None, "correct_answer": None, "user_hash": "u1", "time": "2026-12-01T10:00:00Z",
           "question": QUESTION, "answer_intent": "cancel-an-order", "answer_doc_id": "cancel-an-order",
           "handoff": False}
    data = build_feedback_data([row], documents, config=RetrainSettings())
    [labelled] = data.labelled
    assert (labelled.text, labelled.intent, labelled.doc_id) == (QUESTION, "change-an-order", "change-an-order")
    assert data.hard_negatives == [] and data.counts["clarify_picks"] == 1
