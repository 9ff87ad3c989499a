"""`csbot models [list | promote V | rollback | prune | push]`: the model versions under CSBOT_HOME/models,
or in the model store (`model_store`, docs/scale-out.md) with that folder as its cache."""

from __future__ import annotations

import argparse
import json

from core.output import out


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "models", help="list model versions, promote one, roll back, or prune old ones",
        description="List the model versions (the served one is the champion), serve another one "
        "(`promote VERSION`), go back to the champion's parent (`rollback`), or delete old versions "
        "(`prune`: keeps the champion, its parent and the newest --keep, default the keep_versions "
        "setting, 5). Ingest and retrain prune after each promotion. With a model store "
        "(model_store = s3://BUCKET/PREFIX) each acts on the store; `push` uploads this home's versions "
        "and, when the store has none, its champion (run again, it uploads nothing).")
    p.add_argument("action", nargs="?", default="list", choices=["list", "promote", "rollback", "prune", "push"])
    p.add_argument("version", nargs="?", help="with promote: the version to serve")
    p.add_argument("--keep", type=int, metavar="N", help="with prune: newest versions to keep (default: keep_versions)")
    p.add_argument("--dry-run", action="store_true", help="with prune: list what would be deleted, delete nothing")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def composer_summary(version) -> dict:
    """The composer of a version: whether a retrain trained an adapter and what the gate said."""
    verdict = version.composer
    return {"adapter": version.composer_dir is not None, "judged": bool(verdict),
            "approved": bool(verdict.get("approved")), "reason": verdict.get("reason"),
            "metrics": verdict.get("metrics")}


def served_threshold(settings, meta: dict) -> float:
    """The confidence threshold the engine applies to a version (the setting wins over the version's)."""
    from models.intent import DEFAULT_OOS_THRESHOLD

    if settings.confidence_threshold is not None:
        return float(settings.confidence_threshold)
    return float(meta.get("oos_threshold", DEFAULT_OOS_THRESHOLD))


def run(args: argparse.Namespace) -> int:
    from core.errors import UserError
    from core.settings import Settings
    from serving.versions import VersionStore

    settings = Settings.load()
    versions = VersionStore.from_settings(settings)
    if args.action != "promote" and args.version:
        raise UserError(f"{args.action} takes no VERSION")
    if args.action != "prune" and (args.keep is not None or args.dry_run):
        raise UserError("--keep and --dry-run go with `csbot models prune`")
    if args.action == "push":
        return push(args, settings, versions)
    if args.action != "list":
        return change(args.action, args, settings, versions, args.keep, args.dry_run)
    return list_versions(args, settings, versions)


def version_row(settings, versions, name: str, champion: str | None, footprint: dict) -> dict:
    """One version as `csbot models --json` lists it (`footprint`: VersionStore.footprint's bytes)."""
    from serving.engine import runtime_for, sentiment_runtime_for, sentiment_shares_encoder

    version = versions.describe(name)  # with a model store, nothing is fetched to list it
    meta = version.meta
    metrics = meta.get("metrics", {})
    chosen = meta.get("runtime") or {}
    sentiment = meta.get("sentiment") or {}
    return {"version": name, "champion": name == champion, "parent": meta.get("parent"),
            "created": meta.get("created"), "reason": meta.get("reason"), "counts": meta.get("counts", {}),
            "metrics": metrics, "threshold": served_threshold(settings, meta),
            "gate": metrics.get("gate"), "heldout": metrics.get("heldout"),
            "runtime": runtime_for(version, settings), "runtime_chosen": chosen.get("served", "torch"),
            "runtime_reason": chosen.get("reason"), "runtime_scores": chosen.get("scores"),
            "sentiment_runtime": sentiment_runtime_for(version, settings),
            "sentiment_model": sentiment.get("model", "head"), "sentiment_runtime_chosen": sentiment.get("served", "head"),
            "sentiment_reason": sentiment.get("reason"), "sentiment_scores": sentiment.get("scores"),
            "sentiment_shares_encoder": sentiment_shares_encoder(version, settings),
            "sentiment_shared": sentiment.get("shared"),
            "composer": composer_summary(version), "bytes": footprint["bytes"][name],
            "own_bytes": footprint["own_bytes"][name], "cached": name in footprint["cached"],
            "published": name in footprint["published"] if versions.remote is not None else None}


