"""`csbot intents [--json]`: the served model's intents and the articles that answer each one
(the names `csbot eval` files and `csbot feedback --intent/--doc` use)."""

from __future__ import annotations

import json

from core.output import out


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "intents", help="list the served model's intents and their articles",
        description="List the intents the served model tells apart, each with the articles (ids and "
        "titles) that answer it: the names to use in eval files and in `csbot feedback --intent/--doc`. "
        "`out_of_scope` (or `oos`) marks a question the bot should decline.")
    p.add_argument("--json", action="store_true",
                   help='one JSON object: {"model_version", "intents": [{intent, articles: [{id, title, url}], questions}]}')
    p.set_defaults(func=run)


def run(args) -> int:
    from bot.catalog import served_documents
    from core.settings import Settings

    version, documents = served_documents(Settings.load())
    by_intent: dict[str, list] = {}
    for doc in documents:
        by_intent.setdefault(doc.label, []).append(doc)
    rows = [{"intent": intent, "articles": [{"id": d.id, "title": d.title, "url": d.url} for d in docs],
             "questions": sum(len(d.questions) for d in docs)}
            for intent, docs in sorted(by_intent.items())]
    if args.json:
        out(json.dumps({"model_version": version, "intents": rows}, ensure_ascii=False))
        return 0
    out(f"{len(rows)} intents in model {version} (plus out_of_scope):")
    for row in rows:
        articles = "; ".join(f"{a['id']} ({a['title']})" for a in row["articles"])
        out(f"  {row['intent']}: {articles}")
    return 0
