"""`csbot chat`: a terminal conversation with the served model. Type a question; `+` / `-` rates the
last answer (👍/👎, stored like Slack votes); `/new` starts a new thread."""

from __future__ import annotations

from bot.render import answer_text


def register(subparsers) -> None:
    p = subparsers.add_parser("chat", help="talk to the bot in the terminal")
    p.add_argument("--user", default="cli-user", help="who is voting (stored hashed)")
    p.set_defaults(func=run)


def run(args) -> int:
    from bot.commands.ask import record_answers
    from bot.runtime import open_engine

    engine = open_engine()
    print(f"csbot chat · model {engine.model_version} · '+'/'-' rates the last answer, '/new' new thread, Ctrl-D quits")
    thread: list[str] = []
    last = None
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            print()
            return 0
        if not line:
            continue
        if line == "/new":
            thread, last = [], None
            print("(new thread)")
            continue
        if line in ("+", "-"):
            if last is None:
                print("(nothing to rate yet)")
                continue
            print(record_vote(last.answer_id, "up" if line == "+" else "down", args.user))
            continue
        answer = engine.answer(line, thread)
        record_answers([answer], origin="chat")
        thread.append(line)
        last = answer
        print("bot> " + answer_text(answer).replace("\n", "\n     "))


def record_vote(answer_id: str, vote: str, user: str) -> str:
    """Store the vote through the same code path as Slack's buttons; returns a line for the user."""
    from bot.config import Settings
    from bot.store import Store

    with Store.from_settings(Settings.load()) as store:
        result = store.record_vote(answer_id, vote, user=user, origin="cli")
    if not result.stored:
        return f"(vote not stored: {result.status})"
    return f"(recorded {'👍' if vote == 'up' else '👎'} for {answer_id})"
