"""A pick from a clarifying question ("Did you mean: Refunds · Exchanges").

The engine offers two or three articles when it cannot tell them apart (retrieval/ranking.py).
Each is a button whose value names the answer and the article. A click:
1. is stored as feedback on the original answer — an "up" vote with origin `clarify` whose
   correction names the picked article, so the nightly retrain learns the question as a labelled
   example of it (training/feedback_data.py); the click's trigger id makes a replay count once;
   only a user who could see the question may pick (bot/slack/handlers: `may_vote`);
2. replaces the question in place (chat.update) with the picked article's answer — its section
   when one was offered — with the usual 👍/👎 buttons; that answer is logged like any other.
"""

from __future__ import annotations

import json

from bot.slack import blocks
from bot.slack.handlers import Deps, log, may_vote
from core.errors import UserError


class Clarify:
    def __init__(self, deps: Deps):
        self.deps = deps

    def on_pick(self, body, client, respond) -> None:
        action = (body.get("actions") or [{}])[0]
        try:
            value = json.loads(action.get("value") or "")
            answer_id, doc_id, section = value["a"], value["d"], value.get("s")
        except (ValueError, TypeError, KeyError):
            log.warning("ignored a clarify pick with a malformed value")
            return
        user = (body.get("user") or {}).get("id")
        container = body.get("container") or {}
        channel = (body.get("channel") or {}).get("id") or container.get("channel_id")
        if not may_vote(self.deps.store, answer_id, user, channel):
            log.info("clarify pick on %s from %s in %s ignored: that user could not see the question", answer_id, user,
                     channel)
            return
        stored = self.deps.store.get_answer(answer_id)
        if stored is None:
            respond(text="Sorry, I can no longer find that question.", response_type="ephemeral", replace_original=False)
            return
        try:
            picked = self.deps.engine.pick(stored.get("question") or "", doc_id, section)
        except KeyError:
            respond(text="That article is no longer in the knowledge base; a colleague will follow up.",
                    response_type="ephemeral", replace_original=False)
            return
        event_id = "action:" + str(body.get("trigger_id") or f"{action.get('action_ts')}:{user}")
        try:
            self.deps.store.record_vote(answer_id, "up", user=user, origin="clarify", event_id=event_id, doc_id=doc_id)
        except UserError as exc:
            log.info("clarify pick on %s not stored: %s", answer_id, exc)
        message_ts = container.get("message_ts") or (body.get("message") or {}).get("ts")
        thread_ts = (body.get("message") or {}).get("thread_ts") or message_ts
        self.deps.store.record_answer(picked, user=user, workspace=(body.get("team") or {}).get("id"),
                                      channel=channel, thread=thread_ts, origin="slack", question=stored.get("question"))
        client.chat_update(channel=channel, ts=message_ts, text=blocks.answer_text(picked),
                           blocks=blocks.answer_blocks(picked), metadata=blocks.answer_metadata(picked))
        self.deps.posted.remember(channel, message_ts, picked.answer_id, question_ts=None, thread_ts=thread_ts,
                                  question=stored.get("question"))
