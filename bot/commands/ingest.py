"""`csbot ingest PATH...`: add or update knowledge-base articles and build a new model version."""

from __future__ import annotations

import json
import logging
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
    p.add_argument("--quiet", action="store_true", help="no progress on stderr (no progress line, no stage lines)")
    p.set_defaults(func=run)


def run(args) -> int:
    from core.output import Progress
    from training.ingest import ingest
    from training.lock import say_waiting

    settings = Settings.load(index_type=args.index_type)
    # The label follows the build's stages; when stderr is not a terminal they are plain lines
    # (core/output.py), so a piped or logged ingest still says what it is doing.
    with Progress("parsing the knowledge-base files", quiet=args.quiet, name="csbot ingest") as progress:
        def waiting(holder: dict) -> None:  # another ingest, retrain promotion, forget or `models` holds the home
            progress.clear()
            say_waiting(holder)

        build_log = logging.getLogger("training.build")  # its warnings start on a cleared line
        build_log.addFilter(progress.filter)
        try:
            report = ingest(args.paths, settings, prune=args.prune, force=args.force, on_wait=waiting,
                            progress=progress.stage)
        finally:
            build_log.removeFilter(progress.filter)
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
