"""Answering messages: @mentions anywhere, direct messages, support-channel messages, follow-ups in
threads the bot answered in, and edits.

* Replies always go in the thread of the question; a question inside a thread is read with the
  thread's earlier user turns (conversations.replies).
* In support channels, and for un-mentioned follow-ups in a thread, the bot answers only when the
  answer clears `slack_support_min_confidence` and is not a hand-off, so it stays out of chatter.
* A channel message that @mentions the bot is answered once, from the `app_mention` event (the
  matching `message` event is skipped).
* Edits: if the bot answered the message and its text changed, the bot's reply is replaced in
  place (chat.update) with the answer to the new text; an edited message the bot has not answered
  is answered like a new one if it now qualifies (e.g. a mention was added). Unchanged text (link
  unfurls) is ignored.
* Hand-off: the reply says a human will follow up; with `slack_escalation_channel` a link to the
  thread is posted there (mentioning `slack_oncall_usergroup`), else the reply mentions the group.
* Priority hand-off: a message in a support channel whose negative sentiment is at least
  `priority_negative_threshold` (default 0.85) is always handed off, marked priority: the bot still
  answers when it has a confident answer (otherwise it replies that a colleague will follow up,
  instead of staying quiet), and the escalation post (or, without an escalation channel, an
  in-thread mention of the on-call group) says it is a priority.
* Watched channels (`slack_watched_channels`) are scored and stored without a reply by
  bot/slack/handlers/monitoring.py, which runs as a second lazy listener on the same events.
"""

from __future__ import annotations

import dataclasses

from bot.slack import blocks
from bot.slack.handlers import Deps, log, mentions, strip_mention

CONTEXT_TURNS = 5  # earlier user turns of a thread given to the engine


