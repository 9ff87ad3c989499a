"""`retrain_*` data from feedback (training/feedback_data.py): how much a run reads and trusts."""

from __future__ import annotations

from dataclasses import dataclass

from core.settings.general import outside_unit_interval


@dataclass
class RetrainFeedbackSettings:
    """Part of `RetrainSettings`: the feedback a run turns into training data, and its poisoning caps."""

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
    # Admin users (slack.admin_users) are trusted: exempt from the per-user caps.
    trust_admins: bool = True
    # Feedback rows read per run at most (oldest first; the rest waits for the next run).
    max_feedback_rows: int = 200_000
    # Earlier feedback examples replayed per run at most (the KB's own questions are always replayed).
    replay_max: int = 20_000

    def problems(self) -> list[str]:
        return outside_unit_interval(self, "max_user_share")
