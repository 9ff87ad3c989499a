"""`csbot models [list | promote V | rollback]`: the model versions under CSBOT_HOME/models."""

from __future__ import annotations

import json


def register(subparsers) -> None:
    p = subparsers.add_parser("models", help="list model versions, promote one, or roll back")
    p.add_argument("action", nargs="?", default="list", choices=["list", "promote", "rollback"])
    p.add_argument("version", nargs="?", help="with promote: the version to serve")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from bot.config import Settings
    from bot.errors import UserError
    from models.versions import VersionStore

    versions = VersionStore(Settings.load().models_dir)
    if args.action == "promote":
        if not args.version:
            raise UserError("promote needs a VERSION")
        versions.promote(args.version, reason="manual promote")
        print(f"{args.version} is now the champion")
        return 0
    if args.action == "rollback":
        version = versions.rollback()
        print(f"rolled back: {version.name} is now the champion")
        return 0
    champion = versions.champion_name()
    rows = []
    for name in versions.names():
        meta = versions.get(name).meta
        rows.append({"version": name, "champion": name == champion, "parent": meta.get("parent"),
                     "created": meta.get("created"), "reason": meta.get("reason"), "counts": meta.get("counts", {}),
                     "metrics": meta.get("metrics", {})})
    if args.json:
        print(json.dumps({"champion": champion, "versions": rows}))
        return 0
    if not rows:
        print("no model versions yet: run `csbot ingest PATH`")
    for row in rows:
        counts = row["counts"]
        print(f"{'*' if row['champion'] else ' '} {row['version']}  {row['created']}  {row['reason'] or ''}  "
              f"{counts.get('documents', '?')} articles, {counts.get('intents', '?')} intents, "
              f"{counts.get('extra_examples', 0)} feedback examples  (parent {row['parent'] or '-'})")
    return 0
