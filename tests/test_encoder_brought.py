"""An encoder a team brings as a plain transformers folder (no sentence-transformers files), of another
architecture than the builtin's: a 2-layer DistilBERT (hidden 96), whose tokenizer gives no
`token_type_ids`. It is normalised like the builtin, exported to ONNX with its own inputs, measured for
int8, too shallow to feed the sentiment model's tail (the build leaves that output out instead of
failing), and answers `csbot ask`. A random model: the plumbing is checked, not accuracy."""

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