def list_versions(args: argparse.Namespace, settings, versions) -> int:
    """`csbot models [list]`: every version, the champion first described, as text or one JSON object."""
    champion = versions.champion_name()
    names = versions.names()
    footprint = {**versions.footprint(names), "cached": set(versions.local_names())}
    rows = [version_row(settings, versions, name, champion, footprint) for name in names]
    served = next((r for r in rows if r["champion"]), None)
    disk = footprint["disk_bytes"]  # each hard-linked file once
    if args.json:
        out(json.dumps({"champion": champion, "versions": rows, "disk_bytes": disk,
                        "threshold": served["threshold"] if served else None,
                        "keep_versions": settings.keep_versions, "answer_mode": settings.answer_mode,
                        "compose_model": settings.compose.model, "compose_backend": settings.compose.backend,
                        "store": settings.model_store or "local", "store_bytes": footprint["store_bytes"]}))
        return 0
    if settings.model_store:
        out(f"model store {settings.model_store}: {len(rows)} version(s), {footprint['store_bytes'] / 1e6:.0f} MB "
            f"stored (each file once); this host caches {len(footprint['cached'])} in {versions.root}")
    if not rows:
        out("no model versions yet: run `csbot ingest PATH`" + (
            " (or `csbot models push` from the home that has them)" if settings.model_store else ""))
    if served:
        describe_champion(settings, served)
    for row in rows:
        out(row_line(row))
    if len(rows) > 1:
        out(f"{len(rows)} versions take {disk / 1e6:.0f} MB on disk (files hard-linked between versions counted once)"
            if not settings.model_store else f"the cache takes {disk / 1e6:.0f} MB on this disk")
    return 0


def describe_champion(settings, served: dict) -> None:
    """The champion's runtimes, sentiment path and composer, in words."""
    if served["runtime_reason"]:
        out(f"runtime of the champion: {served['runtime']} — {served['runtime_reason']}")
    if served["sentiment_reason"]:
        what = "the head over the encoder pass" if served["sentiment_runtime"] == "head" else \
            f"the fine-tuned model on {served['sentiment_runtime']}"
        out(f"sentiment of the champion: {what} — {served['sentiment_reason']}")
        shared = served["sentiment_shared"] or {}
        if served["sentiment_shares_encoder"]:
            out(f"  questions' sentiment continues from the encoder pass (hidden state {shared.get('layer')}): "
                f"{shared.get('reason')}")
        elif shared.get("reason") and served["sentiment_runtime"] != "head":
            why = shared["reason"] if not shared.get("served") else (
                f"the build approved sharing on {shared.get('pair')} (encoder/sentiment runtimes), which do not "
                f"both serve now" if settings.sentiment_share_encoder else "sentiment_share_encoder = false (setting)")
            out(f"  questions' sentiment takes the model's own pass: {why}")
    composer = served["composer"]
    verdict = ("approved by the gate" if composer["approved"] else "not approved by the gate"
               ) if composer["judged"] else "not judged by a retrain yet"
    out(f"answers: answer_mode {settings.answer_mode}; composer {settings.compose.model}"
        f"{' + retrained adapter' if composer['adapter'] else ''} ({verdict})")


