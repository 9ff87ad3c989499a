"""`/csbot SUBCOMMAND [TEXT]`: ask, status, help, sentiment (admin), reload (admin).

The ack answers what needs no model (help, usage errors, refusals) at once; everything else is
answered privately through the command's response_url by the lazy part. Admin sub-commands are
refused unless the user is in `slack_admin_users` (with no admins configured, nobody is an admin).

`/csbot sentiment [#channel] [7d]` (nothing else after `sentiment` but a channel and/or a period)
is the sentiment report: a summary message in the channel the command was run in, with the PNG
chart (bot.monitoring.report) uploaded into its thread (files_upload_v2). It is for admins, and for
anyone about the channel they run it in (the chart then stays in that channel). The channel can be
`<#C…|name>`, a channel id, or `#name` (looked up with conversations.list). `/csbot sentiment TEXT`
is still the sentiment of a text (admins).
"""

from __future__ import annotations

import datetime as dt
import re

from bot.slack import blocks
from bot.slack.handlers import CONTENT_ERRORS, UNREADABLE_TEXT, Deps, log
from bot.slack.handlers.app_home import collect_status
from core.text import clean_text

PUBLIC = ("ask", "status", "help")
ADMIN = ("sentiment", "reload")
NEEDS_TEXT = ("ask", "sentiment")
MAX_REPORT_DAYS = 90
_CHANNEL_REF = re.compile(r"^<#([CG][A-Z0-9]+)(?:\|([^>]*))?>$")
_CHANNEL_ID = re.compile(r"^[CG][A-Z0-9]{6,}$")
_CHANNEL_NAME = re.compile(r"^#([a-z0-9][a-z0-9._-]{0,79})$")
_PERIOD = re.compile(r"^(\d{1,3})([hdw])$", re.I)
_PERIOD_WORDS = {"h": "hour", "d": "day", "w": "week"}


def parse(text: str | None) -> tuple[str, str]:
    parts = clean_text(text).strip().split(None, 1)
    if not parts:
        return "help", ""
    return parts[0].lower(), (parts[1].strip() if len(parts) > 1 else "")


def parse_report(rest: str) -> dict | None:
    """`[#channel] [7d]` -> {"channel": id or None, "name": name or None, "period": "7d", "days": 7.0};
    None when `rest` is anything else (then it is a text to score)."""
    tokens = rest.split()
    if len(tokens) > 2:
        return None
    report = {"channel": None, "name": None, "period": None}
    for token in tokens:
        if report["period"] is None and (m := _PERIOD.match(token)):
            report["period"] = f"{int(m.group(1))}{m.group(2).lower()}"
        elif report["channel"] is None and report["name"] is None and (m := _CHANNEL_REF.match(token)):
            report["channel"], report["name"] = m.group(1), (m.group(2) or None)
        elif report["channel"] is None and report["name"] is None and _CHANNEL_ID.match(token):
            report["channel"] = token
        elif report["channel"] is None and report["name"] is None and (m := _CHANNEL_NAME.match(token)):
            report["name"] = m.group(1)
        else:
            return None
    report["period"] = report["period"] or "7d"
    amount, unit = int(report["period"][:-1]), report["period"][-1]
    report["days"] = amount * {"h": 1 / 24, "d": 1, "w": 7}[unit]
    report["period_text"] = f"{amount} {_PERIOD_WORDS[unit]}{'s' if amount != 1 else ''}"
    return report


