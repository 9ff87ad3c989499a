"""The retrain end to end on a real store and real model versions: no-ops, dry run, promotion with hot
reload and rollback, rejection of poisoned feedback, the lock, and recovery from SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import FAST, good_feedback, poisoned_feedback, record

from models.runtimes import choose_runtime
from training.pipeline import retrain
from training.run_state import EXIT_NOTHING, EXIT_PROMOTED, EXIT_REJECTED, EXIT_WAITING

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "training" / "retrain.py"
SENTENCE = "This is the third time my parcel is late, I am furious!"


def config(**kw):
    from conftest import fast_config

    return fast_config(**kw)


def open_store(settings):
    from store import Store

    return Store.from_settings(settings)


def script_env(home: Path, **retrain) -> dict:
    """Only CSBOT_HOME (plus the fast retrain knobs), as cron would run it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CSBOT_")}
    env["CSBOT_HOME"] = str(home)
    for key, value in {**FAST, **retrain}.items():
        env[f"CSBOT_RETRAIN_{key.upper()}"] = str(value)
    return env


def run_script(home: Path, *args, **retrain) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=str(home.parent), env=script_env(home, **retrain),
                          capture_output=True, text=True, timeout=600)


def champion(settings) -> str:
    from serving.versions import VersionStore

    return VersionStore(settings.models_dir).champion_name()


@pytest.mark.slow
def test_the_cron_entry_runs_unattended_on_a_fresh_install(tmp_path):
    """deploy/csbot-retrain.cron's command, with this checkout and a new CSBOT_HOME: exit 0 and a message."""
    line = next(l for l in (REPO / "deploy" / "csbot-retrain.cron").read_text().splitlines()
                if l.strip() and not l.lstrip().startswith("#"))
    command = line.split(None, 5)[5]
    home = tmp_path / "fresh" / "csbot-home"
    command = (command.replace("/opt/csbot", str(REPO)).replace("/var/lib/csbot", str(home))
               .replace(".venv/bin/python", sys.executable))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CSBOT_")}
    result = subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "nothing to do: the feedback table is empty"


def test_empty_feedback_table_is_a_noop(tiny_settings):
    outcome = retrain(tiny_settings, config())
    assert (outcome.status, outcome.exit_code) == ("nothing-to-do", 0)
    assert "feedback table is empty" in outcome.message
    with open_store(tiny_settings) as store:
        runs = store.training_runs()
    assert [r["status"] for r in runs] == ["nothing-to-do"] and runs[0]["data_until"] is None


def test_too_little_new_feedback_waits(tiny_settings):
    before = champion(tiny_settings)
    with open_store(tiny_settings) as store:
        record(store, "password recovery", "reset_password", "u1", "up")
    dry = retrain(tiny_settings, config(), dry_run=True)  # the dry run makes the same check, with the same code
    assert dry.exit_code == EXIT_WAITING and dry.report["would"] == "not-learned"
    outcome = retrain(tiny_settings, config())
    assert outcome.exit_code == EXIT_WAITING and "fewer than min_new_examples=5" in outcome.message
    assert "4 more labelled votes" in outcome.message
    assert champion(tiny_settings) == before
    with open_store(tiny_settings) as store:
        assert [r["status"] for r in store.training_runs()] == ["not-learned"]  # the dry run recorded nothing


def test_lock_held_by_another_run_means_nothing_to_do(tiny_settings):
    from training.lock import RetrainLock

    with RetrainLock(tiny_settings.home):
        outcome = retrain(tiny_settings, config())
    assert outcome.exit_code == EXIT_NOTHING and "another retrain is running" in outcome.message