def row_line(row: dict) -> str:
    """One version's line in the text listing."""
    counts = row["counts"]
    gate = f", gate {row['gate']}" if row["gate"] else ""
    heldout = (f", held-out accuracy {row['heldout']['accuracy']:.3f}"
               if row["heldout"] and row["heldout"].get("accuracy") is not None else "")
    return (f"{'*' if row['champion'] else ' '} {row['version']}  {row['created']}  {row['reason'] or ''}  "
            f"{counts.get('documents', '?')} articles, {counts.get('intents', '?')} intents, "
            f"{counts.get('extra_examples', 0)} feedback examples, threshold {row['threshold']:.2f}{gate}{heldout}, "
            f"runtime {row['runtime']}{'' if row['runtime'] == row['runtime_chosen'] else ' (forced; chose ' + row['runtime_chosen'] + ')'}, "
            f"sentiment {row['sentiment_runtime']}, "
            f"{row['bytes'] / 1e6:.0f} MB{own_note(row)}  (parent {row['parent'] or '-'})")


def change(action: str, args, settings, versions, keep, dry_run: bool) -> int:
    """promote, rollback, prune: each under the home's writer lock (training/lock.py), so it never
    lands between another writer's read of the champion and its promotion."""
    from core.errors import UserError
    from training.lock import hold_writer

    if action == "promote":
        if not args.version:
            raise UserError("promote needs a VERSION (see `csbot models`)")
        with hold_writer(settings, "models promote"):  # never between another writer's read and its promotion
            versions.promote(args.version, reason="manual promote")
        out(f"{args.version} is now the champion")
        return 0
    if action == "rollback":
        with hold_writer(settings, "models rollback"):
            before = versions.champion().name
            version = versions.rollback()
        out(f"rolled back: {version.name} (the parent of {before}) is now the champion")
        return 0
    if action == "prune":
        keep = settings.keep_versions if keep is None else keep
        if keep < 0:
            raise UserError(f"--keep must be 0 or more, not {keep}")
        if dry_run:
            report = versions.prune(keep, dry_run=True)
        else:
            with hold_writer(settings, "models prune"):  # not while another writer builds on a version
                report = versions.prune(keep)
        if args.json:
            out(json.dumps({**report, "keep": keep, "dry_run": bool(dry_run), "store": versions.location}))
        else:
            verb = "would delete" if dry_run else "deleted"
            store = (f" ({report['store_freed_bytes'] / 1e6:.0f} MB from {versions.location}, "
                     f"{report['freed_bytes'] / 1e6:.0f} MB from this host's cache)") if versions.remote else ""
            out(f"{verb} {len(report['removed'])} version(s), "
                f"{report.get('store_freed_bytes', report['freed_bytes']) / 1e6:.0f} MB{store}; "
                f"kept {len(report['kept'])} (champion, its parent, newest {keep})")
        return 0
    raise UserError(f"unknown action {action}")


def push(args, settings, versions) -> int:
    """`csbot models push`: this home's versions (and its champion, when the store has none) to the store."""
    from core.errors import UserError
    from training.lock import hold_writer

    if versions.remote is None:
        raise UserError("csbot models push needs a model store: set model_store = \"s3://BUCKET/PREFIX\" "
                        "(CSBOT_MODEL_STORE)")
    with hold_writer(settings, "models push"):  # never between another writer's read and its promotion
        report = versions.push()
    if args.json:
        out(json.dumps(report))
        return 0
    out(f"pushed {len(report['pushed'])} version(s) to {report['store']} ({report['uploaded_blobs']} file(s), "
        f"{report['uploaded_bytes'] / 1e6:.0f} MB uploaded; files the store had already were skipped); "
        f"{len(report['already'])} were there already")
    if report["champion_set"]:
        out(f"{report['champion']} is now the champion in {report['store']}")
    elif report["champion"] and report["local_champion"] and report["champion"] != report["local_champion"]:
        out(f"the store's champion stays {report['champion']} (this home served {report['local_champion']}; "
            f"`csbot models promote {report['local_champion']}` serves it)")
    elif report["champion"] is None:
        out("the store has no champion yet: this home has none to give it")
    return 0


def own_note(row: dict) -> str:
    """", 310 MB its own" when some of a version's files are hard links shared with other versions."""
    return f", {row['own_bytes'] / 1e6:.0f} MB its own" if row["own_bytes"] < row["bytes"] else ""
