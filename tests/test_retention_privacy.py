"""Version retention (`models prune`, rollback to the parent) and privacy that reaches the model
(`forget --user` removes the questions a version learned; follow-ups are never learned)."""

from __future__ import annotations

import json
import shutil

import pytest

from bot.cli import main
from serving.versions import VersionError, VersionStore, folder_bytes, freed_by_removing


def _chain(root, n: int) -> list[str]:
    """n real version folders, each built on the one before (as ingest and retrain do)."""
    versions = VersionStore(root)
    names, parent = [], None
    for i in range(n):
        draft = versions.draft()
        (draft.path / "kb.jsonl").write_text("x" * 1000)
        version = draft.commit({"parent": parent, "reason": f"build {i}", "encoder": "builtin"})
        names.append(version.name)
        parent = version.name
    return names


def test_prune_keeps_the_champion_its_parent_and_the_newest(tmp_path):
    names = _chain(tmp_path, 9)
    versions = VersionStore(tmp_path)
    assert versions.names() == names  # oldest first, also past -9 suffixes within one second
    versions.promote(names[3])  # an operator serves an old one
    report = versions.prune(keep=2, dry_run=True)
    assert report["removed"] == [names[0], names[1], names[4], names[5], names[6]]
    assert versions.names() == names
    assert report["freed_bytes"] == sum(folder_bytes(tmp_path / n) for n in report["removed"])
    versions.prune(keep=2)
    assert versions.names() == [names[2], names[3], names[7], names[8]]
    assert not list(tmp_path.glob(".deleting-*")) and versions.champion_name() == names[3]
    with pytest.raises(VersionError):
        versions.prune(keep=-1)


