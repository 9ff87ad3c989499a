"""An encoder a team brings as a plain transformers folder (no sentence-transformers files), of another
architecture than the builtin's: a 2-layer DistilBERT (hidden 96), whose tokenizer gives no
`token_type_ids`. It is normalised like the builtin, exported to ONNX with its own inputs, measured for
int8, too shallow to feed the sentiment model's tail (the build leaves that output out instead of
failing), and answers `csbot ask`. A random model: the plumbing is checked, not accuracy. Its layers are
found by the model's structure (models/loading.py `layer_layout`): frozen, adapted by LoRA and
fingerprinted like BERT's. `tiny_bert768` (a 768-wide BERT) serves the retrain's tests too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import HELPCENTRE_MD


def tiny_distilbert(folder: Path) -> Path:
    import torch
    from transformers import DistilBertConfig, DistilBertModel, DistilBertTokenizerFast

    from models.loading import resolve_model_path

    tokenizer = DistilBertTokenizerFast.from_pretrained(resolve_model_path("builtin:all-MiniLM-L6-v2"))
    torch.manual_seed(0)
    config = DistilBertConfig(dim=96, n_layers=2, n_heads=2, hidden_dim=192, vocab_size=tokenizer.vocab_size,
                              max_position_embeddings=256)
    DistilBertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_bert768(folder: Path, vocab_words: int = 5000) -> Path:
    """A BERT of the base models' width (hidden 768, 12 heads) but tiny otherwise: 2 layers, intermediate
    256, and a 6k-token vocabulary (MiniLM's first 5000 entries plus every single-character `##` piece,
    so any word still tokenizes)."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from models.loading import resolve_model_path

    folder.mkdir(parents=True, exist_ok=True)
    lines = (Path(resolve_model_path("builtin:all-MiniLM-L6-v2")) / "vocab.txt").read_text(encoding="utf-8").splitlines()
    vocab = lines[:vocab_words] + [t for t in lines[vocab_words:] if len(t) == 3 and t.startswith("##")]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=768, num_hidden_layers=2, num_attention_heads=12,
                        intermediate_size=256, max_position_embeddings=256)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_the_layer_list_is_found_by_the_models_structure(tmp_path):
    """BERT names its layers `encoder.layer`, DistilBERT `transformer.layer`: both are found, with the
    embeddings before them, and LoRA's targets are every linear layer of the chosen layers (for BERT
    exactly query, key, value and the three dense layers, as before)."""
    from models.loading import inner_model, layer_layout, load_sentence_transformer

    bert = layer_layout(inner_model(load_sentence_transformer("builtin:all-MiniLM-L6-v2", "cpu", cached=False)))
    assert (bert.prefix, len(bert), bert.input_side) == ("encoder.layer", 6, ("embeddings",))
    assert bert.lower(2) == ("embeddings.", "encoder.layer.0.", "encoder.layer.1.")
    assert sorted(bert.linear_names(5)) == sorted(f"encoder.layer.5.{name}" for name in (
        "attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
        "intermediate.dense", "output.dense"))
    distil = layer_layout(inner_model(load_sentence_transformer(str(tiny_distilbert(tmp_path / "d")), "cpu",
                                                                cached=False)))
    assert (distil.prefix, len(distil), distil.input_side) == ("transformer.layer", 2, ("embeddings",))
    assert sorted(distil.linear_names(1)) == sorted(f"transformer.layer.1.{name}" for name in (
        "attention.q_lin", "attention.k_lin", "attention.v_lin", "attention.out_lin", "ffn.lin1", "ffn.lin2"))


