"""Encoder training: `finetune_*` (ingest's contrastive step) and the retrain's encoder stages
(`retrain_*`; both in training/finetune.py).

The two sections share three knobs under their own public names; each default is written once,
here, as a constant both read: `finetune_batch_size` / `retrain_batch_size` (BATCH_SIZE),
`finetune_learning_rate` / `retrain_learning_rate` (LEARNING_RATE) and `finetune_trainable_layers` /
`retrain_trainable_layers` (TRAINABLE_LAYERS). `retrain_seed` starts from the general `seed`'s
default (core/settings/general.py SEED). `epochs` and `max_steps` differ on purpose: ingest trains
once on the KB, the retrain per stage with early stopping.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.errors import ConfigError
from core.settings.general import SEED, outside_unit_interval

LOSSES = ("mnrl", "batch_hard_soft_margin", "batch_all")
BATCH_SIZE = 32
LEARNING_RATE = 2e-5
# Only the top N transformer layers change: the sentiment head reads the ones below.
TRAINABLE_LAYERS = 2


@dataclass
class FinetuneSettings:
    """`finetune_*`: the contrastive fine-tuning of the encoder's top layers on the KB's example
    questions at ingest (training/finetune.py; the SetFit idea)."""

    epochs: float = 2  # passes at most (0: no fine-tuning at ingest)
    max_steps: int = 600  # batches in all at most (0: no cap), so a large KB's ingest stays bounded
    batch_size: int = BATCH_SIZE
    learning_rate: float = LEARNING_RATE
    trainable_layers: int = TRAINABLE_LAYERS
    # "mnrl": MultipleNegativesRankingLoss on (question, another question of its intent) pairs, which
    # measured best on BANKING77 10-shot; "batch_hard_soft_margin" / "batch_all": batch triplet losses.
    loss: str = "mnrl"
    warmup_ratio: float = 0.1

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ConfigError(f"finetune settings: loss must be one of {', '.join(LOSSES)}, not {self.loss!r}")
        if self.trainable_layers < 1:
            raise ConfigError("finetune settings: trainable_layers must be at least 1")


@dataclass
class RetrainEncoderSettings:
    """Part of `RetrainSettings`: the encoder's training stages in the nightly retrain."""

    stages: str = "intent,retrieval"  # "intent" (contrastive on labels), "retrieval" (MNRL), or both
    method: str = "full"  # "full": full-weight update of the top layers; "lora": LoRA adapters on them
    trainable_layers: int = TRAINABLE_LAYERS
    start_from: str = "champion"  # "champion" (continual, with replay) or "base" (the configured encoder)
    epochs: float = 1.0  # per stage, at most (early stopping may end it sooner)
    max_steps: int = 0  # per stage, at most (0: no cap)
    # Rows per stage at most: all new examples first, then a deterministic sample of the KB questions
    # and replayed examples, so a run's cost does not grow with the history.
    max_stage_rows: int = 1024
    batch_size: int = BATCH_SIZE
    learning_rate: float = LEARNING_RATE
    intent_loss: str = "batch_hard_soft_margin"  # or "batch_all", "mnrl" (training/finetune.py)
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    lora_learning_rate: float = 2e-4
    max_seq_length: int = 64
    article_words: int = 40  # an article's text for retrieval pairs: title + its first N words
    validation_fraction: float = 0.1  # of the labelled training rows, for early stopping
    validation_max: int = 300
    eval_every: float = 0.5  # validation every this many epochs
    patience: int = 2  # evaluations without improvement before stopping
    seed: int = SEED
    mixed_precision: str = "auto"  # "auto" (fp16 on CUDA), "no", "fp16", "bf16"
    device: str = ""  # "": the top-level `device`; else auto | cpu | cuda
    launcher: str = ""  # "": in process; e.g. "torchrun --nproc_per_node=4" or "accelerate launch"
    progress: str = "auto"  # progress bars: "auto" (when stderr is a terminal), "on", "off"

    def problems(self) -> list[str]:
        problems = []
        if self.method not in ("full", "lora"):
            problems.append(f"method must be full or lora, not {self.method!r}")
        if self.start_from not in ("champion", "base"):
            problems.append(f"start_from must be champion or base, not {self.start_from!r}")
        bad_stages = set(self.stage_list) - {"intent", "retrieval"}
        if bad_stages:
            problems.append(f"unknown stage(s) {', '.join(sorted(bad_stages))}; use intent, retrieval")
        if self.mixed_precision not in ("auto", "no", "fp16", "bf16"):
            problems.append(f"mixed_precision must be auto, no, fp16 or bf16, not {self.mixed_precision!r}")
        if self.progress not in ("auto", "on", "off"):
            problems.append(f"progress must be auto, on or off, not {self.progress!r}")
        if self.trainable_layers < 1:
            problems.append("trainable_layers must be at least 1")
        if self.intent_loss not in LOSSES:
            problems.append(f"intent_loss must be one of {', '.join(LOSSES)}, not {self.intent_loss!r}")
        return problems + outside_unit_interval(self, "validation_fraction")

    @property
    def stage_list(self) -> list[str]:
        return [s.strip() for s in self.stages.split(",") if s.strip()]
