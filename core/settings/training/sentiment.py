"""`retrain_sentiment_*`: the sentiment head's update in the nightly retrain (training/sentiment_update.py)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RetrainSentimentSettings:
    """Part of `RetrainSettings`: when and how the sentiment head learns from corrections."""

    sentiment_update: bool = True
    sentiment_min_corrections: int = 20
    sentiment_min_agreement: float = 0.85  # new head must agree with the old one on replay texts

    def problems(self) -> list[str]:
        return []
