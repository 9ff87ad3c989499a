"""LoRA through a multi-process launcher's single-process form, and the sentiment-head update."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import fast_config, good_feedback

from training.retrain import EXIT_PROMOTED, EXIT_REJECTED, retrain

pytestmark = pytest.mark.slow


def test_lora_under_torchrun_single_process_on_cpu(tiny_settings):
    from store import Store
    from serving.versions import VersionStore

    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.is_file():
        pytest.skip("torchrun is not installed next to this python")
    with Store.from_settings(tiny_settings) as store:
        good_feedback(store)
        if hasattr(store, "record_sentiment_correction"):  # sentiment corrections update the sentiment head too
            for i in range(40):
                store.record_sentiment_correction("C1", f"{1000 + i}.0001", f"u{i % 5}", "positive",
                                                  f"RMA approved for order {i}")
    launcher = f"{torchrun} --standalone --nproc_per_node=1"
    outcome = retrain(tiny_settings, fast_config(method="lora", launcher=launcher, keep_rejected=True))
    assert outcome.exit_code in (EXIT_PROMOTED, EXIT_REJECTED), outcome.message
    training = outcome.report["training"]
    assert training["method"] == "lora" and training["launcher"] == launcher
    assert 0 < training["trainable_parameters"] < 500_000  # adapters only
    versions = VersionStore(tiny_settings.models_dir)
    candidate = versions.get(outcome.report["candidate"])
    assert (candidate.path / "encoder" / "config.json").is_file()  # merged: a plain model folder
    assert not list((candidate.path / "encoder").glob("adapter_*"))
    sentiment = outcome.report["sentiment"]
    if hasattr(Store, "record_sentiment_correction"):
        assert sentiment["status"] == "updated", sentiment
        old_head = (versions.get(candidate.parent).path / "sentiment_head.npz").read_bytes()
        assert (candidate.path / "sentiment_head.npz").read_bytes() != old_head
    else:
        assert sentiment["status"] == "unavailable"


class FakeStore:
    def __init__(self, rows):
        self.rows = rows

    def sentiment_corrections(self, since=None):
        return list(self.rows)


def test_sentiment_head_update_learns_corrections_and_keeps_the_rest(tmp_path):
    from models.encoder import Encoder
    from models.heads import SoftmaxHead
    from training.build import BUILTIN_SENTIMENT_HEAD
    from training.sentiment_update import update_sentiment_head

    encoder = Encoder("builtin:all-MiniLM-L6-v2", "cpu")
    old = SoftmaxHead.load(BUILTIN_SENTIMENT_HEAD)
    # Domain jargon the shipped head reads as neutral: "RMA approved" is good news here.
    texts = [f"RMA approved for order {i}" for i in range(30)] + [f"the RMA for ticket {i} got approved" for i in range(20)]
    rows = [{"text": t, "label": "positive", "user_hash": f"u{i % 5}", "time": f"2026-01-01T00:00:{i:02d}Z"}
            for i, t in enumerate(texts)]
    rows.append({"text": texts[0], "label": "negative", "user_hash": "troll", "time": "2026-01-02T00:00:00Z"})
    from conftest import INTENTS, USER_QUESTIONS

    replay = [q for _, _, questions in INTENTS.values() for q in questions] + [q for qs in USER_QUESTIONS.values() for q in qs]
    replay += ["thank you so much, great service!", "this is the worst support ever", "I love the new app",
               "my order arrived broken and nobody answers"]
    out = tmp_path / "sentiment_head.npz"
    summary = update_sentiment_head(FakeStore(rows), BUILTIN_SENTIMENT_HEAD, encoder, replay, out,
                                    fast_config(sentiment_min_corrections=10))
    assert summary["status"] == "updated", repr(summary)[-400:]
    assert summary["new_train_accuracy"] > summary["old_train_accuracy"]
    assert summary["replay_agreement"] >= 0.85
    new = SoftmaxHead.load(out)
    assert summary["new_heldout_accuracy"] > summary["old_heldout_accuracy"]  # corrected texts it never saw
    probe = encoder.encode(["this is the worst support ever", "thanks a lot, you were very helpful"])
    assert list(np.argmax(new.predict_proba(probe), 1)) == list(np.argmax(old.predict_proba(probe), 1))


def test_sentiment_update_is_skipped_without_corrections(tmp_path):
    from training.build import BUILTIN_SENTIMENT_HEAD
    from training.sentiment_update import update_sentiment_head

    cfg = fast_config()
    assert update_sentiment_head(object(), BUILTIN_SENTIMENT_HEAD, None, [], tmp_path / "x.npz", cfg)["status"] == "unavailable"
    assert update_sentiment_head(FakeStore([]), BUILTIN_SENTIMENT_HEAD, None, [], tmp_path / "x.npz", cfg)["status"] == "skipped"
