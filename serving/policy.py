"""The answer policy: what a front end does with the engine's selected answer, decided in one place.

The engine SELECTS (`Engine.answer` / `answer_batch`: an article section, a clarifying question or a
hand-off). For each selected answer and the `Conversation` it belongs to, `AnswerPolicy` decides once:

* whether to answer at all: with a confidence `bar` (Slack's support channels and un-mentioned
  follow-ups), an answer below it, or a hand-off, stays quiet; without one (a mention, a DM, the
  terminal) every message is answered;
* the priority hand-off: a message at least `priority_threshold` negative (Slack gives one only in
  support channels) is always handed off, marked priority; a confident answer is still given,
  otherwise the reply says a colleague will follow up instead of staying quiet;
* select or compose (`Engine.mode_for` of the conversation's mode, else the `answer_mode`
  setting): a hand-off, an answer below the bar and a replaced reply are never composed; a front end
  that streams (`Conversation.stream`) composes through `Engine.compose_stream` itself, every other
  gets the composition whole — one composition per answer either way;
* the hand-off text in the front end's words: Slack promises a colleague (the on-call group is told),
  the terminal tells nobody, so it says so; a question the engine found to be about another product
  says which product it took it for.

This module imports no model code (serving/engine.py imports it), so a CLI command that renders an
answer does not pay for loading the engine's libraries.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from core.answer import Answer


@runtime_checkable
class SelectingEngine(Protocol):
    """What the policy needs of the engine (serving/engine.py `Engine`, which imports this module)."""

    def answer_batch(self, texts: list[str], contexts: list[list[str]] | None = None) -> list[Answer]: ...

    def mode_for(self, requested: str | None = None) -> str: ...

    def compose(self, answer: Answer, context: list[str] | None = None) -> Answer: ...

FRONT_ENDS = ("slack", "cli")
# A hand-off's text as the engine writes it (serving/engine.py), which is Slack's: a colleague is told.
HANDOFF_TEXT = ("I'm not sure I can answer that correctly, so I've passed it to a colleague on the "
                "support team who will follow up here.")
# The terminal has no on-call group: nobody follows up there.
TERMINAL_HANDOFF_TEXT = ("I'm not sure I can answer that correctly. In the terminal nobody is notified: "
                         "rephrase the question, or ask a colleague.")
PRIORITY_HANDOFF_TEXT = ("I'm sorry this has been so frustrating. I've flagged your message to the support team "
                         "as a priority, and a colleague will follow up here shortly.")
# Another product's question (the engine names the products in `Answer.other_products`).
OTHER_PRODUCT_TEXT = ("That looks like a question about {names}, which our help centre doesn't cover. I've passed "
                      "it to a colleague on the support team in case I've misread it.")
TERMINAL_OTHER_PRODUCT_TEXT = ("That looks like a question about {names}, which this help centre doesn't cover. In the "
                               "terminal nobody is notified: ask {names}' own support, or rephrase it if it is about us.")
# Why an answer is a hand-off: the engine was unsure, the question is about another product, the
# message was a priority, the composer abstained.
HANDOFF_REASONS = ("unsure", "other_product", "priority", "abstained")
_HANDOFF_TEXTS = {
    ("slack", "unsure"): HANDOFF_TEXT, ("slack", "abstained"): HANDOFF_TEXT,
    ("slack", "priority"): PRIORITY_HANDOFF_TEXT,
    ("cli", "unsure"): TERMINAL_HANDOFF_TEXT, ("cli", "abstained"): TERMINAL_HANDOFF_TEXT,
    ("cli", "priority"): TERMINAL_HANDOFF_TEXT,
    ("slack", "other_product"): OTHER_PRODUCT_TEXT, ("cli", "other_product"): TERMINAL_OTHER_PRODUCT_TEXT,
}


@dataclass(frozen=True)
class Conversation:
    """Where a message was asked, in plain values (each front end translates its own notions)."""

    front_end: str  # "slack" or "cli"
    channel: str | None = None
    dm: bool = False
    bar: float | None = None  # answer only at this confidence or above (None: always answer)
    priority_threshold: float | None = None  # negative sentiment that makes a priority hand-off (None: off)
    mode: str | None = None  # select | compose | auto requested (a channel's own); None: the answer_mode setting
    turns: tuple[str, ...] = ()  # the thread's earlier user turns, oldest first
    stream: bool = False  # the front end streams a composition itself (Engine.compose_stream)
    replaces_reply: bool = False  # an edit re-answered in place: no priority, no composing

    def __post_init__(self):
        if self.front_end not in FRONT_ENDS:
            raise ValueError(f"unknown front end {self.front_end!r}; use {' or '.join(FRONT_ENDS)}")
        object.__setattr__(self, "turns", tuple(self.turns))


@dataclass(frozen=True)
class Reply:
    """The policy's decision for one message. `answer` is what the front end shows and stores (None
    when `quiet`); with `stream_compose` it is the select answer the front end streams a composition
    of, and `AnswerPolicy.composed` turns that composition's result into the reply's answer."""

    answer: Answer | None
    quiet: bool = False
    priority: bool = False
    compose: bool = False
    stream_compose: bool = False
    handoff_reason: str | None = None  # one of HANDOFF_REASONS when the answer is a hand-off


class AnswerPolicy:
    """The one answer policy every front end calls (Slack's message handler, `csbot ask`/`chat`/`demo`)."""

    def __init__(self, engine: SelectingEngine):
        self.engine = engine

    def answer(self, texts: list[str], conversations: list[Conversation]) -> list[Reply]:
        """Select (one batched engine pass) and decide each message; compositions come whole."""
        if len(texts) != len(conversations):
            raise ValueError("one conversation per text")
        answers = self.engine.answer_batch(texts, [list(c.turns) for c in conversations])
        return [self.reply(a, c) for a, c in zip(answers, conversations)]

    def reply(self, answer: Answer, conversation: Conversation) -> Reply:
        """`decide`, then compose unless the front end streams the composition itself."""
        decision = self.decide(answer, conversation)
        if decision.compose and not decision.stream_compose:
            return self.composed(decision, self.engine.compose(decision.answer, list(conversation.turns)),
                                 conversation)
        return decision

    def decide(self, answer: Answer, conversation: Conversation) -> Reply:
        """Quiet or not, priority, select or compose, and the hand-off text — before any composition."""
        c = conversation
        negative = float((answer.sentiment_scores or {}).get("negative", 0.0))
        priority = not c.replaces_reply and c.priority_threshold is not None and negative >= c.priority_threshold
        weak = answer.handoff or (c.bar is not None and answer.confidence < c.bar)
        if c.bar is not None and weak and not priority:
            return Reply(None, quiet=True)
        reason = None
        if priority and weak:
            reason = "priority"
            answer = dataclasses.replace(answer, handoff=True, doc_id=None, sources=[])
        elif answer.handoff:
            reason = "other_product" if answer.other_products else "unsure"
        compose = not weak and not c.replaces_reply and self.engine.mode_for(c.mode) == "compose"
        return Reply(self.present(answer, c.front_end, reason), priority=priority, compose=compose,
                     stream_compose=compose and c.stream, handoff_reason=reason)

    def composed(self, decision: Reply, answer: Answer, conversation: Conversation) -> Reply:
        """The reply once `decision.answer` was composed (whole or streamed) into `answer`: an
        abstaining composer makes it a hand-off in the front end's words."""
        reason = decision.handoff_reason
        if answer.handoff and not decision.answer.handoff:
            reason = "abstained"
        return dataclasses.replace(decision, answer=self.present(answer, conversation.front_end, reason),
                                   handoff_reason=reason)

    @staticmethod
    def present(answer: Answer, front_end: str, reason: str | None) -> Answer:
        """`answer` with a hand-off's text in the front end's words (other answers unchanged)."""
        if reason is None or not answer.handoff:
            return answer
        names = " and ".join(name if any(c.isupper() for c in name) else name.title() for name in answer.other_products)
        return dataclasses.replace(answer, text=_HANDOFF_TEXTS[(front_end, reason)].format(names=names))