def test_dry_run_builds_datasets_and_writes_nothing(tiny_settings, capsys):
    from serving.versions import VersionStore

    with open_store(tiny_settings) as store:
        good_feedback(store)
    versions_before = VersionStore(tiny_settings.models_dir).names()
    outcome = retrain(tiny_settings, config(), dry_run=True)
    assert (outcome.status, outcome.exit_code) == ("dry-run", 0)
    counts = outcome.report["counts"]
    assert counts["positives"] == 36 and counts["corrections"] == 12 and counts["hard_negatives"] == 12
    assert outcome.report["sample"]["labelled"]
    assert VersionStore(tiny_settings.models_dir).names() == versions_before
    assert not (tiny_settings.home / "heldout").exists() and not (tiny_settings.home / "reports").exists()
    with open_store(tiny_settings) as store:
        assert store.training_runs() == []


def test_dry_run_holds_out_a_share_of_the_new_sentiment_corrections_in_memory(tiny_settings):
    from training.gate import is_sentiment_heldout

    texts = [f"RMA approved for order {i}" for i in range(40)]
    with open_store(tiny_settings) as store:
        good_feedback(store)
        for i, text in enumerate(texts):
            store.record_sentiment_correction("C1", f"{1000 + i}.0001", f"u{i % 5}", "positive", text)
    outcome = retrain(tiny_settings, config(), dry_run=True)
    counts = outcome.report["counts"]
    assert counts["sentiment_corrections"] == 40
    assert counts["heldout_added_sentiment"] == sum(map(is_sentiment_heldout, texts)) > 0
    assert not (tiny_settings.home / "heldout").exists()  # a dry run freezes nothing


def test_csbot_retrain_command_is_the_same_code(tiny_settings, capsys):
    import argparse

    from bot import cli

    with open_store(tiny_settings) as store:
        good_feedback(store)
    if "bot.commands.retrain" in cli.COMMAND_MODULES:
        code = cli.main(["retrain", "--dry-run", "--json"])
    else:  # until the CLI lists the command: the same registration
        from bot.commands import retrain as command

        parser = argparse.ArgumentParser()
        command.register(parser.add_subparsers())
        args = parser.parse_args(["retrain", "--dry-run", "--json"])
        code = args.func(args)
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["status"] == "dry-run" and out["counts"]["labelled"] == 48


