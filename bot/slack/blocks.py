"""Every Block Kit surface csbot shows in Slack, built with slack_sdk's typed classes.

Answer message: the answer in a `markdown` block (the article section's standard Markdown as the
knowledge base has it, so lists, links and code survive; the message's `text` is the same as Slack
mrkdwn, by slackify-markdown, for notifications), where it comes from (article › section), its
sources (title + link), the confidence, Slack's native 👍/👎 (`feedback_buttons` in a
`context_actions` block) and, on a hand-off, a mention of the on-call user group. A streamed answer
(bot/slack/streaming.py) streams `answer_markdown` and ends with `answer_footer_blocks`. A clarifying question shows one button per candidate article
instead of the answer. Also the correction modal,
the status blocks (slash command and App Home) and the escalation notice.
"""

from __future__ import annotations

import json

from slack_sdk.models.blocks import (
    ActionsBlock,
    ButtonElement,
    ContextActionsBlock,
    ContextBlock,
    DividerBlock,
    FeedbackButtonObject,
    FeedbackButtonsElement,
    HeaderBlock,
    InputBlock,
    MarkdownBlock,
    MarkdownTextObject,
    Option,
    PlainTextInputElement,
    PlainTextObject,
    RadioButtonsElement,
    SectionBlock,
    StaticSelectElement,
)
from slack_sdk.models.metadata import Metadata
from slack_sdk.models.views import View

from bot.slack import ids
from core.answer import Answer
from serving import policy

SECTION_LIMIT = 2900  # Slack allows 3000 characters per section text
MARKDOWN_LIMIT = 12_000  # a markdown block's text (and a streamed markdown_text)
OPTION_LIMIT = 75  # characters per select option text
MAX_OPTIONS = 100  # options per static select
HELP_TEXT = (
    "*csbot* answers customer-service questions from the knowledge base.\n"
    "• Mention me (`@csbot how do I reset my password?`) or send me a direct message; I answer in the thread.\n"
    "• 👍 / 👎 under an answer (or the same reactions) tell me whether it helped; 👎 lets you pick the right article.\n"
    "• `/csbot ask QUESTION` — a private answer\n"
    "• `/csbot status` — model version, knowledge-base size, last retrain\n"
    "• `/csbot sentiment [#channel] [7d]` — a watched channel's sentiment chart, posted in a thread"
    " (admins; anyone for the channel they are in)\n"
    "• `/csbot sentiment TEXT` — the sentiment of a text (admins)\n"
    "• *Correct sentiment* (a message's ⋮ menu) — tell me the right sentiment of a message\n"
    "• `/csbot reload` — serve the newest promoted model now (admins)\n"
    "• `/csbot help` — this message"
)


def escape(text: str) -> str:
    """Escape Slack's control characters in user- or KB-provided text."""
    return (text or "").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def mrkdwn(markdown: str) -> str:
    """Knowledge-base Markdown as Slack mrkdwn (escaped; `**bold**` → `*bold*`, `## H` → `*H*`,
    `[t](u)` → `<u|t>`, lists as bullets), never raw Markdown."""
    from slackify_markdown import slackify_markdown

    return slackify_markdown(markdown or "").strip()


CLARIFY_TEXT = "I found more than one article that could answer this. Which one did you mean?"


# ----- answers -----------------------------------------------------------------------------------

def answer_text(answer: Answer, *, oncall_usergroup: str | None = None) -> str:
    """The message's plain `text` (notifications, screen readers); mentions the on-call group."""
    if answer.clarify:
        return CLARIFY_TEXT + " " + " · ".join(o["title"] for o in answer.clarify)
    text = mrkdwn(answer.text) if not answer.handoff else answer.text
    if answer.handoff and oncall_usergroup:
        text += f" <!subteam^{oncall_usergroup}>"
    return _clip(text, SECTION_LIMIT)


def answer_markdown(answer: Answer) -> str:
    """The answer as standard Markdown: where it comes from (article › section) in bold, then the
    section's text as the knowledge base has it. What a markdown block shows and a stream streams."""
    body = (answer.text or "").strip()
    if answer.section and answer.section.get("heading"):
        path = " › ".join(answer.section["path"][1:]).replace("*", "\\*")
        body = f"**{path}**\n\n{body}"
    return _clip(body, MARKDOWN_LIMIT)


def streams(answer: Answer) -> bool:
    """Whether an answer can be streamed: an article's answer (a hand-off or a clarifying question,
    short and with a mention or buttons in the text, is posted whole)."""
    return not answer.clarify and not answer.handoff and bool((answer.text or "").strip())


