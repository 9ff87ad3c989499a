"""A question's sentiment continues from the encoder pass (docs/sentiment.md "How it is served"): the
fine-tuned sentiment model adapts only layers 3-5, intent fine-tuning only the encoder's top two, so
the encoder's ONNX export also outputs hidden state 3's token states and the sentiment export a tail
graph (layers 3-5, pooling, head) that continues from them. The build checks that the two exports fit
(digests of the lower layers and the tokenizer) and measures the shared path against the model's own
pass; the engine uses it for questions when the runtimes it was measured on serve. Real MiniLM,
onnxruntime, the shipped artefact, the demo KB."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from core.settings import Settings
from models.runtimes import choose_shared
from models.sentiment_model import shared_layers
from models.sentiment_onnx import shares_prefix_with
from tests.conftest import DEMO_KB, copy_home

TEXTS = ["this is the worst support ever, nobody answers and my order is broken",
         "thank you so much, great service, you fixed it in minutes!",
         "My order number is 12345.", "How do I reset my password?", "The router arrived yesterday.",
         "ok", "Flight delayed again, missed my connection, no one at the desk."]
LONG = " ".join(["The app crashes when I upload a photo larger than ten megabytes, this is so annoying."] * 6)


def test_which_lower_layers_a_sentiment_model_can_share():
    top_three = [f"encoder.layer.{i}.attention.self.query" for i in (3, 4, 5)]
    assert shared_layers(top_three, [-1], 6) == 3
    assert shared_layers(top_three, [3, 4, 5, 6], 6) == 3  # the head pools hidden state 3 (the tail's input)
    assert shared_layers(top_three, [0, 1, 2, 3, 4, 5, 6], 6) is None  # it pools states below the tail
    assert shared_layers(["encoder.layer.0.output.dense"] + top_three, [-1], 6) is None  # adapts the bottom
    assert shared_layers(["embeddings.word_embeddings"], [-1], 6) is None
    assert shared_layers([], [-1], 6) == 5  # nothing adapted: the tail is the top layer


def test_the_exports_must_fit():
    states = {"layer": 3, "prefix_sha256": "a", "tokenizer_sha256": "t", "lower_case": True}
    tail = {**states, "variants": {}}
    assert shares_prefix_with({"token_states": states}, {"tail": tail}) is None
    assert "no token_states" in shares_prefix_with({}, {"tail": tail})
    assert "no tail graph" in shares_prefix_with({"token_states": states}, {})
    assert "hidden state 4" in shares_prefix_with({"token_states": {**states, "layer": 4}}, {"tail": tail})
    assert "differ from the sentiment model's base" in shares_prefix_with(
        {"token_states": {**states, "prefix_sha256": "b"}}, {"tail": tail})
    assert "tokenise differently" in shares_prefix_with({"token_states": {**states, "lower_case": False}}, {"tail": tail})


def test_the_shared_path_serves_when_its_labels_agree():
    assert choose_shared({"texts": 172, "label_agreement": 1.0})[0] is True
    served, reason = choose_shared({"texts": 172, "label_agreement": 0.95})
    assert served is False and "95.00%" in reason and "own pass serves" in reason
    assert choose_shared({"texts": 172, "label_agreement": 0.95}, min_agreement=0.9)[0] is True
    assert choose_shared(None)[0] is False
    with pytest.raises(ValueError, match="fraction"):
        choose_shared({"texts": 1, "label_agreement": 1.0}, min_agreement=98)


@pytest.mark.slow
def test_the_demo_build_shares_the_encoder_pass_and_labels_as_the_own_pass(demo_home):
    from serving.engine import Engine

    engine = Engine(Settings.load(env={}, home=demo_home, torch_threads=1))
    served = engine.served
    shared = served.version.meta["sentiment"]["shared"]
    assert shared["served"] is True and shared["layer"] == 3 and shared["pair"] == "onnx-int8/onnx-int8", shared
    assert shared["agreement"]["label_agreement"] >= 0.98 and shared["agreement"]["shared_texts"] >= 150
    assert served.shares_encoder and served.encoder.token_states["layer"] == 3
    manifest = served.sentiment.manifest
    assert manifest["tail"]["variants"]["int8"]["vs_torch"]["label_agreement"] >= 0.98
    assert manifest["tail"]["variants"]["fp32"]["vs_torch"]["max_abs_probability_diff"] < 1e-4

    # What a question's answer carries is the tail on the encoder pass's token states (unpadded, hidden
    # state 3), and it is what the sentiment-only path (the model's own pass) gives.
    texts = TEXTS + [LONG]
    encoded = served.encoder.encode(texts, states=True)
    lengths = [len(s) for s in encoded.token_states]
    assert all(s.shape[1] == 384 for s in encoded.token_states) and lengths[TEXTS.index("ok")] == 3
    assert [served.sentiment.takes_states(s) for s in encoded.token_states] == [True] * len(TEXTS) + [False]
    tail = served.sentiment.predict_proba_shared(texts, encoded.token_states)
    own = served.sentiment.predict_proba(texts)
    np.testing.assert_allclose(tail, own, atol=2e-3)  # int8 either way; the same lower layers' weights
    for text, row in zip(texts, tail):
        answer = engine.answer(text)
        assert answer.sentiment == served.sentiment.labels[int(np.argmax(row))]
        np.testing.assert_allclose([answer.sentiment_scores[k] for k in served.sentiment.labels], row, atol=1e-6)


@pytest.mark.slow
def test_two_threads_answer_a_batch_as_one_thread_and_as_each_question_alone(demo_home):
    # batch_threads = 2: int8 runs the texts side by side (two at a time, one intra-op thread each),
    # through the encoder, the sentiment tail and the own pass alike; nothing a question gets may depend
    # on that.
    from serving.engine import Engine

    texts = TEXTS + [LONG, "my parcel never arrived", "How do I reset my password?"]
    two = Engine(Settings.load(env={}, home=demo_home, batch_threads=2))
    one = Engine(Settings.load(env={}, home=demo_home, batch_threads=1))
    assert two.served.shares_encoder and two.served.encoder.workers == 2 and two.served.sentiment.workers == 2

    def seen(answer):  # everything but the answer's own id
        return dataclasses.replace(answer, answer_id="")

    together = [seen(a) for a in two.answer_batch(texts)]
    assert together == [seen(a) for a in one.answer_batch(texts)]
    for answer, text in zip(together, texts):  # alone: the same features; numpy's heads on a batch of
        alone = seen(one.answer(text))         # one round differently in the last bits
        assert (answer.intent, answer.doc_id, answer.sentiment, answer.text) == (alone.intent, alone.doc_id,
                                                                                  alone.sentiment, alone.text)
        assert answer.confidence == pytest.approx(alone.confidence, abs=1e-6)
    assert two.sentiment(texts) == one.sentiment(texts)  # the own pass, side by side


@pytest.mark.slow
def test_a_single_question_labels_its_sentiment_on_a_second_thread_with_the_same_result(demo_home):
    # One question with two cores: the model's own pass runs on the csbot-sentiment-beside thread, started
    # before the engine's thread encodes, searches and decides; with batch_threads = 1 the label continues
    # in line from the encoder pass's token states (the tail). The answers are the same.
    import threading

    from serving.engine import Engine

    two = Engine(Settings.load(env={}, home=demo_home, batch_threads=2))
    one = Engine(Settings.load(env={}, home=demo_home, batch_threads=1))
    calls = []
    for engine in (two, one):  # spies on the real model: they record which pass ran on which thread
        model = engine.served.sentiment
        shared, own = model.predict_shared, model.predict
        model.predict_shared = lambda texts, states, real=shared: (
            calls.append(("tail", threading.current_thread().name.split("_")[0])), real(texts, states))[1]
        model.predict = lambda texts, real=own: (
            calls.append(("own", threading.current_thread().name.split("_")[0])), real(texts))[1]
    question = "my parcel never arrived and nobody answers"
    here = threading.current_thread().name
    beside, inline = two.answer(question), one.answer(question)
    assert calls == [("own", "csbot-sentiment-beside"), ("tail", here)]
    assert (beside.sentiment, beside.intent, beside.confidence, beside.text) == (
        inline.sentiment, inline.intent, inline.confidence, inline.text)
    assert max(abs(beside.sentiment_scores[k] - inline.sentiment_scores[k]) for k in inline.sentiment_scores) < 0.02
    assert two.sentiment([question])[0] == (beside.sentiment, beside.sentiment_scores)  # a channel message's label

    # While that thread is busy (another question's sentiment), a question does not queue behind it: its
    # label continues from the encoder pass in line.
    from core.runtime import beside as run_beside

    release = threading.Event()
    busy = run_beside("sentiment", release.wait, 30)
    try:
        calls.clear()
        assert two.answer(question).sentiment_scores == inline.sentiment_scores and calls == [("tail", here)]
    finally:
        release.set()
        busy.result(timeout=30)


@pytest.mark.slow
def test_the_setting_and_a_forced_runtime_take_the_own_pass(demo_home, tmp_path):
    from serving.engine import Engine

    on = Engine(Settings.load(env={}, home=demo_home))
    off = Engine(Settings.load(env={}, home=demo_home, sentiment_share_encoder=False))
    fp32 = Engine(Settings.load(env={}, home=demo_home, runtime="onnx"))  # measured on int8/int8 only
    assert on.served.shares_encoder and not off.served.shares_encoder and not fp32.served.shares_encoder
    for text in TEXTS:
        assert off.answer(text).sentiment == on.answer(text).sentiment == fp32.answer(text).sentiment

    home = tmp_path / "home"
    copy_home(demo_home, home)
    env = {**os.environ, "CSBOT_HOME": str(home)}
    run = subprocess.run([sys.executable, "-m", "bot.cli", "models", "--json"], env=env, capture_output=True,
                         text=True, timeout=120)
    [champion] = [v for v in json.loads(run.stdout)["versions"] if v["champion"]]
    assert champion["sentiment_shares_encoder"] is True and champion["sentiment_shared"]["layer"] == 3
    text = subprocess.run([sys.executable, "-m", "bot.cli", "models"], capture_output=True, text=True, timeout=120,
                          env={**env, "CSBOT_SENTIMENT_SHARE_ENCODER": "false"}).stdout
    assert "questions' sentiment takes the model's own pass: sentiment_share_encoder = false" in text
    text = subprocess.run([sys.executable, "-m", "bot.cli", "models"], capture_output=True, text=True, timeout=120,
                          env=env).stdout
    assert "questions' sentiment continues from the encoder pass (hidden state 3)" in text


@pytest.mark.slow
def test_an_encoder_fine_tuned_below_the_tail_is_not_shared(tmp_path):
    """Intent fine-tuning of the top four layers changes hidden state 3: the digests differ, the build
    says so, and questions take the sentiment model's own pass."""
    from serving.engine import Engine
    from training.ingest import ingest

    settings = Settings.load(env={}, home=tmp_path / "home", finetune_trainable_layers=4, finetune_epochs=1)
    ingest([DEMO_KB], settings)
    engine = Engine(settings)
    shared = engine.served.version.meta["sentiment"]["shared"]
    assert shared["served"] is False and "layers below 3 differ" in shared["reason"], shared
    assert not engine.served.shares_encoder
    assert engine.answer(TEXTS[1]).sentiment == "positive"


@pytest.mark.slow
def test_an_earlier_export_is_reused_only_with_the_same_token_states(tmp_path):
    from models.onnx_export import export_onnx
    from training.export import export_encoder

    minilm = "builtin:all-MiniLM-L6-v2"
    old = tmp_path / "old"
    export_onnx(minilm, old, variants=("fp32",), measure=False)  # an export made before token_states
    new = export_encoder(minilm, tmp_path / "new", "test-reuse-states", reuse=old, token_states_layer=3)
    assert new["token_states"]["layer"] == 3 and "token_states" in new["outputs"]
    assert (tmp_path / "new" / "model.onnx").stat().st_ino != (old / "model.onnx").stat().st_ino  # exported anew
    again = export_encoder(minilm, tmp_path / "again", "test-reuse-states-2", reuse=tmp_path / "new",
                           token_states_layer=3)
    assert again["token_states"] == new["token_states"]
    assert (tmp_path / "again" / "model.onnx").stat().st_ino == (tmp_path / "new" / "model.onnx").stat().st_ino