def test_disk_figures_count_a_file_hard_linked_between_versions_once(tmp_path, monkeypatch, capsys):
    # Builds hard-link an unchanged export from an earlier version (training/export.py): pruning the
    # older version frees only what is its own, and the listing's total counts the linked file once.
    import os

    monkeypatch.setenv("CSBOT_HOME", str(tmp_path))
    names = _chain(tmp_path / "models", 3)
    VersionStore(tmp_path / "models").promote(names[-1])
    folders = [tmp_path / "models" / n for n in names]
    own = [folder_bytes(f) for f in folders]  # meta.json and kb.jsonl of each
    oldest, middle = folders[:2]
    (oldest / "export.bin").write_bytes(b"e" * 50_000)
    os.link(oldest / "export.bin", middle / "export.bin")
    assert (folder_bytes(oldest), freed_by_removing([oldest]), freed_by_removing([oldest, middle])) == (
        own[0] + 50_000, own[0], own[0] + own[1] + 50_000)
    assert main(["models", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [(r["bytes"], r["own_bytes"]) for r in report["versions"]] == [
        (own[0] + 50_000, own[0]), (own[1] + 50_000, own[1]), (own[2], own[2])]
    assert report["disk_bytes"] == sum(own) + 50_000
    assert main(["models"]) == 0
    text = capsys.readouterr().out
    assert "0 MB its own" in text and "3 versions take 0 MB on disk (files hard-linked" in text
    pruned = VersionStore(tmp_path / "models").prune(keep=0)  # keeps the champion and its parent (middle)
    assert (pruned["removed"], pruned["freed_bytes"]) == ([names[0]], own[0])
    assert (middle / "export.bin").read_bytes() == b"e" * 50_000


def test_rollback_goes_to_the_parent_and_never_forward(tmp_path):
    a, b, c = _chain(tmp_path, 3)
    versions = VersionStore(tmp_path)
    versions.promote(c)
    assert versions.rollback().name == b
    assert versions.rollback().name == a  # not back to c
    with pytest.raises(VersionError, match="no parent version"):
        versions.rollback()
    assert versions.champion_name() == a
    versions.promote(c)
    shutil.rmtree(tmp_path / b)
    with pytest.raises(VersionError, match="no longer kept"):
        versions.rollback()


def test_models_prune_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CSBOT_HOME", str(tmp_path))
    names = _chain(tmp_path / "models", 4)
    VersionStore(tmp_path / "models").promote(names[-1])
    assert main(["models", "prune", "--keep", "1", "--dry-run", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["removed"] == names[:2] and report["dry_run"] is True and report["keep"] == 1
    monkeypatch.setenv("CSBOT_KEEP_VERSIONS", "0")
    assert main(["models", "prune"]) == 0
    assert "deleted 2 version(s)" in capsys.readouterr().out
    assert VersionStore(tmp_path / "models").names() == names[2:]
    assert main(["models", "prune", "--keep", "-3"]) == 2
    assert main(["models", "rollback", "--keep", "2"]) == 2
    capsys.readouterr()


@pytest.mark.slow
def test_ingest_prunes_after_promoting(home, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CSBOT_KEEP_VERSIONS", "0")
    first = VersionStore(home / "models").champion_name()
    for n in (1, 2):
        extra = tmp_path / f"extra{n}.md"
        extra.write_text(f"# Gift wrap {n}\n\nWe wrap any order for {n} euro; choose it at checkout.\n")
        assert main(["ingest", str(extra), "--json"]) == 0
    second, third = [json.loads(line)["version"] for line in capsys.readouterr().out.splitlines()]
    assert VersionStore(home / "models").names() == [second, third]  # the champion and its parent
    assert first not in VersionStore(home / "models").names()


# ----- privacy ---------------------------------------------------------------------------------------

def _learned_texts(version) -> set[str]:
    from retrieval.index import LEARNED, VectorIndex

    return {e.text for e in VectorIndex.load(version.path / "index").entries if e.kind == LEARNED}


@pytest.mark.slow
def test_forget_removes_the_users_learned_questions_from_the_model(home, settings, capsys):
    from serving.versions import TrainingExample
    from store import Store
    from training.build import build_version
    from training.feedback_data import normalize

    mine, theirs = "My parcel 42 never came, what now", "is there a student discount"
    assert main(["ask", mine, "--user", "U1", "--json"]) == 0
    answer_id = json.loads(capsys.readouterr().out)["answer_id"]
    assert main(["feedback", answer_id, "down", "--doc", "lost-package", "--user", "U1"]) == 0
    assert main(["ask", theirs, "--user", "U2", "--json"]) == 0
    capsys.readouterr()
    # What a retrain would have learned from those votes (real build, real promotion).
    versions = VersionStore(home / "models")
    base = versions.champion()
    learned = [TrainingExample(mine.lower(), "lost_package", origin="feedback:correction"),
               TrainingExample(theirs, "discount_code_not_working", origin="feedback:correction")]
    built = build_version(base.documents(), settings, extra_examples=learned, parent=base.name,
                          meta={"reason": "retrain"})
    versions.promote(built.version.name)
    assert mine.lower() in _learned_texts(versions.champion())

    assert main(["forget", "--user", "U1", "--dry-run", "--json"]) == 0
    dry = json.loads(capsys.readouterr().out)["learned"]
    assert dry["versions_rebuilt"] == [built.version.name] and versions.champion_name() == built.version.name

    assert main(["forget", "--user", "U1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["deleted"]["answers"] == 1 and report["deleted"]["feedback"] == 1
    assert report["learned"]["learned_examples"] == 1 and report["learned"]["versions_deleted"] == [built.version.name]
    champion = versions.champion()
    assert champion.name == report["learned"]["new_champion"] and champion.parent == base.name
    # Gone from the served index, from what later builds replay, and from every kept version.
    assert _learned_texts(champion) == {theirs}
    assert [ex.text for ex in champion.examples()] == [theirs]
    for name in versions.names():
        assert all(normalize(ex.text) != normalize(mine) for ex in versions.get(name).examples())
    assert built.version.name not in versions.names()
    with Store.from_settings(settings) as store:  # what the next retrain reads
        assert all(row["question"] != mine for row in store.feedback_since())


def test_follow_ups_are_not_learned_without_their_context(tmp_path):
    from core.answer import Answer
    from core.settings import RetrainSettings
    from retrieval.kb import Document
    from store import Store
    from training.feedback_data import build_feedback_data

    docs = [Document("shipping-times", "Shipping times", "2-4 days.", questions=["how long does shipping take"]),
            Document("international-shipping", "International", "We ship to the EU.", questions=["do you ship abroad"])]
    with Store(tmp_path / "db.sqlite3", salt="s") as store:
        for answer_id, text, used_context in (("a1", "how long does shipping take to Berlin", False),
                                              ("a2", "and to Spain?", True)):
            store.record_answer(Answer(answer_id, text, "2-4 days.", "shipping-times", 0.9, "neutral",
                                       {"negative": 0.1, "neutral": 0.8, "positive": 0.1}, [], False, "v1",
                                       "shipping-times", used_context), user="U1")
            store.record_vote(answer_id, "up", user="U1", origin="button")
        rows = store.feedback_since()
    assert [r["used_context"] for r in rows] == [False, True]
    data = build_feedback_data(rows, docs, config=RetrainSettings())
    assert [q.text for q in data.labelled] == ["how long does shipping take to Berlin"]
    assert data.counts["skipped_followup"] == 1