def answer_blocks(answer: Answer, *, oncall_usergroup: str | None = None, feedback: bool = True) -> list:
    if answer.clarify:
        return clarify_blocks(answer)
    if answer.handoff:
        body = f":raising_hand: {escape(answer.text)}"
        if oncall_usergroup:
            body += f"\n<!subteam^{oncall_usergroup}> could someone take a look?"
        first = SectionBlock(text=MarkdownTextObject(text=_clip(body, SECTION_LIMIT)))
    else:
        first = MarkdownBlock(text=answer_markdown(answer))
    return [first, *answer_footer_blocks(answer, feedback=feedback)]


def answer_footer_blocks(answer: Answer, *, feedback: bool = True) -> list:
    """Below the answer's text: sources, confidence and model, the native 👍/👎."""
    blocks = []
    composed = answer.mode == "compose" and not answer.handoff
    if answer.sources and not answer.handoff:
        links = [f"<{s.url}|{escape(s.title)}>" if s.url else escape(s.title) for s in answer.sources]
        if composed:  # the text cites them as [1], [2]
            links = [f"[{n}] {link}" for n, link in enumerate(links, start=1)]
        blocks.append(ContextBlock(elements=[MarkdownTextObject(text=_clip("*Sources:* " + " · ".join(links), SECTION_LIMIT))]))
    details = f"Confidence {answer.confidence:.0%} · model {answer.model_version}"
    if composed:
        details += " · written by a language model from the sources above: check them before acting on it"
    if answer.used_context:
        details += " · read with the earlier turns of this thread"
    blocks.append(ContextBlock(elements=[MarkdownTextObject(text=details)]))
    if feedback:
        blocks.append(feedback_block(answer.answer_id))
    return blocks


def feedback_block(answer_id: str) -> ContextActionsBlock:
    """Slack's native 👍/👎 for AI answers; the value says which button and which answer."""
    return ContextActionsBlock(block_id=ids.FEEDBACK_ACTIONS_BLOCK, elements=[FeedbackButtonsElement(
        action_id=ids.FEEDBACK,
        positive_button=FeedbackButtonObject(text=PlainTextObject(text="Helpful", emoji=True),
                                             accessibility_label="This answer was helpful",
                                             value=ids.FEEDBACK_UP_PREFIX + answer_id),
        negative_button=FeedbackButtonObject(text=PlainTextObject(text="Not helpful", emoji=True),
                                             accessibility_label="This answer was not helpful: tell csbot the right one",
                                             value=ids.FEEDBACK_DOWN_PREFIX + answer_id),
    )])


def read_feedback_value(value: str | None) -> tuple[str | None, str | None]:
    """("up" | "down", answer id) from a feedback button's value; (None, None) if it is not one."""
    for vote, prefix in (("up", ids.FEEDBACK_UP_PREFIX), ("down", ids.FEEDBACK_DOWN_PREFIX)):
        if isinstance(value, str) and value.startswith(prefix) and len(value) > len(prefix):
            return vote, value[len(prefix):]
    return None, None


def clarify_blocks(answer: Answer) -> list:
    """"Did you mean…": one button per candidate article (the value says which), best first."""
    buttons = []
    for n, option in enumerate(answer.clarify):
        label = option["title"] + (f" › {option['heading']}" if option.get("heading") else "")
        value = json.dumps({"a": answer.answer_id, "d": option["doc_id"], "s": option.get("section")})
        buttons.append(ButtonElement(text=PlainTextObject(text=_clip(label, OPTION_LIMIT), emoji=True),
                                     action_id=f"{ids.CLARIFY_PICK_PREFIX}{n}", value=value[:2000]))
    return [SectionBlock(text=MarkdownTextObject(text=CLARIFY_TEXT)),
            ActionsBlock(block_id=ids.CLARIFY_BLOCK, elements=buttons),
            ContextBlock(elements=[MarkdownTextObject(text=f"model {answer.model_version}")])]


def answer_metadata(answer: Answer) -> Metadata:
    """Message metadata: lets a reaction on the message be mapped back to the answer after a restart."""
    return Metadata(event_type=ids.ANSWER_EVENT_TYPE,
                    event_payload={"answer_id": answer.answer_id, "model_version": answer.model_version})