class SlashCommand:
    def __init__(self, deps: Deps, *, spike_config=None, clock=None):
        self.deps = deps
        self.spike_config = spike_config
        self.clock = clock or (lambda: dt.datetime.now(dt.timezone.utc))

    def refusal(self, command: dict) -> str | None:
        """Why this command is answered by the ack alone (None: the lazy part runs it)."""
        sub, rest = parse(command.get("text"))
        if sub not in PUBLIC + ADMIN:
            return f"I don't know `{sub}`. Try `/csbot help`."
        if sub == "sentiment" and (report := parse_report(rest)) is not None:
            if not 0 < report["days"] <= MAX_REPORT_DAYS:
                return f"The period can be at most {MAX_REPORT_DAYS} days."
            if not self.may_report(command, report):
                return ("A sentiment report on another channel is for csbot admins only; "
                        "run `/csbot sentiment` in that channel to see its own report.")
            return None
        if sub in ADMIN and command.get("user_id") not in self.deps.options.admin_users:
            return f"`/csbot {sub}` is for csbot admins only."
        if sub in NEEDS_TEXT and not rest:
            return f"Usage: `/csbot {sub} TEXT`"
        return None

    def ack(self, ack, command) -> None:
        sub, _ = parse(command.get("text"))
        refusal = self.refusal(command)
        if refusal:
            ack(text=refusal, response_type="ephemeral")
        elif sub == "help":
            ack(text="csbot help", blocks=blocks.help_blocks(), response_type="ephemeral")
        else:
            ack()

    def run(self, command, respond, client=None) -> None:
        sub, rest = parse(command.get("text"))
        if self.refusal(command) or sub == "help":
            return
        engine, store = self.deps.engine, self.deps.store
        if sub == "ask":
            answer = self.read(sub, respond, engine.answer, rest)
            if answer is None:
                return
            store.record_answer(answer, user=command.get("user_id"), workspace=command.get("team_id"),
                                channel=command.get("channel_id"), origin="slack", question=rest)
            respond(text=blocks.answer_text(answer), blocks=blocks.answer_blocks(answer), response_type="ephemeral")
        elif sub == "status":
            status = collect_status(engine, store)
            respond(text=blocks.status_text(status), blocks=blocks.status_blocks(status), response_type="ephemeral")
        elif sub == "sentiment" and (report := parse_report(rest)) is not None:
            self.report(client, command, report, respond)
        elif sub == "sentiment":
            labels = self.read(sub, respond, engine.sentiment, [rest])
            if labels is None:
                return
            label, scores = labels[0]
            respond(text=f"Sentiment: {label}", blocks=blocks.sentiment_blocks(rest, label, scores),
                    response_type="ephemeral")
        elif sub == "reload":
            changed = engine.reload()
            respond(text=f"Now serving model {engine.model_version}" + ("" if changed else " (unchanged)"),
                    response_type="ephemeral")

    @staticmethod
    def read(sub: str, respond, call, text):
        """`call(text)`, or None when the engine raised on the text: the user is told so, once."""
        try:
            return call(text)
        except CONTENT_ERRORS as exc:
            log.warning("could not read a /csbot %s text (%s: %s)", sub, type(exc).__name__, exc)
            respond(text=UNREADABLE_TEXT, response_type="ephemeral")
            return None

    # ----- /csbot sentiment [#channel] [7d] --------------------------------------------------------
    def is_admin(self, command: dict) -> bool:
        return command.get("user_id") in self.deps.options.admin_users

    def may_report(self, command: dict, report: dict) -> bool:
        if self.is_admin(command):
            return True
        if report["channel"]:
            return report["channel"] == command.get("channel_id")
        return report["name"] is None or report["name"] == command.get("channel_name")

    def resolve_channel(self, client, report: dict, command: dict) -> str | None:
        """The target channel id: given, the command's own channel, or looked up by #name."""
        if report["channel"]:
            return report["channel"]
        if report["name"] is None or report["name"] == command.get("channel_name"):
            return command.get("channel_id")
        cursor = None
        for _ in range(20):  # at most 20 pages of 1000 channels
            response = client.conversations_list(types="public_channel,private_channel", exclude_archived=True,
                                                 limit=1000, cursor=cursor)
            for channel in response.get("channels") or []:
                if channel.get("name") == report["name"]:
                    return channel.get("id")
            cursor = (response.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                break
        return None

    def report(self, client, command: dict, report: dict, respond) -> None:
        from slack_sdk.errors import SlackApiError

        from bot.monitoring.report import build_report, render_chart

        here = command.get("channel_id")
        try:
            target = self.resolve_channel(client, report, command)
        except SlackApiError as exc:
            log.warning("conversations.list failed: %s", exc)
            target = None
        if not target:
            respond(text=f"I can't find the channel #{report['name']}. Pick it from the list as you type "
                         "`#`, or give its id.", response_type="ephemeral")
            return
        if not self.is_admin(command) and target != here:
            respond(text="A sentiment report on another channel is for csbot admins only.", response_type="ephemeral")
            return
        until = self.clock()
        since = until - dt.timedelta(days=report["days"])
        summary = build_report(self.deps.store, target, since, until, config=self.spike_config)
        if not summary["total"]:
            watched = target in self.deps.options.watched_channels
            respond(text=f"No monitored messages in <#{target}> in the last {report['period_text']}."
                         + ("" if watched else " It is not a watched channel: add it to `slack_watched_channels`."),
                    response_type="ephemeral")
            return
        png = render_chart(summary)
        try:
            post = client.chat_postMessage(channel=here, text=blocks.sentiment_report_text(summary, report["period_text"]),
                                           blocks=blocks.sentiment_report_blocks(summary, report["period_text"]),
                                           unfurl_links=False)
            client.files_upload_v2(channel=here, thread_ts=post["ts"], content=png,
                                   filename=f"sentiment-{target}-{report['period']}.png",
                                   title=f"Sentiment, last {report['period_text']}",
                                   alt_txt=(f"Daily negative, neutral and positive messages and top negative "
                                            f"topics: {summary['total']} messages, "
                                            f"{summary['negative_share']:.0%} negative"))
        except SlackApiError as exc:
            error = exc.response.get("error") if exc.response is not None else str(exc)
            log.warning("posting the sentiment report in %s failed: %s", here, error)
            respond(text=f"I couldn't post the report here ({error}). Invite me to this channel with "
                         "`/invite @csbot` and try again.", response_type="ephemeral")
