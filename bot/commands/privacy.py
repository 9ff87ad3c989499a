"""`csbot purge` and `csbot forget`: retention and deletion in the conversation store.

    csbot purge --older-than 90d [--dry-run] [--json]
    csbot forget --user U123 [--user U456 ...] [--dry-run] [--json]

Deleted rows are overwritten on disk (secure_delete) and the WAL is checkpointed.
"""

from __future__ import annotations

import argparse
import json

from core.output import out


def register(subparsers: argparse._SubParsersAction) -> None:
    purge = subparsers.add_parser(
        "purge",
        help="delete stored conversations, votes and messages older than an age",
        description="Delete answers (with their votes), votes, monitored messages and processed "
        "Slack event ids older than the given age. Training-run records are kept.",
    )
    purge.add_argument("--older-than", required=True, metavar="AGE",
                       help="a number and a unit: s, m (minutes!), h, d, w, mo (months of 30 days); "
                       "e.g. 90d, 6mo, 12h, 30m")
    purge.add_argument("--dry-run", action="store_true", help="count what would be deleted, delete nothing")
    purge.add_argument("--json", action="store_true", help="print the counts as one JSON object")
    purge.set_defaults(func=run_purge)

    forget = subparsers.add_parser(
        "forget",
        help="delete a user's stored rows and what the model learned from them",
        description="Delete a user's votes, questions (with the votes on them), sentiment corrections "
        "and monitored messages. The questions they asked or voted on also leave the model: the served "
        "version is rebuilt without the examples it learned from them, and older versions that learned "
        "them are deleted. The user id is hashed with the store's salt to find the rows.",
    )
    forget.add_argument("--user", required=True, action="append", metavar="USER", help="a Slack user id; repeatable")
    forget.add_argument("--dry-run", action="store_true", help="count what would be deleted, delete nothing")
    forget.add_argument("--json", action="store_true", help="print the counts as one JSON object")
    forget.set_defaults(func=run_forget)


def _open_store():
    from core.settings import Settings
    from store import Store

    return Store.from_settings(Settings.load())


def _report(verb: str, counts: dict[str, int], args: argparse.Namespace, extra: dict) -> None:
    if args.json:
        out(json.dumps({**extra, "dry_run": bool(args.dry_run), "deleted": counts}))
        return
    what = ", ".join(f"{n} {table}" for table, n in counts.items())
    out(f"{'would delete' if args.dry_run else verb}: {what}")


def run_purge(args: argparse.Namespace) -> int:
    from store import parse_duration

    age = parse_duration(args.older_than)
    store = _open_store()
    try:
        counts = store.purge(age, dry_run=args.dry_run)
    finally:
        store.close()
    _report("deleted", counts, args, {"older_than": args.older_than})
    return 0


def run_forget(args: argparse.Namespace) -> int:
    from core.errors import UserError

    users = [u.strip() for u in args.user if u and u.strip()]
    if not users:
        raise UserError("--user needs a user id")
    from core.settings import Settings
    from training.forget import forget_learned

    settings = Settings.load()
    store = _open_store()
    total: dict[str, int] = {}
    texts: set[str] = set()
    try:
        for user in users:
            texts.update(store.user_questions(user))  # before the rows go
            for table, n in store.forget_user(user, dry_run=args.dry_run).items():
                total[table] = total.get(table, 0) + n
    finally:
        store.close()
    learned = forget_learned(settings, sorted(texts), dry_run=args.dry_run)
    _report("deleted", total, args, {"users": len(users), "learned": learned})
    if not args.json and (learned["versions_rebuilt"] or learned["versions_deleted"] or learned["heldout_rows"]):
        verb = "would " if args.dry_run else ""
        out(f"{verb}remove {learned['learned_examples']} learned question(s) from the served model"
            + (f" (rebuilt as {learned['new_champion']})" if learned.get("new_champion") else "")
            + f", {verb}delete {len(learned['versions_deleted'])} older version(s) that learned them, "
            f"{learned['heldout_rows']} held-out row(s)")
    return 0
