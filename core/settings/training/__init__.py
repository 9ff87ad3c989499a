"""The training sections: `finetune_*` (encoder.py) and `retrain_*` (retrain.py, composed of
feedback.py, gate.py, encoder.py, sentiment.py and composer.py)."""

from core.settings.training.encoder import LOSSES, FinetuneSettings
from core.settings.training.retrain import RETRAIN_PARTS, RetrainSettings

__all__ = ["LOSSES", "RETRAIN_PARTS", "FinetuneSettings", "RetrainSettings"]