def escalation_blocks(answer: Answer, *, channel: str, permalink: str | None, oncall_usergroup: str | None,
                      priority: bool = False) -> list:
    """The hand-off notice in the escalation channel; `priority` marks a strongly negative message."""
    who = f"<!subteam^{oncall_usergroup}> " if oncall_usergroup else ""
    link = f"<{permalink}|open the thread>" if permalink else "no link available"
    if priority:
        text = (f"{who}:rotating_light: *Priority:* a very unhappy customer in <#{channel}> ({link}):\n"
                f">{_clip(escape(answer.question), 500)}")
    else:
        text = (f"{who}:raising_hand: A question in <#{channel}> needs a human ({link}):\n"
                f">{_clip(escape(answer.question), 500)}")
    details = f"Confidence {answer.confidence:.0%} · answer id `{answer.answer_id}`"
    if priority:
        details = f"Negative {float(answer.sentiment_scores.get('negative', 0.0)):.0%} · " + details
    return [SectionBlock(text=MarkdownTextObject(text=text)),
            ContextBlock(elements=[MarkdownTextObject(text=details)])]


PRIORITY_HANDOFF_TEXT = policy.PRIORITY_HANDOFF_TEXT  # the answer policy owns the hand-off texts


def priority_notice_text(oncall_usergroup: str) -> str:
    """In-thread ping of the on-call group for a priority hand-off when there is no escalation channel."""
    return f"<!subteam^{oncall_usergroup}> :rotating_light: priority: a very unhappy customer in this thread."


# ----- correction modal ----------------------------------------------------------------------------

