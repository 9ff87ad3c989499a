"""The nightly retrain with a brought sentiment classifier (models/sentiment_brought.py) serving: the
sentiment corrections reach its final linear layer through the gate, and the new champion carries the
brought model (the updated one when the gate kept it), exported and judged again."""

from __future__ import annotations

import os

import pytest
from conftest import fast_config, good_feedback, write_kb

from training.pipeline import retrain
from training.run_state import EXIT_PROMOTED


@pytest.mark.slow
def test_a_retrain_updates_and_carries_a_brought_classifier(tmp_path, monkeypatch):
    from core.settings import Settings
    from models.sentiment_brought import read_brought
    from models.sentiment_model import FineTunedSentiment
    from serving.versions import VersionStore
    from store import Store
    from tests.test_sentiment_brought import NAMED, tiny_classifier
    from training.ingest import ingest

    for key in [k for k in os.environ if k.startswith("CSBOT_RETRAIN_")]:
        monkeypatch.delenv(key)
    folder = tiny_classifier(tmp_path / "named", NAMED)
    settings = Settings.load(env={}, home=tmp_path / "home", sentiment_model=str(folder), finetune_epochs=0)
    ingest([write_kb(tmp_path / "kb.jsonl")], settings)
    versions = VersionStore(settings.models_dir)
    before = versions.champion()
    texts = [f"RMA approved for order {i}" for i in range(40)]
    said = {label for label, _ in FineTunedSentiment.load(before.sentiment_model_path).predict(texts)}
    wanted = next(label for label in ("positive", "negative", "neutral") if label not in said)
    with Store.from_settings(settings) as store:
        good_feedback(store)
        for i, text in enumerate(texts):
            store.record_sentiment_correction("C1", f"{1000 + i}.0001", f"u{i % 5}", wanted, text)

    outcome = retrain(settings, fast_config(sentiment_min_corrections=10))
    assert outcome.exit_code == EXIT_PROMOTED, outcome.message
    report = outcome.report["sentiment"]
    assert report["model"] == "fine-tuned" and report["status"] in ("updated", "rejected"), report
    assert report["train"] + report["heldout"] >= 30
    after = versions.champion()
    assert after.name != before.name
    record = after.meta["sentiment"]
    assert record["brought"]["source"] == str(folder.resolve()) and record["served"] in ("onnx-int8", "onnx")
    (old_meta, old_head), (new_meta, new_head) = read_brought(before.sentiment_model_path), read_brought(after.sentiment_model_path)
    if report["status"] == "updated":
        assert report["updated"] == "the final linear layer"
        assert new_meta["updated_from_corrections"] == report["train"]
        assert (new_head["bias"] != old_head["bias"]).any() or (new_head["weight"] != old_head["weight"]).any()
        assert record["export"] == "exported"
    else:  # the gate kept the champion's classifier: carried byte for byte, its export linked
        assert after.sentiment_model_path.read_bytes() == before.sentiment_model_path.read_bytes()
        assert record["export"] == "reused"
