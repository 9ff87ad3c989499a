"""ONNX serving: export of the real MiniLM, OnnxEncoder against the torch Encoder,
the sentiment head on ONNX features, folder errors, and the gate's runtime rule."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from core.errors import UserError
from models.runtimes import choose_runtime, load_encoder, sign_test_p

MINILM = "builtin:all-MiniLM-L6-v2"
SENTIMENT_SENTENCES = [
    "Thank you so much, the new card arrived and works perfectly!",
    "This is the worst service I have ever had, I want my money back now.",
    "My order number is 4411.",
    "I love how quick the refund was.",
    "Nobody has answered my ticket for a week and I'm really angry.",
    "The store opens at nine.",
]


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, dict]:
    from models.onnx_export import export_onnx

    folder = tmp_path_factory.mktemp("onnx") / "minilm"
    return folder, export_onnx(MINILM, folder)


@pytest.fixture(scope="module")
def torch_probe():
    from models.encoder import Encoder
    from models.onnx_export import probe_sentences

    return Encoder(MINILM, "cpu").encode(probe_sentences())


@pytest.fixture(scope="module")
def onnx_probe(exported):
    from models.onnx_export import probe_sentences

    return {runtime: load_encoder(exported[0], runtime).encode(probe_sentences()) for runtime in ("onnx", "onnx-int8")}


# ---- export and agreement with torch (real MiniLM) ----

@pytest.mark.slow
def test_export_writes_both_variants_and_a_manifest_naming_the_source(exported):
    folder, manifest = exported
    on_disk = json.loads((folder / "onnx.json").read_text())
    assert (on_disk["source"]["name"], on_disk["normalize"], on_disk["pooling"]["pooling_mode"], on_disk["max_seq_length"],
            sorted(on_disk["variants"]), all((folder / v["file"]).is_file() for v in on_disk["variants"].values()),
            (folder / "tokenizer.json").is_file()) == (MINILM, True, "mean", 256, ["fp32", "int8"], True, True)


@pytest.mark.slow
def test_the_graph_is_traced_with_eager_attention_and_the_loaded_model_keeps_its_own(exported):
    import onnx

    from models.loading import load_sentence_transformer

    folder, manifest = exported
    ops = {node.op_type for node in onnx.load(str(folder / "model.onnx"), load_external_data=False).graph.node}
    served = load_sentence_transformer(MINILM, "cpu")[0].auto_model.config._attn_implementation
    # SDPA's trace masks with IsNaN/Where; the eager trace has none, and the cached torch model is as it was
    assert (manifest["attention"], "IsNaN" in ops, served) == ("eager", False, "sdpa")


@pytest.mark.slow
def test_a_build_links_an_earlier_export_only_when_it_was_traced_as_exports_are_now(exported, tmp_path):
    from training.export import export_encoder

    folder, _ = exported
    linked = export_encoder(MINILM, tmp_path / "linked", "v1", reuse=folder)
    assert (tmp_path / "linked" / "model.onnx").stat().st_ino == (folder / "model.onnx").stat().st_ino
    older = tmp_path / "older"  # the same export as an older csbot wrote it: no "attention" in its manifest
    shutil.copytree(folder, older)
    manifest = json.loads((older / "onnx.json").read_text())
    del manifest["attention"]
    (older / "onnx.json").write_text(json.dumps(manifest))
    again = export_encoder(MINILM, tmp_path / "again", "v2", reuse=older)
    assert (tmp_path / "again" / "model.onnx").stat().st_ino != (older / "model.onnx").stat().st_ino
    assert linked["attention"] == again["attention"] == "eager"


def test_eager_attention_switches_a_real_bert_for_the_block_only():
    from transformers import BertConfig, BertModel

    from models.onnx_export import eager_attention

    model = BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                 vocab_size=100, attn_implementation="sdpa"))
    with eager_attention(model) as inside:
        during = model.config._attn_implementation
    with eager_attention(object()) as plain:  # a module that cannot switch is traced as it is
        pass
    assert (inside, during, model.config._attn_implementation, plain) == ("eager", "eager", "sdpa", "unknown")


@pytest.mark.slow
def test_fp32_embeddings_match_torch(torch_probe, onnx_probe):
    assert _cos(torch_probe.embeddings, onnx_probe["onnx"].embeddings).min() > 0.999


@pytest.mark.slow
def test_fp32_layer_features_match_torch(torch_probe, onnx_probe):
    assert np.abs(torch_probe.layers - onnx_probe["onnx"].layers).max() < 1e-3


@pytest.mark.slow
def test_int8_embeddings_stay_close_to_torch_on_the_probe_set(torch_probe, onnx_probe):
    # The 5th percentile: the very shortest inputs ("ok", "?") sit at ~0.97 (see docs/benchmarks.md).
    assert np.percentile(_cos(torch_probe.embeddings, onnx_probe["onnx-int8"].embeddings), 5) >= 0.98


@pytest.mark.slow
def test_manifest_records_the_measured_int8_cosine(exported, torch_probe, onnx_probe):
    recorded = exported[1]["variants"]["int8"]["vs_torch"]["cosine_mean"]
    measured = float(_cos(torch_probe.embeddings, onnx_probe["onnx-int8"].embeddings).mean())
    assert recorded == pytest.approx(measured, abs=1e-5)


@pytest.mark.slow
def test_sentiment_head_gives_the_same_labels_on_onnx_fp32_as_on_torch(exported):
    from models.encoder import Encoder
    from models.sentiment import SentimentModel

    model = SentimentModel.load("builtin")
    on_torch = [label for label, _ in model.predict(Encoder(MINILM, "cpu").encode(SENTIMENT_SENTENCES))]
    on_onnx = [label for label, _ in model.predict(load_encoder(exported[0], "onnx").encode(SENTIMENT_SENTENCES))]
    assert on_onnx == on_torch


@pytest.mark.slow
def test_one_thread_gives_the_same_embeddings_as_the_default(exported):
    texts = ["how do I reset my password", "ok", "my card was declined at the checkout twice today"]
    one = load_encoder(exported[0], "onnx", threads=1).embed(texts)
    default = load_encoder(exported[0], "onnx").embed(texts)
    assert np.abs(one - default).max() < 1e-5


@pytest.mark.slow
def test_empty_input_gives_empty_features_of_the_right_shape(exported):
    encoded = load_encoder(exported[0], "onnx-int8").encode([])
    assert (encoded.embeddings.shape, encoded.layers.shape) == ((0, 384), (0, 7, 384))


@pytest.mark.slow
def test_truncated_model_file_is_one_line_user_error(exported, tmp_path):
    folder = tmp_path / "broken"
    shutil.copytree(exported[0], folder, ignore=shutil.ignore_patterns("*.onnx"))
    (folder / "model.onnx").write_bytes((exported[0] / "model.onnx").read_bytes()[:4096])
    with pytest.raises(UserError, match=r"truncated or replaced") as caught:
        load_encoder(folder, "onnx")
    assert "\n" not in str(caught.value)


@pytest.mark.slow
def test_garbage_model_file_of_the_recorded_size_is_one_line_user_error(exported, tmp_path):
    folder = tmp_path / "garbage"
    shutil.copytree(exported[0], folder, ignore=shutil.ignore_patterns("*.onnx"))
    size = (exported[0] / "model.onnx").stat().st_size
    (folder / "model.onnx").write_bytes(b"\x07" * size)
    with pytest.raises(UserError, match=r"cannot be loaded: [^\n]+$") as caught:
        load_encoder(folder, "onnx")
    assert "\n" not in str(caught.value)


# ---- folder errors that need no export ----

def test_missing_folder_is_one_line_user_error(tmp_path):
    with pytest.raises(UserError, match=r"^ONNX encoder folder \S+ does not exist [^\n]+$"):
        load_encoder(tmp_path / "nowhere", "onnx")


def test_folder_without_manifest_is_one_line_user_error(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"not a model")
    with pytest.raises(UserError, match=r"has no onnx\.json: not an export, or an unfinished one[^\n]+$"):
        load_encoder(tmp_path, "onnx-int8")


def test_corrupt_manifest_is_one_line_user_error(tmp_path):
    (tmp_path / "onnx.json").write_text('{"format": 1, "variants": {')
    with pytest.raises(UserError, match=r"manifest \S+ is unreadable: [^\n]+$"):
        load_encoder(tmp_path, "onnx")


def test_unknown_runtime_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="unknown encoder runtime 'openvino'"):
        load_encoder(tmp_path, "openvino")


def test_onnx_on_cuda_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="CPU only"):
        load_encoder(tmp_path, "onnx", device="cuda")


# ---- the gate's rule ----

def test_int8_serves_when_within_margin_and_cosine_above_floor():
    assert choose_runtime(0.877, 0.874, 0.993)[0] == "onnx-int8"


def test_int8_serves_at_exactly_the_margin():
    assert choose_runtime(0.850, 0.845, 0.99)[0] == "onnx-int8"


def test_fp32_serves_when_int8_loses_more_than_the_margin():
    runtime, reason = choose_runtime(0.877, 0.870, 0.995)
    assert (runtime, "loses 0.70 pt" in reason) == ("onnx", True)


def test_fp32_serves_when_int8_cosine_is_below_the_floor():
    runtime, reason = choose_runtime(0.877, 0.877, 0.95)
    assert (runtime, "cosine 0.9500 < 0.98" in reason) == ("onnx", True)


def test_a_configured_margin_is_honoured():
    assert choose_runtime(0.877, 0.860, 0.99, margin=0.02)[0] == "onnx-int8"


def test_a_configured_cosine_floor_is_honoured():
    assert choose_runtime(0.877, 0.877, 0.97, cosine_floor=0.995)[0] == "onnx"


def test_int8_better_than_fp32_serves():
    assert choose_runtime(0.80, 0.81, 0.99)[0] == "onnx-int8"


def test_fp32_serves_when_int8_was_not_measured():
    assert choose_runtime(0.877, None, None)[0] == "onnx"


def test_torch_serves_without_an_fp32_onnx_figure():
    assert choose_runtime(None, 0.877, 0.99)[0] == "torch"


def test_torch_serves_when_fp32_accuracy_is_nan():
    assert choose_runtime(math.nan, 0.877, 0.99)[0] == "torch"


def test_the_sign_test_gives_the_exact_one_sided_chance():
    assert sign_test_p(0, 0) == 1.0
    assert sign_test_p(4, 2) == pytest.approx(22 / 64)  # C(6,4) + C(6,5) + C(6,6) over 2^6
    assert sign_test_p(5, 0) == pytest.approx(1 / 32)
    assert sign_test_p(0, 3) == 1.0
    with pytest.raises(ValueError, match="≥ 0"):
        sign_test_p(-1, 2)


def test_a_loss_past_the_margin_that_chance_explains_still_serves_int8():
    # The demo's probe on one machine: 246 rows, int8 wrong on 4 where fp32 was right, right on 2 where
    # fp32 was wrong: 0.81 pt, past 0.5, and p = 0.34.
    runtime, reason = choose_runtime(0.7439, 0.7358, 0.989, discordant=(4, 2))
    assert runtime == "onnx-int8"
    assert "within chance (4 rows only fp32 gets right, 2 only int8; sign test p 0.34 ≥ 0.05)" in reason


def test_a_loss_past_the_margin_beyond_chance_serves_fp32():
    runtime, reason = choose_runtime(0.80, 0.77, 0.99, discordant=(9, 0))
    assert runtime == "onnx"
    assert "int8 loses 3.00 pt (> 0.5; 9 rows only fp32 gets right, 0 only int8; sign test p 0.00 < 0.05)" in reason


def test_within_chance_does_not_excuse_a_cosine_below_the_floor():
    runtime, reason = choose_runtime(0.7439, 0.7358, 0.95, discordant=(4, 2))
    assert runtime == "onnx" and "cosine 0.9500 < 0.98" in reason


def test_discordant_rows_count_each_side_and_refuse_unpaired_rows():
    from training.export import discordant_rows

    assert discordant_rows([True, True, False, False, True], [True, False, True, False, False]) == (2, 1)
    with pytest.raises(ValueError, match="different rows"):
        discordant_rows([True], [True, False])


def test_heldout_verdict_pairs_the_two_variants_rows(tmp_path):
    from types import SimpleNamespace

    from core.settings import Settings
    from training.export import heldout_verdict

    version = SimpleNamespace(onnx_dir=tmp_path, meta={"runtime": {"scores": {"int8_cosine_p5": 0.99}}})
    reports = {"onnx": {"accuracy": 0.75, "correct": [True] * 6 + [False] * 2},
               "onnx-int8": {"accuracy": 0.625, "correct": [True] * 5 + [False] * 3}}
    verdict = heldout_verdict(Settings.load(env={}, home=tmp_path), version, reports.__getitem__)
    assert verdict["served"] == "onnx-int8"  # one row apart: p = 0.5
    assert verdict["heldout"]["only_fp32_right"] == 1 and verdict["heldout"]["only_int8_right"] == 0
    reports["onnx-int8"] = {"accuracy": 0.625, "correct": [False] * 8}
    reports["onnx"] = {"accuracy": 0.75, "correct": [True] * 6 + [False] * 2}
    assert heldout_verdict(Settings.load(env={}, home=tmp_path), version, reports.__getitem__)["served"] == "onnx"


def test_accuracy_given_as_a_percentage_is_rejected():
    with pytest.raises(ValueError, match="fraction, not a percentage"):
        choose_runtime(87.7, 87.4, 0.99)


@pytest.mark.slow
def test_a_saved_sentence_transformers_folder_exports_and_matches_its_torch_encoder(tmp_path):
    # A version's fine-tuned encoder/ is such a folder (training/finetune.py: model.save). Here the base
    # model with a perturbed top layer (its embeddings' cosine to the base's ~0.6) stands in for one,
    # so an export that read the base weights instead of the folder would fail.
    import torch

    from models.encoder import Encoder
    from models.loading import load_sentence_transformer
    from models.onnx_export import export_onnx

    model = load_sentence_transformer(MINILM, "cpu", cached=False)
    with torch.no_grad():
        model[0].auto_model.encoder.layer[5].output.dense.bias.add_(torch.randn(384, generator=torch.Generator().manual_seed(0)) * 0.5)
    model.save(str(tmp_path / "encoder"))
    export_onnx(str(tmp_path / "encoder"), tmp_path / "onnx", variants=("fp32",), measure=False)
    texts = ["how do I reset my password", "the router arrived yesterday"]
    assert _cos(Encoder(str(tmp_path / "encoder"), "cpu").embed(texts), load_encoder(tmp_path / "onnx", "onnx").embed(texts)).min() > 0.999


@pytest.mark.slow
def test_one_question_at_a_time_matches_torch(exported):
    # Serving encodes one message per call: batch 1, no padding (the export traced a padded batch of 2).
    from models.encoder import Encoder

    texts = ["ok", "How do I reset my password?", " ".join(["my parcel is late"] * 80)]
    torch_encoder, onnx_encoder = Encoder(MINILM, "cpu"), load_encoder(exported[0], "onnx")
    single = np.vstack([onnx_encoder.embed([t]) for t in texts])
    assert _cos(torch_encoder.embed(texts), single).min() > 0.999


def test_token_states_need_an_export_with_them(exported):
    from models.onnx_encoder import OnnxEncoder

    folder, manifest = exported
    encoder = OnnxEncoder(folder, "int8")
    assert "token_states" not in manifest and encoder.token_states is None
    assert encoder.encode(["hello"]).token_states is None
    with pytest.raises(ValueError, match="no token_states output"):
        encoder.encode(["hello"], states=True)


def test_map_texts_keeps_the_order_and_spreads_the_work_over_threads():
    import threading

    from models.onnx_encoder import map_texts

    def square(x):  # long enough that one thread cannot take every share before the other starts
        seen.append(threading.current_thread().name)
        time.sleep(0.01)
        return x * x

    items, seen = list(range(11)), []
    assert map_texts(square, items, 3) == [x * x for x in items]
    names = set(seen)
    assert len(names) == 3 and threading.current_thread().name in names  # the caller takes a share
    assert sum(name.startswith("csbot-onnx") for name in names) == 2
    seen.clear()
    assert map_texts(lambda x: (seen.append(threading.current_thread().name), x)[1], [7], 2) == [7]
    assert seen == [threading.current_thread().name]  # one text: the caller's thread, no hand-off
    assert map_texts(lambda x: x, [], 2) == []

    # A forked child (a DataLoader worker, say) gets pools of its own, not the parent's dead threads.
    assert map_texts(lambda x: x + 1, [1, 2, 3], 2) == [2, 3, 4]  # the parent's pool for two workers
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        try:
            signal.alarm(20)  # waiting on the parent's dead pool threads would hang: SIGALRM ends it
            ok = map_texts(lambda x: x + 1, [1, 2, 3], 2) == [2, 3, 4]
            os.write(write, b"ok" if ok else b"wrong")
        finally:
            os._exit(0)
    os.close(write)
    try:
        assert os.read(read, 8) == b"ok"  # b"" when the child died waiting
    finally:
        os.close(read)
        os.waitpid(child, 0)


@pytest.mark.slow
def test_int8_on_two_threads_gives_each_text_what_it_gets_alone(exported):
    # int8 runs one text at a time (batch-invariant); with workers=2 two texts run side by side, and a
    # text's features must not depend on that.
    from models.onnx_encoder import OnnxEncoder

    texts = ["ok", "How do I reset my password?", "my card was declined at the checkout twice today",
             " ".join(["my parcel is late"] * 40), "refund", "where is my order #4411?", "hi there"]
    two = OnnxEncoder(exported[0], "int8", workers=2)
    one = OnnxEncoder(exported[0], "int8", workers=1)
    assert (two.workers, one.workers) == (2, 1)
    together = two.encode(texts)
    alone = [one.encode([t]) for t in texts]
    assert np.array_equal(together.embeddings, np.vstack([a.embeddings for a in alone]))
    assert np.array_equal(together.layers, np.vstack([a.layers for a in alone]))
