"""Ingest: parse knowledge-base files, merge them into the served KB, and build and promote a new
model version when anything changed (`csbot ingest`, the demo, benchmarks and tests call `ingest`)."""

from __future__ import annotations

from core.errors import UserError
from core.settings import Settings
from retrieval.kb import load_documents, merge_documents
from serving.versions import VersionError, VersionStore
from training.build import build_version, kb_hash


def ingest(paths, settings: Settings, *, prune: bool = False, force: bool = False) -> dict:
    """Parse PATHS, merge them into the served KB, build and promote a new version if anything changed."""

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
        existing = champion.documents()
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
                          extra_examples=champion.examples() if champion else None,
                          meta={"reason": "ingest"})
    versions.promote(built.version.name, reason="ingest")
    pruned = versions.prune(settings.keep_versions)["removed"]
    return {**result, "built": True, "version": built.version.name, "seconds": round(built.seconds, 2),
            "notes": built.version.meta.get("notes", []), "pruned": pruned}
