"""One writer of the model store at a time (training/lock.py): two ingests started together both land,
a writer waits for the lock and then succeeds or gives up with one line, the champion pointer is a
compare-and-set, and a retrain whose champion changed while it trained does not promote over it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from serving.versions import VersionError, VersionStore
from training.lock import LockBusy, RetrainLock, WriterLock, waiting_line

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "bot.cli"]


def article(folder: Path, slug: str, title: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{slug}.md").write_text(f"# {title}\n\n{body}\n", encoding="utf-8")
    return folder


def served_articles(home: Path) -> set[str]:
    result = subprocess.run(CLI + ["intents", "--json"], env={**os.environ, "CSBOT_HOME": str(home)},
                            capture_output=True, text=True, timeout=300, cwd=str(home.parent))
    assert result.returncode == 0, result.stderr
    return {a["id"] for row in json.loads(result.stdout)["intents"] for a in row["articles"]}


def read_until(stream, text: str) -> list[str]:
    """Lines of `stream` up to the first that contains `text` (fails if the stream ends first)."""
    seen = []
    for line in stream:
        seen.append(line)
        if text in line:
            return seen
    pytest.fail(f"never printed {text!r}; its output ended with:\n{''.join(seen[-30:])}")


def meta_only_store(root: Path, n: int) -> tuple[VersionStore, list[str]]:
    """Committed versions holding only their metadata: enough for the champion pointer."""
    versions = VersionStore(root)
    names = []
    for i in range(n):
        names.append(versions.draft().commit({"reason": f"test {i}", "parent": names[-1] if names else None}).name)
    return versions, names


# ----- the champion pointer and the lock ----------------------------------------------------------

def test_promote_refuses_a_stale_expectation(tmp_path):
    versions, (a, b, c) = meta_only_store(tmp_path / "models", 3)
    versions.promote(a, expect_champion=None)  # the first promotion: there was no champion
    with pytest.raises(VersionError, match="no champion|not none"):
        versions.promote(b, expect_champion=None)
    versions.promote(b, reason="built on a", expect_champion=a)
    history = versions.history()
    with pytest.raises(VersionError, match=f"the champion changed .*it is {b}, not {a}; {c} was not promoted"):
        versions.promote(c, reason="built on a, too", expect_champion=a)
    assert versions.champion_name() == b and versions.history() == history
    versions.promote(c)  # no expectation: a manual promote serves it whatever the champion is
    assert versions.champion_name() == c
    assert versions.rollback().name == b  # rollback expects the champion it read


def test_a_second_writer_waits_is_told_who_holds_the_lock_and_gives_up(tmp_path):
    told = []
    with WriterLock(tmp_path, "ingest") as first:
        assert first.holder()["what"] == "ingest" and first.holder()["pid"] == os.getpid()
        with RetrainLock(tmp_path):  # a separate file: a retrain's lock does not block writers
            pass
        with pytest.raises(LockBusy) as busy:
            WriterLock(tmp_path, "forget").acquire(wait=True, timeout=0.3, on_wait=told.append)
    assert [h["pid"] for h in told] == [os.getpid()]
    assert waiting_line(told[0]).startswith(f"waiting for another ingest (pid {os.getpid()}, started 20")
    message = str(busy.value)
    assert message.startswith(f"another ingest (pid {os.getpid()}, started ") and "after 0.3s of waiting" in message
    assert "\n" not in message and "writer_wait_seconds" in message
    with WriterLock(tmp_path, "forget").acquire(wait=True, timeout=0.3, on_wait=told.append):
        assert len(told) == 1  # free: taken at once, nobody told to wait


def test_models_promote_waits_for_the_writer_lock(tmp_path):
    home = tmp_path / "home"
    versions, (a, b) = meta_only_store(home / "models", 2)
    versions.promote(a)
    env = {**os.environ, "CSBOT_HOME": str(home), "CSBOT_WRITER_WAIT_SECONDS": "0"}
    with WriterLock(home, "ingest"):
        refused = subprocess.run(CLI + ["models", "promote", b], env=env, capture_output=True, text=True,
                                 timeout=300, cwd=str(tmp_path))
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.startswith(f"csbot models: error: another ingest (pid {os.getpid()}, started ")
    assert len(refused.stderr.strip().splitlines()) == 1
    assert versions.champion_name() == a
    done = subprocess.run(CLI + ["models", "promote", b], env=env, capture_output=True, text=True, timeout=300,
                          cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert versions.champion_name() == b


# ----- ingest through the CLI ---------------------------------------------------------------------

@pytest.mark.slow
def test_two_ingests_at_once_serve_both_articles(home, tmp_path):
    """Both ingests start while a writer holds the lock, so both have parsed and both wait to read the
    same champion; when it is released, one promotes, the other merges into that version."""
    extra_a = article(tmp_path / "extraA", "gift-wrapping", "Gift wrapping",
                      "Tick 'Gift wrap' at checkout; we wrap the parcel in recycled paper for 3 euros.")
    extra_b = article(tmp_path / "extraB", "loyalty-points", "Loyalty points",
                      "Every euro you spend earns one point; 100 points give a 5 euro voucher.")
    versions = VersionStore(home / "models")
    before = versions.champion_name()
    procs = []
    with WriterLock(home, "ingest"):
        try:
            for extra in (extra_a, extra_b):
                procs.append(subprocess.Popen(CLI + ["ingest", str(extra), "--json"], stdout=subprocess.PIPE,
                                              stderr=subprocess.PIPE, text=True, cwd=str(tmp_path)))
            for proc in procs:
                waited = read_until(proc.stderr, "waiting for another")
                assert waited[-1].strip() == waiting_line(WriterLock(home, "x").holder())
        except BaseException:
            for proc in procs:
                proc.kill()
            raise
    results = [proc.communicate(timeout=600) for proc in procs]
    for proc, (out, err) in zip(procs, results):
        assert proc.returncode == 0, err
    reports = [json.loads(out) for out, _ in results]
    assert sorted(r["added"][0] for r in reports) == ["gift-wrapping", "loyalty-points"]
    assert all(r["built"] and len(r["added"]) == 1 for r in reports)
    champion = versions.champion_name()
    assert champion in {r["version"] for r in reports} and before != champion
    # The second promotion was built on the first: nothing was promoted over a version it did not read.
    first, second = sorted(reports, key=lambda r: r["documents"])
    assert second["documents"] == first["documents"] + 1 and second["version"] == champion
    assert versions.get(champion).parent == first["version"]
    assert {"gift-wrapping", "loyalty-points"} <= served_articles(home)


@pytest.mark.slow
def test_ingest_gives_up_after_writer_wait_seconds_with_one_line(home, tmp_path):
    extra = article(tmp_path / "extra", "gift-wrapping", "Gift wrapping", "We wrap parcels for 3 euros.")
    versions = VersionStore(home / "models")
    names, champion = versions.names(), versions.champion_name()
    env = {**os.environ, "CSBOT_WRITER_WAIT_SECONDS": "0.5"}
    with WriterLock(home, "forget"):
        result = subprocess.run(CLI + ["ingest", str(extra)], env=env, capture_output=True, text=True, timeout=300,
                                cwd=str(tmp_path))
    assert result.returncode == 2 and result.stdout == ""
    waiting, error = result.stderr.strip().splitlines()
    assert waiting.startswith(f"waiting for another forget (pid {os.getpid()}, started ") and waiting.endswith("finish…")
    assert error.startswith(f"csbot ingest: error: another forget (pid {os.getpid()}, started ")
    assert "after 0.5s of waiting" in error
    assert versions.names() == names and versions.champion_name() == champion
    assert "gift-wrapping" not in served_articles(home)


# ----- the retrain's promotion --------------------------------------------------------------------

@pytest.mark.slow
def test_a_retrain_does_not_promote_over_a_champion_that_changed_while_it_trained(tiny_settings, tmp_path):
    """The retrain trains on V2 while this test holds the writer lock; when the retrain reaches its
    promotion and waits, this test (the other writer) rolls the champion back to V1, then lets go.
    The retrain must build nothing, exit 5 and leave its feedback for the next run."""
    from conftest import FAST, fast_config, good_feedback, write_kb

    from store import Store
    from training.ingest import ingest
    from training.pipeline import retrain
    from training.run_state import EXIT_SUPERSEDED, SUPERSEDED

    home = tiny_settings.home
    versions = VersionStore(tiny_settings.models_dir)
    v1 = versions.champion_name()
    v2 = ingest([write_kb(tmp_path / "kb.jsonl")], tiny_settings.replace(finetune_epochs=0), force=True)["version"]
    with Store.from_settings(tiny_settings) as store:
        n = good_feedback(store)
    names = versions.names()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CSBOT_")}
    env["CSBOT_HOME"] = str(home)
    knobs = {**FAST, "gate_accuracy_tolerance": 1.0, "gate_intent_max_drop": 1.0, "gate_oos_tolerance": 1.0}
    env.update({f"CSBOT_RETRAIN_{k.upper()}": str(v) for k, v in knobs.items()})
    with WriterLock(home, "ingest"):
        proc = subprocess.Popen([sys.executable, str(REPO / "training" / "retrain.py")], env=env, cwd=str(tmp_path),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            read_until(proc.stderr, f"waiting for another ingest (pid {os.getpid()}, started ")
            assert versions.rollback().name == v1  # another writer's promotion, under the lock it holds
        except BaseException:
            proc.kill()
            raise
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == EXIT_SUPERSEDED, out + err
    assert out.startswith(f"not promoted: the champion changed from {v2} to {v1} while this run trained")
    assert versions.champion_name() == v1 and versions.names() == names  # nothing built over it
    with Store.from_settings(tiny_settings) as store:
        run = store.training_runs()[0]
        assert run["status"] == SUPERSEDED and run["data_until"] is None and run["model_version"] == v1
        assert store.feedback_watermark() is None  # the votes are still new to the next run
    again = retrain(tiny_settings, fast_config(), dry_run=True)
    assert again.report["since"] is None and again.report["counts"]["feedback_rows"] == n
