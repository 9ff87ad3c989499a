"""`csbot ingest PATH...`: add or update knowledge-base articles and build a new model version."""

from __future__ import annotations

import json
import sys

from core.settings import Settings
from core.errors import UserError
from core.output import out


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


def ingest(paths, settings: Settings, *, prune: bool = False, force: bool = False) -> dict:
    """Parse PATHS, merge them into the served KB, build and promote a new version if anything changed."""
    from serving.versions import VersionError, VersionStore
    from retrieval.kb import load_documents, merge_documents
    from training.build import build_version, kb_hash, load_version_documents, load_version_examples

    skipped: list = []
    incoming = load_documents(paths, skipped)  # raises before anything is written
    if not incoming:
        shown = ", ".join(str(p) for p in skipped[:5]) + (" …" if len(skipped) > 5 else "")
        raise UserError(f"no knowledge-base articles in {', '.join(map(str, paths))}"
                        + (f" (skipped {len(skipped)} file(s) of unsupported types: {shown})" if skipped else "")
                        + "; supported: .md .markdown .txt .html .htm .csv .jsonl")
    versions = VersionStore(settings.models_dir)
    versions.clean_partial()
    try:
        champion = versions.champion()
        existing = load_version_documents(champion)
    except VersionError:
        champion, existing = None, []
    documents, merge = merge_documents(existing, incoming, prune=prune)
    if not documents:
        raise UserError("the knowledge base would be empty: no articles in " + ", ".join(map(str, paths)))
    up_to_date = (champion is not None and not merge.modified and not force
                  and champion.meta.get("kb_hash") == kb_hash(documents)
                  and champion.meta.get("encoder") == settings.encoder)
    result = {"documents": len(documents), "added": merge.added, "changed": merge.changed,
              "removed": merge.removed, "unchanged": len(merge.unchanged), "summary": merge.summary(),
              "skipped": [str(p) for p in skipped]}
    if up_to_date:
        return {**result, "built": False, "version": champion.name, "seconds": 0.0, "pruned": []}
    built = build_version(documents, settings, parent=champion.name if champion else None,
                          extra_examples=load_version_examples(champion) if champion else None,
                          meta={"reason": "ingest"})
    versions.promote(built.version.name, reason="ingest")
    pruned = versions.prune(settings.keep_versions)["removed"]
    return {**result, "built": True, "version": built.version.name, "seconds": round(built.seconds, 2),
            "notes": built.version.meta.get("notes", []), "pruned": pruned}
