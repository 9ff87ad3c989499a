"""`csbot chat`: a terminal conversation with the served model. Type a question; `+` / `-` rates the
last answer (👍/👎, stored like Slack votes); `/new` starts a new thread, `/help` lists the commands,
`/quit` (or Ctrl-D) ends. Blank lines are ignored."""

from __future__ import annotations

import contextlib

from bot.output import out, stdout
from bot.render import answer_text

HELP = """commands:
  +        rate the last answer as right (👍)
  -        rate the last answer as wrong (👎; `csbot feedback ANSWER_ID down --doc ID` adds a correction)
  /new     start a new thread (follow-ups are read with the thread's earlier turns)
  /help    this list
  /quit    leave (Ctrl-D too)
anything else is a question."""


def register(subparsers) -> None:
    p = subparsers.add_parser("chat", help="talk to the bot in the terminal",
                              description=__doc__.split("\n\n")[0].replace("`csbot chat`: ", ""))
    p.add_argument("--user", help="who is asking and voting (default: your login name); stored only as a salted hash")
    p.set_defaults(func=run)


def run(args) -> int:
    from bot.catalog import cli_user
    from bot.commands.ask import record_answers
    from bot.runtime import open_engine

    user = cli_user(args.user)
    engine = open_engine()
    out(f"csbot chat · model {engine.model_version} · '+'/'-' rates the last answer, /new new thread, "
        "/help commands, /quit leaves", flush=True)
    thread: list[str] = []
    last = None
    while True:
        try:
            with contextlib.redirect_stdout(stdout()):  # the prompt goes where the answers go
                line = input("you> ").strip()
        except EOFError:
            out()
            return 0
        if not line:
            continue
        if line in ("/quit", "/exit", "/q"):
            return 0
        if line == "/help":
            out(HELP, flush=True)
            continue
        if line == "/new":
            thread, last = [], None
            out("(new thread)", flush=True)
            continue
        if line.startswith("/"):
            out(f"(unknown command {line.split()[0]}; /help lists them)", flush=True)
            continue
        if line in ("+", "-"):
            if last is None:
                out("(nothing to rate yet)", flush=True)
                continue
            out(record_vote(last.answer_id, "up" if line == "+" else "down", user), flush=True)
            continue
        answer = engine.answer(line, thread)
        record_answers([answer], origin="chat", user=user)
        thread.append(line)
        last = answer
        out("bot> " + answer_text(answer).replace("\n", "\n     "), flush=True)


def record_vote(answer_id: str, vote: str, user: str) -> str:
    """Store the vote through the same code path as Slack's buttons; returns a line for the user."""
    from bot.config import Settings
    from bot.store import Store

    with Store.from_settings(Settings.load()) as store:
        result = store.record_vote(answer_id, vote, user=user, origin="cli")
    if not result.stored:
        return f"(vote not stored: {result.status})"
    return f"(recorded {'👍' if vote == 'up' else '👎'} for {answer_id})"
