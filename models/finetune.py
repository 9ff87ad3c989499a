"""Contrastive fine-tuning of the encoder's top layers on labelled questions (the SetFit idea).

sentence-transformers' trainer with a batch triplet loss over (text, label) rows and the
GROUP_BY_LABEL batch sampler pulls questions of one intent together and pushes other intents
away; the intent head is then refitted on the tuned embeddings. Only the top `trainable_layers`
transformer layers are updated: the sentiment head reads the frozen lower layers (see
models/sentiment.py), so one encoder pass still serves every task.

The result is saved as a normal sentence-transformers folder (loadable by name like any model).
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

from models.loading import load_sentence_transformer, pick_device

log = logging.getLogger(__name__)

FINETUNE_RECORD = "csbot_finetune.json"  # what the fine-tuning did, saved beside the weights


@dataclass
class FinetuneConfig:
    """Every knob of the contrastive step."""

    epochs: float = 4.0
    batch_size: int = 32
    learning_rate: float = 2e-5
    trainable_layers: int = 2
    # "mnrl": MultipleNegativesRankingLoss on (question, another question of the same intent) pairs,
    # which measured best on BANKING77 10-shot; "batch_hard_soft_margin" / "batch_all": batch
    # triplet losses over (question, label) rows.
    loss: str = "mnrl"
    # At most this many optimizer steps in all (None: no cap): small KBs get every epoch, a large
    # one stops after `max_steps` batches, so ingest time stays bounded.
    max_steps: int | None = None
    warmup_ratio: float = 0.1
    seed: int = 13
    device: str = "auto"


def frozen_layers(model, trainable_layers: int) -> int:
    """Freeze embeddings and all but the top `trainable_layers` layers; returns the first trainable layer."""
    first = model[0]
    auto_model = getattr(first, "model", None) or getattr(first, "auto_model")
    layers = auto_model.encoder.layer
    cut = max(0, len(layers) - trainable_layers)
    for param in auto_model.embeddings.parameters():
        param.requires_grad = False
    for layer in layers[:cut]:
        for param in layer.parameters():
            param.requires_grad = False
    return cut + 1  # hidden_states index of the first changed layer (0 = embeddings)


def _loss(model, name: str):
    from sentence_transformers.sentence_transformer import losses

    if name == "batch_hard_soft_margin":
        return losses.BatchHardSoftMarginTripletLoss(model)
    if name == "batch_all":
        return losses.BatchAllTripletLoss(model)
    if name == "mnrl":
        return losses.MultipleNegativesRankingLoss(model)
    raise ValueError(f"unknown loss {name!r}")


def _pairs(texts: list[str], labels: list[str], seed: int) -> dict[str, list[str]]:
    """(anchor, positive) pairs of the same label for MNRL: each text paired with another of its label."""
    rng = random.Random(seed)
    by_label: dict[str, list[str]] = {}
    for text, label in zip(texts, labels):
        by_label.setdefault(label, []).append(text)
    anchors, positives = [], []
    for text, label in zip(texts, labels):
        others = [t for t in by_label[label] if t != text]
        if others:
            anchors.append(text)
            positives.append(rng.choice(others))
    return {"anchor": anchors, "positive": positives}


def finetune_encoder(base: str, texts: list[str], labels: list[str], out_dir: Path,
                     config: FinetuneConfig | None = None) -> Path:
    """Fine-tune `base` on (text, label) rows and save it to `out_dir`; returns `out_dir`."""
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers

    config = config or FinetuneConfig()
    device = pick_device(config.device)
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    model = load_sentence_transformer(base, device, cached=False)
    frozen_layers(model, config.trainable_layers)
    if config.loss == "mnrl":
        data = Dataset.from_dict(_pairs(texts, labels, config.seed))
        sampler = BatchSamplers.NO_DUPLICATES
    else:
        label_ids = {label: i for i, label in enumerate(sorted(set(labels)))}
        data = Dataset.from_dict({"text": list(texts), "label": [label_ids[label] for label in labels]})
        sampler = BatchSamplers.GROUP_BY_LABEL
    work_dir = Path(out_dir).with_name(Path(out_dir).name + ".trainer")
    steps_per_epoch = max(1, len(data) // config.batch_size)
    total_steps = max(1, int(steps_per_epoch * config.epochs))
    capped = bool(config.max_steps) and total_steps > config.max_steps
    if capped:
        total_steps = config.max_steps
        log.info("fine-tuning capped at %d steps (%.1f epochs)", total_steps, total_steps / steps_per_epoch)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(work_dir),
        num_train_epochs=config.epochs,
        max_steps=total_steps if capped else -1,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        warmup_steps=int(config.warmup_ratio * total_steps),
        batch_sampler=sampler,
        seed=config.seed,
        save_strategy="no",
        logging_strategy="no",
        report_to="none",
        disable_tqdm=os.environ.get("CSBOT_PROGRESS", "") != "1",
        fp16=device.startswith("cuda"),
        use_cpu=not device.startswith("cuda"),
        dataloader_drop_last=False,
    )
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=data, loss=_loss(model, config.loss))
    trainer.train()
    model.save(str(out_dir))
    record = {"steps": trainer.state.global_step, "epochs": round(trainer.state.global_step / steps_per_epoch, 2),
              "pairs_or_rows": len(data), "loss": config.loss, "trainable_layers": config.trainable_layers,
              "learning_rate": config.learning_rate, "seed": config.seed}
    (Path(out_dir) / FINETUNE_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(work_dir, ignore_errors=True)
    return Path(out_dir)
