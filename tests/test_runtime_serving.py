"""Compressed serving: every build exports its encoder to ONNX fp32 + int8, scores both and
records which runtime serves; the engine serves it on CPU; `csbot models` shows it; the `runtime`
setting forces one. Real MiniLM, onnxruntime, FAISS and the demo KB."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from core.errors import ConfigError
from core.settings import Settings
from models.runtimes import choose_runtime
from tests.conftest import DEMO_KB, REPO, copy_home

pytestmark = pytest.mark.slow


def eval_rows(n: int = 60) -> list[dict]:
    rows = [json.loads(line) for line in (REPO / "demo" / "eval.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in rows if r["intent"] != "out_of_scope"][:n]


def test_the_demo_build_chose_int8_and_the_engine_serves_it(demo_home):
    from serving.engine import Engine
    from serving.versions import VersionStore

    champion = VersionStore(Settings.load(env={}, home=demo_home).models_dir).champion()
    record = champion.meta["runtime"]
    assert record["served"] == champion.runtime == "onnx-int8", record
    scores = record["scores"]
    assert scores["probe_rows"] > 50 and scores["int8_cosine_p5"] >= 0.98
    # Within the margin, or past it by no more than chance explains (the sign test on the paired rows):
    # the recorded figures give the recorded verdict under the rule.
    assert scores["only_fp32_right"] + scores["only_int8_right"] <= scores["probe_rows"]
    assert choose_runtime(scores["onnx_accuracy"], scores["onnx-int8_accuracy"], scores["int8_cosine_p5"],
                          discordant=(scores["only_fp32_right"], scores["only_int8_right"]))[1] == record["reason"]
    assert (champion.onnx_dir / "model.int8.onnx").is_file() and (champion.onnx_dir / "model.onnx").is_file()
    assert champion.meta["encoder_version"].endswith("+onnx-int8")  # the index was built by int8

    engine = Engine(Settings.load(env={}, home=demo_home))
    assert engine.runtime == "onnx-int8" and type(engine.served.encoder).__name__ == "OnnxEncoder"
    answer = engine.answer("how do I reset my password?")
    assert answer.doc_id == "reset-password" and not answer.handoff and answer.sentiment == "neutral"


def test_forcing_torch_serves_the_same_version_with_torch_and_the_same_answers(demo_home):
    from models.encoder import Encoder
    from serving.engine import Engine

    int8 = Engine(Settings.load(env={}, home=demo_home))
    torch = Engine(Settings.load(env={}, home=demo_home, runtime="torch"))
    assert torch.runtime == "torch" and type(torch.served.encoder) is Encoder
    assert torch.model_version == int8.model_version
    rows = eval_rows()
    a = [x.intent for x in int8.answer_batch([r["text"] for r in rows])]
    b = [x.intent for x in torch.answer_batch([r["text"] for r in rows])]
    agree = sum(x == y for x, y in zip(a, b)) / len(rows)
    assert agree >= 0.95, agree  # int8 and torch pick the same intent for (nearly) every question


def test_runtime_torch_at_build_skips_the_export(tmp_path):
    from serving.engine import Engine
    from serving.versions import VersionStore
    from training.ingest import ingest

    settings = Settings.load(env={}, home=tmp_path, runtime="torch", finetune_epochs=0)
    ingest([DEMO_KB], settings)
    champion = VersionStore(settings.models_dir).champion()
    assert champion.onnx_dir is None and champion.runtime == "torch"
    assert not champion.meta["encoder_version"].endswith("int8")
    # Later forced to int8, a version without an export still serves (torch, with a warning).
    assert Engine(Settings.load(env={}, home=tmp_path, runtime="onnx-int8")).runtime == "torch"


def test_models_json_shows_the_runtime_and_why(demo_home, tmp_path):

    home = tmp_path / "home"
    copy_home(demo_home, home)
    env = {**os.environ, "CSBOT_HOME": str(home)}
    run = subprocess.run([sys.executable, "-m", "bot.cli", "models", "--json"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    [champion] = [v for v in json.loads(run.stdout)["versions"] if v["champion"]]
    assert champion["runtime"] == champion["runtime_chosen"] == "onnx-int8"
    assert champion["runtime_reason"].startswith("int8 accuracy ") and champion["runtime_scores"]["probe_rows"] > 50
    forced = subprocess.run([sys.executable, "-m", "bot.cli", "models"], env={**env, "CSBOT_RUNTIME": "torch"},
                            capture_output=True, text=True, timeout=120)
    assert "runtime torch (forced; chose onnx-int8)" in forced.stdout


def test_an_unknown_runtime_is_a_one_line_error():
    with pytest.raises(ConfigError, match="setting runtime must be one of auto, torch, onnx, onnx-int8, not 'gpu'"):
        Settings.load(env={"CSBOT_RUNTIME": "gpu"})
