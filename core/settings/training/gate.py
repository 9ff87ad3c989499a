"""`retrain_*` held-out set and promotion gate (training/gate.py)."""

from __future__ import annotations

from dataclasses import dataclass

from core.settings.general import outside_unit_interval


@dataclass
class RetrainHeldoutSettings:
    """Part of `RetrainSettings`: the frozen held-out set the gate scores on."""

    heldout_fraction: float = 0.2  # of each intent's KB example questions, frozen once
    heldout_min_questions: int = 3  # intents with fewer example questions give none
    admin_heldout_fraction: float = 0.5  # of trusted admin corrections (by a hash of the text)
    # Of the labelled feedback (👍, corrections, clarifying picks) of intents that at least
    # heldout_feedback_min_users distinct users confirmed in the run, this share (by a hash of
    # the text) is frozen into the held-out set: a KB without example questions gets one too.
    heldout_feedback_fraction: float = 0.2
    heldout_feedback_min_users: int = 2
    builtin_oos: bool = True  # add generic off-topic questions to measure out-of-scope recall

    def problems(self) -> list[str]:
        return outside_unit_interval(self, "heldout_fraction", "admin_heldout_fraction", "heldout_feedback_fraction")


@dataclass
class RetrainGateSettings:
    """Part of `RetrainSettings`: the rules a candidate must pass to be promoted (`gate_*`)."""

    gate_accuracy_tolerance: float = 0.0  # overall accuracy may not drop by more than this
    gate_intent_max_drop: float = 0.10  # no intent with enough support loses more recall than this
    gate_min_support: int = 5  # held-out rows an intent needs for the per-intent rule
    gate_oos_tolerance: float = 0.0  # out-of-scope recall may not drop by more than this
    # With fewer in-scope held-out rows the gate does not decide: the run ends "not enough held-out
    # data" (exit 3) before training, and its feedback waits for the next run.
    gate_min_heldout: int = 10
    # The KB's own sentences as questions (up to gate_passages of them, a fixed sample): whatever the votes
    # teach, the candidate must still find each sentence's article and section about as often as the
    # champion does (at most gate_passage_tolerance lower, or one sentence). 0 turns the rule off.
    gate_passages: int = 400
    gate_passage_tolerance: float = 0.02
    keep_rejected: bool = False  # keep a rejected candidate's version folder (else deleted)

    def problems(self) -> list[str]:
        negative = ["gate_passages must be 0 or more"] if self.gate_passages < 0 else []
        return outside_unit_interval(self, "gate_passage_tolerance") + negative
