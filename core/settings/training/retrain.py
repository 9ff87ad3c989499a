"""`retrain_*`: the nightly retrain's section (training/retrain.py; docs/retrain.md), composed from its parts."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from core.errors import ConfigError
from core.settings.training.composer import RetrainComposerSettings
from core.settings.training.encoder import RetrainEncoderSettings
from core.settings.training.feedback import RetrainFeedbackSettings
from core.settings.training.gate import RetrainGateSettings, RetrainHeldoutSettings
from core.settings.training.sentiment import RetrainSentimentSettings

# The parts in field order. A dataclass collects its bases' fields from the last base to the first,
# so RetrainSettings lists them in reverse: its fields (and to_dict, which a run reports) keep this order.
RETRAIN_PARTS = (RetrainFeedbackSettings, RetrainHeldoutSettings, RetrainEncoderSettings,
                 RetrainSentimentSettings, RetrainGateSettings, RetrainComposerSettings)


@dataclass
class RetrainSettings(RetrainComposerSettings, RetrainGateSettings, RetrainSentimentSettings,
                      RetrainEncoderSettings, RetrainHeldoutSettings, RetrainFeedbackSettings):
    """`retrain_*`: every knob of the nightly retrain (training/retrain.py; docs/retrain.md); each
    part's module documents and defaults its own."""

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        problems = [problem for part in RETRAIN_PARTS for problem in part.problems(self)]
        if problems:
            raise ConfigError("retrain settings: " + "; ".join(problems))

    def to_dict(self) -> dict:
        return asdict(self)
