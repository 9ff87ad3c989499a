"""Ingest: parse knowledge-base files, merge them into the served KB, and build and promote a new
model version when anything changed (`csbot ingest`, the demo, benchmarks and tests call `ingest`).

The merge reads the champion's articles, so everything from that read to the promotion runs under
the home's writer lock (training/lock.py): a second ingest waits, then merges into the version the
first one promoted, and neither article is lost."""

from __future__ import annotations

from core.errors import UserError
from core.settings import Settings
from retrieval.kb import load_documents, merge_documents
from serving.versions import VersionError, VersionStore
from training.build import build_version, kb_hash
from training.lock import hold_writer


def ingest(paths, settings: Settings, *, prune: bool = False, force: bool = False, on_wait=None,
           progress=None) -> dict:
    """Parse PATHS, merge them into the served KB, build and promote a new version if anything changed.
    Waits for another writer of the model store first (`on_wait(holder)` is told once; default: a
    line on stderr) and raises LockBusy when `writer_wait_seconds` runs out. `progress(label)` is
    told each stage of the build as it starts (bot/commands/ingest.py shows them)."""

    skipped: list = []
    # raises before anything is written, also on an article over max_article_bytes
    incoming = load_documents(paths, skipped, max_article_bytes=settings.max_article_bytes)
    if not incoming:
        shown = ", ".join(str(p) for p in skipped[:5]) + (" …" if len(skipped) > 5 else "")
        raise UserError(f"no knowledge-base articles in {', '.join(map(str, paths))}"
                        + (f" (skipped {len(skipped)} file(s) of unsupported types: {shown})" if skipped else "")
                        + "; supported: .md .markdown .txt .html .htm .csv .jsonl")
    # Parsing reads only the user's files, so bad input fails at once, without waiting for the lock.
    with hold_writer(settings, "ingest", on_wait=on_wait):
        return _merge_build_promote(incoming, skipped, paths, settings, prune=prune, force=force,
                                    progress=progress)


def _merge_build_promote(incoming, skipped, paths, settings: Settings, *, prune: bool, force: bool,
                         progress=None) -> dict:
    versions = VersionStore.from_settings(settings)
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
                          meta={"reason": "ingest"}, progress=progress)
    if progress is not None:
        progress(f"promoting {built.version.name}")
    versions.promote(built.version.name, reason="ingest", expect_champion=champion.name if champion else None)
    pruned = versions.prune(settings.keep_versions)["removed"]
    return {**result, "built": True, "version": built.version.name, "seconds": round(built.seconds, 2),
            "notes": built.version.meta.get("notes", []), "pruned": pruned}
