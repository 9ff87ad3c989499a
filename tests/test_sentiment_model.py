"""The shipped fine-tuned sentiment model (LoRA on MiniLM + head): it loads, is small enough to
commit, calls plain statements neutral and clear messages right, gives the same answer alone and in
a batch, merges its LoRA as peft does, and reports a missing or corrupt artefact in one line."""

from __future__ import annotations

import numpy as np
import pytest

from core.answer import SENTIMENT_LABELS
from core.errors import UserError
from models.sentiment_model import (
    BUILTIN_ARTEFACT,
    FineTunedSentiment,
    read_artefact,
    write_artefact,
)
from tests.test_sentiment import NEGATIVE, POSITIVE  # the same clear cases as the old head's tests

PLAIN = [
    "The router arrived yesterday.",
    "My order number is 12345.",
    "What are your opening hours on Saturday?",
    "How do I change the email address on my account?",
]


@pytest.fixture(scope="module")
def model():
    return FineTunedSentiment.load("builtin", threads=2)


def test_shipped_artefact_is_under_2_mb():
    assert BUILTIN_ARTEFACT.stat().st_size < 2 * 1024 * 1024


def test_shipped_artefact_reads_with_the_sentiment_labels():
    meta, lora, head = read_artefact(BUILTIN_ARTEFACT)
    assert (meta["labels"], bool(lora), "head.weight" in head) == (list(SENTIMENT_LABELS), True, True)


def test_missing_artefact_is_one_line_user_error(tmp_path):
    with pytest.raises(UserError) as caught:
        FineTunedSentiment.load(tmp_path / "absent.npz")
    assert "missing" in str(caught.value) and "\n" not in str(caught.value)


def test_corrupt_artefact_is_one_line_user_error(tmp_path):
    path = tmp_path / "corrupt.npz"
    path.write_bytes(BUILTIN_ARTEFACT.read_bytes()[:5000])  # truncated
    with pytest.raises(UserError) as caught:
        FineTunedSentiment.load(path)
    assert "unreadable" in str(caught.value) and "\n" not in str(caught.value)


def test_artefact_with_other_labels_is_one_line_user_error(tmp_path):
    meta, lora, head = read_artefact(BUILTIN_ARTEFACT)
    path = tmp_path / "relabelled.npz"
    write_artefact(path, lora=lora, scaling=meta["scaling"], head=head,
                   meta={**meta, "labels": ["bad", "meh", "good"]})
    with pytest.raises(UserError) as caught:
        FineTunedSentiment.load(path)
    assert "labels" in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.slow
def test_plain_statements_are_neutral(model):
    assert [label for label, _ in model.predict(PLAIN)] == ["neutral"] * len(PLAIN)


@pytest.mark.slow
def test_clear_negatives_are_negative(model):
    assert [label for label, _ in model.predict(NEGATIVE)] == ["negative"] * len(NEGATIVE)


@pytest.mark.slow
def test_clear_positives_are_positive(model):
    assert [label for label, _ in model.predict(POSITIVE)] == ["positive"] * len(POSITIVE)


@pytest.mark.slow
def test_scores_are_a_distribution_over_the_sentiment_labels(model):
    (_, scores), = model.predict(["The router arrived yesterday."])
    assert (list(scores), round(sum(scores.values()), 5)) == (list(SENTIMENT_LABELS), 1.0)


@pytest.mark.slow
def test_batch_equals_one_at_a_time(model):
    texts = PLAIN + NEGATIVE + POSITIVE
    batch = model.predict_proba(texts)
    alone = np.stack([model.predict_proba([text])[0] for text in texts])
    assert np.abs(batch - alone).max() < 1e-4


@pytest.mark.slow
def test_merged_model_matches_peft_unmerged_forward(model):
    """Load-time merge (W += s·B·A) gives the logits of peft's own LoRA forward on the same weights."""
    import torch
    from peft import LoraConfig, get_peft_model

    from models.sentiment_model import build_classifier

    meta, lora, head = read_artefact(BUILTIN_ARTEFACT)
    reference, _ = build_classifier(meta["base"], layers=meta.get("layers", [-1]), hidden=int(meta.get("hidden", 0)))
    layers = sorted({int(name.split(".")[2]) for name in lora})
    reference.encoder = get_peft_model(reference.encoder, LoraConfig(
        r=meta["lora_r"], lora_alpha=meta["lora_alpha"], target_modules=["query", "key", "value", "dense"],
        layers_to_transform=layers, lora_dropout=0.0))
    with torch.no_grad():
        for name, module in reference.encoder.named_modules():
            key = name.removeprefix("base_model.model.")
            if key in lora:
                module.lora_A["default"].weight.copy_(torch.from_numpy(lora[key][0]))
                module.lora_B["default"].weight.copy_(torch.from_numpy(lora[key][1]))
    reference.load_state_dict({k: torch.from_numpy(v) for k, v in head.items()}, strict=False)
    reference.eval()
    tokens = model.tokenize(PLAIN + NEGATIVE)
    with torch.inference_mode():
        expected = reference(**tokens).numpy()
        got = model.torch_model()(**tokens).numpy()
    assert np.abs(expected - got).max() < 1e-3
