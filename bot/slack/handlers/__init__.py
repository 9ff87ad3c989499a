"""One module per Slack interaction. Each handler class takes the shared `Deps` and exposes an
`ack` (fast, inside Slack's 3-second window) and lazy methods that do the slow work afterwards.

Lazy methods run from the durable inbox (bot/slack/intake.py): possibly late, possibly twice after
a crash, so their effects must be idempotent (votes carry event ids; answers go through the reply
ledger). `@work(ANSWER)` / `@work(SENTIMENT)` put a lazy method in a shedding class (default:
interactive, never shed); a late ANSWER method finds `context[LATE]` true and must not run the
model (see MessageHandler).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from bot.slack.contracts import AnswerEngine, SlackStore
from bot.slack.intake import CONTENT_ERRORS, LATE, set_work  # noqa: F401 (re-exported for handlers)
from bot.slack.options import SlackOptions
from bot.slack.posted import PostedAnswers
from core.text import clean_text
from store.inbox import ANSWER, INTERACTIVE, SENTIMENT  # noqa: F401 (re-exported for handlers)

log = logging.getLogger("csbot.slack")
# The reply to a question whose text the engine raised on (bot/slack/intake.py CONTENT_ERRORS): the
# text is the cause, so the asker can fix it; load has nothing to do with it.
UNREADABLE_TEXT = "Sorry, I couldn't read that message. Could you write it again in plain text?"


@dataclass
class Deps:
    engine: AnswerEngine
    store: SlackStore
    options: SlackOptions
    posted: PostedAnswers = field(default=None)

    def __post_init__(self):
        if self.posted is None:
            self.posted = PostedAnswers(self.store)


def work(kind: str):
    """Mark a lazy listener's shedding class (store/inbox.py: ANSWER, SENTIMENT, INTERACTIVE)."""
    def mark(function):
        set_work(function, kind)
        return function
    return mark


def may_vote(store, answer_id: str | None, user: str | None, channel: str | None) -> bool:
    """Only someone who could see the answer may vote on it: a click or reaction in the answer's own
    channel; where the answer was private (a DM, or a `/csbot ask` reply shown only to the asker),
    only the asker. Unknown answers pass (record_vote rejects them with its own message)."""
    answer = store.get_answer(answer_id) if answer_id else None
    if answer is None:
        return True
    if answer.get("channel") and channel != answer["channel"]:
        return False
    private = str(answer.get("channel") or "").startswith("D") or not answer.get("thread")
    return not private or (user is not None and store.hash_user(user) == answer.get("user_hash"))


def ack_now(ack) -> None:
    """The ack of every listener whose work is all lazy."""
    ack()


_MENTION = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>")


def strip_mention(text: str, bot_user_id: str | None) -> str:
    """A message's text as a question: cleaned (core/text.py), without the bot's own @mention, the
    whitespace tidied."""
    text = clean_text(text)
    if bot_user_id:
        text = re.sub(rf"<@{re.escape(bot_user_id)}(?:\|[^>]*)?>", " ", text)
    return " ".join(text.split())


def mentions(text: str, user_id: str | None) -> bool:
    return bool(user_id) and any(m == user_id for m in _MENTION.findall(text or ""))
