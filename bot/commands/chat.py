"""`csbot chat`: a terminal conversation with the served model. Type a question; `+` / `-` rates the
last answer (👍/👎, stored like Slack votes); `/new` starts a new thread, `/help` lists the commands,
`/quit` (or Ctrl-D) ends. Blank lines are ignored.

When the bot cannot tell two or three articles apart it asks which one was meant, as a numbered
choice: typing the number answers from that article and stores the pick (origin `clarify`) as a
labelled example for the nightly retrain, exactly as a Slack button does; anything else is read
as a new message."""

from __future__ import annotations

import contextlib

from bot.render import answer_text
from core.output import out, stdout
from core.settings import ANSWER_MODES

CLARIFY_PROMPT = "I found more than one article that could answer this. Which one did you mean?"
HELP = """commands:
  +        rate the last answer as right (👍)
  -        rate the last answer as wrong (👎; `csbot feedback ANSWER_ID down --doc ID` adds a correction)
  /new     start a new thread (follow-ups are read with the thread's earlier turns)
  /help    this list
  /quit    leave (Ctrl-D too)
  1, 2, 3  after "Which one did you mean?": answer from that article (and teach the bot)
anything else is a question."""


def register(subparsers) -> None:
    p = subparsers.add_parser("chat", help="talk to the bot in the terminal",
                              description=__doc__.split("\n\n")[0].replace("`csbot chat`: ", ""))
    p.add_argument("--user", help="who is asking and voting (default: your login name); stored only as a salted hash")
    p.add_argument("--mode", choices=ANSWER_MODES,
                   help="how answers are made (see `csbot ask --help`; default: the answer_mode setting)")
    p.set_defaults(func=run)


def run(args) -> int:
    from bot.catalog import cli_user
    from bot.commands.ask import record_answers, terminal
    from bot.runtime import open_engine
    from serving.policy import AnswerPolicy

    user = cli_user(args.user)
    engine = open_engine()
    policy = AnswerPolicy(engine)
    out(f"csbot chat · model {engine.model_version} · '+'/'-' rates the last answer, /new new thread, "
        "/help commands, /quit leaves", flush=True)
    thread: list[str] = []
    last = pending = None
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
            thread, last, pending = [], None, None
            out("(new thread)", flush=True)
            continue
        if line.startswith("/"):
            out(f"(unknown command {line.split()[0]}; /help lists them)", flush=True)
            continue
        if pending is not None and line.isdigit():
            n = int(line)
            if not 1 <= n <= len(pending.clarify):
                out(f"(pick 1–{len(pending.clarify)}, or type a new question)", flush=True)
                continue
            option = pending.clarify[n - 1]
            out(record_pick(pending.answer_id, option["doc_id"], user), flush=True)
            answer = engine.pick(pending.question, option["doc_id"], option.get("section"))
            record_answers([answer], origin="chat", user=user)
            last, pending = answer, None
            out("bot> " + answer_text(answer).replace("\n", "\n     "), flush=True)
            continue
        pending = None
        if line in ("+", "-"):
            if last is None:
                out("(nothing to rate yet)", flush=True)
                continue
            out(record_vote(last.answer_id, "up" if line == "+" else "down", user), flush=True)
            continue
        answer = policy.reply(engine.answer(line, thread), terminal(args.mode, thread)).answer
        record_answers([answer], origin="chat", user=user)
        thread.append(line)
        last = answer
        if answer.clarify:
            pending = answer
            choices = "\n".join(f"     {n}. {o['title']}" + (f" › {o['heading']}" if o.get("heading") else "")
                                for n, o in enumerate(answer.clarify, start=1))
            out(f"bot> {CLARIFY_PROMPT}\n{choices}\n     (type the number)", flush=True)
            continue
        out("bot> " + answer_text(answer).replace("\n", "\n     "), flush=True)


def record_vote(answer_id: str, vote: str, user: str) -> str:
    """Store the vote through the same code path as Slack's buttons; returns a line for the user."""
    from core.settings import Settings
    from store import Store

    with Store.from_settings(Settings.load()) as store:
        result = store.record_vote(answer_id, vote, user=user, origin="cli")
    if not result.stored:
        return f"(vote not stored: {result.status})"
    return f"(recorded {'👍' if vote == 'up' else '👎'} for {answer_id})"


def record_pick(answer_id: str, doc_id: str, user: str) -> str:
    """Store a clarifying pick like Slack's buttons do: an "up" vote naming the picked article."""
    from core.settings import Settings
    from store import Store

    with Store.from_settings(Settings.load()) as store:
        result = store.record_vote(answer_id, "up", user=user, origin="clarify", doc_id=doc_id)
    return "(noted: this question is about that article)" if result.stored else f"(pick not stored: {result.status})"
