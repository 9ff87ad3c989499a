"""`/csbot SUBCOMMAND [TEXT]`: ask, status, help, sentiment (admin), reload (admin).

The ack answers what needs no model (help, usage errors, refusals) at once; everything else is
answered privately through the command's response_url by the lazy part. Admin sub-commands are
refused unless the user is in `slack_admin_users` (with no admins configured, nobody is an admin).
"""

from __future__ import annotations

from bot.slack import blocks
from bot.slack.handlers import Deps
from bot.slack.handlers.app_home import collect_status

PUBLIC = ("ask", "status", "help")
ADMIN = ("sentiment", "reload")
NEEDS_TEXT = ("ask", "sentiment")


def parse(text: str | None) -> tuple[str, str]:
    parts = (text or "").strip().split(None, 1)
    if not parts:
        return "help", ""
    return parts[0].lower(), (parts[1].strip() if len(parts) > 1 else "")


class SlashCommand:
    def __init__(self, deps: Deps):
        self.deps = deps

    def refusal(self, command: dict) -> str | None:
        """Why this command is answered by the ack alone (None: the lazy part runs it)."""
        sub, rest = parse(command.get("text"))
        if sub not in PUBLIC + ADMIN:
            return f"I don't know `{sub}`. Try `/csbot help`."
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

    def run(self, command, respond) -> None:
        sub, rest = parse(command.get("text"))
        if self.refusal(command) or sub == "help":
            return
        engine, store = self.deps.engine, self.deps.store
        if sub == "ask":
            answer = engine.answer(rest)
            store.record_answer(answer, user=command.get("user_id"), workspace=command.get("team_id"),
                                channel=command.get("channel_id"), origin="slack", question=rest)
            respond(text=blocks.answer_text(answer), blocks=blocks.answer_blocks(answer), response_type="ephemeral")
        elif sub == "status":
            status = collect_status(engine, store)
            respond(text=blocks.status_text(status), blocks=blocks.status_blocks(status), response_type="ephemeral")
        elif sub == "sentiment":
            label, scores = engine.sentiment([rest])[0]
            respond(text=f"Sentiment: {label}", blocks=blocks.sentiment_blocks(rest, label, scores),
                    response_type="ephemeral")
        elif sub == "reload":
            changed = engine.reload()
            respond(text=f"Now serving model {engine.model_version}" + ("" if changed else " (unchanged)"),
                    response_type="ephemeral")
