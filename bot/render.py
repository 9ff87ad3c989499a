"""Plain-text rendering of answers for the terminal (Slack rendering lives in bot/slack/blocks.py)."""

from __future__ import annotations

from core.answer import Answer

# The engine's hand-off text promises a colleague will follow up "here", which is true in Slack (the
# on-call group is mentioned) and not in a terminal, where nobody is told.
TERMINAL_HANDOFF_TEXT = ("I'm not sure I can answer that correctly. In the terminal nobody is notified: "
                         "rephrase the question, or ask a colleague.")


def terminal_text(answer: Answer) -> str:
    """The answer's text as the terminal shows it (the engine's hand-off text is Slack's)."""
    if answer.handoff:
        from serving.engine import HANDOFF_TEXT

        if answer.text == HANDOFF_TEXT:
            return TERMINAL_HANDOFF_TEXT
    return answer.text


def answer_text(answer: Answer) -> str:
    head = "Hand-off to a human" if answer.handoff else f"Answer ({answer.intent})"
    lines = [f"{head} · confidence {answer.confidence:.2f} · sentiment {answer.sentiment}"]
    composition = answer.composition or {}
    if answer.mode == "compose" and not answer.handoff:
        lines[0] += " · composed by " + composition.get("model", "the language model")
    elif composition.get("outcome") == "fallback":
        lines[0] += " · the article's text (composing fell back: " + composition.get("reason", "") + ")"
    if answer.section and not answer.handoff:
        lines.append("From: " + " › ".join(answer.section["path"]))
    lines.append(terminal_text(answer))
    if answer.clarify:
        lines.append("Did you mean: " + " · ".join(o["title"] for o in answer.clarify) + " (best guess shown above)")
    if answer.sources:
        lines.append("Sources:")
        for n, source in enumerate(answer.sources, start=1):
            url = f" <{source.url}>" if source.url else ""
            lines.append(f"  {n}. {source.title}{url} ({source.score:.2f})")
    lines.append(f"answer id {answer.answer_id} · model {answer.model_version}"
                 + (" · read with the previous turn" if answer.used_context else ""))
    return "\n".join(lines)
