"""Every Block Kit surface csbot shows in Slack, built with slack_sdk's typed classes.

Answer message: the answer, its sources (title + link), the confidence, 👍/👎 buttons (value =
answer id) and, on a hand-off, a mention of the on-call user group. Also the correction modal,
the status blocks (slash command and App Home) and the escalation notice.
"""

from __future__ import annotations

import json

from slack_sdk.models.blocks import (
    ActionsBlock,
    ButtonElement,
    ContextBlock,
    DividerBlock,
    HeaderBlock,
    InputBlock,
    MarkdownTextObject,
    Option,
    PlainTextInputElement,
    PlainTextObject,
    SectionBlock,
    StaticSelectElement,
)
from slack_sdk.models.metadata import Metadata
from slack_sdk.models.views import View

from bot.answer import Answer
from bot.slack import ids

SECTION_LIMIT = 2900  # Slack allows 3000 characters per section text
OPTION_LIMIT = 75  # characters per select option text
MAX_OPTIONS = 100  # options per static select
HELP_TEXT = (
    "*csbot* answers customer-service questions from the knowledge base.\n"
    "• Mention me (`@csbot how do I reset my password?`) or send me a direct message; I answer in the thread.\n"
    "• 👍 / 👎 under an answer (or the same reactions) tell me whether it helped; 👎 lets you pick the right article.\n"
    "• `/csbot ask QUESTION` — a private answer\n"
    "• `/csbot status` — model version, knowledge-base size, last retrain\n"
    "• `/csbot sentiment TEXT` — the sentiment of a text (admins)\n"
    "• `/csbot reload` — serve the newest promoted model now (admins)\n"
    "• `/csbot help` — this message"
)


def escape(text: str) -> str:
    """Escape Slack's control characters in user- or KB-provided text."""
    return (text or "").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ----- answers -----------------------------------------------------------------------------------

def answer_text(answer: Answer, *, oncall_usergroup: str | None = None) -> str:
    """The message's plain `text` (notifications, screen readers); mentions the on-call group."""
    text = answer.text
    if answer.handoff and oncall_usergroup:
        text += f" <!subteam^{oncall_usergroup}>"
    return _clip(text, SECTION_LIMIT)


def answer_blocks(answer: Answer, *, oncall_usergroup: str | None = None, feedback: bool = True) -> list:
    body = escape(answer.text)
    if answer.handoff:
        body = f":raising_hand: {body}"
        if oncall_usergroup:
            body += f"\n<!subteam^{oncall_usergroup}> could someone take a look?"
    blocks = [SectionBlock(text=MarkdownTextObject(text=_clip(body, SECTION_LIMIT)))]
    if answer.sources and not answer.handoff:
        links = [f"<{s.url}|{escape(s.title)}>" if s.url else escape(s.title) for s in answer.sources]
        blocks.append(ContextBlock(elements=[MarkdownTextObject(text=_clip("*Sources:* " + " · ".join(links), SECTION_LIMIT))]))
    details = f"Confidence {answer.confidence:.0%} · model {answer.model_version}"
    if answer.used_context:
        details += " · read with the earlier turns of this thread"
    blocks.append(ContextBlock(elements=[MarkdownTextObject(text=details)]))
    if feedback:
        blocks.append(ActionsBlock(block_id=ids.FEEDBACK_BLOCK, elements=[
            ButtonElement(text=PlainTextObject(text="👍 Helpful", emoji=True), action_id=ids.VOTE_UP,
                          value=answer.answer_id),
            ButtonElement(text=PlainTextObject(text="👎 Not helpful", emoji=True), action_id=ids.VOTE_DOWN,
                          value=answer.answer_id),
        ]))
    return blocks


def answer_metadata(answer: Answer) -> Metadata:
    """Message metadata: lets a reaction on the message be mapped back to the answer after a restart."""
    return Metadata(event_type=ids.ANSWER_EVENT_TYPE,
                    event_payload={"answer_id": answer.answer_id, "model_version": answer.model_version})


def escalation_blocks(answer: Answer, *, channel: str, permalink: str | None, oncall_usergroup: str | None) -> list:
    who = f"<!subteam^{oncall_usergroup}> " if oncall_usergroup else ""
    link = f"<{permalink}|open the thread>" if permalink else "no link available"
    text = (f"{who}:raising_hand: A question in <#{channel}> needs a human ({link}):\n"
            f">{_clip(escape(answer.question), 500)}")
    return [SectionBlock(text=MarkdownTextObject(text=text)),
            ContextBlock(elements=[MarkdownTextObject(
                text=f"Confidence {answer.confidence:.0%} · answer id `{answer.answer_id}`")])]