def correction_modal(*, answer_id: str, question: str | None, answer: str | None,
                     articles: list[tuple[str, str]], intents: list[str], context: dict,
                     sections: list[tuple[str, str]] = (), answered_title: str | None = None) -> View:
    """The 👎 modal: pick the right section of the answered article, another article or an intent, or
    write the right answer (all optional, at least one is checked on submit). `sections`: (section id,
    heading) of the answered article, offered when it has more than one (the right article, another part
    of it). `context` travels in private_metadata."""
    blocks = []
    if question:
        blocks.append(SectionBlock(text=MarkdownTextObject(text=_clip(f"*Question*\n>{escape(question)}", SECTION_LIMIT))))
    if answer:
        blocks.append(SectionBlock(text=MarkdownTextObject(text=_clip(f"*My answer*\n>{escape(answer)}", 600))))
    if len(sections) > 1:
        blocks.append(InputBlock(
            block_id=ids.CORRECTION_SECTION_BLOCK, optional=True,
            label=PlainTextObject(text=_clip(f"The right part of “{answered_title or 'this article'}”", 150)),
            element=StaticSelectElement(
                action_id=ids.CORRECTION_SECTION, placeholder=PlainTextObject(text="Pick a section"),
                options=[Option(value=section_id, text=_clip(heading, OPTION_LIMIT))
                         for section_id, heading in sections[:MAX_OPTIONS]]),
        ))
    if articles:
        blocks.append(InputBlock(
            block_id=ids.CORRECTION_ARTICLE_BLOCK, optional=True,
            label=PlainTextObject(text="…or the right article" if len(sections) > 1 else "The right article"),
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
    monitoring = status.get("monitoring")
    weekly = status.get("weekly")
    return View(type="home", blocks=[
        HeaderBlock(text=PlainTextObject(text="csbot status")),
        *status_blocks(status),
        *([DividerBlock(), *weekly_blocks(*weekly)] if weekly else []),
        *([DividerBlock(), *monitoring_blocks(monitoring)] if monitoring is not None else []),
        DividerBlock(),
        SectionBlock(text=MarkdownTextObject(text=HELP_TEXT)),
    ])


def help_blocks() -> list:
    return [SectionBlock(text=MarkdownTextObject(text=HELP_TEXT))]


def sentiment_blocks(text: str, label: str, scores: dict[str, float]) -> list:
    shown = ", ".join(f"{k} {v:.0%}" for k, v in sorted(scores.items(), key=lambda kv: -kv[1]))
    return [SectionBlock(text=MarkdownTextObject(
        text=_clip(f"*Sentiment:* {label} ({shown})\n>{escape(text)}", SECTION_LIMIT)))]


# ----- sentiment monitoring ------------------------------------------------------------------------

SENTIMENT_CHOICES = (("negative", "😠 Negative"), ("neutral", "😐 Neutral"), ("positive", "🙂 Positive"))
METADATA_LIMIT = 3000  # Slack's limit on a view's private_metadata


def _pct(value) -> str:
    return "–" if value is None else f"{value:.0%}"


def spike_alert_text(summary: dict) -> str:
    """The alert's plain `text` (notifications)."""
    return (f"Negative spike in <#{summary['channel']}>: {summary['recent_negative']} of {summary['recent_n']} "
            f"messages negative in the last {summary['window_minutes']} min ({_pct(summary['recent_share'])}, "
            f"usually {_pct(summary['baseline_share'])})")


def spike_alert_blocks(summary: dict) -> list:
    """A negative-spike alert (summary: bot.monitoring.watch.alert_summary)."""
    topics = ", ".join(f"{escape(t)} ({n})" for t, n in summary.get("topics") or []) or "none"
    fields = [
        MarkdownTextObject(text=f"*Last {summary['window_minutes']} min*\n{summary['recent_negative']} of "
                                f"{summary['recent_n']} messages negative ({_pct(summary['recent_share'])})"),
        MarkdownTextObject(text=f"*Previous {summary['baseline_days']:g} days*\n{_pct(summary['baseline_share'])} "
                                f"negative ({summary['baseline_n']:,} messages)"),
        MarkdownTextObject(text=f"*Top topics*\n{_clip(topics, 1900)}"),
        MarkdownTextObject(text=f"*Lower bound*\n≥ {_pct(summary['lower_bound'])} negative at "
                                f"{summary['confidence']:.1%} confidence"),
    ]
    blocks = [
        SectionBlock(text=MarkdownTextObject(text=f":rotating_light: *Negative spike in <#{summary['channel']}>*")),
        SectionBlock(fields=fields),
    ]
    examples = summary.get("examples")
    if examples:
        quoted = "\n".join(f">{_clip(escape(' '.join(e.split())), 280)}" for e in examples)
        blocks.append(SectionBlock(text=MarkdownTextObject(text=_clip(f"*Recent negative messages* (redacted)\n{quoted}",
                                                                      SECTION_LIMIT))))
    elif summary.get("text_stored"):
        blocks.append(ContextBlock(elements=[MarkdownTextObject(text="No example texts were stored for these messages.")]))
    else:
        blocks.append(ContextBlock(elements=[MarkdownTextObject(
            text="No examples: message text is not stored (`store_message_text` is off); scores always are.")]))
    blocks.append(ContextBlock(elements=[MarkdownTextObject(
        text=f"Detected at {summary['time']} · no further alert for this channel for {summary['cooldown_minutes']} min")]))
    return blocks


def sentiment_report_text(summary: dict, period: str) -> str:
    return f"Sentiment in <#{summary['channel']}>, last {period}: {summary['total']:,} messages, " \
           f"{_pct(summary.get('negative_share'))} negative"


def sentiment_report_blocks(summary: dict, period: str) -> list:
    """The message a sentiment chart is posted under (summary: bot.monitoring.report.summarize)."""
    c = summary["counts"]
    lines = [f":bar_chart: *Sentiment in <#{summary['channel']}>, last {period}*",
             f"{summary['total']:,} messages · *{_pct(summary.get('negative_share'))} negative* "
             f"({c['negative']:,} negative / {c['neutral']:,} neutral / {c['positive']:,} positive)"]
    topics = ", ".join(f"{escape(t['topic'])} ({t['count']})" for t in summary.get("top_negative_topics") or [])
    lines.append(f"*Top negative topics:* {topics or 'none'}")
    alerts = summary.get("alerts") or []
    if alerts:
        shown = ", ".join(a["now"][:16].replace("T", " ") for a in alerts[:5]) + (" …" if len(alerts) > 5 else "")
        lines.append(f"*Spike alerts:* {len(alerts)} ({shown} UTC)")
    else:
        lines.append("*Spike alerts:* none")
    return [SectionBlock(text=MarkdownTextObject(text=_clip("\n".join(lines), SECTION_LIMIT))),
            ContextBlock(elements=[MarkdownTextObject(text="The chart is in the thread.")])]


def sentiment_correction_modal(*, text: str, current: str | None, context: dict) -> View:
    """The "Correct sentiment" modal: pick the message's right sentiment. `context` (channel, ts, …)
    and the message text travel in private_metadata (clipped to Slack's limit)."""
    blocks = [SectionBlock(text=MarkdownTextObject(text=_clip(f"*Message*\n>{escape(' '.join((text or '').split())) or '(no text)'}",
                                                              SECTION_LIMIT)))]
    if current:
        blocks.append(ContextBlock(elements=[MarkdownTextObject(text=f"csbot scored it *{current}*.")]))
    blocks.append(InputBlock(
        block_id=ids.SENTIMENT_LABEL_BLOCK, label=PlainTextObject(text="The right sentiment"),
        element=RadioButtonsElement(action_id=ids.SENTIMENT_LABEL, options=[
            Option(value=value, text=PlainTextObject(text=label, emoji=True)) for value, label in SENTIMENT_CHOICES]),
    ))
    blocks.append(ContextBlock(elements=[MarkdownTextObject(
        text="Your label and the message (personal data redacted) are kept to retrain csbot's sentiment model.")]))
    return View(type="modal", callback_id=ids.SENTIMENT_MODAL, title=PlainTextObject(text="Correct sentiment"),
                submit=PlainTextObject(text="Save"), close=PlainTextObject(text="Cancel"), blocks=blocks,
                private_metadata=_fit_metadata(context, text or ""))


def _fit_metadata(context: dict, text: str) -> str:
    """JSON of context + text, the text clipped so the whole fits private_metadata."""
    clipped = text
    while True:
        data = json.dumps({**context, "text": clipped}, ensure_ascii=False)
        if len(data) <= METADATA_LIMIT:
            return data
        clipped = clipped[: max(0, len(clipped) - (len(data) - METADATA_LIMIT) - 8)]


def monitoring_blocks(channels: list[dict]) -> list:
    """The App Home's monitoring section: per watched channel, the last days' volume, negative share
    against its baseline, top negative topic and last alert."""
    blocks = [HeaderBlock(text=PlainTextObject(text="Sentiment monitoring"))]
    if not channels:
        blocks.append(SectionBlock(text=MarkdownTextObject(
            text="No watched channels yet: set `slack_watched_channels` to channel ids and I will score every "
                 "message there (without replying) and alert on negative spikes.")))
        return blocks
    lines = []
    for ch in channels[:20]:
        line = f"<#{ch['channel']}> · {ch['total']:,} messages in {ch['days']:g} days"
        if ch["total"]:
            line += f" · *{_pct(ch['negative_share'])} negative*"
            if ch.get("previous_share") is not None:
                line += f" (previous {ch['days']:g} days {_pct(ch['previous_share'])})"
        if ch.get("top_topic"):
            line += f" · top negative topic: {escape(ch['top_topic'])}"
        if ch.get("last_alert"):
            line += f" · :rotating_light: last alert {ch['last_alert']}"
        lines.append(line)
    blocks.append(SectionBlock(text=MarkdownTextObject(text=_clip("\n".join(lines), SECTION_LIMIT))))
    blocks.append(ContextBlock(elements=[MarkdownTextObject(
        text="`/csbot sentiment #channel 7d` posts the chart in a thread.")]))
    return blocks


# ----- the team's week (bot/monitoring/weekly.py) ----------------------------------------------------

def weekly_text(view: dict) -> str:
    """The digest's plain `text` (notifications)."""
    week = view["weeks"][0]
    if not week["questions"]:
        return "csbot weekly: no questions this week"
    return (f"csbot weekly: {week['questions']:,} questions, {_pct(week['answer_rate'])} answered, "
            f"{_pct(week['handoff_rate'])} handed off, {_pct(week['up_share'])} 👍")


def weekly_blocks(view: dict, gaps: list, *, max_gaps: int = 5) -> list:
    """This week against the weeks before, the top articles and the largest content gaps."""
    week = view["weeks"][0]
    before = view["weeks"][1] if len(view["weeks"]) > 1 else None

    def versus(key: str) -> str:
        return f" (was {_pct(before[key])})" if before and before["questions"] else ""

    fields = [
        MarkdownTextObject(text=f"*Questions*\n{week['questions']:,}"
                                + (f" (was {before['questions']:,})" if before else "")),
        MarkdownTextObject(text=f"*Answered without a hand-off*\n{_pct(week['answer_rate'])}{versus('answer_rate')}"),
        MarkdownTextObject(text=f"*Handed off*\n{_pct(week['handoff_rate'])}{versus('handoff_rate')}"),
        MarkdownTextObject(text=f"*👍 share of votes*\n{_pct(week['up_share'])}{versus('up_share')}"),
    ]
    out = [SectionBlock(text=MarkdownTextObject(
               text=f"*The help centre, week ending {week['end'][:10]}*")),
           SectionBlock(fields=fields)]
    top = ", ".join(f"{escape(a['title'])} ({a['answers']})" for a in week["top_articles"][:3])
    if top:
        out.append(SectionBlock(text=MarkdownTextObject(text=_clip(f"*Answered most:* {top}", SECTION_LIMIT))))
    if gaps:
        lines = []
        for gap in gaps[:max_gaps]:
            where = (f"_{escape(gap.nearest_title or gap.nearest_doc_id)}_ misses this" if gap.kind == "article_misses"
                     else "no article")
            lines.append(f"• *{escape(gap.title)}* — {gap.size} questions ({where})")
        out.append(SectionBlock(text=MarkdownTextObject(
            text=_clip("*What to write next* (`csbot gaps` lists them all):\n" + "\n".join(lines), SECTION_LIMIT))))
    else:
        out.append(ContextBlock(elements=[MarkdownTextObject(text="No content gaps this week.")]))
    return out