class MessageHandler:
    def __init__(self, deps: Deps):
        self.deps = deps

    # ----- lazy listeners ------------------------------------------------------------------------
    def on_mention(self, body, event, client, context) -> None:
        self.answer(client, event, team=body.get("team_id"), bot_user_id=context.bot_user_id, bar=None)

    def on_message(self, body, event, client, context) -> None:
        bar = self._bar_for(event, context.bot_user_id)
        if bar is not False:
            self.answer(client, event, team=body.get("team_id"), bot_user_id=context.bot_user_id, bar=bar)

    def on_edit(self, body, event, client, context) -> None:
        message = dict(event.get("message") or {})
        previous = event.get("previous_message") or {}
        channel = event.get("channel")
        if not channel or not message.get("ts") or message.get("text") == previous.get("text"):
            return
        message.update(channel=channel, channel_type=event.get("channel_type"))
        bot_user_id = context.bot_user_id
        earlier = self.deps.posted.reply_to(channel, message["ts"])
        if earlier is not None:
            self.answer(client, message, team=body.get("team_id"), bot_user_id=bot_user_id, bar=None,
                        replace_ts=earlier[0])
            return
        bar = None if mentions(message.get("text"), bot_user_id) else self._bar_for(message, bot_user_id)
        if bar is not False:
            self.answer(client, message, team=body.get("team_id"), bot_user_id=bot_user_id, bar=bar)

    # ----- helpers -------------------------------------------------------------------------------
    def _bar_for(self, event: dict, bot_user_id: str | None):
        """None: always answer; a float: answer only above it; False: not ours to answer."""
        options, channel = self.deps.options, event.get("channel")
        if event.get("channel_type") == "im":
            return None
        if mentions(event.get("text"), bot_user_id):
            return False  # handled by the app_mention event
        if channel in options.support_channels:
            return options.support_min_confidence
        if self.deps.posted.answered_in_thread(channel, event.get("thread_ts")):
            return options.support_min_confidence
        return False

    def answer(self, client, event: dict, *, team: str | None, bot_user_id: str | None, bar: float | None,
               replace_ts: str | None = None) -> str | None:
        """Answer one message in its thread; returns the reply's ts (None when the bot stays quiet)."""
        deps, channel, ts = self.deps, event["channel"], event["ts"]
        question = strip_mention(event.get("text") or "", bot_user_id)
        thread_ts = event.get("thread_ts") or ts
        if not question:
            if bar is None and replace_ts is None:
                client.chat_postMessage(channel=channel, thread_ts=thread_ts, blocks=blocks.help_blocks(),
                                        text="Ask me a question, e.g. “how do I reset my password?”")
            return None
        turns = self.thread_turns(client, channel, event, bot_user_id) if event.get("thread_ts") else []
        answer = deps.engine.answer(question, turns)
        priority = not replace_ts and deps.options.priority(channel, answer.sentiment_scores)
        weak = answer.handoff or (bar is not None and answer.confidence < bar)
        if bar is not None and weak and not priority:
            log.debug("staying quiet on %s/%s: confidence %.2f below %.2f", channel, ts, answer.confidence, bar)
            return None
        if priority and weak:
            answer = dataclasses.replace(answer, text=blocks.PRIORITY_HANDOFF_TEXT, handoff=True, doc_id=None,
                                         sources=[])
        deps.store.record_answer(answer, user=event.get("user"), workspace=team, channel=channel,
                                 thread=thread_ts, origin="slack", question=question)
        group = deps.options.oncall_usergroup if not deps.options.escalation_channel else None
        message = dict(channel=channel, text=blocks.answer_text(answer, oncall_usergroup=group),
                       blocks=blocks.answer_blocks(answer, oncall_usergroup=group),
                       metadata=blocks.answer_metadata(answer))
        if replace_ts:
            reply_ts = client.chat_update(ts=replace_ts, **message)["ts"]
        else:
            reply_ts = client.chat_postMessage(thread_ts=thread_ts, unfurl_links=False, unfurl_media=False,
                                               **message)["ts"]
        deps.posted.remember(channel, reply_ts, answer.answer_id, question_ts=ts, thread_ts=thread_ts,
                             question=question)
        if (answer.handoff or priority) and not replace_ts:
            self.escalate(client, answer, channel, thread_ts, priority=priority)
        return reply_ts

    def thread_turns(self, client, channel: str, event: dict, bot_user_id: str | None) -> list[str]:
        """The thread's earlier messages from people (not bots), oldest first."""
        try:
            response = client.conversations_replies(channel=channel, ts=event["thread_ts"], limit=50)
        except Exception as exc:  # noqa: BLE001 - answer without context rather than not at all
            log.warning("conversations.replies failed for %s/%s: %s", channel, event["thread_ts"], exc)
            return []
        turns = []
        for message in response.get("messages") or []:
            if message.get("ts") == event["ts"] or float(message.get("ts", 0)) > float(event["ts"]):
                continue
            if message.get("bot_id") or message.get("user") in (None, bot_user_id) or message.get("subtype"):
                continue
            text = strip_mention(message.get("text") or "", bot_user_id)
            if text:
                turns.append(text)
        return turns[-CONTEXT_TURNS:]

    def escalate(self, client, answer, channel: str, thread_ts: str, *, priority: bool = False) -> None:
        target, group = self.deps.options.escalation_channel, self.deps.options.oncall_usergroup
        if not target:
            if priority and group and not answer.handoff:  # a hand-off reply already mentions the group
                client.chat_postMessage(channel=channel, thread_ts=thread_ts, text=blocks.priority_notice_text(group))
            return
        permalink = None
        try:
            permalink = client.chat_getPermalink(channel=channel, message_ts=thread_ts).get("permalink")
        except Exception as exc:  # noqa: BLE001 - still escalate, without the link
            log.warning("chat.getPermalink failed for %s/%s: %s", channel, thread_ts, exc)
        what = "Priority: a very unhappy customer" if priority else "A question"
        client.chat_postMessage(
            channel=target, unfurl_links=False, text=f"{what} in <#{channel}> needs a human: {permalink or ''}",
            blocks=blocks.escalation_blocks(answer, channel=channel, permalink=permalink,
                                            oncall_usergroup=group, priority=priority))
