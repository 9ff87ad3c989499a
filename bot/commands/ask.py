"""`csbot ask "QUESTION"` or `csbot ask --file questions.txt`: answer from the served model."""

from __future__ import annotations

import json
import sys

from bot.render import answer_text
from core.errors import UserError
from core.output import out
from core.settings import ANSWER_MODES


def register(subparsers) -> None:
    p = subparsers.add_parser("ask", help="answer one question, or one per line of --file")
    p.add_argument("question", nargs="?", help="the question")
    p.add_argument("--file", help="a text file with one question per line ('-' for stdin)")
    p.add_argument("--context", action="append", default=[], help="an earlier turn of the thread (repeatable)")
    p.add_argument("--user", help="who is asking (default: your login name); stored only as a salted hash")
    p.add_argument("--mode", choices=ANSWER_MODES,
                   help="select: the article section as written; compose: a language model writes the answer "
                        "from the best sections, cited and checked; auto: compose once the retrain approved a "
                        "composer (default: the answer_mode setting, select)")
    p.add_argument("--json", action="store_true", help="one JSON object per answer, one per line")
    p.set_defaults(func=run)


def read_questions(path: str) -> list[str]:
    try:
        text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not UTF-8 text") from exc
    return [line.strip() for line in text.splitlines() if line.strip()]


def run(args) -> int:
    from bot.catalog import blank_check, cli_user
    from bot.runtime import open_engine
    from serving.policy import AnswerPolicy

    if (args.question is not None) == bool(args.file):
        raise UserError("give either a QUESTION or --file")
    questions = read_questions(args.file) if args.file else [blank_check(args.question)]
    if not questions:
        raise UserError(f"{args.file} holds no questions")
    user = cli_user(args.user)
    policy = AnswerPolicy(open_engine())
    replies = policy.answer(questions, [terminal(args.mode, args.context)] * len(questions))
    answers = [reply.answer for reply in replies]
    record_answers(answers, origin="cli", user=user)
    for answer in answers:
        out(json.dumps(answer.to_json(), ensure_ascii=False) if args.json else answer_text(answer) + "\n")
    return 0


def terminal(mode: str | None, turns=()):
    """A terminal question's conversation for the answer policy: always answered (no bar, no
    priority rule), in `mode` (None: the answer_mode setting), composed whole."""
    from serving.policy import Conversation

    return Conversation("cli", mode=mode, turns=tuple(turns))


def record_answers(answers, origin: str, user: str | None = None) -> None:
    """Log answers to the store so that feedback (`csbot feedback ANSWER_ID up`) can refer to them;
    `user` (stored hashed) lets `csbot forget --user` find them."""
    from core.settings import Settings
    from store import Store

    with Store.from_settings(Settings.load()) as store:
        for answer in answers:
            store.record_answer(answer, origin=origin, user=user)
