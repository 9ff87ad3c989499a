"""Fine-tuning the shared encoder's top layers, with sentence-transformers' trainer: the one module
for it, used by ingest (`finetune_encoder`: the SetFit-style contrastive step on the KB's example
questions, knobs in `settings.finetune`) and by the nightly retrain (`train_encoder`: the stages
below, knobs in `settings.retrain`). Both freeze the same lower layers (`frozen_layers`) and pick the
contrastive loss by the same names (`contrastive_loss`).

The retrain runs two short stages on the same top `trainable_layers` layers (the lower ones stay frozen: the
sentiment head reads them, see models/sentiment.py — checked bit for bit before saving):

1. **intent** — the contrastive step (`intent_loss`: batch-hard soft-margin triplet loss by default,
   batches grouped by label) on the labelled questions: the KB's example questions and titles,
   replayed earlier feedback examples and the new ones;
2. **retrieval** — MultipleNegativesRankingLoss on (question, article text) pairs, and on
   (question, article, hard negative article) triplets from 👎 votes: a correction gives
   (question, right article, wrongly given article); a 👎 without a correction gives
   (question, question, wrongly given article) — the question is its own positive (SimCSE-style,
   dropout noise), so the wrong article is pushed away without inventing a label.

Each stage evaluates a validation split (nearest-neighbour intent accuracy against the training
questions, and nearest-article accuracy) before training and every `eval_every` epochs, stops
after `patience` evaluations without improvement, and restores its best weights — so a stage that
does not help leaves the encoder as it was. Seeds are fixed; fp16 on CUDA (`mixed_precision`);
progress bars when asked. `method="lora"` trains LoRA adapters (peft) on the same top layers and
merges them, so the saved folder is a plain sentence-transformers model either way.

Multi-GPU: the retrain can launch this module with an existing launcher (`launcher =
"torchrun --nproc_per_node=4"` or `"accelerate launch --num_processes 4"`); the trainer then runs
data-parallel and rank 0 saves. The single-process form is `python -m training.finetune
JOB.json` (what the launcher starts on each rank).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # `python training/finetune.py JOB.json`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.settings import LOSSES, SEED, FinetuneSettings, GeneralSettings, RetrainSettings  # noqa: E402
from models.loading import inner_model, layer_layout, load_sentence_transformer, pick_device  # noqa: E402

log = logging.getLogger("csbot.retrain")

# ----- shared: frozen layers, losses ----------------------------------------------------------

FINETUNE_RECORD = "csbot_finetune.json"  # what the fine-tuning did, saved beside the weights


def frozen_layers(model, trainable_layers: int) -> int:
    """Freeze embeddings and all but the top `trainable_layers` layers; returns the first trainable layer.
    The layers are found by the model's structure (models/loading.py `layer_layout`), so a brought
    encoder of another architecture (DistilBERT's `transformer.layer`, ...) is frozen the same way."""
    layout = layer_layout(inner_model(model))
    layers = layout.layers
    cut = max(0, len(layers) - trainable_layers)
    for param in layout.input_parameters():
        param.requires_grad = False
    for layer in layers[:cut]:
        for param in layer.parameters():
            param.requires_grad = False
    return cut + 1  # hidden_states index of the first changed layer (0 = embeddings)


def contrastive_loss(model, name: str):
    from sentence_transformers.sentence_transformer import losses

    if name == "batch_hard_soft_margin":
        return losses.BatchHardSoftMarginTripletLoss(model)
    if name == "batch_all":
        return losses.BatchAllTripletLoss(model)
    if name == "mnrl":
        return losses.MultipleNegativesRankingLoss(model)
    raise ValueError(f"unknown loss {name!r}; use one of {', '.join(LOSSES)}")


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
                     config: FinetuneSettings | None = None, *, seed: int = SEED,
                     device: str = GeneralSettings.device) -> Path:
    """Ingest's contrastive step: fine-tune `base` on (text, label) rows and save it to `out_dir`
    (a plain sentence-transformers folder, with what it did in FINETUNE_RECORD); returns `out_dir`."""
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers

    config = config or FinetuneSettings()
    device = pick_device(device)
    torch.manual_seed(seed)
    random.seed(seed)
    model = load_sentence_transformer(base, device, cached=False)
    frozen_layers(model, config.trainable_layers)
    if config.loss == "mnrl":
        data = Dataset.from_dict(_pairs(texts, labels, seed))
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
        seed=seed,
        save_strategy="no",
        logging_strategy="no",
        report_to="none",
        disable_tqdm=os.environ.get("CSBOT_PROGRESS", "") != "1",
        fp16=device.startswith("cuda"),
        use_cpu=not device.startswith("cuda"),
        dataloader_drop_last=False,
    )
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=data, loss=contrastive_loss(model, config.loss))
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # no raw {'train_runtime': ...} dict on the console (as the retrain)
    trainer.train()
    model.save(str(out_dir))
    record = {"steps": trainer.state.global_step, "epochs": round(trainer.state.global_step / steps_per_epoch, 2),
              "pairs_or_rows": len(data), "loss": config.loss, "trainable_layers": config.trainable_layers,
              "learning_rate": config.learning_rate, "seed": seed}
    (Path(out_dir) / FINETUNE_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(work_dir, ignore_errors=True)
    return Path(out_dir)


# ----- the retrain's stages ------------------------------------------------------------------------

@dataclass
class EncoderJob:
    """Everything one encoder fine-tuning needs; JSON-able so a launcher can pass it to each rank."""

    base: str  # model name or folder to start from
    out_dir: str
    texts: list[str] = field(default_factory=list)  # labelled rows for the intent stage
    labels: list[str] = field(default_factory=list)
    pairs: list[list[str]] = field(default_factory=list)  # [question, article text]
    triplets: list[list[str]] = field(default_factory=list)  # [question, positive, hard negative]
    val_texts: list[str] = field(default_factory=list)
    val_labels: list[str] = field(default_factory=list)
    articles: list[list[str]] = field(default_factory=list)  # [label, article text] for validation
    config: dict = field(default_factory=dict)  # RetrainSettings.to_dict()
    # The saved encoder reads texts up to this many tokens when it serves (0: the base's own length).
    # Training truncates to `max_seq_length` (short questions and article heads); serving must not, or
    # every chunk of the KB is embedded from its first 64 tokens only.
    serve_max_seq_length: int = 0

    def save(self, path: Path) -> Path:
        Path(path).write_text(json.dumps(asdict(self)), encoding="utf-8")
        return Path(path)

    @classmethod
    def load(cls, path: Path) -> "EncoderJob":
        return cls(**json.loads(Path(path).read_text(encoding="utf-8")))


@dataclass
class StageResult:
    stage: str
    rows: int
    steps: int
    initial_metric: float | None
    best_metric: float | None
    best_step: int
    stopped_early: bool
    seconds: float


class _Validator:
    """Validation metric: mean of nearest-training-question intent accuracy and nearest-article accuracy."""

    def __init__(self, job: EncoderJob, seed: int, max_reference: int = 300):
        rng = random.Random(seed)
        ref = list(zip(job.texts, job.labels))
        if len(ref) > max_reference:
            ref = rng.sample(ref, max_reference)
        self.ref_texts = [t for t, _ in ref]
        self.ref_labels = [label for _, label in ref]
        self.article_texts = [t for _, t in job.articles]
        self.article_labels = [label for label, _ in job.articles]
        self.val_texts, self.val_labels = list(job.val_texts), list(job.val_labels)

    @property
    def usable(self) -> bool:
        return bool(self.val_texts) and (bool(self.ref_texts) or bool(self.article_texts))

    def __call__(self, model) -> float:
        import numpy as np

        def embed(texts):
            return model.encode(texts, batch_size=64, convert_to_numpy=True, normalize_embeddings=True,
                                show_progress_bar=False)

        was_training = model.training
        model.eval()
        val = embed(self.val_texts)
        scores = []
        for texts, labels in ((self.ref_texts, self.ref_labels), (self.article_texts, self.article_labels)):
            if texts:
                nearest = np.argmax(val @ embed(texts).T, axis=1)
                scores.append(float(np.mean([labels[j] == gold for j, gold in zip(nearest, self.val_labels)])))
        if was_training:
            model.train()
        return float(np.mean(scores))


def _trainable_snapshot(model) -> dict:
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def _restore(model, snapshot: dict) -> None:
    import torch

    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in snapshot.items():
            params[name].copy_(value)


def _early_stopping_callback(model, validator, every: int, patience: int, initial: float | None):
    from transformers import TrainerCallback

    class EarlyStopping(TrainerCallback):
        def __init__(self):
            self.best = initial
            self.best_step = 0
            self.snapshot = _trainable_snapshot(model)
            self.bad = 0
            self.stopped_early = False
            self.history: list[tuple[int, float]] = []

        def on_step_end(self, args, state, control, **kwargs):
            last = state.max_steps and state.global_step >= state.max_steps
            if validator is None or not (state.global_step % every == 0 or last):
                return control
            metric = validator(model)
            self.history.append((state.global_step, metric))
            log.info("  step %d/%d: validation %.4f (best %.4f)", state.global_step, state.max_steps, metric, self.best)
            if metric > self.best + 1e-4:
                self.best, self.best_step, self.bad = metric, state.global_step, 0
                self.snapshot = _trainable_snapshot(model)
            else:
                self.bad += 1
                if self.bad >= patience and not last:
                    log.info("  early stop: no improvement in %d evaluations", self.bad)
                    self.stopped_early = True
                    control.should_training_stop = True
            return control

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                log.info("  step %d/%d: loss %.4f", state.global_step, state.max_steps, logs["loss"])

    return EarlyStopping()


def _apply_lora(model, config: RetrainSettings, first_trainable_layer: int):
    """LoRA adapters on every linear layer of the trainable layers (by module, whatever the architecture
    names them: BERT's query/key/value/dense, DistilBERT's q_lin/.../lin2)."""
    from peft import LoraConfig, inject_adapter_in_model

    inner = inner_model(model)
    for param in inner.parameters():
        param.requires_grad = False
    targets = layer_layout(inner).linear_names(first_trainable_layer)
    if not targets:
        raise RuntimeError(f"LoRA: no linear layers in the encoder's layers {first_trainable_layer} and up")
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha,
                      lora_dropout=config.lora_dropout, target_modules=targets)
    inject_adapter_in_model(lora, inner)
    return inner


