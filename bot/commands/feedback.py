"""`csbot feedback`: record a vote on an answer, or import many votes from a JSONL file.

    csbot feedback ANSWER_ID up|down|retract [--intent X | --doc ID | --answer TEXT] [--user U] [--json]
    csbot feedback --file votes.jsonl [--json] [--strict]

Both forms go through Store.record_vote, the same code the Slack app uses.
Exit codes: 0 stored (or, for --file, the file was read - rejected lines are listed on stderr
and in the JSON); 1 the single vote was capped / had nothing to retract, or --strict and some
line was rejected; 2 bad input (unknown answer id, unreadable file, bad arguments) or a store that
cannot be written (full disk, damaged file: a --file import says how many votes it stored first).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.errors import UserError
from core.output import out

MAX_REJECTS_SHOWN = 50


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "feedback",
        help="record a vote on an answer, or import votes from a JSONL file",
        description="Record a vote on an answer, or import many votes from a JSONL file. "
        "Votes are stored durably before the command returns.",
    )
    parser.add_argument("answer_id", nargs="?", help="the answer's id (printed by `csbot ask --json`)")
    parser.add_argument("vote", nargs="?", help="up, down or retract")
    correction = parser.add_mutually_exclusive_group()
    correction.add_argument("--intent", help="correction: the intent the question really had")
    correction.add_argument("--doc", dest="doc_id", metavar="ID", help="correction: the article that answers it, or its section (the id "
                            "`ask --json` prints, e.g. refunds#how-long-a-refund-takes)")
    correction.add_argument("--answer", dest="answer_text", metavar="TEXT", help="correction: a written answer")
    parser.add_argument("--user", help="whose vote this is (a Slack user id; default: your login name); "
                        "stored only as a salted hash")
    parser.add_argument(
        "--file",
        type=Path,
        metavar="VOTES.jsonl",
        help='bulk import: one JSON object per line with answer_id, vote ("up"|"down") and optional '
        'intent, doc_id, answer, user; "-" reads stdin',
    )
    parser.add_argument("--strict", action="store_true", help="with --file: exit 1 if any line was rejected")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from core.settings import Settings
    from store import Store

    if args.file is not None:
        if args.answer_id or args.vote or args.intent or args.doc_id or args.answer_text or args.user:
            raise UserError("--file cannot be combined with an answer id, vote, correction or --user")
    else:
        if not args.answer_id or not args.vote:
            raise UserError("give ANSWER_ID and a vote (up, down or retract), or --file VOTES.jsonl")
        if args.strict:
            raise UserError("--strict only applies to --file")
        _check_correction(args, Settings.load())
    store = Store.from_settings(Settings.load())
    try:
        if args.file is not None:
            return _run_file(store, args)
        return _run_single(store, args)
    finally:
        store.close()


def _check_correction(args: argparse.Namespace, settings) -> None:
    """A blank correction, or an intent or article the served model does not know, is bad input
    (the message suggests the closest known names)."""
    from bot.catalog import blank_check, served_documents, suggest
    from core.answer import OOS_ALIASES

    for flag, value in (("--intent", args.intent), ("--doc", args.doc_id), ("--answer", args.answer_text)):
        if value is not None:
            blank_check(value, flag)
    if args.intent is None and args.doc_id is None:
        return
    from serving.versions import VersionError

    try:
        _, documents = served_documents(settings)
    except VersionError:
        return  # no model yet: nothing to check against (the retrain counts unknown corrections)
    if args.doc_id is not None:
        known = {d.id for d in documents}
        doc_id, hash_, _ = args.doc_id.strip().partition("#")
        if doc_id not in known:
            raise UserError(suggest(doc_id, sorted(known), "article id (--doc)", command="csbot intents"))
        if hash_:  # a section of it, by the id `ask --json` prints
            from retrieval.kb import split_sections

            doc = next(d for d in documents if d.id == doc_id)
            sections = [s.id for s in split_sections(doc)]
            if args.doc_id.strip() not in sections:
                raise UserError(f"unknown section {args.doc_id.strip()!r} (--doc); {doc_id}'s sections: "
                                f"{', '.join(sections)}")
    intents = sorted({d.label for d in documents})
    intent = args.intent.strip() if args.intent is not None else None
    if intent is not None and intent not in intents and intent.lower() not in OOS_ALIASES:
        raise UserError(suggest(args.intent.strip(), intents + ["out_of_scope"], "intent (--intent)",
                                command="csbot intents"))


def _run_single(store, args: argparse.Namespace) -> int:
    from bot.catalog import cli_user
    from store import parse_vote

    vote = parse_vote(args.vote)
    if vote is None:
        raise UserError(f"vote must be up, down or retract, not {args.vote!r}")
    result = store.record_vote(
        args.answer_id,
        vote,
        user=cli_user(args.user),
        origin="cli",
        intent=args.intent.strip() if args.intent else None,
        doc_id=args.doc_id.strip() if args.doc_id else None,
        answer_text=args.answer_text.strip() if args.answer_text else None,
    )
    if args.json:
        out(json.dumps({"answer_id": result.answer_id, "vote": result.vote, "status": result.status}))
    elif result.stored:
        change = f" (was {result.previous})" if result.previous and result.previous != vote else ""
        out(f"{result.status}: {vote} on answer {result.answer_id}{change}")
    if result.status == "capped":
        print(f"csbot feedback: not stored: the user reached the daily vote cap ({store.daily_vote_cap})", file=sys.stderr)
        return 1
    if result.status == "no-vote":
        print("csbot feedback: nothing to retract: that user has no vote on this answer", file=sys.stderr)
        return 1
    return 0


def _run_file(store, args: argparse.Namespace) -> int:
    from store import ImportStoppedError, StoreError, import_votes

    name = "<stdin>" if str(args.file) == "-" else str(args.file)
    try:
        if name == "<stdin>":
            report = import_votes(store, sys.stdin)
        else:
            with open(args.file, encoding="utf-8") as fh:
                report = import_votes(store, fh)
    except FileNotFoundError:
        raise UserError(f"no such file: {name}") from None
    except ImportStoppedError as exc:
        _show_rejects(name, exc.report)
        message = (f"{name}: stopped at line {exc.line} after storing {exc.report.stored} vote(s) "
                   f"(importing the file again skips them as duplicates): {exc.cause}")
        if args.json:
            out(json.dumps({**exc.report.to_json(), "error": message, "line": exc.line}), flush=True)
        raise StoreError(message) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {name}: {exc}") from None
    _show_rejects(name, report)
    if args.json:
        out(json.dumps(report.to_json()))
    else:
        out(
            f"{name}: stored {report.stored}, duplicates {report.duplicates}, capped {report.capped}, "
            f"rejected {len(report.rejected)} (of {report.lines} lines)"
        )
    return 1 if args.strict and report.rejected else 0


def _show_rejects(name: str, report) -> None:
    for reject in report.rejected[:MAX_REJECTS_SHOWN]:
        print(f"{name}:{reject['line']}: rejected: {reject['error']}", file=sys.stderr)
    if len(report.rejected) > MAX_REJECTS_SHOWN:
        print(f"{name}: ... and {len(report.rejected) - MAX_REJECTS_SHOWN} more rejected lines", file=sys.stderr)
