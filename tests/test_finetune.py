"""The ingest-time contrastive fine-tuning on the real MiniLM encoder: the step cap bounds it."""

from __future__ import annotations

import json

import pytest

from core.settings import DEFAULT_ENCODER, FinetuneSettings, RetrainSettings
from models.loading import load_sentence_transformer
from retrieval.kb import load_documents
from tests.conftest import DEMO_KB
from training.finetune import FINETUNE_RECORD, EncoderJob, finetune_encoder, train_encoder

pytestmark = pytest.mark.slow


def demo_questions():
    docs = load_documents([DEMO_KB])
    rows = [(q, d.label) for d in docs for q in d.questions]
    return [t for t, _ in rows], [label for _, label in rows]


def test_the_step_cap_stops_a_long_fine_tuning_and_the_record_says_so(tmp_path):
    texts, labels = demo_questions()
    out = finetune_encoder(DEFAULT_ENCODER, texts, labels, tmp_path / "encoder",
                           FinetuneSettings(epochs=50, max_steps=3), device="cpu")
    record = json.loads((out / FINETUNE_RECORD).read_text())
    assert record["steps"] == 3 and record["epochs"] < 1
    model = load_sentence_transformer(str(out), "cpu", cached=False)  # a normal sentence-transformers folder
    assert model.encode(["where is my parcel"]).shape == (1, 384)


def test_without_the_cap_every_epoch_runs(tmp_path):
    texts, labels = demo_questions()
    texts, labels = texts[:64], labels[:64]  # two batches of pairs
    out = finetune_encoder(DEFAULT_ENCODER, texts, labels, tmp_path / "encoder",
                           FinetuneSettings(epochs=2, max_steps=0), device="cpu")
    record = json.loads((out / FINETUNE_RECORD).read_text())
    assert record["epochs"] == pytest.approx(2, abs=0.5) and record["steps"] >= 2


def test_the_retrain_trains_on_short_texts_but_its_encoder_serves_whole_chunks(tmp_path):
    """The retrain truncates to `max_seq_length` (64) while it trains; the saved encoder must read as far as
    the base does, or every chunk of the KB is embedded from its first 64 tokens. A champion saved with the
    training length (as retrains once did) gets the base's length back through `serve_max_seq_length`."""
    texts, labels = demo_questions()
    config = RetrainSettings(stages="intent", max_steps=1, max_seq_length=64).to_dict()
    job = EncoderJob(base=DEFAULT_ENCODER, out_dir=str(tmp_path / "encoder"), texts=texts[:40], labels=labels[:40],
                     config=config)
    train_encoder(job)
    base_length = load_sentence_transformer(DEFAULT_ENCODER, "cpu").max_seq_length
    assert base_length == 256
    assert load_sentence_transformer(job.out_dir, "cpu", cached=False).max_seq_length == base_length

    truncated = load_sentence_transformer(job.out_dir, "cpu", cached=False)
    truncated.max_seq_length = 64
    truncated.save(str(tmp_path / "champion"))
    healed = EncoderJob(base=str(tmp_path / "champion"), out_dir=str(tmp_path / "healed"), texts=texts[:40],
                        labels=labels[:40], config=config, serve_max_seq_length=base_length)
    train_encoder(healed)
    assert load_sentence_transformer(healed.out_dir, "cpu", cached=False).max_seq_length == base_length
