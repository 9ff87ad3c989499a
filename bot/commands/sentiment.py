"""`csbot sentiment "TEXT" [--json]`: negative / neutral / positive with scores."""

from __future__ import annotations

import json

from core.errors import UserError
from core.output import out


def register(subparsers) -> None:
    p = subparsers.add_parser("sentiment", help="sentiment of a message (or --file, one per line)")
    p.add_argument("text", nargs="?")
    p.add_argument("--file", help="one message per line ('-' for stdin)")
    p.add_argument("--json", action="store_true", help="one JSON object per message")
    p.set_defaults(func=run)


def run(args) -> int:
    from bot.catalog import blank_check
    from bot.commands.ask import read_questions
    from bot.runtime import open_engine

    if (args.text is not None) == bool(args.file):
        raise UserError("give either TEXT or --file")
    texts = read_questions(args.file) if args.file else [blank_check(args.text, "the text")]
    if not texts:
        raise UserError(f"{args.file} holds no text")
    engine = open_engine()
    for text, (label, scores) in zip(texts, engine.sentiment(texts)):
        if args.json:
            out(json.dumps({"text": text, "sentiment": label,
                              "scores": {k: round(v, 4) for k, v in scores.items()},
                              "model_version": engine.model_version}, ensure_ascii=False))
        else:
            detail = " ".join(f"{k} {v:.2f}" for k, v in scores.items())
            out(f"{label}  ({detail})  {text}")
    return 0