# ----- correction modal ----------------------------------------------------------------------------

def correction_modal(*, answer_id: str, question: str | None, answer: str | None,
                     articles: list[tuple[str, str]], intents: list[str], context: dict) -> View:
    """The 👎 modal: pick the right article or intent, or write the right answer (all optional,
    at least one is checked on submit). `context` travels in private_metadata."""
    blocks = []
    if question:
        blocks.append(SectionBlock(text=MarkdownTextObject(text=_clip(f"*Question*\n>{escape(question)}", SECTION_LIMIT))))
    if answer:
        blocks.append(SectionBlock(text=MarkdownTextObject(text=_clip(f"*My answer*\n>{escape(answer)}", 600))))
    if articles:
        blocks.append(InputBlock(
            block_id=ids.CORRECTION_ARTICLE_BLOCK, optional=True,
            label=PlainTextObject(text="The right article"),
            element=StaticSelectElement(
                action_id=ids.CORRECTION_ARTICLE, placeholder=PlainTextObject(text="Pick an article"),
                options=[Option(value=doc_id, text=_clip(title or doc_id, OPTION_LIMIT))
                         for doc_id, title in articles[:MAX_OPTIONS]]),
        ))
    if intents:
        blocks.append(InputBlock(
            block_id=ids.CORRECTION_INTENT_BLOCK, optional=True,
            label=PlainTextObject(text="…or the right intent"),
            element=StaticSelectElement(
                action_id=ids.CORRECTION_INTENT, placeholder=PlainTextObject(text="Pick an intent"),
                options=[Option(value=label, text=_clip(label, OPTION_LIMIT)) for label in intents[:MAX_OPTIONS]]),
        ))
    blocks.append(InputBlock(
        block_id=ids.CORRECTION_TEXT_BLOCK, optional=True,
        label=PlainTextObject(text="…or write the right answer"),
        element=PlainTextInputElement(action_id=ids.CORRECTION_TEXT, multiline=True, max_length=3000),
    ))
    return View(type="modal", callback_id=ids.CORRECTION_MODAL, title=PlainTextObject(text="Correct this answer"),
                submit=PlainTextObject(text="Save"), close=PlainTextObject(text="Cancel"), blocks=blocks,
                private_metadata=json.dumps({**context, "answer_id": answer_id}))


# ----- status (slash command and App Home) --------------------------------------------------------

def status_blocks(status: dict) -> list:
    lines = [f"*Model version:* `{status.get('model_version') or 'none'}`",
             f"*Knowledge base:* {status.get('articles', 0)} articles, {status.get('intents', 0)} intents"]
    run = status.get("last_training_run")
    if run:
        when = run.get("finished_at") or run.get("started_at") or "?"
        lines.append(f"*Last retrain:* {when} → `{run.get('model_version') or '?'}`"
                     f" ({run.get('n_feedback') or 0} votes learned from)")
        metrics = run.get("metrics") or {}
        if isinstance(metrics, dict) and metrics:
            shown = [f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                     for k, v in list(metrics.items())[:8] if not isinstance(v, (dict, list))]
            lines.append("*Metrics:* " + (", ".join(shown) or "see `csbot models`"))
    else:
        lines.append("*Last retrain:* none yet")
    counts = status.get("counts") or {}
    if counts:
        lines.append(f"*Feedback:* {counts.get('answers', 0)} answers, {counts.get('votes_up', 0)} 👍,"
                     f" {counts.get('votes_down', 0)} 👎")
    return [SectionBlock(text=MarkdownTextObject(text="\n".join(lines)))]


def status_text(status: dict) -> str:
    return f"csbot: model {status.get('model_version')}, {status.get('articles', 0)} articles"


def home_view(status: dict) -> View:
    return View(type="home", blocks=[
        HeaderBlock(text=PlainTextObject(text="csbot status")),
        *status_blocks(status),
        DividerBlock(),
        SectionBlock(text=MarkdownTextObject(text=HELP_TEXT)),
    ])


def help_blocks() -> list:
    return [SectionBlock(text=MarkdownTextObject(text=HELP_TEXT))]


def sentiment_blocks(text: str, label: str, scores: dict[str, float]) -> list:
    shown = ", ".join(f"{k} {v:.0%}" for k, v in sorted(scores.items(), key=lambda kv: -kv[1]))
    return [SectionBlock(text=MarkdownTextObject(
        text=_clip(f"*Sentiment:* {label} ({shown})\n>{escape(text)}", SECTION_LIMIT)))]
