"""A sentiment classifier a team brings (`sentiment_model` = a folder or hub name of any
AutoModelForSequenceClassification): its labels mapped to negative / neutral / positive (names,
`sentiment_labels` for LABEL_n, binary models with the neutral band), a build's ONNX export and
runtime choice, `csbot sentiment` / `csbot models`, and the retrain's update of its final layer.

The models are tiny random BERTs saved here (with the MiniLM package's tokenizer), so the tests
check the mapping and the plumbing, never accuracy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.errors import ConfigError, UserError
from core.settings import Settings
from tests.conftest import HELPCENTRE_MD

NAMED = {0: "positive", 1: "NEGATIVE", 2: "neu"}  # synonyms, another order than ours
NUMBERED = {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}
BINARY = {0: "NEG", 1: "POS"}
TEXTS = ["thank you so much, great service!", "this is the worst support ever", "My order number is 12345."]


def tiny_classifier(folder: Path, id2label: dict[int, str], *, bias: list[float] | None = None,
                    zero_weight: bool = False) -> Path:
    """A random 2-layer BERT sequence classifier (hidden 32) with the MiniLM tokenizer, saved to `folder`;
    `bias` / `zero_weight` set its classifier layer so its output is known."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from models.loading import resolve_model_path

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("builtin:all-MiniLM-L6-v2"))
    torch.manual_seed(7)
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        vocab_size=tokenizer.vocab_size, max_position_embeddings=128, num_labels=len(id2label),
                        id2label=dict(id2label), label2id={v: k for k, v in id2label.items()})
    model = BertForSequenceClassification(config)
    with torch.no_grad():
        if zero_weight:
            model.classifier.weight.zero_()
        if bias is not None:
            model.classifier.bias.copy_(torch.tensor(bias))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def settings_for(tmp_path: Path, model: Path, **changes) -> Settings:
    return Settings.load(env={}, home=tmp_path / "home", sentiment_model=str(model), **changes)


# ----- the label mapping ---------------------------------------------------------------------------

def test_labels_map_from_names_synonyms_and_the_setting():
    from models.sentiment_brought import map_labels

    assert map_labels(NAMED) == ["positive", "negative", "neutral"]
    assert map_labels({0: "Negative", 1: "Neutral", 2: "Positive"}) == ["negative", "neutral", "positive"]
    assert map_labels(BINARY) == ["negative", "positive"]
    assert map_labels(NUMBERED, "negative,neutral,positive") == ["negative", "neutral", "positive"]
    assert map_labels(NUMBERED, "pos, neg, neu") == ["positive", "negative", "neutral"]
    assert map_labels({0: "LABEL_0", 1: "LABEL_1"}, "NEGATIVE,POSITIVE") == ["negative", "positive"]


@pytest.mark.parametrize("id2label, names, message", [
    (NUMBERED, "", r"cannot map its labels \['LABEL_0', 'LABEL_1', 'LABEL_2'\].*set sentiment_labels"),
    ({0: "joy", 1: "anger", 2: "sadness"}, "", "cannot map its labels"),
    ({0: "negative", 1: "negative", 2: "positive"}, "", "cannot map"),  # two ids, one label
    ({0: "negative", 1: "neutral"}, "", "cannot map"),  # binary without positive
    ({i: f"{i} stars" for i in range(5)}, "", "cannot map"),
    (NUMBERED, "negative,positive", "has 3 labels but sentiment_labels names 2"),
    (NUMBERED, "bad,meh,good", "cannot map its labels \\['bad', 'meh', 'good'\\]"),
])
def test_unmappable_labels_are_one_line_errors(id2label, names, message):
    from models.sentiment_brought import map_labels

    with pytest.raises(UserError, match=message) as caught:
        map_labels(id2label, names, source="/x/model")
    assert "\n" not in str(caught.value) and "/x/model" in str(caught.value)


def test_the_neutral_band_setting_is_checked(tmp_path):
    with pytest.raises(ConfigError, match="sentiment_neutral_band must be at least 0 and below 1"):
        Settings.load(env={"CSBOT_SENTIMENT_NEUTRAL_BAND": "1.5"}, home=tmp_path)
    assert Settings.load(env={"CSBOT_SENTIMENT_NEUTRAL_BAND": "0.3"}, home=tmp_path).sentiment_neutral_band == 0.3


def test_which_settings_name_a_classifier_to_bring(tmp_path):
    from models.sentiment_brought import is_brought

    (tmp_path / "model").mkdir()
    (tmp_path / "a.npz").write_bytes(b"")
    assert is_brought(str(tmp_path / "model")) and is_brought("cardiffnlp/twitter-roberta-base-sentiment-latest")
    assert not any(is_brought(s) for s in ("builtin", "none", "", str(tmp_path / "a.npz"), str(tmp_path / "gone")))


