"""The csbot CLI through its real entry point (in-process, and once as a real subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bot.cli import main
from serving.versions import VersionStore
from tests.conftest import DEMO_KB, REPO

pytestmark = pytest.mark.slow


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_ask_json_prints_one_object_per_question(home, tmp_path, capsys):
    questions = tmp_path / "q.txt"
    questions.write_text("how do I reset my password\n\nwhat's the weather in Paris tomorrow\n")
    code, out, _ = run(capsys, "ask", "--file", str(questions), "--json")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["intent"] for r in rows] == ["reset_password", "out_of_scope"]
    assert rows[1]["handoff"] is True and rows[0]["handoff"] is False
    assert rows[0]["sources"][0]["doc_id"] == "reset-password"


def test_ask_text_output_shows_sources(home, capsys):
    code, out, _ = run(capsys, "ask", "Can I get a refund for something I bought?")
    assert code == 0 and "Sources:" in out and "help.parcelly.example" in out


def test_reingest_is_idempotent_and_prune_drops_removed_articles(home, tmp_path, capsys):
    versions = VersionStore(home / "models")
    before = versions.champion_name()
    code, out, _ = run(capsys, "ingest", str(DEMO_KB), "--json")
    report = json.loads(out)
    assert code == 0 and report["built"] is False and report["version"] == before
    extra = tmp_path / "extra.jsonl"
    extra.write_text(json.dumps({"id": "loyalty-points", "title": "Loyalty points",
                                 "answer": "You earn 1 point per euro; 100 points = 5 euro off.",
                                 "questions": ["how do loyalty points work", "what are my points worth"]}) + "\n")
    code, out, _ = run(capsys, "ingest", str(extra), "--json")
    report = json.loads(out)
    assert report["built"] and report["added"] == ["loyalty-points"] and report["documents"] == 37
    assert versions.champion().parent == before
    code, out, _ = run(capsys, "ask", "what are loyalty points worth?", "--json")
    assert json.loads(out)["doc_id"] == "loyalty-points"
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.pdf").write_bytes(b"%PDF")
    code, _, err = run(capsys, "ingest", str(empty), "--prune")
    assert code == 2 and "no knowledge-base articles in" in err and "notes.pdf" in err  # the champion stays
    assert VersionStore(home / "models").champion().meta["counts"]["documents"] == 37
    code, out, _ = run(capsys, "ingest", str(extra), "--prune", "--json")
    report = json.loads(out)  # a knowledge base of one article is fine
    assert report["documents"] == 1 and len(report["removed"]) == 36 and report["built"]
    code, out, _ = run(capsys, "ask", "what are loyalty points worth?", "--json")
    assert json.loads(out)["doc_id"] == "loyalty-points"
    two = tmp_path / "two.md"
    two.write_text("# Gift cards\n\nGift cards never expire and work on every order.\n")
    code, out, _ = run(capsys, "ingest", str(extra), str(two), "--prune", "--json")
    report = json.loads(out)
    assert report["documents"] == 2 and report["removed"] == [] and report["added"] == ["two"]


def test_corrupt_kb_file_is_a_clear_error_and_keeps_the_champion(home, tmp_path, capsys):
    versions = VersionStore(home / "models")
    before = versions.champion_name()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "title": "X", "answer": "fine"}\n{"id": "y", "title": \n')
    code, _, err = run(capsys, "ingest", str(bad))
    assert code == 2 and f"{bad}:2: invalid JSON" in err
    assert versions.champion_name() == before and len(versions.names()) == 1
    assert not list((home / "models").glob(".building-*"))


def test_eval_json_has_the_documented_keys_and_scores_the_demo_set(home, capsys):
    code, out, _ = run(capsys, "eval", str(REPO / "demo" / "eval.jsonl"), "--json")
    report = json.loads(out)
    assert code == 0
    for key in ("n", "accuracy", "macro_f1", "per_class", "oos_recall"):
        assert key in report
    assert report["n"] == 124 and report["accuracy"] > 0.75 and report["oos_recall"] >= 0.6
    assert report["per_class"]["reset_password"]["support"] == 3
    assert report["sentiment"]["n"] == 124


def test_eval_rejects_a_bad_row_with_its_line(home, tmp_path, capsys):
    path = tmp_path / "e.jsonl"
    path.write_text('{"text": "hi", "intent": "x"}\n{"intent": "y"}\n')
    code, _, err = run(capsys, "eval", str(path))
    assert code == 2 and f"{path}:2" in err


def test_missing_model_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CSBOT_HOME", str(tmp_path / "empty-home"))
    code, _, err = run(capsys, "ask", "hello")
    assert code == 2 and "csbot ingest" in err
    monkeypatch.setenv("CSBOT_HOME", str(tmp_path / "h2"))
    monkeypatch.setenv("CSBOT_ENCODER", str(tmp_path / "no-such-model"))
    code, _, err = run(capsys, "ingest", str(DEMO_KB))
    assert code == 2 and "no-such-model" in err and "does not exist" in err


def test_models_list_promote_and_rollback(home, tmp_path, capsys):
    versions = VersionStore(home / "models")
    first = versions.champion_name()
    extra = tmp_path / "x.md"
    extra.write_text("# Gift wrapping\n\nWe wrap any order for 2 euro; choose it at checkout.\n")
    run(capsys, "ingest", str(extra))
    second = versions.champion_name()
    assert second != first
    code, out, _ = run(capsys, "models", "list", "--json")
    listing = json.loads(out)
    assert listing["champion"] == second and {v["version"] for v in listing["versions"]} == {first, second}
    assert run(capsys, "models", "rollback")[0] == 0 and versions.champion_name() == first
    assert run(capsys, "models", "promote", second)[0] == 0 and versions.champion_name() == second
    code, _, err = run(capsys, "models", "promote", "v-nope")
    assert code == 2 and "no model version" in err


def test_console_script_runs_as_a_subprocess(home):
    env = {**os.environ, "CSBOT_HOME": str(home)}
    proc = subprocess.run([sys.executable, "-m", "bot.cli", "sentiment", "I love this, thanks!", "--json"],
                          capture_output=True, text=True, env=env, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["sentiment"] == "positive" and set(data["scores"]) == {"negative", "neutral", "positive"}
