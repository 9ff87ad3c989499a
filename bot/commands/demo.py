"""`csbot demo`: ingest the bundled demo knowledge base (a fictional shop, Parcelly) and answer the
demo questions offline, showing sources. Uses CSBOT_HOME like every other command."""

from __future__ import annotations

import time
from pathlib import Path

from core.output import out

DEMO_DIR = Path(__file__).resolve().parents[2] / "demo"


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="ingest the demo KB and answer the demo questions offline")
    p.add_argument("--questions", default=str(DEMO_DIR / "questions.txt"))
    p.set_defaults(func=run)


def run(args) -> int:
    from bot.commands.ask import read_questions, record_answers, terminal
    from bot.render import answer_text
    from bot.runtime import open_engine
    from core.runtime import quiet_libraries
    from core.settings import Settings
    from serving.policy import AnswerPolicy
    from training.ingest import ingest

    quiet_libraries()
    settings = Settings.load()
    started = time.perf_counter()
    report = ingest([DEMO_DIR / "kb"], settings)
    out(f"Knowledge base: {report['documents']} articles from {DEMO_DIR / 'kb'} "
          f"({'built ' + report['version'] if report['built'] else 'already up to date: ' + report['version']}, "
          f"{time.perf_counter() - started:.1f}s) in {settings.home.resolve()}\n")
    engine = open_engine(settings)
    questions = read_questions(args.questions)
    answers = [reply.answer for reply in AnswerPolicy(engine).answer(questions, [terminal(None)] * len(questions))]
    from bot.catalog import cli_user

    record_answers(answers, origin="demo", user=cli_user(None))
    for question, answer in zip(questions, answers):
        out(f"Q: {question}")
        out(answer_text(answer) + "\n")
    csbot = csbot_command()
    out(f"Try your own (the model is saved in {settings.home.resolve()}; set CSBOT_HOME to use another folder):\n"
        f"  {csbot} ask \"How do I reset my password?\"\n"
        f"  {csbot} chat\n"
        f"  {csbot} eval {_shown(DEMO_DIR / 'eval.jsonl')}")
    return 0


def _shown(path: Path) -> str:
    """`path` relative to the current folder when it is below it, else absolute."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path.resolve())


def csbot_command() -> str:
    """How to run csbot from here: `csbot` when the one on PATH is this one, else the path of the
    `csbot` script beside this interpreter (e.g. `.venv/bin/csbot` after the README's set-up)."""
    import shutil
    import sys

    script = Path(sys.executable).parent / "csbot"
    if not script.is_file():
        return f"{sys.executable} -m bot.cli"
    on_path = shutil.which("csbot")
    if on_path and Path(on_path).resolve() == script.resolve():
        return "csbot"
    shown = _shown(script)
    return shown if "/" in shown else f"./{shown}"
