"""`csbot ingest PATH...`: add or update knowledge-base articles and build a new model version."""

from __future__ import annotations

import json
import sys

from core.output import out
from core.settings import Settings


def register(subparsers) -> None:
    p = subparsers.add_parser("ingest", help="add/update knowledge-base files (Markdown, text, CSV, JSONL)")
    p.add_argument("paths", nargs="+", help="files or folders")
    p.add_argument("--prune", action="store_true", help="drop articles that are not in PATHS")
    p.add_argument("--force", action="store_true", help="rebuild even if nothing changed")
    p.add_argument("--index-type", choices=["auto", "flat", "hnsw", "ivf"], help="override the index type")
    p.add_argument("--json", action="store_true", help="print a JSON report")
    p.add_argument("--quiet", action="store_true", help="no progress display on stderr")
    p.set_defaults(func=run)


def run(args) -> int:
    from core.output import Progress
    from training.ingest import ingest

    settings = Settings.load(index_type=args.index_type)
    with Progress("ingesting: parsing, fine-tuning the encoder, building the index", quiet=args.quiet):
        report = ingest(args.paths, settings, prune=args.prune, force=args.force)
    if args.json:
        out(json.dumps(report))
    else:
        if report["skipped"]:
            shown = ", ".join(report["skipped"][:10]) + (" …" if len(report["skipped"]) > 10 else "")
            print(f"skipped {len(report['skipped'])} file(s) of unsupported types: {shown}", file=sys.stderr)
        for note in report.get("notes", []):
            print(f"note: {note}", file=sys.stderr)
        out(f"{report['documents']} articles ({report['summary']}); "
              + (f"model version {report['version']} built in {report['seconds']:.1f}s and now served"
                 if report["built"] else f"nothing changed, still serving {report['version']}"))
    return 0
