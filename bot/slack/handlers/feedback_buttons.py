"""👍 / 👎 under an answer: Slack's native `feedback_buttons` (one action id, the value is
"up:<answer id>" / "down:<answer id>", see bot/slack/blocks.py `feedback_block`), and the classic
buttons answers carried before (action ids VOTE_UP / VOTE_DOWN, the value is the answer id), still
handled for messages already posted. Both are stored alike, origin "button".

👍 stores an "up" vote and thanks the user privately. 👎 opens the correction modal first (its
trigger id is only valid for 3 seconds) and then stores a "down" vote; a correction submitted in
the modal later refines that same vote. The interaction's trigger id is the vote's event id, so a
replayed request is not counted twice. Only someone who could see the answer may vote on it
(`may_vote`: the answer's channel; in a DM or on a private `/csbot ask` reply, only the asker).
The modal is opened in a try: when the click waited in the inbox past the trigger's 3 seconds,
the vote still counts.
"""

from __future__ import annotations

import json

from bot.slack import blocks
from bot.slack.handlers import Deps, log, may_vote
from core.errors import UserError


class FeedbackButtons:
    def __init__(self, deps: Deps):
        self.deps = deps

    def on_feedback(self, body, client, respond) -> None:
        """A click on the native feedback buttons."""
        vote, answer_id = blocks.read_feedback_value(_action(body).get("value"))
        if vote == "up":
            self.up(body, answer_id, respond)
        elif vote == "down":
            self.down(body, answer_id, client, respond)
        else:
            log.info("feedback click with an unknown value %r ignored", _action(body).get("value"))

    def on_up(self, body, respond) -> None:
        self.up(body, _action(body).get("value"), respond)

    def on_down(self, body, client, respond) -> None:
        self.down(body, _action(body).get("value"), client, respond)

    def up(self, body: dict, answer_id: str | None, respond) -> None:
        if self.vote(body, answer_id, "up", respond):
            respond(text="Thanks for the feedback! 👍", response_type="ephemeral", replace_original=False)

    def down(self, body: dict, answer_id: str | None, client, respond) -> None:
        if not self.visible(body, answer_id):
            return
        try:
            self.open_correction_modal(body, answer_id, client)
        except Exception as exc:  # noqa: BLE001 - e.g. expired_trigger_id: the vote still counts
            log.info("could not open the correction modal: %s", exc)
        self.vote(body, answer_id, "down", respond)

    def visible(self, body: dict, answer_id: str | None) -> bool:
        user = (body.get("user") or {}).get("id")
        channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id")
        if may_vote(self.deps.store, answer_id, user, channel):
            return True
        log.info("vote on %s from %s in %s ignored: that user could not see the answer", answer_id, user, channel)
        return False

    def vote(self, body: dict, answer_id: str | None, vote: str, respond) -> bool:
        action = _action(body)
        user = (body.get("user") or {}).get("id")
        if not self.visible(body, answer_id):
            return False
        event_id = "action:" + str(body.get("trigger_id") or f"{action.get('action_ts')}:{user}")
        try:
            result = self.deps.store.record_vote(answer_id, vote, user=user, origin="button", event_id=event_id)
        except UserError as exc:
            log.info("vote on %s rejected: %s", answer_id, exc)
            respond(text="Sorry, I can no longer find that answer, so the vote was not recorded.",
                    response_type="ephemeral", replace_original=False)
            return False
        if result.status == "capped":
            respond(text="You've reached today's vote limit; thanks for all the feedback!",
                    response_type="ephemeral", replace_original=False)
            return False
        return result.status == "stored"

    def open_correction_modal(self, body: dict, answer_id: str | None, client) -> None:
        container = body.get("container") or {}
        message = body.get("message") or {}
        context = {"channel": (body.get("channel") or {}).get("id") or container.get("channel_id"),
                   "message_ts": container.get("message_ts") or message.get("ts"),
                   "thread_ts": message.get("thread_ts") or container.get("thread_ts")}
        stored = self.deps.store.get_answer(answer_id)
        client.views_open(trigger_id=body["trigger_id"], view=self.modal(answer_id, stored or {}, context))

    def modal(self, answer_id: str, stored: dict, context: dict):
        catalogue = self.deps.engine.catalogue()
        answered = catalogue.article(stored.get("doc_id"))
        return blocks.correction_modal(answer_id=answer_id, question=stored.get("question"),
                                       answer=stored.get("answer_text"), articles=catalogue.titles(),
                                       intents=catalogue.intents, context=context,
                                       sections=catalogue.sections(stored.get("doc_id")),
                                       answered_title=answered.title if answered else None)


def _action(body: dict) -> dict:
    return (body.get("actions") or [{}])[0]


def modal_context(view: dict) -> dict:
    try:
        data = json.loads(view.get("private_metadata") or "{}")
    except json.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}