@pytest.mark.slow
def test_promotion_hot_reload_sentiment_invariant_and_rollback(tiny_settings):
    from serving.engine import Engine
    from serving.versions import VersionStore

    old = champion(tiny_settings)
    engine = Engine(tiny_settings, reload_check_seconds=0.0)
    old_sentiment = engine.sentiment([SENTENCE])[0][1]
    with open_store(tiny_settings) as store:
        n = good_feedback(store)
    errors, served = [], []
    stop = threading.Event()

    def keep_answering():  # a running bot: it must switch without a restart and without dropping a message
        while not stop.is_set():
            try:
                served.append(engine.answer("has my order shipped").model_version)
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)
            time.sleep(0.05)

    worker = threading.Thread(target=keep_answering)
    worker.start()
    try:
        outcome = retrain(tiny_settings, config())
    finally:
        time.sleep(0.3)
        stop.set()
        worker.join()
    assert outcome.exit_code == EXIT_PROMOTED, outcome.message
    new = outcome.report["candidate"]
    assert champion(tiny_settings) == new != old
    assert not errors and set(served) <= {old, new} and served[-1] == new
    assert engine.model_version == new

    # Metadata, the training-runs table and the report.
    versions = VersionStore(tiny_settings.models_dir)
    meta = versions.get(new).meta
    # The runtime that serves it was chosen on the gate's held-out rows (fp32 ONNX against int8).
    runtime = meta["runtime"]
    assert runtime["reason"].startswith("on the retrain's held-out set: ")
    heldout = runtime["scores"]["heldout"]
    assert 0 <= heldout["onnx-int8_accuracy"] <= 1 and 0 <= heldout["onnx_accuracy"] <= 1
    # The two variants' rows were paired for the sign test (docs/benchmarks.md, the gate's rule): the
    # recorded figures, discordant counts included, give the recorded choice and reason under the rule.
    discordant = (heldout["only_fp32_right"], heldout["only_int8_right"])
    assert all(type(n) is int for n in discordant), heldout
    chosen, why = choose_runtime(heldout["onnx_accuracy"], heldout["onnx-int8_accuracy"], heldout["int8_cosine_p5"],
                                 margin=tiny_settings.int8_margin, cosine_floor=tiny_settings.int8_cosine_floor,
                                 discordant=discordant)
    assert (runtime["served"], runtime["reason"]) == (chosen, f"on the retrain's held-out set: {why}"), heldout
    assert outcome.report["runtime"]["served"] == runtime["served"] == engine.runtime
    assert meta["parent"] == old and meta["reason"] == "retrain" and meta["code_revision"]
    assert meta["metrics"]["gate"] == "passed" and meta["metrics"]["heldout"]["accuracy"] is not None
    # A deterministic share of the 48 labelled questions (four users agree on every intent) is frozen
    # into the held-out set and never trained on; the rest are the version's extra examples.
    held = meta["feedback_counts"]["heldout_added_feedback"]
    assert 0 < held < 48 and meta["counts"]["extra_examples"] == 48 - held and meta["feedback_counts"]["labelled"] == 48
    with open_store(tiny_settings) as store:
        run = store.training_runs()[0]
    assert run["status"] == "promoted" and run["n_feedback"] == n and run["data_until"]
    assert run["metrics"]["champion"]["accuracy"] is not None and run["metrics"]["candidate"]["accuracy"] is not None
    assert run["decision"]["promote"] is True and run["counts"]["labelled"] == 48
    assert Path(run["report_json"]).is_file() and "**Outcome: promoted**" in Path(run["report_md"]).read_text()
    assert (tiny_settings.home / "reports" / "retrain-latest.json").is_file()

    # The sentiment head reads frozen layers: the same scores, and the frozen weights are bit-identical.
    new_sentiment = engine.sentiment([SENTENCE])[0][1]
    for label in old_sentiment:
        assert new_sentiment[label] == pytest.approx(old_sentiment[label], abs=1e-6)
    _assert_frozen_layers_identical(versions.get(old).encoder_name, versions.get(new).encoder_name)

    # Nothing new since: the next run has nothing to do.
    again = retrain(tiny_settings, config())
    assert again.exit_code == EXIT_NOTHING and "no new feedback" in again.message

    # Rollback (what `csbot models rollback` runs): the engine follows.
    from bot.commands import models as models_command

    class Args:
        action, version, json, keep, dry_run = "rollback", None, False, None, False

    assert models_command.run(Args()) == 0
    assert champion(tiny_settings) == old
    assert engine.answer("has my order shipped").model_version == old


def _assert_frozen_layers_identical(base: str, tuned: str) -> None:
    from models.loading import load_sentence_transformer

    a = load_sentence_transformer(base, "cpu", cached=False)[0].model.state_dict()
    b = load_sentence_transformer(tuned, "cpu", cached=False)[0].model.state_dict()
    frozen = [k for k in a if k.startswith("embeddings.") or (k.startswith("encoder.layer.") and int(k.split(".")[2]) < 4)]
    assert frozen and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in frozen)


@pytest.mark.slow
def test_one_user_flipping_labels_is_rejected_by_the_gate(tiny_settings):
    """One user relabels refund / tracking questions as "cancel subscription" (48 votes). The per-user
    cap (unit-tested in test_feedback_data.py) is raised here so that all of it gets through: the gate
    alone must see the damage on the held-out set and reject the candidate."""
    from serving.versions import VersionStore

    old = champion(tiny_settings)
    names = VersionStore(tiny_settings.models_dir).names()
    with open_store(tiny_settings) as store:
        poisoned_feedback(store)
    outcome = retrain(tiny_settings, config(user_share_floor=100))
    assert outcome.exit_code == EXIT_REJECTED, outcome.message
    assert champion(tiny_settings) == old and VersionStore(tiny_settings.models_dir).names() == names
    assert outcome.report["candidate"] is None and outcome.report["decision"]["reasons"]
    assert outcome.report["counts"]["corrections"] == 48
    assert outcome.report["counts"]["heldout_added_feedback"] == 0  # one user's word never enters the held-out set
    with open_store(tiny_settings) as store:
        run = store.training_runs()[0]
    assert run["status"] == "rejected" and run["decision"]["promote"] is False and run["data_until"]
    assert run["metrics"]["candidate"]["accuracy"] is not None and run["decision"]["reasons"]
    assert Path(run["report_md"]).is_file()
    # The poisoned votes are used up: they are not retried every night.
    assert retrain(tiny_settings, config()).exit_code == EXIT_NOTHING


