"""Every knob of the nightly retrain, in one dataclass.

Precedence (highest first): keyword overrides (command-line flags), the environment variable
`CSBOT_RETRAIN_<FIELD>` (e.g. `CSBOT_RETRAIN_MIN_NEW_EXAMPLES=50`), a `retrain_<field>` attribute of
the Settings object (for the knobs surfaced in `core.settings.Settings`, which reads them from the
TOML file under the same name), the default here.
See docs/retrain.md for what each knob does.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from typing import Any

from core.settings import ConfigError

ENV_PREFIX = "CSBOT_RETRAIN_"


@dataclass
class RetrainConfig:
    # ----- data from feedback (training/feedback_data.py) ---------------------------------------
    # Minimum new training items (labelled examples + hard negatives) before a run trains.
    min_new_examples: int = 20
    # A user's uncorroborated examples (no other user agrees) per run: at most this many ...
    max_examples_per_user: int = 200
    # ... and at most this share of all accepted examples, but never fewer than user_share_floor.
    max_user_share: float = 0.25
    user_share_floor: int = 20
    # Outlier voters: a user with at least suspicious_min_votes votes whose 👎 rate is above both
    # suspicious_factor × and suspicious_margin + the median user's rate is ignored for the run.
    suspicious_min_votes: int = 10
    suspicious_factor: float = 2.0
    suspicious_margin: float = 0.3
    # Admin users (Settings.slack_admin_users) are trusted: exempt from the per-user caps.
    trust_admins: bool = True
    # Feedback rows read per run at most (oldest first; the rest waits for the next run).
    max_feedback_rows: int = 200_000
    # Earlier feedback examples replayed per run at most (the KB's own questions are always replayed).
    replay_max: int = 20_000

    # ----- frozen held-out set (training/gate.py) ------------------------------------------------
    heldout_fraction: float = 0.2  # of each intent's KB example questions, frozen once
    heldout_min_questions: int = 3  # intents with fewer example questions give none
    admin_heldout_fraction: float = 0.5  # of trusted admin corrections (by a hash of the text)
    # Of the labelled feedback (👍, corrections, clarifying picks) of intents that at least
    # heldout_feedback_min_users distinct users confirmed in the run, this share (by a hash of
    # the text) is frozen into the held-out set: a KB without example questions gets one too.
    heldout_feedback_fraction: float = 0.2
    heldout_feedback_min_users: int = 2
    builtin_oos: bool = True  # add generic off-topic questions to measure out-of-scope recall

    # ----- encoder training (training/encoder_training.py) ---------------------------------------
    stages: str = "intent,retrieval"  # "intent" (contrastive on labels), "retrieval" (MNRL), or both
    method: str = "full"  # "full": full-weight update of the top layers; "lora": LoRA adapters on them
    trainable_layers: int = 2  # only the top N transformer layers change (the sentiment head reads the rest)
    start_from: str = "champion"  # "champion" (continual, with replay) or "base" (the configured encoder)
    epochs: float = 1.0  # per stage, at most (early stopping may end it sooner)
    max_steps: int = 0  # per stage, at most (0: no cap)
    # Rows per stage at most: all new examples first, then a deterministic sample of the KB questions
    # and replayed examples, so a run's cost does not grow with the history.
    max_stage_rows: int = 1024
    batch_size: int = 32
    learning_rate: float = 2e-5
    intent_loss: str = "batch_hard_soft_margin"  # or "batch_all", "mnrl" (models/finetune.py)
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
    seed: int = 13
    mixed_precision: str = "auto"  # "auto" (fp16 on CUDA), "no", "fp16", "bf16"
    device: str = ""  # "": Settings.device; else auto | cpu | cuda
    launcher: str = ""  # "": in process; e.g. "torchrun --nproc_per_node=4" or "accelerate launch"
    progress: str = "auto"  # progress bars: "auto" (when stderr is a terminal), "on", "off"

    # ----- sentiment head (training/sentiment_update.py) -----------------------------------------
    sentiment_update: bool = True
    sentiment_min_corrections: int = 20
    sentiment_min_agreement: float = 0.85  # new head must agree with the old one on replay texts

    # ----- gate (training/gate.py) -----------------------------------------------------------------
    gate_accuracy_tolerance: float = 0.0  # overall accuracy may not drop by more than this
    gate_intent_max_drop: float = 0.10  # no intent with enough support loses more recall than this
    gate_min_support: int = 5  # held-out rows an intent needs for the per-intent rule
    gate_oos_tolerance: float = 0.0  # out-of-scope recall may not drop by more than this
    # With fewer in-scope held-out rows the gate does not decide: the run ends "not enough held-out
    # data" (exit 3) before training, and its feedback waits for the next run.
    gate_min_heldout: int = 10
    keep_rejected: bool = False  # keep a rejected candidate's version folder (else deleted)

    @classmethod
    def load(cls, env: dict[str, str] | None = None, settings: Any = None, **overrides: Any) -> "RetrainConfig":
        env = dict(os.environ if env is None else env)
        by_name = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for name in by_name:  # fields surfaced in Settings as retrain_<name> (TOML or environment)
            value = getattr(settings, f"retrain_{name}", None) if settings is not None else None
            if value is not None:
                values[name] = value
        for name in by_name:
            key = ENV_PREFIX + name.upper()
            if key in env:
                values[name] = env[key]
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = sorted(set(values) - set(by_name))
        if unknown:
            raise ConfigError(f"unknown retrain setting(s) {', '.join(unknown)}")
        config = cls(**{name: _convert(name, by_name[name].default, value) for name, value in values.items()})
        config.validate()
        return config

    def validate(self) -> None:
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
        for name in ("heldout_fraction", "admin_heldout_fraction", "heldout_feedback_fraction", "max_user_share",
                     "validation_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name} must be between 0 and 1")
        if problems:
            raise ConfigError("retrain settings: " + "; ".join(problems))

    @property
    def stage_list(self) -> list[str]:
        return [s.strip() for s in self.stages.split(",") if s.strip()]

    def to_dict(self) -> dict:
        return asdict(self)


def _convert(name: str, default: Any, value: Any) -> Any:
    kind = type(default)
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            return str(value).strip().lower() in ("1", "true", "yes", "on")
        if kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if kind is float:
            return float(value)
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"retrain setting {name}: cannot read {value!r} as {kind.__name__}") from exc
