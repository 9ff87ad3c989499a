"""Which Slack message holds which answer: needed for reactions (a message ts → answer id), for
edits (a question ts → the bot's reply) and for follow-ups (threads the bot has answered in).

Kept in a bounded in-memory LRU, in front of the store's reply ledger (store/inbox.py), which
every serving process shares and which survives restarts. `answer_for_message` finally falls back
to the answer id the bot put in the message's metadata (read back with conversations.replies).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from bot.slack.ids import ANSWER_EVENT_TYPE
from store.inbox import ReplyLedger

MAX_ENTRIES = 20_000


class _Lru(OrderedDict):
    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit

    def put(self, key, value) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)


class PostedAnswers:
    def __init__(self, store=None, limit: int = MAX_ENTRIES):
        self.store = store
        self._lock = threading.Lock()
        self._by_message = _Lru(limit)  # (channel, message ts) -> answer id
        self._by_question = _Lru(limit)  # (channel, question ts) -> (reply ts, answer id, question text)
        self._threads = _Lru(limit)  # (channel, thread ts) -> True

    def remember(self, channel: str, reply_ts: str, answer_id: str, *, question_ts: str | None = None,
                 thread_ts: str | None = None, question: str | None = None) -> None:
        with self._lock:
            self._by_message.put((channel, reply_ts), answer_id)
            if question_ts:
                self._by_question.put((channel, question_ts), (reply_ts, answer_id, question))
            if thread_ts:
                self._threads.put((channel, thread_ts), True)

    @property
    def ledger(self) -> ReplyLedger:
        return self.store.inbox

    def reply_to(self, channel: str, question_ts: str) -> tuple[str, str, str | None] | None:
        """(reply ts, answer id, question) of the bot's answer to that message, if it answered it."""
        with self._lock:
            hit = self._by_question.get((channel, question_ts))
        if hit is None:
            record = self.ledger.post_record(f"answer:{channel}:{question_ts}")
            if record and record["ts"] and record["answer_id"]:
                hit = (record["ts"], record["answer_id"], None)
        return hit

    def answered_in_thread(self, channel: str, thread_ts: str | None) -> bool:
        if not thread_ts:
            return False
        with self._lock:
            if (channel, thread_ts) in self._threads:
                return True
        return self.ledger.thread_answered(channel, thread_ts)

    def answer_for_message(self, channel: str, ts: str, client=None) -> str | None:
        with self._lock:
            hit = self._by_message.get((channel, ts))
        if hit:
            return hit
        hit = self.ledger.answer_for_message(channel, ts)
        if hit:
            return hit
        if client is not None:
            hit = _answer_id_from_metadata(client, channel, ts)
            if hit:
                with self._lock:
                    self._by_message.put((channel, ts), hit)
            return hit
        return None


def _answer_id_from_metadata(client, channel: str, ts: str) -> str | None:
    """Read the message back from Slack and take the answer id from its metadata."""
    try:
        response = client.conversations_replies(channel=channel, ts=ts, latest=ts, oldest=ts, inclusive=True,
                                                limit=1, include_all_metadata=True)
    except Exception:  # noqa: BLE001 - a failed look-up only means the vote cannot be mapped
        return None
    for message in response.get("messages") or []:
        metadata = message.get("metadata") or {}
        if message.get("ts") == ts and metadata.get("event_type") == ANSWER_EVENT_TYPE:
            return (metadata.get("event_payload") or {}).get("answer_id")
    return None
