"""The fine-tuned sentiment model served: every build copies it into the version,
exports it to ONNX fp32 + int8 (reused for the same artefact), the build's rule picks its runtime, the
engine labels sentiment with it, `csbot models` shows it, `runtime` forces one and
`sentiment_model = none` keeps the head. Real MiniLM, onnxruntime, the shipped artefact, the demo KB."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.errors import ConfigError, UserError
from core.settings import Settings
from models.runtimes import choose_sentiment_runtime
from tests.conftest import DEMO_KB, REPO, copy_home

CLEAR = {"this is the worst support ever, nobody answers and my order is broken": "negative",
         "thank you so much, great service, you fixed it in minutes!": "positive",
         "My order number is 12345.": "neutral"}


def test_the_rule_int8_then_fp32_then_torch():
    good = {"label_agreement": 0.99, "probability_cosine_p5": 0.995}
    assert choose_sentiment_runtime(good, good)[0] == "onnx-int8"
    low_agreement = {"label_agreement": 0.95, "probability_cosine_p5": 0.995}
    served, reason = choose_sentiment_runtime(good, low_agreement)
    assert served == "onnx" and "95.00%" in reason
    assert choose_sentiment_runtime(good, {"label_agreement": 1.0, "probability_cosine_p5": 0.9})[0] == "onnx"
    assert choose_sentiment_runtime(low_agreement, low_agreement)[0] == "torch"
    assert choose_sentiment_runtime(None, None)[0] == "torch"
    assert choose_sentiment_runtime(good, low_agreement, min_agreement=0.9)[0] == "onnx-int8"


def test_bad_sentiment_model_settings_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="sentiment_model must be"):
        Settings.load(env={"CSBOT_SENTIMENT_MODEL": "  "}, home=tmp_path)
    with pytest.raises(ConfigError, match="sentiment_int8_min_agreement must be between 0 and 1"):
        Settings.load(env={"CSBOT_SENTIMENT_INT8_MIN_AGREEMENT": "98"}, home=tmp_path)
    assert Settings.load(env={}, home=tmp_path).uses_sentiment_model
    assert not Settings.load(env={"CSBOT_SENTIMENT_MODEL": "none"}, home=tmp_path).uses_sentiment_model


@pytest.mark.slow
def test_the_demo_build_serves_the_fine_tuned_model_on_int8(demo_home):
    from models.sentiment_onnx import OnnxSentiment
    from serving.engine import Engine
    from serving.versions import VersionStore

    champion = VersionStore(Settings.load(env={}, home=demo_home).models_dir).champion()
    record = champion.meta["sentiment"]
    assert record["model"] == "fine-tuned" and record["served"] == champion.sentiment_runtime == "onnx-int8", record
    assert record["scores"]["int8"]["label_agreement"] >= 0.98 and record["scores"]["fp32"]["label_agreement"] == 1.0
    assert champion.sentiment_model_path.read_bytes() == (REPO / "models" / "assets"
                                                          / "sentiment_lora.npz").read_bytes()
    exported = json.loads((champion.path / "sentiment_onnx" / "sentiment_onnx.json").read_text())
    assert exported["attention"] == "eager"  # traced as the encoder is (models/onnx_export.py)
    engine = Engine(Settings.load(env={}, home=demo_home))
    assert engine.sentiment_runtime == "onnx-int8" and isinstance(engine.served.sentiment, OnnxSentiment)
    labels = [label for label, _ in engine.sentiment(list(CLEAR))]
    assert labels == list(CLEAR.values())
    # A question's answer carries the same sentiment as the sentiment-only path (the model's own pass).
    text = next(iter(CLEAR))
    answer = engine.answer(text)
    label, scores = engine.sentiment([text])[0]
    assert answer.sentiment == label and abs(answer.sentiment_scores["negative"] - scores["negative"]) < 1e-4


@pytest.mark.slow
def test_int8_labels_do_not_depend_on_the_batch(demo_home):
    from serving.versions import VersionStore

    champion = VersionStore(Settings.load(env={}, home=demo_home).models_dir).champion()
    model = champion.load_sentiment("onnx-int8", threads=1)
    texts = list(CLEAR) + ["short", "a much longer message " * 20]
    alone = np.array([model.predict_proba([t])[0] for t in texts])
    np.testing.assert_array_equal(model.predict_proba(texts), alone)


@pytest.mark.slow
def test_forced_torch_and_fp32_serve_the_same_labels(demo_home):
    from models.sentiment_model import FineTunedSentiment
    from serving.engine import Engine

    torch = Engine(Settings.load(env={}, home=demo_home, runtime="torch"))
    assert torch.sentiment_runtime == "torch" and isinstance(torch.served.sentiment, FineTunedSentiment)
    fp32 = Engine(Settings.load(env={}, home=demo_home, runtime="onnx"))
    assert fp32.sentiment_runtime == "onnx"
    texts = list(CLEAR)
    a = np.array([[s[k] for k in sorted(s)] for _, s in torch.sentiment(texts)])
    b = np.array([[s[k] for k in sorted(s)] for _, s in fp32.sentiment(texts)])
    np.testing.assert_allclose(a, b, atol=1e-4)


@pytest.mark.slow
def test_a_rebuild_links_the_export_and_none_keeps_the_head(demo_home, tmp_path):
    from serving.engine import Engine
    from serving.versions import VersionStore
    from training.ingest import ingest

    home = tmp_path / "home"
    copy_home(demo_home, home)
    kb = tmp_path / "kb"
    shutil.copytree(DEMO_KB, kb)
    first = next(kb.glob("*.md"))
    first.write_text(first.read_text(encoding="utf-8") + "\n\nOne more sentence.\n", encoding="utf-8")
    settings = Settings.load(env={}, home=home, finetune_epochs=0)
    versions = VersionStore(settings.models_dir)
    before = versions.champion()
    ingest([kb], settings)
    after = versions.champion()
    assert after.name != before.name and after.meta["sentiment"]["served"] == "onnx-int8"
    assert before.meta["sentiment"]["export"] == "exported"  # (the session's demo build)
    assert after.meta["sentiment"]["export"] == "reused"  # the same artefact: hard-linked, not exported again
    source = after.meta["sentiment"]["reused_from"]
    for name in ("sentiment.onnx", "sentiment.int8.onnx"):
        assert (after.sentiment_onnx_dir / name).stat().st_ino == (Path(source) / name).stat().st_ino

    none = settings.replace(sentiment_model="none")
    first.write_text(first.read_text(encoding="utf-8") + "\nAnd another.\n", encoding="utf-8")
    ingest([kb], none)
    head_only = versions.champion()
    assert head_only.sentiment_model_path is None and head_only.sentiment_onnx_dir is None
    assert head_only.meta["sentiment"]["model"] == "head"
    engine = Engine(none)
    assert engine.sentiment_runtime == "head" and engine.served.sentiment.reads_encoder
    assert engine.sentiment(["thank you so much, great service, you fixed it in minutes!"])[0][0] == "positive"


@pytest.mark.slow
def test_an_export_an_older_csbot_traced_another_way_is_made_again(demo_home, tmp_path, monkeypatch):
    from serving.versions import VersionStore
    from training import export
    from training.ingest import ingest

    monkeypatch.setattr(export, "_SENTIMENT_EXPORTS", {})  # as in a new process: only the home's versions

    home = copy_home(demo_home, tmp_path / "home")
    settings = Settings.load(env={}, home=home, finetune_epochs=0)
    versions = VersionStore(settings.models_dir)
    before = versions.champion()
    path = before.sentiment_onnx_dir / "sentiment_onnx.json"  # copied, not linked, by copy_home
    manifest = json.loads(path.read_text())
    del manifest["attention"]  # as exports were written before they were traced with eager attention
    path.write_text(json.dumps(manifest))
    kb = tmp_path / "kb"
    shutil.copytree(DEMO_KB, kb)
    first = next(kb.glob("*.md"))
    first.write_text(first.read_text(encoding="utf-8") + "\n\nOne more sentence.\n", encoding="utf-8")
    ingest([kb], settings)
    after = versions.champion()
    assert after.name != before.name and after.meta["sentiment"]["export"] == "exported"
    assert json.loads((after.sentiment_onnx_dir / "sentiment_onnx.json").read_text())["attention"] == "eager"
    assert (after.sentiment_onnx_dir / "sentiment.int8.onnx").stat().st_ino != (
        before.sentiment_onnx_dir / "sentiment.int8.onnx").stat().st_ino


@pytest.mark.slow
def test_a_missing_sentiment_model_fails_the_build_in_one_line_and_keeps_the_champion(demo_home, tmp_path):
    home = tmp_path / "home"
    copy_home(demo_home, home)
    champion = (home / "models" / "CHAMPION").read_text()
    env = {**os.environ, "CSBOT_HOME": str(home), "CSBOT_SENTIMENT_MODEL": str(tmp_path / "nope.npz")}
    kb = tmp_path / "kb"
    shutil.copytree(DEMO_KB, kb)
    (kb / "new-article.md").write_text("# A new article\n\nSome text about a new thing.\n", encoding="utf-8")
    run = subprocess.run([sys.executable, "-m", "bot.cli", "ingest", str(kb)], env=env, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 2, run.stderr[-2000:]
    [line] = [x for x in run.stderr.splitlines() if "error:" in x]
    assert "sentiment model" in line and "nope.npz is missing" in line
    assert (home / "models" / "CHAMPION").read_text() == champion
    assert not [p for p in (home / "models").iterdir() if p.name.startswith(".")]  # no draft left behind


@pytest.mark.slow
def test_models_shows_what_labels_sentiment(demo_home, tmp_path):
    home = tmp_path / "home"
    copy_home(demo_home, home)
    env = {**os.environ, "CSBOT_HOME": str(home)}
    run = subprocess.run([sys.executable, "-m", "bot.cli", "models", "--json"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    [champion] = [v for v in json.loads(run.stdout)["versions"] if v["champion"]]
    assert champion["sentiment_model"] == "fine-tuned"
    assert champion["sentiment_runtime"] == champion["sentiment_runtime_chosen"] == "onnx-int8"
    assert "label agreement with torch" in champion["sentiment_reason"]
    text = subprocess.run([sys.executable, "-m", "bot.cli", "models"], env={**env, "CSBOT_RUNTIME": "torch"},
                          capture_output=True, text=True, timeout=120)
    assert "sentiment of the champion: the fine-tuned model on torch" in text.stdout
    assert "sentiment torch" in text.stdout


def test_a_truncated_sentiment_export_is_a_one_line_error(tmp_path):
    from models.sentiment_onnx import MANIFEST, OnnxSentiment

    (tmp_path / MANIFEST).write_text(json.dumps({
        "format": 1, "variants": {"int8": {"file": "sentiment.int8.onnx", "bytes": 1000}}, "inputs": ["input_ids"],
        "labels": ["negative", "neutral", "positive"], "temperature": 1.0, "max_length": 64, "pad_token_id": 0}))
    (tmp_path / "sentiment.int8.onnx").write_bytes(b"\0" * 10)
    with pytest.raises(UserError, match="missing or truncated"):
        OnnxSentiment(tmp_path, "int8")
    (tmp_path / MANIFEST).write_text("{not json")
    with pytest.raises(UserError, match="unreadable"):
        OnnxSentiment(tmp_path, "int8")
