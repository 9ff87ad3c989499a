"""Updating the fine-tuned sentiment model's head (LoRA kept) from people's sentiment corrections."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import INTENTS, USER_QUESTIONS, fast_config

from models.sentiment_model import BUILTIN_ARTEFACT
from training.sentiment_update import update_sentiment_model


@pytest.fixture(autouse=True)
def one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def corrections_store(path, texts, label, *, users=5):
    from store import Store

    store = Store(path, salt="test")
    for i, text in enumerate(texts):
        store.record_sentiment_correction("C1", f"{1000 + i}.0001", f"u{i % users}", label, text)
    return store


@pytest.mark.slow
def test_sentiment_model_update_learns_corrections_keeps_the_lora_and_the_rest(tmp_path):
    from models.sentiment_model import FineTunedSentiment, read_artefact

    before = BUILTIN_ARTEFACT.read_bytes()
    # Domain jargon the shipped model reads as neutral: "RMA approved" is good news here.
    texts = [f"RMA approved for order {i}" for i in range(30)] + [f"the RMA for ticket {i} got approved" for i in range(20)]
    store = corrections_store(tmp_path / "csbot.sqlite3", texts, "positive")
    store.record_sentiment_correction("C1", "1000.0001", "troll", "negative", texts[0])  # a tie: dropped
    replay = [q for _, _, questions in INTENTS.values() for q in questions] + [q for qs in USER_QUESTIONS.values() for q in qs]
    replay += ["thank you so much, great service!", "this is the worst support ever", "I love the new app",
               "my order arrived broken and nobody answers"]
    out = tmp_path / "sentiment_lora.npz"
    summary = update_sentiment_model(store, BUILTIN_ARTEFACT, replay, out, fast_config(sentiment_min_corrections=10))
    assert summary["status"] == "updated", repr(summary)[-400:]
    assert summary["path"] == str(out)
    assert summary["counts"]["conflicts_dropped"] == 1 and summary["train"] + summary["heldout"] == 49
    assert summary["new_train_accuracy"] > summary["old_train_accuracy"]
    assert summary["new_heldout_accuracy"] > summary["old_heldout_accuracy"]  # corrected texts it never saw
    assert summary["replay_agreement"] >= 0.85 and summary["replay_texts"] == len(set(replay))
    assert BUILTIN_ARTEFACT.read_bytes() == before  # the input is never modified

    old_meta, old_lora, old_head = read_artefact(BUILTIN_ARTEFACT)
    new_meta, new_lora, new_head = read_artefact(out)
    assert new_meta["info"] == {**old_meta["info"], "updated_from_corrections": summary["train"]}
    assert {k: v for k, v in new_meta.items() if k != "info"} == {k: v for k, v in old_meta.items() if k != "info"}
    with np.load(BUILTIN_ARTEFACT) as a, np.load(out) as b:  # the LoRA adapter, byte for byte
        lora_keys = sorted(k for k in a.files if k.startswith("lora."))
        assert lora_keys and lora_keys == sorted(k for k in b.files if k.startswith("lora."))
        assert all(a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes() for k in lora_keys)
    assert sorted(new_head) == sorted(old_head)
    assert any(not np.array_equal(new_head[k], old_head[k]) for k in old_head)  # the head moved

    old, new = FineTunedSentiment.load(BUILTIN_ARTEFACT), FineTunedSentiment.load(out)
    assert new.temperature == old.temperature and new.info["updated_from_corrections"] == summary["train"]
    probe = ["this is the worst support ever", "thanks a lot, you were very helpful"]
    assert [label for label, _ in new.predict(probe)] == [label for label, _ in old.predict(probe)] == ["negative", "positive"]
    assert new.predict(["RMA approved for order 77"])[0][0] == "positive"  # a corrected-like text it never saw
    assert old.predict(["RMA approved for order 77"])[0][0] != "positive"


def test_sentiment_model_update_is_skipped_with_too_few_corrections_or_when_off(tmp_path):
    out = tmp_path / "x.npz"
    store = corrections_store(tmp_path / "csbot.sqlite3", [f"RMA approved for order {i}" for i in range(5)], "positive")
    with store:
        few = update_sentiment_model(store, BUILTIN_ARTEFACT, [], out, fast_config())
        assert few["status"] == "skipped" and "fewer than sentiment_min_corrections" in few["reason"]
        assert few["counts"]["resolved"] == 5 and "old_train_accuracy" not in few
        off = update_sentiment_model(store, BUILTIN_ARTEFACT, [], out, fast_config(sentiment_update=False))
        assert off == {"status": "skipped", "reason": "sentiment_update is off"}
    unavailable = update_sentiment_model(object(), BUILTIN_ARTEFACT, [], out, fast_config())  # no corrections table
    assert unavailable["status"] == "unavailable"
    assert not out.exists()


@pytest.mark.slow
def test_sentiment_model_update_is_rejected_when_the_corrections_contradict_the_replay(tmp_path):
    # Plainly happy messages "corrected" to negative, and the same messages among the replay texts: every
    # correction learnt is a replay text the new head disagrees on, so with min_agreement 1.0 the
    # fine-tuning can keep no gain and the gate refuses (whatever the numerics).
    happy = ["thank you so much, great service with order {}!", "I love how fast you fixed ticket {}, thanks!",
             "brilliant support on case {}, very happy"]
    texts = [h.format(i) for h in happy for i in range(15)]
    store = corrections_store(tmp_path / "csbot.sqlite3", texts, "negative")
    out = tmp_path / "x.npz"
    summary = update_sentiment_model(store, BUILTIN_ARTEFACT, texts + ["where is my order"], out,
                                     fast_config(sentiment_min_corrections=10, sentiment_min_agreement=1.0))
    assert summary["status"] == "rejected", repr(summary)[-400:]
    assert summary["old_train_accuracy"] == 0.0  # the shipped model reads them all as not negative
    assert "no gain on the corrections" in summary["reason"] and summary["new_train_accuracy"] == 0.0
    assert summary["replay_agreement"] == 1.0 and "path" not in summary
    assert not out.exists()


def test_sentiment_model_update_refuses_to_overwrite_its_input(tmp_path):
    import shutil

    artefact = shutil.copy(BUILTIN_ARTEFACT, tmp_path / "sentiment_lora.npz")
    store = corrections_store(tmp_path / "csbot.sqlite3", [f"RMA approved for order {i}" for i in range(30)], "positive")
    with store, pytest.raises(ValueError, match="overwrite its input"):
        update_sentiment_model(store, artefact, [], tmp_path / "." / "sentiment_lora.npz", fast_config(sentiment_min_corrections=5))
    assert (tmp_path / "sentiment_lora.npz").read_bytes() == BUILTIN_ARTEFACT.read_bytes()
