"""The nightly retrain with a brought encoder of another shape than the builtin MiniLM: a 2-layer
DistilBERT (hidden 96, `transformer.layer` naming, no token_type_ids) trained with LoRA, and a 2-layer
BERT of hidden size 768 trained in full, each with its lower layer frozen (retrain_trainable_layers=1).
Both go through `csbot ingest`, stored votes and `python training/retrain.py --json` as cron runs it;
the gate gives its verdict and the served version answers `csbot ask` afterwards. Random models: the
plumbing and the frozen / trained layers are checked, not accuracy (the verdicts are those of these
seeded runs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import FAST, good_feedback, write_kb

from training.run_state import EXIT_PROMOTED, EXIT_REJECTED

REPO = Path(__file__).resolve().parents[2]
# No validation split: the stages keep what they trained (early stopping would restore the start on
# these random models), so the saved encoder shows which layers training changed.
RETRAIN = {**FAST, "trainable_layers": 1, "validation_fraction": 0.0, "keep_rejected": True}


def _run(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=str(REPO), env=env, capture_output=True, text=True, timeout=900)


def _ingest_vote_retrain(tmp_path: Path, encoder: Path, method: str):
    """(settings, the retrain's JSON report, its exit code, the champion before)."""
    from core.settings import Settings
    from serving.versions import VersionStore
    from store import Store

    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CSBOT_")}
    env.update({"CSBOT_HOME": str(home), "CSBOT_ENCODER": str(encoder), "CSBOT_FINETUNE_EPOCHS": "0"})
    ingest = _run(["-m", "bot.cli", "ingest", str(write_kb(tmp_path / "kb.jsonl")), "--json"], env)
    assert ingest.returncode == 0, ingest.stderr[-3000:]
    settings = Settings.load(env={}, home=home)
    before = VersionStore(settings.models_dir).champion_name()
    with Store.from_settings(settings) as store:
        good_feedback(store)
    env.update({f"CSBOT_RETRAIN_{k.upper()}": str(v) for k, v in {**RETRAIN, "method": method}.items()})
    run = _run([str(REPO / "training" / "retrain.py"), "--json"], env)
    assert run.returncode in (EXIT_PROMOTED, EXIT_REJECTED), run.stderr[-3000:]
    ask = _run(["-m", "bot.cli", "ask", "how do I get a refund", "--json"], env)
    assert ask.returncode == 0, ask.stderr[-3000:]
    return settings, json.loads(run.stdout), run.returncode, before, json.loads(ask.stdout)


def _weights(folder: str) -> dict:
    from models.loading import inner_model, load_sentence_transformer

    model = inner_model(load_sentence_transformer(folder, "cpu", cached=False))
    return {name: value.detach().numpy().copy() for name, value in model.state_dict().items()}


def _changed(base: dict, tuned: dict, prefix: str) -> list[bool]:
    names = [name for name in base if name.startswith(prefix)]
    assert names, prefix
    return [not np.array_equal(base[name], tuned[name]) for name in names]


@pytest.mark.slow
def test_a_brought_distilbert_is_retrained_with_lora_and_promoted(tmp_path):
    from serving.versions import VersionStore
    from tests.test_encoder_brought import tiny_distilbert

    folder = tiny_distilbert(tmp_path / "distil")
    settings, report, code, before, answer = _ingest_vote_retrain(tmp_path, folder, "lora")
    training = report["training"]
    assert training["method"] == "lora" and training["first_trainable_layer"] == 1
    assert code == EXIT_PROMOTED and report["decision"]["promote"] and report["decision"]["reasons"] == [], report["message"]
    versions = VersionStore(settings.models_dir)
    new = versions.champion()
    assert new.name == report["candidate"] != before
    base, tuned = _weights(str(folder)), _weights(new.encoder_name)
    assert set(tuned) == set(base)  # the adapters were merged: a plain DistilBERT again
    assert not any(_changed(base, tuned, "embeddings.")) and not any(_changed(base, tuned, "transformer.layer.0."))
    assert any(_changed(base, tuned, "transformer.layer.1.attention.q_lin."))  # LoRA reached DistilBERT's names
    assert answer["model_version"] == new.name and answer["intent"] == "refund" and answer["sources"]


@pytest.mark.slow
def test_a_brought_768_wide_bert_is_retrained_in_full_and_the_gate_rejects_it(tmp_path):
    from serving.versions import VersionStore
    from tests.test_encoder_brought import tiny_bert768

    folder = tiny_bert768(tmp_path / "bert768")
    settings, report, code, before, answer = _ingest_vote_retrain(tmp_path, folder, "full")
    training = report["training"]
    assert training["method"] == "full" and training["first_trainable_layer"] == 1
    assert code == EXIT_REJECTED and not report["decision"]["promote"], report["message"]
    failed = {check["rule"] for check in report["decision"]["checks"] if not check["passed"]}
    assert {"accuracy", "per_intent"} <= failed and report["decision"]["reasons"], report["decision"]
    versions = VersionStore(settings.models_dir)
    assert versions.champion_name() == before  # the champion keeps serving ...
    assert answer["model_version"] == before and answer["sources"]  # ... and answers
    kept = versions.get(report["candidate"])  # keep_rejected: the candidate's encoder can be read
    base, tuned = _weights(str(folder)), _weights(kept.encoder_name)
    assert not any(_changed(base, tuned, "embeddings.")) and not any(_changed(base, tuned, "encoder.layer.0."))
    assert all(_changed(base, tuned, "encoder.layer.1.attention.self.query."))
    assert tuned["embeddings.word_embeddings.weight"].shape[1] == 768
