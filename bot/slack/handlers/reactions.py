"""Reactions on the bot's answers as votes: an up emoji (default :+1:/:thumbsup:) or a down emoji
(default :-1:/:thumbsdown:) counts as 👍/👎 (skin tones included); removing it retracts the
user's vote. Reactions on other messages, and other emoji, are ignored. The Slack event id is
the vote's event id, so a replayed event never counts twice. A reaction counts only from someone
who could see the answer (in a DM, only the asker; see `may_vote`).
"""

from __future__ import annotations

from bot.slack.handlers import Deps, log, may_vote
from core.errors import UserError


class Reactions:
    def __init__(self, deps: Deps):
        self.deps = deps

    def on_added(self, body, event, client, context) -> None:
        vote = self.deps.options.reaction_vote(event.get("reaction"))
        if vote:
            self._record(body, event, client, context, vote)

    def on_removed(self, body, event, client, context) -> None:
        if self.deps.options.reaction_vote(event.get("reaction")):
            self._record(body, event, client, context, "retract")

    def _record(self, body, event, client, context, vote: str) -> None:
        item = event.get("item") or {}
        if item.get("type") != "message" or not item.get("channel") or not item.get("ts"):
            return
        if event.get("item_user") and event.get("item_user") != context.bot_user_id:
            return  # not the bot's message
        answer_id = self.deps.posted.answer_for_message(item["channel"], item["ts"], client)
        if not answer_id:
            log.debug("reaction on %s/%s: not an answer", item["channel"], item["ts"])
            return
        if not may_vote(self.deps.store, answer_id, event.get("user"), item["channel"]):
            log.info("reaction on %s from %s ignored: that user could not see the answer", answer_id, event.get("user"))
            return
        try:
            result = self.deps.store.record_vote(answer_id, vote, user=event.get("user"), origin="reaction",
                                                 event_id=body.get("event_id"))
        except UserError as exc:
            log.info("reaction vote on %s rejected: %s", answer_id, exc)
            return
        log.debug("reaction %s on %s: %s", vote, answer_id, result.status)
