"""`csbot forget --user` beyond the store: the questions a model version learned from a user.

A retrain turns feedback into labelled examples; a version keeps them, as text, in
`training_examples.jsonl` (which later builds replay) and in its FAISS index (learned entries), and an
admin's corrections can sit in the frozen held-out set. Deleting the user's rows from the store stops
future retrains from reading them, but not the replay. So `forget` also:

- rebuilds the served version without those examples (same articles, same fine-tuned encoder and
  sentiment head, heads refitted, index rebuilt), promotes it, and deletes every other version that
  learned any of them (the rollback target included: the new champion's parent is the nearest
  version that did not);
- drops them from the held-out set.

Matching is on the normalized question text (case and whitespace), so the same question learned
from another user's vote goes too. The encoder's fine-tuned weights are kept: they hold no text.
"""

from __future__ import annotations

from pathlib import Path

from training.feedback_data import normalize


def forget_learned(settings, texts: list[str], *, dry_run: bool = False) -> dict:
    """Remove the learned examples whose text is one of `texts` from every model version and the
    held-out set (see the module doc). Returns what was (or, with dry_run, would be) done. Holds the
    home's writer lock (training/lock.py) unless dry_run."""
    keys = {normalize(t) for t in texts if t and t.strip()}
    report = {"learned_examples": 0, "versions_rebuilt": [], "versions_deleted": [], "heldout_rows": 0}
    if not keys:
        return report
    if dry_run:
        return _forget(settings, keys, report, dry_run=True)
    from training.lock import hold_writer

    # The rebuild starts from the champion and replaces it: no other writer may move it meanwhile.
    with hold_writer(settings, "forget"):
        return _forget(settings, keys, report, dry_run=False)


def _forget(settings, keys: set[str], report: dict, *, dry_run: bool) -> dict:
    from serving.versions import VersionError, VersionStore

    versions = VersionStore.from_settings(settings)
    champion = versions.champion_name()
    tainted = []
    for name in versions.names():
        n = sum(normalize(ex.text) in keys for ex in versions.get(name).examples())
        if n:
            tainted.append(name)
            if name == champion:
                report["learned_examples"] = n
    report["heldout_rows"] = _scrub_heldout(settings.home, keys, dry_run=dry_run)
    if not tainted:
        return report
    if dry_run:
        report["versions_rebuilt"] = [champion] if champion in tainted else []
        report["versions_deleted"] = [n for n in tainted if n != champion] + (
            [champion] if champion in tainted else [])
        return report
    if champion in tainted:
        new = _rebuild_without(settings, versions, versions.get(champion), keys, tainted)
        report["versions_rebuilt"] = [champion]
        report["new_champion"] = new
    for name in tainted:
        try:
            versions.delete(name)
        except VersionError:
            continue
        report["versions_deleted"].append(name)
    return report


def _rebuild_without(settings, versions, champion, keys: set[str], tainted: list[str]) -> str:
    from training.build import build_version, carry_sentiment

    kept = [ex for ex in champion.examples() if normalize(ex.text) not in keys]
    parent = champion.parent
    seen = set()
    while parent in tainted and parent not in seen:  # the rollback target must not hold them either
        seen.add(parent)
        try:
            parent = versions.get(parent).parent
        except Exception:  # noqa: BLE001 - pruned or unreadable: no rollback target
            parent = None
    if parent not in versions.names():
        parent = None
    build_settings = carry_sentiment(settings, champion).replace(finetune_epochs=0)
    meta = {key: champion.meta[key] for key in ("metrics", "data_until", "retrain") if key in champion.meta}
    built = build_version(champion.documents(), build_settings, extra_examples=kept,
                          encoder_dir=champion.encoder_dir, parent=parent,
                          meta={**meta, "reason": f"forget (rebuilt {champion.name} without a user's questions)"})
    versions.promote(built.version.name, reason="forget", expect_champion=champion.name)
    return built.version.name


def _scrub_heldout(home, keys: set[str], *, dry_run: bool) -> int:
    from training.gate import HeldoutSet

    heldout = HeldoutSet.load(Path(home))
    keep = [r for r in heldout.rows if r.get("source") == "kb" or normalize(r.get("text", "")) not in keys]
    removed = len(heldout.rows) - len(keep)
    if removed and not dry_run:
        heldout.rows = keep
        heldout.save()
    return removed

