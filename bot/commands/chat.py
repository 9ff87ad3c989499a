"""`csbot chat`: a terminal conversation with the served model. Type a question; `+` / `-` rates the
last answer (👍/👎, stored like Slack votes); `/new` starts a new thread.

When the bot cannot tell two or three articles apart it asks which one was meant, as a numbered
choice: typing the number answers from that article and stores the pick (origin `clarify`) as a
labelled example for the nightly retrain, exactly as a Slack button does; anything else is read
as a new message."""

from __future__ import annotations

from bot.render import answer_text

CLARIFY_PROMPT = "I found more than one article that could answer this. Which one did you mean?"


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
    last = pending = None
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
        if pending is not None and line.isdigit():
            n = int(line)
            if not 1 <= n <= len(pending.clarify):
                print(f"(pick 1–{len(pending.clarify)}, or type a new question)")
                continue
            option = pending.clarify[n - 1]
            print(record_pick(pending.answer_id, option["doc_id"], args.user))
            answer = engine.pick(pending.question, option["doc_id"], option.get("section"))
            record_answers([answer], origin="chat")
            last, pending = answer, None
            print("bot> " + answer_text(answer).replace("\n", "\n     "))
            continue
        pending = None
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
        if answer.clarify:
            pending = answer
            choices = "\n".join(f"     {n}. {o['title']}" + (f" › {o['heading']}" if o.get("heading") else "")
                                for n, o in enumerate(answer.clarify, start=1))
            print(f"bot> {CLARIFY_PROMPT}\n{choices}\n     (type the number)")
            continue
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


def record_pick(answer_id: str, doc_id: str, user: str) -> str:
    """Store a clarifying pick like Slack's buttons do: an "up" vote naming the picked article."""
    from bot.config import Settings
    from bot.store import Store

    with Store.from_settings(Settings.load()) as store:
        result = store.record_vote(answer_id, "up", user=user, origin="clarify", doc_id=doc_id)
    return "(noted: this question is about that article)" if result.stored else f"(pick not stored: {result.status})"
