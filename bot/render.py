"""Plain-text rendering of answers for the terminal (Slack rendering lives in bot/slack/blocks.py)."""

from __future__ import annotations

from core.answer import Answer
from serving.policy import TERMINAL_HANDOFF_TEXT  # noqa: F401 - the terminal's hand-off words, owned by the policy


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
    lines.append(answer.text)  # a hand-off's text is the terminal's already (serving/policy.py)
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