# ----- the torch model: mapping and the band ----------------------------------------------------------

def test_a_named_model_is_reordered_and_its_probabilities_are_its_own(tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from models.sentiment_brought import bring
    from models.sentiment_model import BroughtSentiment, FineTunedSentiment

    folder = tiny_classifier(tmp_path / "named", NAMED, bias=[0.0, 4.0, 0.0])  # id 1 (NEGATIVE) wins
    artefact = bring(str(folder), labels="", band=0.2, cache=tmp_path / "cache")
    assert bring(str(folder), labels="", band=0.2, cache=tmp_path / "cache") == artefact  # one file per model
    model = FineTunedSentiment.load(artefact)
    assert isinstance(model, BroughtSentiment) and model.shared_layers() is None
    assert model.labels == ["negative", "neutral", "positive"]
    predicted = model.predict(TEXTS)
    assert [label for label, _ in predicted] == ["negative"] * 3
    raw = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokens = AutoTokenizer.from_pretrained(folder)(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        own = torch.softmax(raw(**tokens).logits, -1).numpy()  # columns: positive, negative, neutral
    for (_, scores), row in zip(predicted, own):
        assert abs(sum(scores.values()) - 1) < 1e-5
        assert scores["positive"] == pytest.approx(row[0], abs=1e-5)
        assert scores["negative"] == pytest.approx(row[1], abs=1e-5)
        assert scores["neutral"] == pytest.approx(row[2], abs=1e-5)


@pytest.mark.parametrize("bias, band, expected", [
    ([0.0, 0.0], 0.2, "neutral"),  # p_pos = p_neg: d = 0
    ([0.0, 0.3], 0.2, "neutral"),  # d = tanh(0.15) = 0.149 < 0.2
    ([0.0, 0.5], 0.2, "positive"),  # d = tanh(0.25) = 0.245
    ([0.5, 0.0], 0.2, "negative"),
    ([0.5, 0.0], 0.3, "neutral"),
    ([0.0, 0.3], 0.0, "positive"),  # no band: never neutral
])
def test_a_binary_model_is_neutral_inside_the_band(tmp_path, bias, band, expected):
    from models.sentiment_brought import bring
    from models.sentiment_model import FineTunedSentiment

    folder = tiny_classifier(tmp_path / "binary", BINARY, bias=bias, zero_weight=True)
    model = FineTunedSentiment.load(bring(str(folder), labels="", band=band, cache=tmp_path / "cache"))
    [(label, scores)] = model.predict(["any text at all"])
    assert label == expected, scores
    assert abs(sum(scores.values()) - 1) < 1e-5
    p = np.exp(bias) / np.exp(bias).sum()
    ratio = scores["positive"] / scores["negative"]
    assert ratio == pytest.approx(p[1] / p[0], rel=1e-4)  # negative and positive keep the model's ratio


@pytest.mark.slow
def test_an_unmappable_model_fails_the_build_in_one_line(tmp_path):
    folder = tiny_classifier(tmp_path / "emotions", {0: "joy", 1: "anger", 2: "sadness"})
    env = {**os.environ, "CSBOT_HOME": str(tmp_path / "home"), "CSBOT_SENTIMENT_MODEL": str(folder)}
    run = subprocess.run([sys.executable, "-m", "bot.cli", "ingest", str(HELPCENTRE_MD)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr[-2000:]
    [line] = [x for x in run.stderr.splitlines() if "error:" in x]
    assert "cannot map its labels ['joy', 'anger', 'sadness'] to negative/neutral/positive" in line
    assert not (tmp_path / "home" / "models" / "CHAMPION").exists()
    missing = subprocess.run([sys.executable, "-m", "bot.cli", "ingest", str(HELPCENTRE_MD)], capture_output=True,
                             env={**env, "CSBOT_SENTIMENT_MODEL": str(tmp_path / "no-such-model")}, text=True, timeout=300)
    assert missing.returncode == 2 and "no-such-model is missing" in missing.stderr


# ----- end to end: a build, the CLI, the retrain's update -----------------------------------------------

def cli(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    run = subprocess.run([sys.executable, "-m", "bot.cli", *args], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "CSBOT_HOME": str(home), "CSBOT_FINETUNE_EPOCHS": "0", **env})
    assert run.returncode == 0, run.stderr[-3000:]
    return run


CASES = {"named": (NAMED, ""), "numbered": (NUMBERED, "negative,neutral,positive"), "binary": (BINARY, "")}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_a_brought_model_is_built_served_and_updated(tmp_path, case):
    from core.settings import RetrainSettings
    from serving.engine import Engine
    from serving.versions import VersionStore
    from store import Store
    from training.sentiment_update import update_sentiment_model

    id2label, names = CASES[case]
    folder = tiny_classifier(tmp_path / case, id2label)
    home = tmp_path / "home"
    env = {"CSBOT_SENTIMENT_MODEL": str(folder), "CSBOT_SENTIMENT_LABELS": names}
    cli(home, "ingest", str(HELPCENTRE_MD), **env)
    settings = Settings.load(env={}, home=home, sentiment_model=str(folder), sentiment_labels=names)
    champion = VersionStore(settings.models_dir).champion()
    record = champion.meta["sentiment"]
    mapped = {"named": ["positive", "negative", "neutral"], "numbered": ["negative", "neutral", "positive"],
              "binary": ["negative", "positive"]}[case]
    assert record["brought"]["source"] == str(folder.resolve()) and record["brought"]["model_labels"] == mapped
    assert ("neutral_band" in record["brought"]) == (case == "binary")
    assert record["export"] == "exported" and record["served"] in ("onnx-int8", "onnx"), record
    assert record["scores"]["fp32"]["label_agreement"] == 1.0 and record["shared"]["served"] is False

    # The CLI labels with the served ONNX graph; torch gives the same probabilities.
    lines = [json.loads(cli(home, "sentiment", text, "--json", **env).stdout) for text in TEXTS[:2]]
    for row in lines:
        assert row["sentiment"] in ("negative", "neutral", "positive")
        assert abs(sum(row["scores"].values()) - 1) < 1e-3 and row["model_version"] == champion.name
    torch_engine = Engine(settings.replace(runtime="torch"))
    onnx_engine = Engine(settings.replace(runtime="onnx"))
    assert torch_engine.sentiment_runtime == "torch" and onnx_engine.sentiment_runtime == "onnx"
    a = np.array([[s[k] for k in sorted(s)] for _, s in torch_engine.sentiment(TEXTS)])
    b = np.array([[s[k] for k in sorted(s)] for _, s in onnx_engine.sentiment(TEXTS)])
    np.testing.assert_allclose(a, b, atol=1e-4)
    listed = json.loads(cli(home, "models", "--json", **env).stdout)
    [row] = [v for v in listed["versions"] if v["champion"]]
    assert row["sentiment_model"] == "fine-tuned" and row["sentiment_runtime"] == record["served"]
    assert row["sentiment_reason"].startswith(f"brought classifier {folder.resolve()}: ")
    assert f"brought classifier {folder.resolve()}" in cli(home, "models", **env).stdout

    # The retrain's update: the final layer only, judged by the gate, and the next build exports it.
    from models.sentiment_model import FineTunedSentiment

    texts = [f"RMA approved for order {i}" for i in range(40)]
    said = {label for label, _ in FineTunedSentiment.load(champion.sentiment_model_path).predict(texts)}
    wanted = next(label for label in ("positive", "negative", "neutral") if label not in said)
    store = Store(tmp_path / "corrections.sqlite3", salt="test")
    for i, text in enumerate(texts):
        store.record_sentiment_correction("C1", f"{1000 + i}.0001", f"u{i % 5}", wanted, text)
    out = tmp_path / "updated.npz"
    # A random model reads every text nearly alike, so replay texts would pin the corrections' texts
    # too: no replay here; the gate's accuracy checks stay.
    config = RetrainSettings(sentiment_min_corrections=10, progress="off")
    summary = update_sentiment_model(store, champion.sentiment_model_path, [], out, config)
    assert summary["status"] == "updated", summary
    assert summary["new_train_accuracy"] > summary["old_train_accuracy"]
    assert summary["new_heldout_accuracy"] >= summary["old_heldout_accuracy"]
    assert summary["updated"] == "the final linear layer"
    _check_updated(champion.sentiment_model_path, out, home, env)


def _check_updated(before: Path, after: Path, home: Path, env: dict) -> None:
    from models.sentiment_brought import read_brought

    (old_meta, old_head), (new_meta, new_head) = read_brought(before), read_brought(after)
    assert {k: v for k, v in new_meta.items() if k != "updated_from_corrections"} == old_meta
    assert not np.array_equal(old_head["bias"], new_head["bias"]) or not np.array_equal(old_head["weight"], new_head["weight"])
    cli(home, "ingest", "--force", str(HELPCENTRE_MD), **{**env, "CSBOT_SENTIMENT_MODEL": str(after)})
    from serving.versions import VersionStore

    champion = VersionStore(Settings.load(env={}, home=home).models_dir).champion()
    assert champion.sentiment_model_path.read_bytes() == after.read_bytes()
    assert champion.meta["sentiment"]["export"] == "exported" and champion.meta["sentiment"]["brought"]
