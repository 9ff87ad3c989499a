"""Answering messages: @mentions anywhere, direct messages, support-channel messages, follow-ups in
threads the bot answered in, and edits.

* Replies always go in the thread of the question; a question inside a thread is read with the
  thread's earlier user turns (conversations.replies).
* Whether to answer, the priority hand-off, select or compose (once per answer) and the hand-off
  texts are the answer policy's (serving/policy.py); this handler translates a Slack message into its
  `Conversation` (the bar, a support channel's priority threshold, the channel's answer mode) and
  the policy's `Reply` into Slack messages.
* In support channels, and for un-mentioned follow-ups in a thread, the bot answers only when the
  answer clears `slack_support_min_confidence` and is not a hand-off, so it stays out of chatter
  (nothing is composed for a message it stays quiet on).
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
* Exactly once: every reply goes through the store's reply ledger (store/inbox.py). The post is
  noted (with its answer id) before chat.postMessage and its ts after it, so a re-run of the same
  inbox item never posts again; if a process died between the two, the thread is read back
  (conversations.replies with metadata) to find the reply before deciding to post.
* Late (the inbox was backed up, see bot/slack/workers.py): a mention or DM gets the ephemeral
  busy note (and an escalation when `slack_escalation_channel` is set) instead of a model answer;
  support-channel chatter stays unanswered.
* Unreadable: the text is cleaned first (core/text.py: lone surrogates, control characters); if the
  engine still raises on it (bot/slack/intake.py CONTENT_ERRORS), a mention or DM gets one reply
  saying the message could not be read (UNREADABLE_TEXT) and a log line; never the busy note.
* The agent surface (DMs, the app's messages tab / agent threads; with `slack_stream_channels`
  also mentions in channels): before the engine runs, the thread shows the status "Searching the
  help centre…"; an article's answer is then streamed into the reply (bot/slack/streaming.py, `slack_stream`), ending with the sources and
  the feedback buttons, and posted whole where streaming is unavailable. Hand-offs, clarifying
  questions, edits and support-channel answers are posted whole. A new DM thread is then titled
  after its question.
* Privacy: the escalation post, outside the asker's conversation, quotes the question redacted
  (store/redact.py, every kind, whatever `redact_pii` says) next to the thread's permalink.
"""

from __future__ import annotations

import dataclasses

from bot.slack import blocks, streaming
from bot.slack.handlers import (ANSWER, CONTENT_ERRORS, LATE, UNREADABLE_TEXT, Deps, log, mentions, strip_mention,
                                work)
from bot.slack.ids import ANSWER_EVENT_TYPE, WORKING_STATUS
from serving.compose import GuardFailure
from serving.policy import AnswerPolicy, Conversation
from store.redact import redact

CONTEXT_TURNS = 5  # earlier user turns of a thread given to the engine
BUSY_TEXT = ("I'm swamped right now and couldn't answer in time, sorry! A colleague from the support team "
             "will follow up here.")