@pytest.mark.slow
def test_colluding_users_among_honest_votes_are_ignored(tiny_settings):
    """Three users 👎 every answer and relabel it; honest users 👎 about one answer in four. The
    three are outlier voters: their votes are dropped and the honest feedback is learned."""
    from conftest import USER_QUESTIONS

    from serving.versions import VersionStore

    with open_store(tiny_settings) as store:
        good_feedback(store)
        poisoned_feedback(store, helpers=("sock1", "sock2"))
    # The gate is opened wide: this test is about what the served version learns, not the verdict.
    outcome = retrain(tiny_settings, config(gate_accuracy_tolerance=1.0, gate_intent_max_drop=1.0,
                                            gate_oos_tolerance=1.0))
    assert outcome.report["counts"]["suspicious_users"] == 3
    assert outcome.report["counts"]["labelled"] == 48  # exactly the honest examples
    assert outcome.exit_code == EXIT_PROMOTED, outcome.message
    examples = VersionStore(tiny_settings.models_dir).get(champion(tiny_settings)).examples()
    flipped = {q for intent in ("refund", "track_order") for q in USER_QUESTIONS[intent]}
    assert examples and not [e for e in examples if e.text in flipped and e.intent == "cancel_subscription"]


@pytest.mark.slow
def test_sigkill_during_training_and_build_leaves_the_champion_serving(tiny_settings):
    from serving.engine import Engine

    home = tiny_settings.home
    old = champion(tiny_settings)
    with open_store(tiny_settings) as store:
        good_feedback(store)

    def start(**retrain_knobs):
        return subprocess.Popen([sys.executable, str(SCRIPT)], cwd=str(home.parent), env=script_env(home, **retrain_knobs),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def kill_when(proc, condition, what):
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if condition():
                proc.send_signal(signal.SIGKILL)
                proc.wait(30)
                return
            time.sleep(0.02)
        proc.kill()
        pytest.fail(f"the retrain never reached {what}: {proc.stdout.read()[-3000:]}")

    def log_says(text):
        return lambda: any(text in p.read_text(errors="replace") for p in (home / "logs").glob("retrain-*.log"))

    # 1. Killed in the middle of encoder training.
    proc = start(max_steps=400)
    kill_when(proc, log_says("stage intent:"), "training")
    assert list((home / "work").iterdir())  # it left its work folder behind
    assert champion(tiny_settings) == old
    assert Engine(tiny_settings).answer("where is my order").model_version == old

    # 2. Killed while building the candidate version (a .building-* folder exists).
    models = tiny_settings.models_dir
    proc = start()
    kill_when(proc, lambda: any(models.glob(".building-*")), "the version build")
    assert champion(tiny_settings) == old
    assert Engine(tiny_settings).answer("where is my order").model_version == old

    # 3. The next run starts clean and succeeds.
    result = subprocess.run([sys.executable, str(SCRIPT)], cwd=str(home.parent), env=script_env(home),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == EXIT_PROMOTED, result.stdout + result.stderr
    assert "promoted" in result.stdout
    assert not list(models.glob(".building-*"))
    assert not (home / "work").exists() or not list((home / "work").iterdir())
    assert champion(tiny_settings) != old
    assert Engine(tiny_settings).answer("where is my order").model_version == champion(tiny_settings)
