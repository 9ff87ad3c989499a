"""`csbot demo`: ingest the bundled demo knowledge base (a fictional shop, Parcelly) and answer the
demo questions offline, showing sources. Uses CSBOT_HOME like every other command."""

from __future__ import annotations

import time
from pathlib import Path

DEMO_DIR = Path(__file__).resolve().parents[2] / "demo"


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="ingest the demo KB and answer the demo questions offline")
    p.add_argument("--questions", default=str(DEMO_DIR / "questions.txt"))
    p.set_defaults(func=run)


def run(args) -> int:
    from bot.commands.ask import read_questions, record_answers
    from bot.commands.ingest import ingest
    from bot.config import Settings
    from bot.render import answer_text
    from bot.runtime import open_engine, quiet_libraries

    quiet_libraries()
    settings = Settings.load()
    started = time.perf_counter()
    report = ingest([DEMO_DIR / "kb"], settings)
    print(f"Knowledge base: {report['documents']} articles from {DEMO_DIR / 'kb'} "
          f"({'built ' + report['version'] if report['built'] else 'already up to date: ' + report['version']}, "
          f"{time.perf_counter() - started:.1f}s) in {settings.home.resolve()}\n")
    engine = open_engine(settings)
    questions = read_questions(args.questions)
    answers = engine.answer_batch(questions)
    record_answers(answers, origin="demo")
    for question, answer in zip(questions, answers):
        print(f"Q: {question}")
        print(answer_text(answer) + "\n")
    print("Try your own: csbot ask \"...\" · csbot chat · csbot eval demo/eval.jsonl")
    return 0