class MessageHandler:
    def __init__(self, deps: Deps):
        self.deps = deps
        self.policy = AnswerPolicy(deps.engine)  # whether to answer, priority, compose: decided there

    # ----- lazy listeners ------------------------------------------------------------------------
    @work(ANSWER)
    def on_mention(self, body, event, client, context) -> None:
        self.answer(client, event, team=body.get("team_id"), bot_user_id=context.bot_user_id, bar=None,
                    late=bool(context.get(LATE)))

    @work(ANSWER)
    def on_message(self, body, event, client, context) -> None:
        bar = self._bar_for(event, context.bot_user_id)
        if bar is not False:
            self.answer(client, event, team=body.get("team_id"), bot_user_id=context.bot_user_id, bar=bar,
                        late=bool(context.get(LATE)))

    @work(ANSWER)
    def on_edit(self, body, event, client, context) -> None:
        message = dict(event.get("message") or {})
        previous = event.get("previous_message") or {}
        channel = event.get("channel")
        if not channel or not message.get("ts") or message.get("text") == previous.get("text"):
            return
        message.update(channel=channel, channel_type=event.get("channel_type"))
        bot_user_id = context.bot_user_id
        late = bool(context.get(LATE))
        earlier = self.deps.posted.reply_to(channel, message["ts"])
        if earlier is not None:
            if not late:  # a late edit keeps the earlier answer
                self.answer(client, message, team=body.get("team_id"), bot_user_id=bot_user_id, bar=None,
                            replace_ts=earlier[0])
            return
        bar = None if mentions(message.get("text"), bot_user_id) else self._bar_for(message, bot_user_id)
        if bar is not False:
            self.answer(client, message, team=body.get("team_id"), bot_user_id=bot_user_id, bar=bar, late=late)

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
               replace_ts: str | None = None, late: bool = False) -> str | None:
        """Answer one message in its thread; returns the reply's ts (None when the bot stays quiet)."""
        deps, channel, ts = self.deps, event["channel"], event["ts"]
        question = strip_mention(event.get("text") or "", bot_user_id)
        thread_ts = event.get("thread_ts") or ts
        key = f"answer:{channel}:{ts}"
        if replace_ts is None:
            earlier = self.already_posted(client, key, channel, thread_ts)
            if earlier:
                self.settle(client, f"escalation:{channel}:{ts}")  # owed if the process died right after the answer
                return earlier
        if not question:
            if bar is None and replace_ts is None:
                self.post_once(client, key, channel=channel, thread_ts=thread_ts, question_ts=ts, answer_id=None,
                               blocks=blocks.help_blocks(), text="Ask me a question, e.g. “how do I reset my password?”")
            return None
        if late:
            if bar is None and replace_ts is None:
                self.busy(client, event, question, thread_ts)
            else:
                log.info("too late to answer %s/%s: staying quiet", channel, ts)
            return None
        dm = event.get("channel_type") == "im" or str(channel).startswith("D")
        working = (dm or deps.options.stream_channels) and bar is None and replace_ts is None
        status = None
        if working and deps.options.status:  # the first visible sign of work, sent while the engine works
            status = streaming.StatusInBackground(client, channel, thread_ts, WORKING_STATUS)
        new_thread = working and dm and not deps.posted.answered_in_thread(channel, thread_ts)
        turns = self.thread_turns(client, channel, event, bot_user_id) if event.get("thread_ts") else []
        try:
            answer = deps.engine.answer(question, turns)
        except CONTENT_ERRORS as exc:  # the text, not the load: say so once, never the busy note
            if status is not None:
                status.settled()
            return self.unreadable(client, key, event, thread_ts, exc, reply=bar is None and replace_ts is None)
        conversation = self.conversation(channel, dm, bar, turns, stream=bool(working and deps.options.stream),
                                         replaces_reply=bool(replace_ts))
        decision = self.policy.reply(answer, conversation)  # composes whole unless it streams below
        if decision.quiet:
            log.debug("staying quiet on %s/%s: confidence %.2f below %.2f", channel, ts, answer.confidence, bar)
            return None
        answer, priority, stream_composed = decision.answer, decision.priority, decision.stream_compose
        deps.store.record_answer(answer, user=event.get("user"), workspace=team, channel=channel,
                                 thread=thread_ts, origin="slack", question=question)
        escalation = f"escalation:{channel}:{ts}"
        if (answer.handoff or priority) and not replace_ts:
            self.owe_escalation(client, escalation, answer, channel, thread_ts, ts, priority=priority)
        group = deps.options.oncall_usergroup if not deps.options.escalation_channel else None
        message = dict(channel=channel, **answer_message(answer, group))
        if status is not None:
            status.settled()  # never after the reply: Slack clears the status when the reply arrives
        if replace_ts:
            reply_ts = client.chat_update(ts=replace_ts, **message)["ts"]
            deps.store.inbox.post_done(key, reply_ts, answer_id=answer.answer_id)
        elif stream_composed:
            reply_ts, composed = self.stream_composed(client, key, decision, conversation, thread_ts=thread_ts,
                                                      question_ts=ts, team=team, user=event.get("user"), group=group,
                                                      channel=channel)
            if composed.handoff and not answer.handoff:  # the composer abstained: a colleague is owed
                self.owe_escalation(client, escalation, composed, channel, thread_ts, ts, priority=False)
            answer = composed
        elif working and deps.options.stream and blocks.streams(answer):
            reply_ts = self.stream_once(client, key, answer, message, thread_ts=thread_ts, question_ts=ts,
                                        team=team, user=event.get("user"))
        else:
            reply_ts = self.post_once(client, key, thread_ts=thread_ts, question_ts=ts, answer_id=answer.answer_id,
                                      unfurl_links=False, unfurl_media=False, **message)
        deps.posted.remember(channel, reply_ts, answer.answer_id, question_ts=ts, thread_ts=thread_ts,
                             question=question)
        if not replace_ts:
            self.settle(client, escalation)
        if new_thread:  # after the answer: a title is no sign of work, the answer comes first
            streaming.set_title(client, channel, thread_ts, question)
        return reply_ts

    # ----- exactly-once posting --------------------------------------------------------------------
    def post_once(self, client, key: str, *, channel: str, thread_ts: str | None, question_ts: str | None,
                  answer_id: str | None, **message) -> str:
        """chat.postMessage through the reply ledger: noted before, its ts recorded after."""
        ledger = self.deps.store.inbox
        ledger.post_begin(key, answer_id=answer_id, channel=channel, thread_ts=thread_ts, question_ts=question_ts)
        reply_ts = client.chat_postMessage(channel=channel, thread_ts=thread_ts, **message)["ts"]
        ledger.post_done(key, reply_ts)
        return reply_ts

    def stream_once(self, client, key: str, answer, message: dict, *, thread_ts: str, question_ts: str,
                    team: str | None, user: str | None, chunks=None, footer=None, metadata=None,
                    fallback=None) -> str:
        """Stream the answer through the reply ledger, like `post_once`: noted before, its ts after.

        `chunks`: an iterator of Markdown pieces (a composer's sentences). By default the article
        section, which exists whole by now, goes as one piece: chat.startStream shows it at once and
        chat.stopStream adds the footer (two calls; more pieces would only add round trips).
        `footer`, `metadata`, `fallback`: override the answer's (callables, for a composition)."""
        ledger, channel = self.deps.store.inbox, message["channel"]
        ledger.post_begin(key, answer_id=answer.answer_id, channel=channel, thread_ts=thread_ts, question_ts=question_ts)
        whole = {k: v for k, v in message.items() if k != "channel"}
        delivery = streaming.stream_reply(
            client, channel=channel, thread_ts=thread_ts,
            chunks=chunks if chunks is not None else [blocks.answer_markdown(answer)],
            footer=footer or blocks.answer_footer_blocks(answer), metadata=metadata or message["metadata"],
            fallback=fallback or whole,
            recipient_team_id=team, recipient_user_id=user)
        ledger.post_done(key, delivery.ts)
        return delivery.ts

    def stream_composed(self, client, key: str, decision, conversation, *, thread_ts: str, question_ts: str,
                        team: str | None, user: str | None, group: str | None, channel: str) -> tuple[str, object]:
        """Stream the composition the policy asked for (`decision.stream_compose`) a checked sentence
        at a time. The select answer is stored already; the composed one replaces it in the store
        before the footer (and its 👍/👎) shows. A sentence that fails the guard, or a budget, stops
        the stream: the message becomes the select answer."""
        store, answer = self.deps.store, decision.answer
        composing = self.deps.engine.compose_stream(answer, list(conversation.turns))

        def final():
            if composing.answer is None:
                return answer
            return self.policy.composed(decision, composing.answer, conversation).answer

        def pieces():
            try:
                yield from composing.pieces()
            except GuardFailure as failure:
                store.record_composition(final())
                raise streaming.Abandon(failure.composition.reason) from None
            store.record_composition(final())

        reply_ts = self.stream_once(client, key, answer, {"channel": channel, **answer_message(answer, group)},
                                    thread_ts=thread_ts, question_ts=question_ts, team=team, user=user,
                                    chunks=pieces(), footer=lambda: blocks.answer_footer_blocks(final()),
                                    metadata=lambda: blocks.answer_metadata(final()),
                                    fallback=lambda: answer_message(final(), group))
        return reply_ts, final()

    def already_posted(self, client, key: str, channel: str, thread_ts: str) -> str | None:
        """The ts of the reply already posted for `key`, if any (reading the thread back when a
        process died between chat.postMessage and recording its ts)."""
        ledger = self.deps.store.inbox
        record = ledger.post_record(key)
        if record is None:
            return None
        if record["ts"]:
            return record["ts"]
        if not record["answer_id"]:
            return None  # a help reply: nothing to find it by, post it again
        response = client.conversations_replies(channel=channel, ts=thread_ts, limit=200, include_all_metadata=True)
        for message in response.get("messages") or []:
            metadata = message.get("metadata") or {}
            if (metadata.get("event_type") == ANSWER_EVENT_TYPE
                    and (metadata.get("event_payload") or {}).get("answer_id") == record["answer_id"]):
                ledger.post_done(key, message["ts"])
                log.info("found the reply to %s already posted (%s): not posting again", key, message["ts"])
                return message["ts"]
        return None

    def busy(self, client, event: dict, question: str, thread_ts: str) -> None:
        """The busy note: private to the asker, in the question's thread; escalated when configured."""
        channel, ts, user = event["channel"], event["ts"], event.get("user")
        ledger = self.deps.store.inbox
        key = f"busy:{channel}:{ts}"
        record = ledger.post_record(key)
        if record is not None and record["ts"]:
            return
        ledger.post_begin(key, answer_id=None, channel=channel, thread_ts=thread_ts, question_ts=ts)
        note_ts = ts
        if user:
            note_ts = client.chat_postEphemeral(channel=channel, user=user, text=BUSY_TEXT,
                                                thread_ts=event.get("thread_ts")).get("message_ts") or ts
        ledger.post_done(key, note_ts)
        target = self.deps.options.escalation_channel
        key = f"escalation:{channel}:{ts}"
        if target and self.deps.store.inbox.post_record(key) is None:
            group = self.deps.options.oncall_usergroup
            permalink = self.permalink(client, channel, thread_ts)
            who = f"<!subteam^{group}> " if group else ""
            text = (f"{who}:hourglass: csbot was too busy to answer a question in <#{channel}> "
                    f"({permalink or 'no link available'}):\n>{blocks.escape(redact(question))}")
            ledger.post_begin(key, answer_id=None, channel=channel, thread_ts=thread_ts, question_ts=ts,
                              message=dict(channel=target, unfurl_links=False, text=text))
        self.settle(client, key)

    def unreadable(self, client, key: str, event: dict, thread_ts: str, exc: BaseException, *,
                   reply: bool) -> str | None:
        """The engine raised on this message's text: one log line, and (`reply`: a question put to
        the bot) one reply in its thread saying the message could not be read."""
        channel, ts = event["channel"], event["ts"]
        log.warning("could not read the message %s/%s (%s: %s)%s", channel, ts, type(exc).__name__, exc,
                    ": told the asker" if reply else ": staying quiet")
        if not reply:
            return None
        return self.post_once(client, key, channel=channel, thread_ts=thread_ts, question_ts=ts, answer_id=None,
                              text=UNREADABLE_TEXT)

    # ----- helpers -------------------------------------------------------------------------------
    def conversation(self, channel: str, dm: bool, bar: float | None, turns: list[str], *, stream: bool,
                     replaces_reply: bool) -> Conversation:
        """The message's conversation in the answer policy's plain values: Slack's support channels
        carry the priority rule, a channel's own answer mode (slack_answer_modes) is requested."""
        options = self.deps.options
        threshold = options.priority_negative_threshold if channel in options.support_channels else None
        return Conversation("slack", channel=channel, dm=dm, bar=bar, priority_threshold=threshold,
                            mode=options.mode_for(channel, dm), turns=tuple(turns), stream=stream,
                            replaces_reply=replaces_reply)

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

    def permalink(self, client, channel: str, message_ts: str) -> str | None:
        try:
            return client.chat_getPermalink(channel=channel, message_ts=message_ts).get("permalink")
        except Exception as exc:  # noqa: BLE001 - still escalate, without the link
            log.warning("chat.getPermalink failed for %s/%s: %s", channel, message_ts, exc)
            return None

    def settle(self, client, key: str) -> None:
        """Post what the ledger says is owed under `key` (an escalation), once."""
        message = self.deps.store.inbox.owed(key)
        if message is not None:
            self.deps.store.inbox.post_done(key, client.chat_postMessage(**message)["ts"])

    def owe_escalation(self, client, key: str, answer, channel: str, thread_ts: str, question_ts: str, *,
                       priority: bool = False) -> None:
        """Note the hand-off post in the ledger (posted by `settle` after the answer): with
        `slack_escalation_channel` a notice there, else for a priority an in-thread ping of the
        on-call group. At most once once its ts is recorded; a process dying mid-post may repeat it
        (a second notice is better than none)."""
        if self.deps.store.inbox.post_record(key) is not None:
            return
        target, group = self.deps.options.escalation_channel, self.deps.options.oncall_usergroup
        if not target:
            if not (priority and group and not answer.handoff):  # a hand-off reply already mentions the group
                return
            message = dict(channel=channel, thread_ts=thread_ts, text=blocks.priority_notice_text(group))
        else:
            permalink = self.permalink(client, channel, thread_ts)
            shown = dataclasses.replace(answer, question=redact(answer.question))  # it leaves the asker's conversation
            what = "Priority: a very unhappy customer" if priority else "A question"
            message = dict(channel=target, unfurl_links=False,
                           text=f"{what} in <#{channel}> needs a human: {permalink or ''}",
                           blocks=[b.to_dict() for b in blocks.escalation_blocks(
                               shown, channel=channel, permalink=permalink, oncall_usergroup=group, priority=priority)])
        self.deps.store.inbox.post_begin(key, answer_id=None, channel=channel, thread_ts=thread_ts,
                                         question_ts=question_ts, message=message)


def answer_message(answer, group: str | None) -> dict:
    """An answer's message: fallback text, blocks and metadata (chat.postMessage / chat.update)."""
    return dict(text=blocks.answer_text(answer, oncall_usergroup=group),
                blocks=blocks.answer_blocks(answer, oncall_usergroup=group), metadata=blocks.answer_metadata(answer))
