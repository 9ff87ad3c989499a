"""LoRA through a multi-process launcher's single-process form, and the sentiment updates (model and head)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import fast_config, good_feedback

from training.pipeline import retrain
from training.run_state import EXIT_PROMOTED

pytestmark = pytest.mark.slow


def test_lora_under_torchrun_single_process_on_cpu(tiny_settings):
    from serving.versions import VersionStore
    from store import Store

    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.is_file():
        pytest.skip("torchrun is not installed next to this python")
    with Store.from_settings(tiny_settings) as store:
        good_feedback(store)
        for i in range(40):  # sentiment corrections update the sentiment head too
            store.record_sentiment_correction("C1", f"{1000 + i}.0001", f"u{i % 5}", "positive",
                                              f"RMA approved for order {i}")
    launcher = f"{torchrun} --standalone --nproc_per_node=1"
    # The gate is opened wide (this test is about the LoRA run, not the verdict): the candidate serves.
    outcome = retrain(tiny_settings, fast_config(method="lora", launcher=launcher, gate_accuracy_tolerance=1.0,
                                                 gate_intent_max_drop=1.0, gate_oos_tolerance=1.0))
    assert outcome.exit_code == EXIT_PROMOTED, outcome.message
    training = outcome.report["training"]
    assert training["method"] == "lora" and training["launcher"] == launcher
    assert 0 < training["trainable_parameters"] < 500_000  # adapters only
    versions = VersionStore(tiny_settings.models_dir)
    candidate = versions.get(outcome.report["candidate"])
    assert (candidate.encoder_dir / "config.json").is_file()  # merged: a plain model folder
    assert not list(candidate.encoder_dir.glob("adapter_*"))
    sentiment = outcome.report["sentiment"]
    # The champion serves the fine-tuned sentiment model (the default), so the corrections update it.
    assert sentiment["status"] == "updated" and sentiment["model"] == "fine-tuned", sentiment
    parent = versions.get(candidate.parent)
    assert candidate.sentiment_model_path.read_bytes() != parent.sentiment_model_path.read_bytes()
    assert candidate.sentiment_head_path.read_bytes() == parent.sentiment_head_path.read_bytes()
    assert candidate.meta["sentiment"]["artefact_sha256"] != parent.meta["sentiment"]["artefact_sha256"]
    assert candidate.meta["sentiment"]["served"] in ("onnx-int8", "onnx")  # the new artefact exported and judged
    assert candidate.sentiment_onnx_dir is not None


def test_sentiment_head_update_learns_corrections_and_keeps_the_rest(tmp_path):
    from models.encoder import Encoder
    from models.heads import SoftmaxHead
    from models.sentiment import BUILTIN_HEAD as BUILTIN_SENTIMENT_HEAD
    from store import Store
    from training.sentiment_update import update_sentiment_head

    encoder = Encoder("builtin:all-MiniLM-L6-v2", "cpu")
    old = SoftmaxHead.load(BUILTIN_SENTIMENT_HEAD)
    # Domain jargon the shipped head reads as neutral: "RMA approved" is good news here.
    texts = [f"RMA approved for order {i}" for i in range(30)] + [f"the RMA for ticket {i} got approved" for i in range(20)]
    store = Store(tmp_path / "csbot.sqlite3", salt="test")
    for i, text in enumerate(texts):
        store.record_sentiment_correction("C1", f"{1000 + i}.0001", f"u{i % 5}", "positive", text)
    store.record_sentiment_correction("C1", "1000.0001", "troll", "negative", texts[0])
    from conftest import INTENTS, USER_QUESTIONS

    replay = [q for _, _, questions in INTENTS.values() for q in questions] + [q for qs in USER_QUESTIONS.values() for q in qs]
    replay += ["thank you so much, great service!", "this is the worst support ever", "I love the new app",
               "my order arrived broken and nobody answers"]
    out = tmp_path / "sentiment_head.npz"
    summary = update_sentiment_head(store, BUILTIN_SENTIMENT_HEAD, encoder, replay, out,
                                    fast_config(sentiment_min_corrections=10))
    assert summary["status"] == "updated", repr(summary)[-400:]
    assert summary["new_train_accuracy"] > summary["old_train_accuracy"]
    assert summary["replay_agreement"] >= 0.85
    new = SoftmaxHead.load(out)
    assert summary["new_heldout_accuracy"] > summary["old_heldout_accuracy"]  # corrected texts it never saw
    probe = encoder.encode(["this is the worst support ever", "thanks a lot, you were very helpful"])
    assert list(np.argmax(new.predict_proba(probe), 1)) == list(np.argmax(old.predict_proba(probe), 1))


def test_sentiment_update_is_skipped_without_corrections_or_when_off(tmp_path):
    from models.sentiment import BUILTIN_HEAD
    from store import Store
    from training.sentiment_update import update_sentiment_head

    with Store(tmp_path / "csbot.sqlite3", salt="test") as store:
        summary = update_sentiment_head(store, BUILTIN_HEAD, None, [], tmp_path / "x.npz", fast_config())
        assert summary["status"] == "skipped" and "fewer than sentiment_min_corrections" in summary["reason"]
        off = update_sentiment_head(store, BUILTIN_HEAD, None, [], tmp_path / "x.npz", fast_config(sentiment_update=False))
        assert off == {"status": "skipped", "reason": "sentiment_update is off"}
    assert not (tmp_path / "x.npz").exists()