def _merge_lora(inner) -> None:
    from peft.tuners.lora import LoraLayer

    for name, module in list(inner.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent_name, _, attr = name.rpartition(".")
            setattr(inner.get_submodule(parent_name), attr, module.get_base_layer())


def _frozen_state(model, first_trainable_layer: int) -> dict:
    """Copies of every weight the sentiment head depends on (embeddings and the lower layers)."""
    inner = inner_model(model)
    lower = layer_layout(inner).lower(first_trainable_layer)
    return {name: value.detach().clone() for name, value in inner.state_dict().items() if name.startswith(lower)}


def _check_frozen(model, frozen: dict) -> None:
    import torch

    inner = inner_model(model)
    current = inner.state_dict()
    changed = [name for name, value in frozen.items() if name not in current or not torch.equal(current[name], value)]
    if changed:
        raise RuntimeError(f"encoder training changed frozen weights ({', '.join(changed[:3])} ...): "
                           "the sentiment head would read changed layers")


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def train_encoder(job: EncoderJob) -> dict:
    """Run the configured stages and save the tuned encoder to `job.out_dir`; returns a summary."""
    from transformers import set_seed

    cfg = RetrainSettings(**job.config)
    seed = cfg.seed
    set_seed(seed)
    random.seed(seed)
    started = time.perf_counter()
    device = _rank_device(cfg)
    model = load_sentence_transformer(job.base, device, cached=False)
    serve_length = job.serve_max_seq_length or int(model.max_seq_length or 512)
    model.max_seq_length = min(int(model.max_seq_length or 512), cfg.max_seq_length)  # for training only
    inner = inner_model(model)
    n_layers = len(layer_layout(inner))
    first_trainable = frozen_layers(model, cfg.trainable_layers) - 1  # module index
    frozen = _frozen_state(model, first_trainable)
    lora = cfg.method == "lora"
    if lora:
        _apply_lora(model, cfg, first_trainable)
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("encoder %s on %s: layers %d-%d trainable (%s, %d parameters)", job.base, device,
             first_trainable, n_layers - 1, "LoRA" if lora else "full weights", n_trainable)

    validator = _Validator(job, seed)
    validator = validator if validator.usable else None
    work_dir = Path(job.out_dir).with_name(Path(job.out_dir).name + ".trainer")
    stages = []
    for stage in cfg.stage_list:
        data = _stage_data(stage, job, model, cfg)
        if data is not None:
            stages.append(_run_stage(stage, data, model, validator, cfg, work_dir / stage, device=device, lora=lora))
    if lora:
        _merge_lora(inner)
    _check_frozen(model, frozen)
    model.eval()
    model.max_seq_length = serve_length
    if _is_main_process():
        model.save(str(job.out_dir))
    shutil.rmtree(work_dir, ignore_errors=True)
    return {"stages": [asdict(s) for s in stages], "seconds": round(time.perf_counter() - started, 2),
            "method": "lora" if lora else "full", "device": device, "trainable_parameters": n_trainable,
            "first_trainable_layer": first_trainable}


def _rank_device(cfg: RetrainSettings) -> str:
    """The configured device; under a multi-GPU launcher, this rank's own GPU (LOCAL_RANK)."""
    device = pick_device(cfg.device or "auto")
    if os.environ.get("LOCAL_RANK") is not None and device.startswith("cuda"):
        device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return device


@dataclass
class _StageData:
    """One stage's training set (a Dataset, or {name: Dataset} for several), its loss and batch sampler."""

    train: object
    loss: object
    sampler: object
    rows: int


def _stage_data(stage: str, job: EncoderJob, model, cfg: RetrainSettings) -> _StageData | None:
    """What stage `stage` trains on, or None (logged) when the job has nothing for it."""
    from datasets import Dataset
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer import losses

    if stage == "intent":
        label_ids = {label: i for i, label in enumerate(sorted(set(job.labels)))}
        groups = {}
        for label in job.labels:
            groups[label] = groups.get(label, 0) + 1
        if sum(1 for n in groups.values() if n >= 2) < 2:
            log.info("stage intent skipped: fewer than two intents with two examples")
            return None
        train = Dataset.from_dict({"text": list(job.texts), "label": [label_ids[x] for x in job.labels]})
        return _StageData(train, contrastive_loss(model, cfg.intent_loss), BatchSamplers.GROUP_BY_LABEL, len(train))
    if stage == "retrieval":
        parts = {}
        if job.pairs:
            parts["pairs"] = Dataset.from_dict({"anchor": [p[0] for p in job.pairs], "positive": [p[1] for p in job.pairs]})
        if job.triplets:
            parts["triplets"] = Dataset.from_dict({"anchor": [t[0] for t in job.triplets],
                                                   "positive": [t[1] for t in job.triplets],
                                                   "negative": [t[2] for t in job.triplets]})
        if not parts:
            log.info("stage retrieval skipped: no pairs")
            return None
        mnrl = losses.MultipleNegativesRankingLoss(model)
        train = parts if len(parts) > 1 else next(iter(parts.values()))
        loss = {name: mnrl for name in parts} if len(parts) > 1 else mnrl
        return _StageData(train, loss, BatchSamplers.NO_DUPLICATES, sum(len(d) for d in parts.values()))
    raise ValueError(f"unknown stage {stage!r}")


def _run_stage(stage: str, data: _StageData, model, validator, cfg: RetrainSettings, out_dir: Path, *,
               device: str, lora: bool) -> StageResult:
    """Train one stage with early stopping on the validation metric, and restore its best weights."""
    from sentence_transformers import SentenceTransformerTrainer
    from transformers.trainer_callback import PrinterCallback

    class _Trainer(SentenceTransformerTrainer):
        def add_model_card_callback(self, default_args_dict):  # no model card statistics: time and noise
            pass

    steps_per_epoch = max(1, math.ceil(data.rows / cfg.batch_size))
    max_steps = max(1, int(steps_per_epoch * cfg.epochs))
    if cfg.max_steps > 0:
        max_steps = min(max_steps, cfg.max_steps)
    every = max(1, int(round(steps_per_epoch * cfg.eval_every)))
    stage_started = time.perf_counter()
    initial = validator(model) if validator else None
    if initial is not None:
        log.info("stage %s: %d rows, up to %d steps; validation before %.4f", stage, data.rows, max_steps, initial)
    else:
        log.info("stage %s: %d rows, %d steps (no validation split)", stage, data.rows, max_steps)
    callback = _early_stopping_callback(model, validator, every, cfg.patience,
                                        initial if initial is not None else -1.0)
    args = _stage_args(cfg, out_dir, data.sampler, max_steps=max_steps, every=every, device=device, lora=lora)
    trainer = _Trainer(model=model, args=args, train_dataset=data.train, loss=data.loss, callbacks=[callback])
    trainer.remove_callback(PrinterCallback)  # our own log lines instead of raw dicts on stdout
    trainer.train()
    if validator is not None:
        _restore(model, callback.snapshot)
    result = StageResult(stage, data.rows, trainer.state.global_step, initial, callback.best if validator else None,
                         callback.best_step, callback.stopped_early, round(time.perf_counter() - stage_started, 2))
    log.info("stage %s done: %d steps in %.0fs, best validation %s at step %d", stage, trainer.state.global_step,
             time.perf_counter() - stage_started, f"{callback.best:.4f}" if validator else "-", callback.best_step)
    return result


def _stage_args(cfg: RetrainSettings, out_dir: Path, sampler, *, max_steps: int, every: int, device: str, lora: bool):
    """The trainer's arguments for one stage: seeded, no checkpoints, logging every evaluation."""
    from sentence_transformers import SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import MultiDatasetBatchSamplers

    cuda = device.startswith("cuda")
    mixed = cfg.mixed_precision
    show_progress = cfg.progress == "on" or (cfg.progress == "auto" and sys.stderr.isatty())
    return SentenceTransformerTrainingArguments(
        output_dir=str(out_dir),
        max_steps=max_steps,
        per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.lora_learning_rate if lora else cfg.learning_rate,
        warmup_steps=int(0.1 * max_steps),
        batch_sampler=sampler,
        multi_dataset_batch_sampler=MultiDatasetBatchSamplers.PROPORTIONAL,
        seed=cfg.seed,
        data_seed=cfg.seed,
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="steps",
        logging_steps=max(1, every),
        report_to="none",
        disable_tqdm=not show_progress,
        fp16=cuda and mixed in ("auto", "fp16"),
        bf16=cuda and mixed == "bf16",
        use_cpu=not cuda,
        dataloader_drop_last=False,
    )


def main(argv: list[str] | None = None) -> int:
    """`python -m training.finetune JOB.json`: the form a multi-GPU launcher starts per rank."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m training.finetune JOB.json", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    job = EncoderJob.load(Path(argv[0]))
    summary = train_encoder(job)
    if _is_main_process():
        Path(job.out_dir + ".summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