def test_a_distilbert_is_frozen_below_its_top_layer_and_adapted_there(tmp_path):
    from core.settings import RetrainSettings
    from models.loading import inner_model, load_sentence_transformer
    from training.finetune import _apply_lora, _frozen_state, frozen_layers

    model = load_sentence_transformer(str(tiny_distilbert(tmp_path / "d")), "cpu", cached=False)
    assert frozen_layers(model, 1) == 2  # hidden state 2 is the first one training changes
    trainable = {name for name, p in inner_model(model).named_parameters() if p.requires_grad}
    assert trainable and all(name.startswith("transformer.layer.1.") for name in trainable)
    frozen = _frozen_state(model, 1)
    assert any(n.startswith("embeddings.") for n in frozen) and any(n.startswith("transformer.layer.0.") for n in frozen)
    assert not any(n.startswith("transformer.layer.1.") for n in frozen)
    _apply_lora(model, RetrainSettings(), 1)
    adapted = {name.split(".lora_A")[0] for name, p in inner_model(model).named_parameters()
               if ".lora_A" in name and p.requires_grad}
    assert len(adapted) == 6 and all(name.startswith("transformer.layer.1.") for name in adapted)


def test_the_lower_layers_fingerprint_covers_a_distilberts_layers(tmp_path):
    """What decides whether the sentiment tail may continue from the encoder's token states: it must
    change when a layer below the cut changes (DistilBERT's too), and only then."""
    import torch
    from transformers import AutoModel

    from models.onnx_export import prefix_digest

    model = AutoModel.from_pretrained(tiny_distilbert(tmp_path / "d"))
    before = prefix_digest(model, 1)
    with torch.no_grad():
        model.transformer.layer[1].ffn.lin2.bias += 1.0
    assert prefix_digest(model, 1) == before
    with torch.no_grad():
        model.transformer.layer[0].ffn.lin2.bias += 1.0
    assert prefix_digest(model, 1) != before


@pytest.mark.slow
def test_a_plain_transformers_folder_encodes_unit_vectors(tmp_path):
    from transformers import AutoTokenizer

    from models.encoder import Encoder

    folder = tiny_distilbert(tmp_path / "distil")
    assert "token_type_ids" not in AutoTokenizer.from_pretrained(folder)("a b")
    encoded = Encoder(str(folder), "cpu", cached=False).encode(["how do I get a refund", "cancel my order please"])
    assert encoded.embeddings.shape == (2, 96)
    np.testing.assert_allclose(np.linalg.norm(encoded.embeddings, axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_a_brought_encoder_is_built_measured_and_answers(tmp_path):
    from core.settings import Settings
    from serving.versions import VersionStore

    folder = tiny_distilbert(tmp_path / "distil")
    home = tmp_path / "home"
    env = {**os.environ, "CSBOT_HOME": str(home), "CSBOT_ENCODER": str(folder), "CSBOT_FINETUNE_EPOCHS": "0"}
    run = subprocess.run([sys.executable, "-m", "bot.cli", "ingest", str(HELPCENTRE_MD), "--json"], env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    champion = VersionStore(Settings.load(env={}, home=home).models_dir).champion()
    runtime = champion.meta["runtime"]
    assert runtime["served"] in ("onnx-int8", "onnx") and runtime["scores"]["probe_rows"] > 0, runtime
    assert -1.0 <= runtime["scores"]["int8_cosine_p5"] <= 1.0
    manifest = json.loads((champion.onnx_dir / "onnx.json").read_text())
    assert manifest["inputs"] == ["input_ids", "attention_mask"] and manifest["dim"] == 96
    assert "token_states" not in manifest  # 2 layers: nothing at hidden state 3 for the sentiment tail
    shared = champion.meta["sentiment"]["shared"]
    assert shared["served"] is False and "no token_states output" in shared["reason"]

    ask = subprocess.run([sys.executable, "-m", "bot.cli", "ask", "how do I get a refund", "--json"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert ask.returncode == 0, ask.stderr[-3000:]
    answer = json.loads(ask.stdout)
    assert answer["model_version"] == champion.name and answer["sources"]
    assert answer["sentiment"] in ("negative", "neutral", "positive")
    assert {s["doc_id"] for s in answer["sources"]} <= {p.stem for p in HELPCENTRE_MD.glob("*.md")}
