"""One module per Slack interaction. Each handler class takes the shared `Deps` and exposes an
`ack` (fast, inside Slack's 3-second window) and lazy methods that do the slow work afterwards."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from bot.slack.options import SlackOptions
from bot.slack.posted import PostedAnswers

log = logging.getLogger("csbot.slack")


@dataclass
class Deps:
    engine: object
    store: object
    options: SlackOptions
    posted: PostedAnswers = field(default=None)

    def __post_init__(self):
        if self.posted is None:
            self.posted = PostedAnswers(self.store)


def ack_now(ack) -> None:
    """The ack of every listener whose work is all lazy."""
    ack()


_MENTION = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>")


def strip_mention(text: str, bot_user_id: str | None) -> str:
    """Drop the bot's own @mention from a message and tidy the whitespace."""
    if bot_user_id:
        text = re.sub(rf"<@{re.escape(bot_user_id)}(?:\|[^>]*)?>", " ", text or "")
    return " ".join((text or "").split())


def mentions(text: str, user_id: str | None) -> bool:
    return bool(user_id) and any(m == user_id for m in _MENTION.findall(text or ""))
